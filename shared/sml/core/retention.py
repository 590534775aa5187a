"""Retention of ``predictions``: daily partitions dropped on MySQL, rows deleted day by day on SQLite.

On MySQL/MariaDB ``predictions`` is partitioned by ``RANGE COLUMNS (predicted_at)``
(``sql/0008_predictions_partitioned.mysql.sql``): one partition ``pYYYYMMDD`` per UTC day, holding
the rows predicted before the next day's midnight (the oldest also holds anything older), and
``pmax`` for everything later than the last day. :func:`apply_retention` is the scheduled step:

- it creates the partitions up to ``days_ahead`` days after today by splitting ``pmax``
  (``REORGANIZE PARTITION``; ``pmax`` is empty in steady state, so this moves no row);
- it drops the partitions of days older than ``retention_days`` before today (``DROP PARTITION``:
  the rows and their disk space go at once, whatever their number; a ``DELETE`` of the same rows
  takes seconds per million and frees no space in the tablespace, SCALE-NOTES.md).

SQLite has no partitions: the step deletes the old rows one day per transaction, so the writer
never waits behind one long delete. Only ``predictions`` is touched: labels (``ground_truth``),
refusals and stored runs keep their own retention. The days' row counts the writer keeps
(:mod:`sml.core.day_counts`) go with their rows.

How long rows must be kept follows from what reads them (:func:`retention_limits`): the weekly
run reads the current window and, with the ``previous`` reference, the window before it; a label
arriving up to the label horizon after its prediction must still find that prediction.

Example::

    outcome = apply_retention(engine, today=date(2026, 12, 7), retention_days=29)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sml.core.day_counts import delete_day_counts_before
from sml.core.db import PREDICTIONS, dialect_family
from sml.core.errors import SmlError
from sml.core.eventbridge import scheduled_time

MAX_PARTITION = "pmax"
DAYS_AHEAD = 3
"""Days of partitions kept ready after today, so a missed daily run never sends rows into ``pmax``."""
_DAY_PARTITION = re.compile(r"^p(?P<day>\d{8})$")


@dataclass(frozen=True)
class RetentionLimits:
    """The least and the default ``SML_RETENTION_DAYS`` for a window and a label horizon (whole days)."""

    minimum: int
    default: int


def retention_limits(window_days: float, label_horizon_days: float) -> RetentionLimits:
    """The retention a deployment needs, in whole days.

    ``minimum`` = ⌈2 × window + label horizon⌉ + 1: the current window and the ``previous``
    reference's window before it, the labels of their last predictions arriving up to the label
    horizon later, and one day because partitions are whole UTC days while windows end at any
    time. ``default`` adds one more window, so last week's run can be recomputed with its late
    labels.

    :param window_days: the weekly run's window (``SML_DRIFT_WINDOW_DAYS``), > 0.
    :param label_horizon_days: how long after a prediction its label may arrive (``SML_LABEL_HORIZON_DAYS``), >= 0.
    """
    minimum = math.ceil(2 * window_days + label_horizon_days) + 1
    return RetentionLimits(minimum=minimum, default=minimum + math.ceil(window_days))


@dataclass(frozen=True)
class RetentionOutcome:
    """What one retention step did. ``cutoff``: rows predicted before this day are gone (or going)."""

    cutoff: date
    created: list[str] = field(default_factory=list)
    """Partitions created (MySQL)."""
    dropped: list[str] = field(default_factory=list)
    """Partitions dropped (MySQL)."""
    deleted_rows: int = 0
    """Rows deleted (SQLite)."""

    def summary(self) -> dict[str, object]:
        return {"cutoff": self.cutoff.isoformat(), "created": self.created, "dropped": self.dropped, "deleted_rows": self.deleted_rows}


def partition_name(day: date) -> str:
    """The partition holding ``day``'s predictions: ``p`` + ``YYYYMMDD``."""
    return f"p{day:%Y%m%d}"


def prediction_partitions(connection: Connection) -> list[str]:
    """The partitions of ``predictions`` on MySQL, in order (``pmax`` last); empty when not partitioned."""
    rows = connection.execute(
        sa.text(
            "SELECT partition_name FROM information_schema.partitions "
            "WHERE table_schema = DATABASE() AND table_name = :table AND partition_name IS NOT NULL "
            "ORDER BY partition_ordinal_position"
        ),
        {"table": PREDICTIONS.name},
    )
    return [row[0] for row in rows]


