"""Rows of ``predictions`` per model, model version and UTC day, kept as they are inserted.

``prediction_day_counts`` (``sql/0010``) holds one row per (model, version, day of
``predicted_at``): the writer's insert (:func:`sml.writer.batch.insert_prediction_rows`, which the
writer, the DLQ replay through the queue and ``sml rebuild`` all use) adds the rows it actually
inserted, in the transaction that inserts them. A redelivered or replayed event that is skipped adds
nothing, a late event adds to its own day. The retention step deletes the counts of the days it
drops (:func:`delete_day_counts_before`). So while every row goes through that insert, a day's
count equals its ``COUNT(*)``, and the weekly run and the daily step (:mod:`sml.monitoring.daily`)
tell that a day changed by reading a few rows instead of counting a million index entries.

What the counts do not see: rows stored before the table existed (the day the migration ran is
counted only from then on), rows inserted by anything else (``LOAD DATA``, hand-written SQL), and,
on MySQL, an event inserted by two writers at the same moment (both count it; see
``insert_prediction_rows``). A reader therefore trusts a day's count only after it has once
equalled the rows actually read for that day (``drift_day_summary_counts``), and counts the
day's rows otherwise; a count that is off afterwards only makes a day look changed, which costs a
recount, never a stale summary, unless rows are added behind the writer's back.

Concurrent writers update the same (model, version, day) row; each transaction updates its days in
key order, last before its commit, so they queue for that row briefly and never deadlock on it.

Example::

    with engine.begin() as connection:
        add_inserted_rows(connection, inserted_rows)        # the writer, after its INSERT
    read_day_counts(engine, "breast-cancer", "v3", date(2026, 12, 1), date(2026, 12, 7))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine

from sml.core.db import PREDICTION_DAY_COUNTS, dialect_family

_KEY = ("model_name", "model_version", "day")


def add_inserted_rows(connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add ``rows`` (``predictions`` rows just inserted in ``connection``'s transaction: ``model_name``,
    ``model_version``, ``predicted_at`` naive UTC) to their days' counts, in that transaction.

    One multi-row upsert, its rows in key order (two writers lock shared days in the same order).
    """
    counts = Counter((row["model_name"], row["model_version"], row["predicted_at"].date()) for row in rows)
    if not counts:
        return
    values = [{"model_name": model, "model_version": version, "day": day, "n_rows": n} for (model, version, day), n in sorted(counts.items())]
    table = PREDICTION_DAY_COUNTS
    if dialect_family(connection.engine) == "sqlite":
        statement: Any = sqlite.insert(table).values(values)
        statement = statement.on_conflict_do_update(index_elements=list(_KEY), set_={"n_rows": table.c.n_rows + statement.excluded.n_rows})
    else:
        statement = mysql.insert(table).values(values)
        statement = statement.on_duplicate_key_update(n_rows=table.c.n_rows + statement.inserted.n_rows)
    connection.execute(statement)


def read_day_counts(engine: Engine | Connection, model_name: str, model_version: str, first: date, last: date) -> dict[date, int]:
    """The counted rows of ``model_name``'s ``model_version`` per UTC day from ``first`` to ``last``
    (inclusive); a day without a count is absent (no row inserted by the writer since the table
    existed, or dropped by retention)."""
    table = PREDICTION_DAY_COUNTS
    query = sa.select(table.c.day, table.c.n_rows).where(
        table.c.model_name == model_name, table.c.model_version == model_version, table.c.day >= first, table.c.day <= last
    )
    if isinstance(engine, Connection):
        return {as_date(day): int(n) for day, n in engine.execute(query)}
    with engine.connect() as connection:
        return {as_date(day): int(n) for day, n in connection.execute(query)}


def delete_day_counts_before(connection: Connection, cutoff: date) -> int:
    """Delete every model's counts of the days before ``cutoff`` (their rows were dropped); returns how many."""
    return connection.execute(sa.delete(PREDICTION_DAY_COUNTS).where(PREDICTION_DAY_COUNTS.c.day < cutoff)).rowcount


def as_date(value: Any) -> date:
    """A day column's value as a ``date``: drivers give a ``date``, a ``datetime`` or ISO text (SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
