"""The settings loader: typed, validated at start, one line naming the variable on error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sml.core.settings import (
    DriftSettings,
    LocalSettings,
    PredictSettings,
    SettingsError,
    WriterSettings,
    load_settings,
    read_stack_file,
)


def test_embedded_defaults_need_no_environment() -> None:
    settings = load_settings(LocalSettings, {})
    assert settings.database_url == "sqlite:///.sml/sml.db"
    assert settings.region == "us-east-1"
    assert settings.champion_parameter == "/sml/breast-cancer/champion"


def test_environment_wins_over_stack_file_and_typed_values() -> None:
    stack = {"queue_url": "http://127.0.0.1:1/q", "region": "eu-west-1", "database_url": "sqlite:///x.db"}
    settings = load_settings(PredictSettings, {"AWS_REGION": "eu-central-1", "SML_CAPTURE_SAMPLING_RATE": "0.25"}, stack)
    assert settings.region == "eu-central-1"
    assert settings.queue_url == "http://127.0.0.1:1/q"
    assert settings.capture_sampling_rate == 0.25
    assert settings.capture_mode == "after_response"


@pytest.mark.parametrize(
    ("cls", "environ", "variable"),
    [
        (PredictSettings, {"SML_CAPTURE_SAMPLING_RATE": "1.5"}, "SML_CAPTURE_SAMPLING_RATE"),
        (PredictSettings, {"SML_CAPTURE_SAMPLING_RATE": "half"}, "SML_CAPTURE_SAMPLING_RATE"),
        (PredictSettings, {"SML_CAPTURE_FAIL_CLOSED": "perhaps"}, "SML_CAPTURE_FAIL_CLOSED"),
        (PredictSettings, {"SML_CAPTURE_MODE": "later"}, "SML_CAPTURE_MODE"),
        (PredictSettings, {"SML_MAX_INSTANCES": "0"}, "SML_MAX_INSTANCES"),
        (PredictSettings, {"AWS_REGION": "moon"}, "AWS_REGION"),
        (PredictSettings, {"SML_AWS_ENDPOINT_URL": "127.0.0.1:5000"}, "SML_AWS_ENDPOINT_URL"),
        (WriterSettings, {"SML_MODEL_NAME": "Bad Name"}, "SML_MODEL_NAME"),
        (DriftSettings, {"SML_DRIFT_REFERENCE": "yesterday"}, "SML_DRIFT_REFERENCE"),
        (DriftSettings, {"SML_DRIFT_WINDOW_DAYS": "-1"}, "SML_DRIFT_WINDOW_DAYS"),
        (LocalSettings, {"SML_DATABASE_URL": "not a url"}, "SML_DATABASE_URL"),
    ],
)
def test_malformed_variable_is_named_in_one_line(cls, environ, variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(cls, environ)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"setting {variable}: ")
    assert "\n" not in str(caught.value)


def test_password_in_database_url_is_refused_and_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(WriterSettings, {"SML_DATABASE_URL": "mysql+pymysql://admin:hunter2@db/sml"})
    assert "Secrets Manager" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_stack_file_is_read_and_a_corrupt_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    assert read_stack_file(path) == {}
    path.write_text(json.dumps({"bucket": "b-1"}))
    assert load_settings(LocalSettings, {}, read_stack_file(path)).bucket == "b-1"
    path.write_text("{not json")
    with pytest.raises(SettingsError, match=str(path)):
        read_stack_file(path)


def test_stack_file_follows_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({"queue_url": "http://127.0.0.1:9/q"}))
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    assert read_stack_file() == {"queue_url": "http://127.0.0.1:9/q"}


def test_drift_floors_and_minimum_sample_size_are_settings() -> None:
    settings = load_settings(DriftSettings, {"SML_DRIFT_MIN_MISSING_RATE_H": "0.1", "SML_DRIFT_MIN_SAMPLES": "50"})
    assert (settings.min_missing_rate_h, settings.min_samples) == (0.1, 50)
    with pytest.raises(SettingsError, match="SML_DRIFT_MIN_SAMPLES"):
        load_settings(DriftSettings, {"SML_DRIFT_MIN_SAMPLES": "1"})


@pytest.mark.parametrize("value", ["soon", "-1", "400", "nan"])
def test_a_label_horizon_that_is_not_a_number_of_days_is_refused_by_name(value: str) -> None:
    assert load_settings(DriftSettings, {"SML_LABEL_HORIZON_DAYS": "3.5"}).label_horizon_days == 3.5
    with pytest.raises(SettingsError, match="SML_LABEL_HORIZON_DAYS"):
        load_settings(DriftSettings, {"SML_LABEL_HORIZON_DAYS": value})


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"SML_DB_USER": "sml_drift", "SML_DB_HOST": "proxy.example"}, None),
        ({"SML_DB_HOST": "proxy.example"}, "no database configured (SML_DB_HOST alone names no user)"),
        ({"SML_DB_USER": "sml_drift"}, "SML_DB_USER is set but SML_DB_HOST is not"),
    ],
)
def test_the_command_line_builds_the_functions_engine_or_refuses_never_the_local_file(environment: dict[str, str], message: str | None) -> None:
    # With IAM settings and no URL the CLI fell back to .sml/sml.db: `sml quality` read another database than the functions.
    from sml.core.db import database_engine_from_settings
    from sml.core.errors import SmlError

    settings = load_settings(LocalSettings, environment)

    assert settings.database_url is None
    if message is None:
        engine = database_engine_from_settings(settings, lambda service: FakeRds())
        assert (engine.url.get_backend_name(), engine.url.host, engine.url.username, engine.url.database) == ("mysql", "proxy.example", "sml_drift", "sml")
        engine.dispose()
    else:
        with pytest.raises(SmlError, match=re.escape(message)):
            database_engine_from_settings(settings, lambda service: FakeRds())


class FakeRds:
    """Stands in for the RDS client: the engine asks it for a token only when it connects."""

    def generate_db_auth_token(self, **_: object) -> str:
        return "token"