def partition_days(partitions: list[str]) -> list[date]:
    """The days of the daily partitions (``pmax`` excluded).

    :raises SmlError: a partition this module did not name, or ``pmax`` missing or not last.
    """
    if not partitions:
        raise SmlError("predictions is not partitioned on this MySQL database: apply the migrations first (sml db migrate)")
    if partitions[-1] != MAX_PARTITION:
        raise SmlError(f"predictions: the last partition is {partitions[-1]!r}, expected {MAX_PARTITION!r}")
    days = []
    for name in partitions[:-1]:
        match = _DAY_PARTITION.match(name)
        if match is None:
            raise SmlError(f"predictions: partition {name!r} is not a day partition (pYYYYMMDD)")
        days.append(datetime.strptime(match["day"], "%Y%m%d").date())
    return days


def apply_retention(
    engine: Engine, *, today: date, retention_days: int, days_ahead: int = DAYS_AHEAD, on_step: Callable[[str], None] | None = None
) -> RetentionOutcome:
    """Keep ``retention_days`` whole days before ``today`` (and today) of ``predictions``; idempotent.

    :param today: the UTC day of the run (a scheduled event's day).
    :param retention_days: days kept before today; validated by the caller against :func:`retention_limits`.
    :param days_ahead: partitions created after today (MySQL).
    :param on_step: called with each DDL statement or day deleted, before it runs (logging).
    :raises SmlError: MySQL table not partitioned as the migrations leave it.
    """
    if retention_days < 1:
        raise SmlError(f"retention_days must be at least 1, got {retention_days}")
    cutoff = today - timedelta(days=retention_days)
    notify = on_step or (lambda _step: None)
    if dialect_family(engine) == "sqlite":
        return RetentionOutcome(cutoff=cutoff, deleted_rows=_delete_days_before(engine, cutoff, notify))
    with engine.connect() as connection:
        days = partition_days(prediction_partitions(connection))
        first_new = cutoff - timedelta(days=1) if not days else max(days[-1] + timedelta(days=1), cutoff - timedelta(days=1))
        new_days = _days_between(first_new, today + timedelta(days=days_ahead))
        quote = engine.dialect.identifier_preparer.quote
        table = quote(PREDICTIONS.name)
        if new_days:
            definitions = ", ".join(
                f"PARTITION {partition_name(day)} VALUES LESS THAN ('{day + timedelta(days=1):%Y-%m-%d}')" for day in new_days
            )
            statement = f"ALTER TABLE {table} REORGANIZE PARTITION {MAX_PARTITION} INTO ({definitions}, PARTITION {MAX_PARTITION} VALUES LESS THAN (MAXVALUE))"
            notify(statement)
            connection.exec_driver_sql(statement)
        dropped = [partition_name(day) for day in [*days, *new_days] if day < cutoff]
        if dropped:
            statement = f"ALTER TABLE {table} DROP PARTITION {', '.join(dropped)}"
            notify(statement)
            connection.exec_driver_sql(statement)
        delete_day_counts_before(connection, cutoff)
        connection.commit()
    return RetentionOutcome(cutoff=cutoff, created=[partition_name(day) for day in new_days], dropped=dropped)


def _days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _delete_days_before(engine: Engine, cutoff: date, notify: Callable[[str], None]) -> int:
    with engine.connect() as connection:
        oldest = connection.execute(sa.select(sa.func.min(PREDICTIONS.c.predicted_at))).scalar()
    if oldest is None:
        return 0
    oldest_day = oldest.date() if isinstance(oldest, datetime) else datetime.fromisoformat(str(oldest)).date()
    deleted = 0
    for day in _days_between(oldest_day, cutoff - timedelta(days=1)):
        notify(f"DELETE predictions of {day.isoformat()} and before")
        with engine.begin() as connection:
            before = datetime.combine(day + timedelta(days=1), time())
            deleted += connection.execute(PREDICTIONS.delete().where(PREDICTIONS.c.predicted_at < before)).rowcount
            delete_day_counts_before(connection, day + timedelta(days=1))
    return deleted


def run_retention_step(engine: Engine, settings: Any, event: Mapping[str, Any], logger: logging.Logger | Any) -> RetentionOutcome:
    """The scheduled step as the functions run it: the UTC day of the event's ``time`` (an
    EventBridge scheduled event's, or now when absent), ``settings.effective_retention_days``
    (:class:`sml.core.settings.RetentionSettings`), each statement logged before it runs.

    :raises ValueError: ``time`` is not an ISO 8601 timestamp, naming the field.
    """
    moment = scheduled_time(event, default_now=True)
    days = settings.effective_retention_days
    outcome = apply_retention(engine, today=moment.date(), retention_days=days, on_step=lambda step: logger.info("retention: %s", step))
    logger.info("retention kept %d days: %s", days, outcome.summary())
    return outcome
