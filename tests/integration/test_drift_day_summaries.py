"""Stored daily summaries on SQLite and MariaDB: the daily step stores each whole day once,
recomputes a day whose count changed, and the weekly run from stored days plus live partial days
gives the same statistics and verdicts as reading the whole window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from drift_support import WINDOW, WINDOW_END, build_manifest, draw_traffic, store_traffic
from moto import mock_aws
from sqlalchemy.engine import Engine

from sml.core.db import DRIFT_DAY_SUMMARIES, create_db_engine
from sml.monitoring.daily import days_before, read_window_from_days, summarise_days
from sml.monitoring.job import DriftJobConfig, DriftJobResult, run_drift_job
from sml.monitoring.windows import TimeWindow

TRAINING = build_manifest(draw_traffic(5_000, seed=1))
WINDOW_START = WINDOW_END - WINDOW  # 06:00 UTC: partial days at both ends, six whole days between
WHOLE_DAYS = [date(2025, 3, 4) + timedelta(days=offset) for offset in range(6)]
LATE_AT = datetime(2025, 3, 6, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def week(engine: Engine) -> Engine:
    """A week of traffic whose first half is shifted in mean: some tests drift, others do not."""
    middle = WINDOW_START + WINDOW / 2
    store_traffic(engine, draw_traffic(1_500, seed=2, shift="mean"), start=WINDOW_START, end=middle)
    store_traffic(engine, draw_traffic(1_500, seed=3, shift="null_spike"), start=middle, end=WINDOW_END)
    return engine


def run_job(engine: Engine) -> DriftJobResult:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="sml-days")
        return run_drift_job(
            DriftJobConfig(bucket="sml-days"), TRAINING, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END
        )


def decided(outcome: DriftJobResult) -> dict[str, Any]:
    """Everything the run decided and the numbers it decided from."""
    run = outcome.run
    return {
        "status": run.status,
        "rows": run.current_rows,
        "results": [
            (r.feature, r.test, r.statistic, r.p_value, r.p_adjusted, r.effect_size, r.n_reference, r.n_current, r.verdict)
            for r in run.results
        ],
        "data_quality": list(run.data_quality),
        "quality": None if run.quality is None else (run.quality.status, run.quality.n_labelled, run.quality.reason),
    }


def stored_rows(engine: Engine) -> dict[date, int]:
    with engine.connect() as connection:
        return {
            (day if isinstance(day, date) else date.fromisoformat(str(day))): rows
            for day, rows in connection.execute(sa.select(DRIFT_DAY_SUMMARIES.c.day, DRIFT_DAY_SUMMARIES.c.n_rows))
        }


def test_the_daily_step_stores_each_day_once_and_recounts_a_day_a_late_event_changed(week: Engine) -> None:
    first = summarise_days(week, TRAINING, WHOLE_DAYS)
    assert sorted(first.computed) == WHOLE_DAYS and first.unchanged == []
    assert sum(first.computed.values()) == sum(stored_rows(week).values()) > 0

    again = summarise_days(week, TRAINING, WHOLE_DAYS)
    assert again.computed == {} and again.unchanged == WHOLE_DAYS

    store_traffic(week, draw_traffic(3, seed=9), start=LATE_AT, end=LATE_AT + timedelta(minutes=1))
    after_late = summarise_days(week, TRAINING, WHOLE_DAYS)
    assert after_late.computed == {LATE_AT.date(): first.computed[LATE_AT.date()] + 3}
    assert sorted(after_late.unchanged) == [day for day in WHOLE_DAYS if day != LATE_AT.date()]
    assert stored_rows(week)[LATE_AT.date()] == first.computed[LATE_AT.date()] + 3


def test_the_weekly_run_from_stored_days_decides_exactly_as_the_whole_window_read(week: Engine) -> None:
    window = TimeWindow(WINDOW_START, WINDOW_END)
    assert read_window_from_days(week, TRAINING, window) is None  # nothing stored: the whole read
    whole = decided(run_job(week))

    summarise_days(week, TRAINING, WHOLE_DAYS)
    days = read_window_from_days(week, TRAINING, window)
    assert days is not None and list(days.stored_days) == WHOLE_DAYS
    assert [(part.start, part.end) for part in days.live] == [
        (WINDOW_START, datetime(2025, 3, 4, tzinfo=timezone.utc)),
        (datetime(2025, 3, 10, tzinfo=timezone.utc), WINDOW_END),
    ]
    from_days = decided(run_job(week))
    assert from_days == whole
    assert len({verdict for *_, verdict in whole["results"]}) > 1  # more than one verdict to agree on

    # A late event in a stored day: that day is read live until the daily step counts it again.
    store_traffic(week, draw_traffic(40, seed=9, shift="mean"), start=LATE_AT, end=LATE_AT + timedelta(minutes=1))
    days = read_window_from_days(week, TRAINING, window)
    assert days is not None and LATE_AT.date() not in days.stored_days
    with_late_from_days = decided(run_job(week))
    assert with_late_from_days["rows"] == whole["rows"] + 40

    with week.begin() as connection:
        connection.execute(sa.delete(DRIFT_DAY_SUMMARIES))
    with_late_whole = decided(run_job(week))
    assert with_late_from_days == with_late_whole

    summarise_days(week, TRAINING, WHOLE_DAYS)
    days = read_window_from_days(week, TRAINING, window)
    assert days is not None and list(days.stored_days) == WHOLE_DAYS
    assert decided(run_job(week)) == with_late_whole


def test_days_of_another_reference_are_not_merged(week: Engine) -> None:
    summarise_days(week, TRAINING, WHOLE_DAYS)
    retrained = build_manifest(draw_traffic(5_000, seed=7), version="v20250201-000000-def456")
    assert read_window_from_days(week, retrained, TimeWindow(WINDOW_START, WINDOW_END)) is None


def test_days_before_are_the_whole_utc_days_that_ended() -> None:
    assert days_before(datetime(2025, 3, 10, 0, 30, tzinfo=timezone.utc), 2) == [date(2025, 3, 8), date(2025, 3, 9)]

