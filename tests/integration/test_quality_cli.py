"""`sml drift` and `sml quality` with labelled traffic, against moto (in-process) and SQLite/MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from drift_support import MODEL_NAME, MODEL_VERSION
from moto import mock_aws
from quality_support import MANIFEST, store_labelled_traffic

from sml.cli.main import main
from sml.core.db import create_db_engine
from sml.lifecycle.registry import ModelRegistry

END_OPTION = ["--end", "2025-03-10T06:00:00Z"]


@pytest.fixture
def local(migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A champion with a calibrator in moto's registry, labelled traffic with concept drift, and the CLI's environment."""
    with mock_aws():
        bucket = f"sml-quality-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        registry = ModelRegistry(s3, boto3.client("ssm", region_name="us-east-1"), bucket=bucket, app_name="sml", model_name=MODEL_NAME)
        artifact = tmp_path / "model.joblib"
        artifact.write_bytes(b"monitoring reads only the manifest")
        registry.register(artifact, MANIFEST)
        registry.promote(MODEL_VERSION)
        engine = create_db_engine(migrated_db_url)
        store_labelled_traffic(engine, 2_000, labelled_share=0.5, flip_share=0.3, seed=9)
        engine.dispose()
        for name, value in {"SML_STATE_DIR": str(tmp_path / "state"), "SML_DATABASE_URL": migrated_db_url, "SML_BUCKET": bucket, "SML_MODEL_NAME": MODEL_NAME}.items():
            monkeypatch.setenv(name, value)
        yield {"state_dir": tmp_path / "state"}


def test_drift_prints_the_quality_verdict_and_quality_prints_the_stored_metrics(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", *END_OPTION]) == 0
    drift_output = capsys.readouterr().out
    assert "quality: DEGRADED (" in drift_output and "predictions labelled" in drift_output
    assert "estimated f1" in drift_output

    assert main(["quality"]) == 0
    output = capsys.readouterr().out
    assert "quality: DEGRADED (f1 " in output
    assert "labels: " in output and "of 2000 predictions" in output
    assert "label delay: median 1.0 d" in output
    f1_line = next(line for line in output.splitlines() if line.split("│")[1:2] and line.split("│")[1].strip() == "f1" and not line.split("│")[2].strip())
    assert f"{MANIFEST.metrics['f1']:.4g}" in f1_line
    assert main(["quality", "--fail-on-degraded", *END_OPTION]) == 1


def test_quality_without_a_stored_run_names_the_model_and_what_to_run(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quality"]) != 0
    assert f"no monitoring run stored for model '{MODEL_NAME}'; run `sml drift` first" in capsys.readouterr().err
    assert main(["quality", "--end", "yesterday"]) != 0
    assert "--end: 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err


def test_quality_of_a_version_shows_that_versions_run_or_says_it_has_none(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", *END_OPTION]) == 0
    capsys.readouterr()

    assert main(["quality", "--version", MODEL_VERSION, *END_OPTION]) == 0
    assert f"model quality of {MODEL_NAME} {MODEL_VERSION}:" in capsys.readouterr().out
    assert main(["quality", "--version", "9"]) != 0
    assert f"no monitoring run stored of version '9' for model '{MODEL_NAME}'" in capsys.readouterr().err
    assert main(["quality", "--version", "no/such"]) != 0
    assert "--version: 'no/such' is not a version name" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["quality"], ["drift", "history"]])
def test_settings_that_name_no_database_are_refused_not_read_from_the_local_file(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With SML_DB_* set and no URL the CLI built its own engine on .sml/sml.db, not the functions' database.
    monkeypatch.delenv("SML_DATABASE_URL", raising=False)
    monkeypatch.delenv("SML_DB_SECRET_ARN", raising=False)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SML_DB_HOST", "proxy.example")

    assert main(command) == 2

    assert "no database configured (SML_DB_HOST alone names no user)" in capsys.readouterr().err
    assert not (tmp_path / "state" / "sml.db").exists()


def test_labels_dated_before_their_prediction_are_counted_and_left_out_of_the_delay(
    local: dict[str, Any], migrated_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Such labels gave a median label delay of -20,794 days while the verdict stayed quiet about them.
    import sqlalchemy as sa

    from sml.core.db import GROUND_TRUTH

    engine = create_db_engine(migrated_db_url)
    with engine.begin() as connection:
        early = connection.execute(sa.select(GROUND_TRUTH.c.prediction_id).order_by(GROUND_TRUTH.c.prediction_id).limit(700)).scalars().all()
        connection.execute(GROUND_TRUTH.update().where(GROUND_TRUTH.c.prediction_id.in_(early)).values(labelled_at=datetime(1970, 1, 1)))
    engine.dispose()

    assert main(["drift", *END_OPTION]) == 0
    assert "700 labels dated before their prediction" in " ".join(capsys.readouterr().out.split())
    assert main(["quality"]) == 0

    output = capsys.readouterr().out
    assert "labels dated before their prediction: 700 (a wrong clock or client; scored, left out of the label delay)" in output
    assert "label delay: median 1.0 d" in output

@pytest.mark.parametrize("command", [["quality"], ["drift", "history"]])
def test_a_database_that_refuses_the_connection_gets_one_line_naming_the_setting(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stopped MariaDB used to end the command in a 40-line SQLAlchemy traceback.
    import socket

    with socket.socket() as probe:  # a port nothing listens on: bound, never listened
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        monkeypatch.setenv("SML_DATABASE_URL", f"mysql+pymysql://root@127.0.0.1:{port}/test")
        monkeypatch.setenv("SML_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("SML_MODEL_NAME", MODEL_NAME)

        assert main(command) == 2

    err = capsys.readouterr().err
    assert f"sml {command[0]}: error: cannot use the database:" in err
    assert "Can't connect to MySQL server" in err and "SML_DATABASE_URL" in err
    assert "Traceback" not in err
