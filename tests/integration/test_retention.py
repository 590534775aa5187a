"""Retention of predictions: day partitions created ahead and dropped on MariaDB, rows deleted by day on SQLite."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws
from sqlalchemy.engine import Engine
from writer_support import create_queue_with_dlq, event_body, queue_bodies, row_count, send_bodies, stored_rows

from sml.core.db import apply_migrations, create_db_engine, default_sql_dir, dialect_family
from sml.core.errors import SmlError
from sml.core.retention import apply_retention, partition_name, prediction_partitions, retention_limits
from sml.writer.batch import write_batch

TODAY = date(2026, 12, 7)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def predicted_on(day: date, hour: int = 12, **features: Any) -> str:
    body = json.loads(event_body(**features))
    body["predicted_at"] = f"{day.isoformat()}T{hour:02d}:00:00Z"
    return json.dumps(body)


def store_days(engine: Engine, days: list[date]) -> dict[date, str]:
    bodies = {day: predicted_on(day) for day in days}
    outcome = write_batch(engine, [(f"m{index}", body) for index, body in enumerate(bodies.values())])
    assert outcome.inserted == len(days)
    return {day: json.loads(body)["prediction_id"] for day, body in bodies.items()}


def test_limits_follow_the_window_and_the_label_horizon() -> None:
    assert retention_limits(7, 7) == retention_limits(7.0, 7.0)
    assert (retention_limits(7, 7).minimum, retention_limits(7, 7).default) == (22, 29)
    assert (retention_limits(1.5, 0).minimum, retention_limits(1.5, 0).default) == (4, 6)


def test_rows_older_than_the_retention_go_and_the_rest_stay(engine: Engine) -> None:
    days = [TODAY - timedelta(days=offset) for offset in (40, 31, 30, 29, 1, 0)]
    ids = store_days(engine, days)

    outcome = apply_retention(engine, today=TODAY, retention_days=30)

    assert outcome.cutoff == TODAY - timedelta(days=30)
    assert set(stored_rows(engine)) == {ids[day] for day in days if day >= outcome.cutoff}
    if dialect_family(engine) == "sqlite":
        assert outcome.deleted_rows == 2 and outcome.dropped == []


def test_a_second_run_the_same_day_changes_nothing(engine: Engine) -> None:
    store_days(engine, [TODAY - timedelta(days=40), TODAY])
    apply_retention(engine, today=TODAY, retention_days=22)

    again = apply_retention(engine, today=TODAY, retention_days=22)

    assert (again.created, again.dropped, again.deleted_rows) == ([], [], 0)
    assert row_count(engine) == 1


@pytest.mark.mysql
def test_mysql_keeps_one_partition_per_day_from_the_cutoff_to_days_ahead(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    apply_migrations(engine)
    with engine.connect() as connection:
        assert prediction_partitions(connection) == ["pmax"]

    first = apply_retention(engine, today=TODAY, retention_days=22, days_ahead=3)
    later = apply_retention(engine, today=TODAY + timedelta(days=2), retention_days=22, days_ahead=3)

    cutoff = TODAY - timedelta(days=22)
    assert first.created == [partition_name(cutoff + timedelta(days=offset)) for offset in range(-1, 26)]
    assert first.dropped == [partition_name(cutoff - timedelta(days=1))]
    assert later.created == [partition_name(TODAY + timedelta(days=4)), partition_name(TODAY + timedelta(days=5))]
    assert later.dropped == [partition_name(cutoff), partition_name(cutoff + timedelta(days=1))]
    with engine.connect() as connection:
        partitions = prediction_partitions(connection)
    assert partitions[0] == partition_name(cutoff + timedelta(days=2)) and partitions[-2:] == [partition_name(TODAY + timedelta(days=5)), "pmax"]
    assert len(partitions) == 22 + 1 + 3 + 1
    engine.dispose()


@pytest.mark.mysql
def test_mysql_rows_land_in_their_day_and_a_dropped_day_takes_exactly_its_rows(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    apply_migrations(engine)
    apply_retention(engine, today=TODAY, retention_days=22)
    oldest_kept = TODAY - timedelta(days=22)
    ids = store_days(engine, [oldest_kept, oldest_kept + timedelta(days=1), TODAY, TODAY + timedelta(days=30)])

    with engine.connect() as connection:
        counts = {
            name: connection.exec_driver_sql(f"SELECT COUNT(*) FROM predictions PARTITION ({name})").scalar()
            for name in prediction_partitions(connection)
        }
    assert counts[partition_name(oldest_kept)] == 1 and counts[partition_name(TODAY)] == 1 and counts["pmax"] == 1

    outcome = apply_retention(engine, today=TODAY + timedelta(days=1), retention_days=22)

    assert outcome.dropped == [partition_name(oldest_kept)]
    assert set(stored_rows(engine)) == {ids[day] for day in ids if day != oldest_kept}
    engine.dispose()


@pytest.mark.mysql
def test_mysql_a_replay_of_a_dropped_days_event_is_stored_again_into_the_oldest_partition(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    apply_migrations(engine)
    apply_retention(engine, today=TODAY, retention_days=22)
    old = predicted_on(TODAY - timedelta(days=60))

    outcome = write_batch(engine, [("m", old)])
    dropped = apply_retention(engine, today=TODAY, retention_days=22)

    assert outcome.inserted == 1 and dropped.dropped == [] and row_count(engine) == 1
    engine.dispose()


@pytest.mark.mysql
def test_mysql_a_table_the_migrations_did_not_partition_is_refused_naming_the_step(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE predictions (prediction_id CHAR(36) PRIMARY KEY, predicted_at DATETIME(6))")
    with pytest.raises(SmlError, match=r"predictions is not partitioned .*sml db migrate"):
        apply_retention(engine, today=TODAY, retention_days=22)
    engine.dispose()


@pytest.fixture
def sql_before_partitioning(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), target)
    for path in target.glob("0008_*"):
        path.unlink()
    return target


@pytest.mark.mysql
def test_mysql_migrating_a_filled_table_while_the_writer_runs_loses_and_duplicates_nothing(
    mysql_url: str, sql_before_partitioning: Path
) -> None:
    from functions.writer import app

    from sml.local.poller import SqsEventSourcePoller

    engine = create_db_engine(mysql_url)
    apply_migrations(engine, sql_before_partitioning)
    before = [predicted_on(TODAY - timedelta(days=index % 50), radius=float(index)) for index in range(5_000)]
    for start in range(0, len(before), 1000):
        write_batch(engine, [(f"b{index}", body) for index, body in enumerate(before[start : start + 1000])])
    during = [predicted_on(TODAY, radius=float(index)) for index in range(200)]
    with mock_aws(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("SML_DATABASE_URL", mysql_url)
        app.database_engine.cache_clear()
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url, dlq_url = create_queue_with_dlq(sqs)
        send_bodies(sqs, queue_url, during + during[:20])
        source = SqsEventSourcePoller(sqs, queue_url, app.handler, batch_size=10, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0)
        migration = threading.Thread(target=apply_migrations, args=(create_db_engine(mysql_url),))
        migration.start()
        batches = 0
        while source.poll_once() is not None or migration.is_alive():
            batches += 1
        migration.join()
        while source.poll_once() is not None:
            batches += 1
        assert queue_bodies(sqs, dlq_url) == []
        app.database_engine().dispose()
        app.database_engine.cache_clear()

    with engine.connect() as connection:
        assert prediction_partitions(connection) == ["pmax"]
        primary_key = sa.inspect(connection).get_pk_constraint("predictions")["constrained_columns"]
    assert primary_key == ["prediction_id", "predicted_at"]
    assert row_count(engine) == len(before) + len(during)
    outcome = apply_retention(engine, today=TODAY, retention_days=29)
    assert outcome.dropped == [partition_name(TODAY - timedelta(days=30))]
    assert row_count(engine) == sum(1 for index in range(len(before)) if index % 50 <= 29) + len(during)
    engine.dispose()


@pytest.mark.mysql
def test_mysql_a_step_after_months_without_one_creates_only_the_retained_days(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    apply_migrations(engine)
    apply_retention(engine, today=date(2026, 1, 1), retention_days=22)

    outcome = apply_retention(engine, today=TODAY, retention_days=22)

    assert len(outcome.created) == 1 + 22 + 1 + 3
    assert outcome.dropped[-1] == partition_name(TODAY - timedelta(days=23))
    engine.dispose()


def test_retention_step_reads_the_scheduled_time(engine: Engine) -> None:
    import logging

    from sml.core.retention import run_retention_step
    from sml.core.settings import WriterSettings, load_settings

    settings = load_settings(WriterSettings, {"SML_RETENTION_DAYS": "25"})
    outcome = run_retention_step(engine, settings, {"time": "2026-12-07T03:00:00Z"}, logging.getLogger("test"))

    assert outcome.cutoff == date(2026, 11, 12)
    with pytest.raises(ValueError, match="event field 'time'"):
        run_retention_step(engine, settings, {"time": "yesterday"}, logging.getLogger("test"))


def test_an_invalid_day_count_is_refused() -> None:
    with pytest.raises(SmlError, match="retention_days must be at least 1"):
        apply_retention(create_db_engine("sqlite://"), today=TODAY, retention_days=0)
