"""The deploy's migration function (functions/writer/migrate.py): applies once, and raises on failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from functions.writer import migrate
from sml.core.db import default_sql_dir
from sml.local.lambda_context import new_lambda_context


def test_applies_the_schema_once(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_DATABASE_URL", db_url)
    context = new_lambda_context("migrate", region="us-east-1", timeout_s=300)
    first = migrate.handler({}, context)
    second = migrate.handler({}, context)
    assert first["applied"][0] == "0000_schema_migrations" and "0001_predictions" in first["applied"]
    assert second == {"applied": [], "granted": {}, "newer_than_image": []}  # no function users locally


def test_a_rollback_runs_the_previous_image_against_a_newer_schema_without_failing(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The failed deploy's image: one migration more than the image the rollback brings back.
    image_sql = default_sql_dir()
    newer_sql = tmp_path / "newer"
    shutil.copytree(image_sql, newer_sql)
    (newer_sql / "0999_rollback_probe.sql").write_text("CREATE TABLE IF NOT EXISTS rollback_probe (id INTEGER NOT NULL PRIMARY KEY);\n")
    monkeypatch.setenv("SML_DATABASE_URL", db_url)
    context = new_lambda_context("migrate", region="us-east-1", timeout_s=300)
    monkeypatch.setenv("SML_SQL_DIR", str(newer_sql))
    assert migrate.handler({}, context)["applied"][-1] == "0999_rollback_probe"

    monkeypatch.setenv("SML_SQL_DIR", str(image_sql))
    rolled_back = migrate.handler({}, context)

    assert rolled_back == {"applied": [], "granted": {}, "newer_than_image": ["0999_rollback_probe"]}


def test_the_daily_rule_runs_the_retention_step_as_the_master_user(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_DATABASE_URL", migrated_db_url)
    context = new_lambda_context("migrate", region="us-east-1", timeout_s=300)

    summary = migrate.handler({"sml_action": "retention", "time": "2026-12-07T02:30:00Z"}, context)

    assert summary["cutoff"] == "2026-11-08"  # the default retention for a 7-day window and horizon: 29 days
    if "mysql" in migrated_db_url:
        assert (summary["created"][0], summary["created"][-1], summary["dropped"]) == ("p20261107", "p20261210", ["p20261107"])
    else:
        assert (summary["created"], summary["dropped"], summary["deleted_rows"]) == ([], [], 0)


def test_a_failing_migration_raises_so_the_trigger_fails_the_deploy(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), sql_dir)
    (sql_dir / "0999_broken.sql").write_text("INSERT INTO no_such_table_broken (id) VALUES (1);\n")
    monkeypatch.setenv("SML_DATABASE_URL", db_url)
    monkeypatch.setenv("SML_SQL_DIR", str(sql_dir))
    with pytest.raises(Exception, match="broken"):
        migrate.handler({}, new_lambda_context("migrate", region="us-east-1", timeout_s=300))


def test_creates_the_function_users_from_their_secrets(mysql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import uuid

    import boto3
    import sqlalchemy as sa
    from moto import mock_aws

    from sml.core.db import create_db_engine

    names = {function: f"t_{function}_{uuid.uuid4().hex[:8]}" for function in ("writer", "drift")}
    monkeypatch.setenv("SML_DATABASE_URL", mysql_url)
    try:
        with mock_aws():
            secrets = boto3.client("secretsmanager", region_name="us-east-1")
            for function, username in names.items():
                arn = secrets.create_secret(
                    Name=username, SecretString=json.dumps({"username": username, "password": uuid.uuid4().hex})
                )["ARN"]
                monkeypatch.setenv(f"SML_{function.upper()}_DB_SECRET_ARN", arn)
            result = migrate.handler({}, new_lambda_context("migrate", region="us-east-1", timeout_s=300))
        assert set(result["granted"]) == {"writer", "drift"}
        assert "predictions" in result["granted"]["writer"] and "drift_runs" in result["granted"]["drift"]
    finally:
        admin = create_db_engine(mysql_url)
        with admin.begin() as connection:
            for username in names.values():
                connection.execute(sa.text("DROP USER IF EXISTS :user@'%%'"), {"user": username})
        admin.dispose()
