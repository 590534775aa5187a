"""Tables rebuilt from the archive: every archived event of some days inserted again by the writer's own code.

The rows go through :mod:`sml.writer.batch`'s idempotent inserts (a prediction or refusal stored
already is skipped, the latest ``labelled_at`` of a label wins), so a rebuild can run over a
table that still holds some of the rows, be stopped and run again, and copies in the archive
count once. What comes back: every column as the writer stored it, except that a feature's
integer value comes back as a float (``3`` as ``3.0``: the archive keeps numbers as float64)
and a row redelivered after its archive put failed keeps the ``stored_at`` of its archived copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.archive.layout import GROUND_TRUTH_TABLE, PREDICTIONS_TABLE, REFUSALS_TABLE, TABLES
from sml.archive.parquet import DEDUPLICATION_KEY, EVENT_ID, Row, read_parquet_bytes, table_rows
from sml.archive.store import ArchiveLocation, iter_objects
from sml.core.db import apply_migrations
from sml.core.errors import SmlError
from sml.writer.batch import BatchNotStored, WriteOutcome, write_ground_truth_rows, write_prediction_rows, write_refusal_rows


@dataclass
class TableRebuilt:
    """One table's rebuild: archive objects and rows read, and events read, inserted, skipped, rejected.

    Every count but ``rows`` counts events (a prediction, a label, a refusal), so ``events ==
    inserted + skipped + rejected``; ``rows`` differs from ``events`` only for ``predict_refusals``,
    where an event is a row per field and reason. ``skipped``: the event was stored already (a copy
    in the archive, or a table that kept it), or, for a label, a later label of its prediction wins.
    """

    objects: int = 0
    rows: int = 0
    events: int = 0
    inserted: int = 0
    skipped: int = 0
    rejected: int = 0


def rebuild_tables(
    engine: Engine,
    s3: Any,
    location: ArchiveLocation,
    since: date,
    until: date,
    *,
    tables: Sequence[str] = TABLES,
    models: Sequence[str] | None = None,
) -> dict[str, TableRebuilt]:
    """Insert the archived events of the days ``since`` to ``until`` (inclusive, UTC) into ``tables``.

    The schema is brought up to date first (the migrations create dropped tables when
    ``schema_migrations`` went with them).

    :param models: the models whose predictions and refusals to restore; every model by default.
    :returns: per table, a :class:`TableRebuilt`.
    :raises SmlError: an unknown table, a table missing although its migration is recorded, an
        archive object that is not Parquet of the archive's columns (named), or a database that
        cannot take the rows.
    """
    unknown = [table for table in tables if table not in TABLES]
    if unknown:
        raise SmlError(f"--tables: unknown table {unknown[0]!r} (expected some of {', '.join(TABLES)})")
    apply_migrations(engine)
    missing = [table for table in tables if not sa.inspect(engine).has_table(table)]
    if missing:
        raise SmlError(
            f"table {missing[0]} is missing although schema_migrations records its migration; "
            "drop schema_migrations too (sml rebuild then recreates every table) or recreate the table"
        )
    outcome = {}
    for table in tables:
        rebuilt = outcome[table] = TableRebuilt()
        for item, data in iter_objects(s3, location, table, since, until, models):
            try:
                rows = table_rows(table, read_parquet_bytes(data))
            except (pa.ArrowException, ValueError) as exc:
                raise SmlError(f"rebuild of {table}: {location.uri(item.key)} is not an archive object that can be read ({exc})") from exc
            events = _events(table, rows)
            rebuilt.objects += 1
            rebuilt.rows += len(rows)
            rebuilt.events += len(events)
            try:
                written = _WRITERS[table](engine, rows)
            except BatchNotStored as exc:
                raise SmlError(f"rebuild of {table}: {exc}") from exc
            # The writers count in their own units (labels per prediction, refusals per event); the
            # rejected keys are event ids, so the events they cover are counted from the rows.
            rejected = sum(1 for key in events if key[0] in written.rejected)
            rebuilt.inserted += written.inserted
            rebuilt.rejected += rejected
            rebuilt.skipped += len(events) - written.inserted - rejected
    return outcome


def _events(table: str, rows: list[Row]) -> set[tuple[Any, ...]]:
    """The distinct events of ``rows``, each as its deduplication key (the event id first)."""
    key = (EVENT_ID[table],) if table == REFUSALS_TABLE else DEDUPLICATION_KEY[table]
    return {tuple(row[name] for name in key) for row in rows}


def _write_predictions(engine: Engine, rows: list[Row]) -> WriteOutcome:
    return write_prediction_rows(engine, list({row["prediction_id"]: row for row in reversed(rows)}.values()))


def _write_labels(engine: Engine, rows: list[Row]) -> WriteOutcome:
    # The writer's rule inside one statement: per prediction, the latest labelled_at, the first stored on a tie.
    latest: dict[str, Row] = {}
    for row in sorted(rows, key=lambda row: row["stored_at"]):
        kept = latest.get(row["prediction_id"])
        if kept is None or row["labelled_at"] > kept["labelled_at"]:
            latest[row["prediction_id"]] = row
    return write_ground_truth_rows(engine, list(latest.values()))


def _write_refusals(engine: Engine, rows: list[Row]) -> WriteOutcome:
    events: dict[str, dict[str, Any]] = {}
    for row in rows:
        event = events.setdefault(row["refusal_id"], {"refusal_id": row["refusal_id"], "rows": {}})
        event["rows"].setdefault((row["field_name"], row["reason"]), row)
    return write_refusal_rows(engine, [{"refusal_id": key, "rows": list(event["rows"].values())} for key, event in events.items()])


_WRITERS: dict[str, Callable[[Engine, list[Row]], WriteOutcome]] = {
    PREDICTIONS_TABLE: _write_predictions,
    GROUND_TRUTH_TABLE: _write_labels,
    REFUSALS_TABLE: _write_refusals,
}
