"""The writer's per-day row counts on SQLite and MariaDB: they follow the rows actually inserted
(redelivery, conflicting duplicates, late events, replays, retention, rebuilds), and the daily step
and the weekly run trust a day's count only once it agreed with the rows read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from drift_support import build_manifest, draw_traffic, store_traffic, traffic_rows
from sqlalchemy.engine import Engine
from writer_support import event_body

from sml.core.db import PREDICTION_DAY_COUNTS, PREDICTIONS, create_db_engine
from sml.core.retention import apply_retention
from sml.monitoring.daily import day_window, read_window_from_days, summarise_days
from sml.monitoring.windows import TimeWindow
from sml.writer.batch import write_batch, write_prediction_rows

TODAY = date(2026, 12, 7)
TRAINING = build_manifest(draw_traffic(2_000, seed=1))
DAYS = [date(2025, 3, 4) + timedelta(days=offset) for offset in range(3)]


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def predicted_on(day: date, hour: int = 12, model_version: str | None = None, **features: Any) -> str:
    body = json.loads(event_body(**features))
    body["predicted_at"] = f"{day.isoformat()}T{hour:02d}:00:00Z"
    if model_version:
        body["model_version"] = model_version
    return json.dumps(body)


def numbered(bodies: list[str], prefix: str = "m") -> list[tuple[str, str]]:
    return [(f"{prefix}{index}", body) for index, body in enumerate(bodies)]


def counted(engine: Engine) -> dict[tuple[str, str, date], int]:
    table = PREDICTION_DAY_COUNTS
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.model_name, table.c.model_version, table.c.day, table.c.n_rows))
        return {(model, version, _date(day)): int(n) for model, version, day, n in rows}


def actual(engine: Engine) -> dict[tuple[str, str, date], int]:
    day = sa.func.date(PREDICTIONS.c.predicted_at)
    query = sa.select(PREDICTIONS.c.model_name, PREDICTIONS.c.model_version, day, sa.func.count()).group_by(
        PREDICTIONS.c.model_name, PREDICTIONS.c.model_version, day
    )
    with engine.connect() as connection:
        return {(model, version, _date(value)): int(n) for model, version, value, n in connection.execute(query)}


def _date(value: Any) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


def test_only_rows_actually_inserted_count_whatever_is_delivered_again(engine: Engine) -> None:
    days = [TODAY - timedelta(days=offset) for offset in (2, 1, 1, 0, 0, 0)]
    bodies = [predicted_on(day, hour=index) for index, day in enumerate(days)]
    bodies.append(predicted_on(TODAY, model_version="v2"))

    first = write_batch(engine, numbered(bodies[:4] + bodies[:2]))  # two copies inside the batch
    assert (first.inserted, first.duplicates) == (4, 2)
    assert counted(engine) == actual(engine)

    # Redelivered in full, then a replay that mixes stored and new events in one statement.
    assert write_batch(engine, numbered(bodies[:4], "again")).inserted == 0
    replay = write_batch(engine, numbered(bodies, "replay"))
    assert (replay.inserted, replay.duplicates) == (3, 4)
    assert counted(engine) == actual(engine) == {
        ("breast-cancer", "v1", TODAY - timedelta(days=2)): 1,
        ("breast-cancer", "v1", TODAY - timedelta(days=1)): 2,
        ("breast-cancer", "v1", TODAY): 3,
        ("breast-cancer", "v2", TODAY): 1,
    }


def test_a_conflicting_duplicate_is_not_counted_on_its_own_day(engine: Engine) -> None:
    original = json.loads(predicted_on(TODAY))
    conflicting = {**original, "predicted_at": f"{(TODAY - timedelta(days=3)).isoformat()}T08:00:00Z", "features": {"radius": 1.0}}
    write_batch(engine, numbered([json.dumps(original)]))

    outcome = write_batch(engine, numbered([json.dumps(conflicting), predicted_on(TODAY, hour=3)], "later"))

    assert outcome.conflicting_predictions == (original["prediction_id"],)
    assert counted(engine) == actual(engine) == {("breast-cancer", "v1", TODAY): 2}


def test_a_rejected_row_is_not_counted_and_its_batch_neighbours_are(engine: Engine) -> None:
    rows = traffic_rows(draw_traffic(4, seed=3), start=datetime(2025, 3, 4, tzinfo=timezone.utc), end=datetime(2025, 3, 6, tzinfo=timezone.utc))
    rows[1] = {**rows[1], "prediction": "x" * 300}  # VARCHAR(255): refused on MariaDB; SQLite stores it

    outcome = write_prediction_rows(engine, rows)

    assert outcome.inserted + len(outcome.rejected) == 4
    assert counted(engine) == actual(engine)


def test_retention_takes_the_counts_of_the_days_it_drops(engine: Engine) -> None:
    write_batch(engine, numbered([predicted_on(TODAY - timedelta(days=offset)) for offset in (40, 31, 30, 1, 0)]))

    outcome = apply_retention(engine, today=TODAY, retention_days=30)

    assert sorted(day for _, _, day in counted(engine)) == [TODAY - timedelta(days=offset) for offset in (30, 1, 0)]
    assert counted(engine) == actual(engine)
    # An event of a dropped day replayed later counts again, as a row stored again.
    write_batch(engine, numbered([predicted_on(outcome.cutoff - timedelta(days=2))], "replayed"))
    assert counted(engine) == actual(engine)


def test_the_daily_step_and_the_weekly_run_read_counts_instead_of_counting_rows(engine: Engine) -> None:
    start = datetime.combine(DAYS[0], datetime.min.time(), tzinfo=timezone.utc)
    store_traffic(engine, draw_traffic(600, seed=2), start=start, end=start + timedelta(days=len(DAYS)))
    window = TimeWindow(start, start + timedelta(days=len(DAYS)))
    summarise_days(engine, TRAINING, DAYS)

    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _k, statement, *_: statements.append(statement))
    again = summarise_days(engine, TRAINING, DAYS)
    from_days = read_window_from_days(engine, TRAINING, window)

    assert again.unchanged == DAYS and not again.computed
    assert from_days is not None and list(from_days.stored_days) == DAYS and from_days.summary.n_rows == 600
    assert not [statement for statement in statements if "FROM predictions" in statement], statements

    # A late event bumps its day's count: that day is read live, then counted again by the step.
    late = start + timedelta(days=1, hours=5)
    store_traffic(engine, draw_traffic(7, seed=5), start=late, end=late + timedelta(minutes=1))
    from_days = read_window_from_days(engine, TRAINING, window)
    assert from_days is not None and list(from_days.stored_days) == [DAYS[0], DAYS[2]] and from_days.summary.n_rows == 607
    assert summarise_days(engine, TRAINING, DAYS).computed == {DAYS[1]: 207}


def test_a_day_whose_count_missed_rows_is_checked_by_counting_them(engine: Engine) -> None:
    # Rows stored behind the writer (before the counts existed, or loaded by hand) are not counted.
    start = datetime.combine(DAYS[0], datetime.min.time(), tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(sa.insert(PREDICTIONS), traffic_rows(draw_traffic(50, seed=2), start=start, end=start + timedelta(hours=6)))
    store_traffic(engine, draw_traffic(30, seed=3), start=start + timedelta(hours=6), end=start + timedelta(hours=12))
    assert summarise_days(engine, TRAINING, DAYS[:1]).computed == {DAYS[0]: 80}  # its count said 30

    # 50 writer-counted late events bring the count to 80, the stored n_rows: a check by count
    # alone would take the stale summary; the day is counted instead, and found changed.
    store_traffic(engine, draw_traffic(50, seed=4), start=start + timedelta(hours=13), end=start + timedelta(hours=14))
    assert counted(engine)[(TRAINING.model_name, TRAINING.version, DAYS[0])] == 80
    assert read_window_from_days(engine, TRAINING, day_window(DAYS[0])) is None
    assert summarise_days(engine, TRAINING, DAYS[:1]).computed == {DAYS[0]: 130}
    # Still not trusted (its count is 80): unchanged by COUNT(*), changed by a row stored by hand.
    assert summarise_days(engine, TRAINING, DAYS[:1]).unchanged == DAYS[:1]
    with engine.begin() as connection:
        connection.execute(sa.insert(PREDICTIONS), traffic_rows(draw_traffic(1, seed=6), start=start + timedelta(hours=20), end=start + timedelta(hours=21)))
    assert summarise_days(engine, TRAINING, DAYS[:1]).computed == {DAYS[0]: 131}
