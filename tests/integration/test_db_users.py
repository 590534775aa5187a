"""The functions' own database users (AWS: behind RDS Proxy with IAM auth), tried on MariaDB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sml.core.db import (
    METADATA,
    DatabaseUser,
    apply_function_users,
    apply_migrations,
    create_db_engine,
    database_engine_from_settings,
    iam_auth_token,
)
from sml.core.errors import SmlError
from sml.core.events import build_prediction_event
from sml.core.settings import WriterSettings, load_settings
from sml.writer.batch import prediction_row, write_prediction_rows

PREDICTION = {
    "prediction_id": "0190c7c2-0000-7000-8000-000000000001",
    "schema_version": 1,
    "model_name": "m",
    "model_version": "v1",
    "predicted_at": "2026-11-30 00:00:00",
    "prediction": "benign",
    "features": "{}",
    "stored_at": "2026-11-30 00:00:00",
}
INSERT_PREDICTION = sa.text(
    "INSERT INTO predictions (prediction_id, schema_version, model_name, model_version, predicted_at, prediction,"
    " features, stored_at) VALUES (:prediction_id, :schema_version, :model_name, :model_version, :predicted_at,"
    " :prediction, :features, :stored_at)"
)
DRIFT_RUN = sa.text(
    "INSERT INTO drift_runs (run_id, model_name, model_version, window_start, window_end, reference_kind, status,"
    " n_reference, n_current, features_tested, features_drifted, parameters, created_at) VALUES ('r1', 'm', 'v1',"
    " '2026-11-23', '2026-11-30', 'training', 'NO_DRIFT', 1, 1, 1, 0, '{}', '2026-11-30')"
)


@pytest.fixture
def users(mysql_url: str) -> Iterator[dict[str, DatabaseUser]]:
    """A writer and a drift user with names unique to this test (users are server-wide); dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    made = {
        function: DatabaseUser(function, f"t_{function}_{suffix}", uuid.uuid4().hex) for function in ("writer", "drift")
    }
    yield made
    admin = create_db_engine(mysql_url)
    with admin.begin() as connection:
        for user in made.values():
            connection.execute(sa.text("DROP USER IF EXISTS :user@'%%'"), {"user": user.username})
    admin.dispose()


def _engine_as(mysql_url: str, user: DatabaseUser) -> sa.Engine:
    return create_db_engine(make_url(mysql_url).set(username=user.username, password=user.password))


def test_each_function_user_may_do_only_its_own_work(mysql_url: str, users: dict[str, DatabaseUser]) -> None:
    admin = create_db_engine(mysql_url)
    apply_migrations(admin)
    granted = apply_function_users(admin, list(users.values()))
    assert sorted(granted["writer"]) == ["ground_truth", "predict_refusals", "prediction_day_counts", "predictions"]
    assert set(granted["drift"]) >= {"predictions", "ground_truth", "predict_refusals", "drift_runs", "drift_features", "quality_runs", "quality_metrics"}
    every_table = {table.name for table in METADATA.sorted_tables} - {"schema_migrations"}
    assert every_table <= set(granted["writer"]) | set(granted["drift"]), "a table no function may use"

    writer = _engine_as(mysql_url, users["writer"])
    with writer.begin() as connection:
        connection.execute(INSERT_PREDICTION, PREDICTION)
    # The writer's own insert also adds to the day's count, twice for the same day (insert, then update).
    for index in range(2):
        row = prediction_row(build_prediction_event(model_name="m", model_version="v1", features={"x": 1.0}, prediction="a"), datetime.now(UTC))
        assert write_prediction_rows(writer, [row]).inserted == 1, index
    with pytest.raises(sa.exc.OperationalError, match="denied"), writer.begin() as connection:
        connection.execute(DRIFT_RUN)
    with pytest.raises(sa.exc.OperationalError, match="denied"), writer.begin() as connection:
        connection.execute(sa.text("CREATE TABLE sneaky (id INTEGER)"))

    drift = _engine_as(mysql_url, users["drift"])
    with drift.begin() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM predictions")).scalar() == 3
        assert connection.execute(sa.text("SELECT SUM(n_rows) FROM prediction_day_counts")).scalar() == 2
        connection.execute(DRIFT_RUN)
        connection.execute(sa.text("DELETE FROM drift_runs WHERE run_id = 'r1'"))
    with pytest.raises(sa.exc.OperationalError, match="denied"), drift.begin() as connection:
        connection.execute(INSERT_PREDICTION, {**PREDICTION, "prediction_id": "0190c7c2-0000-7000-8000-000000000002"})
    with pytest.raises(sa.exc.OperationalError, match="denied"), drift.begin() as connection:
        connection.execute(sa.text("DELETE FROM prediction_day_counts"))
    for engine in (writer, drift, admin):
        engine.dispose()


def test_a_rerun_sets_a_rotated_password(mysql_url: str, users: dict[str, DatabaseUser]) -> None:
    admin = create_db_engine(mysql_url)
    apply_migrations(admin)
    apply_function_users(admin, [users["writer"]])
    rotated = DatabaseUser("writer", users["writer"].username, uuid.uuid4().hex)
    apply_function_users(admin, [rotated])
    with _engine_as(mysql_url, rotated).connect() as connection:
        assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    with pytest.raises(sa.exc.OperationalError, match="denied"):
        _engine_as(mysql_url, users["writer"]).connect()
    with pytest.raises(SmlError, match="no grants are defined for function 'predict'"):
        apply_function_users(admin, [DatabaseUser("predict", "t_predict", "x")])
    admin.dispose()


def test_every_new_connection_asks_for_a_fresh_password(mysql_url: str) -> None:
    calls = []

    def password() -> str:
        calls.append(1)
        return make_url(mysql_url).password or ""

    engine = create_db_engine(make_url(mysql_url).set(password=None), password=password)
    with engine.connect():
        pass
    engine.dispose()
    with engine.connect():
        pass
    engine.dispose()
    assert len(calls) == 2


def test_settings_with_a_db_user_log_in_with_an_iam_token_over_tls() -> None:
    settings = load_settings(
        WriterSettings,
        {"SML_DB_USER": "sml_writer", "SML_DB_HOST": "proxy.example.internal", "AWS_REGION": "eu-west-1"},
    )
    rds = boto3.client("rds", region_name="eu-west-1")
    engine = database_engine_from_settings(settings, lambda service: {"rds": rds}[service])
    assert (engine.url.username, engine.url.host, engine.url.password) == ("sml_writer", "proxy.example.internal", None)
    assert engine.url.query["ssl_ca"]
    token = iam_auth_token(rds, host="proxy.example.internal", user="sml_writer")()
    query = parse_qs(urlsplit(f"https://{token}").query)
    assert query["Action"] == ["connect"] and query["DBUser"] == ["sml_writer"]
    engine.dispose()


def test_a_db_user_without_the_proxy_host_is_refused() -> None:
    settings = load_settings(WriterSettings, {"SML_DB_USER": "sml_writer"})
    with pytest.raises(SmlError, match="SML_DB_USER is set but SML_DB_HOST is not"):
        database_engine_from_settings(settings, lambda service: None)
