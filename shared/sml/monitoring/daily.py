"""A day's window summaries, computed once and stored, so the weekly run reads days, not rows.

The daily step (:func:`summarise_days`, the drift function's ``daily_summaries`` action on its own
daily schedule) counts each whole UTC day of a model's predictions into a
:class:`~sml.monitoring.summaries.WindowSummary` against the champion's training reference and
stores it in ``drift_day_summaries``, keyed by (model, manifest version, day, reference id) with
the number of rows it counted: the rows that version predicted (another version's rows that day
have their own features; the weekly run counts them apart). It is idempotent: a day whose rows
are unchanged is left as it is; a day that changed (a late event, a replay after an outage) is
counted again and replaced.

Whether a day changed is told by the row counts the writer keeps per day
(:mod:`sml.core.day_counts`), without reading the day's rows: the daily step reads the day's
count before it reads the rows, and stores it beside the summary (``drift_day_summary_counts``)
when the two agree; while the day's count still equals it, the day is unchanged. A day whose count
never agreed (rows stored before the counts existed, the day the migration ran, rows loaded behind
the writer) is stored without one and checked as before the counts existed: its
``COUNT(*)`` over the model's time index must equal the stored ``n_rows``. Reading the count
before the rows errs one way only: an event stored in between is in the summary but not in the
count stored with it, so the day looks changed and is counted again.

The weekly run (:func:`read_window_from_days`) reads the counts of the window's whole days (a few
rows), merges the stored summaries of the days that are unchanged, and reads live
(:func:`sml.monitoring.windows.read_windows_summaries`) everything else: the partial days at the
window's ends, and whole days never stored or stored before they changed. Counts merge by adding,
so the summary, hence every KS, chi-square and missing-rate statistic, p-value and verdict, equals
the one read from the whole window. Two things are not bit for bit: floating-point sums (the
moments, and the sums beyond the reference's range that Wasserstein uses) are added in another
order, and the report's list of the most frequent unseen categories can lose a value after merges
(:class:`~sml.monitoring.summaries.CategoricalSummary`).

A day is the UTC calendar day of ``predicted_at``. The equality of counts is the staleness test:
a late event and a deletion on the same day (the retention step drops whole days only, and their
counts with them) would cancel out, which no writer path does; a row added behind the writer (not
through :func:`sml.writer.batch.insert_prediction_rows`) to a day whose count agreed is not seen.

Example::

    summarise_days(engine, manifest, days_before(now, 7))     # daily, after midnight UTC
    week = read_window_from_days(engine, manifest, window)    # weekly: None when no day is stored
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.day_counts import as_date, read_day_counts
from sml.core.db import DRIFT_DAY_SUMMARIES, DRIFT_DAY_SUMMARY_COUNTS, PREDICTIONS, to_db_timestamp
from sml.lifecycle.manifest import ModelManifest
from sml.monitoring.summaries import CategoricalGrid, NumericGrid, SummaryReference, WindowSummariser, WindowSummary
from sml.monitoring.windows import TimeWindow, _hinted, read_windows_summaries

ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class DailyStepResult:
    """What one daily step did: the days it counted (with their rows) and those it left unchanged."""

    model_name: str
    model_version: str
    reference_id: str
    computed: dict[date, int] = field(default_factory=dict)
    unchanged: list[date] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly, as the drift function returns and logs it."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "reference_id": self.reference_id,
            "days_computed": {day.isoformat(): rows for day, rows in sorted(self.computed.items())},
            "days_unchanged": [day.isoformat() for day in sorted(self.unchanged)],
        }


@dataclass(frozen=True)
class DaysRead:
    """How :func:`read_window_from_days` read a window: the stored days it merged and the live time ranges."""

    summary: WindowSummary
    stored_days: tuple[date, ...]
    live: tuple[TimeWindow, ...]


def reference_id(reference: SummaryReference) -> str:
    """A SHA-256 (hex, 64 characters) of what counting depends on: each column's name and kind,
    a numeric grid's distinct values (their digest), a categorical grid's known categories."""

    def grid_identity(grid: Any) -> Any:
        if isinstance(grid, NumericGrid):
            return ["numeric", grid.digest, int(grid.values.size)]
        if isinstance(grid, CategoricalGrid):
            return ["categorical", list(grid.known)]
        return None

    identity = {
        "features": [[name, grid_identity(grid)] for name, grid in reference.features.items()],
        "prediction": grid_identity(reference.prediction),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def days_before(moment: datetime, count: int) -> list[date]:
    """The ``count`` whole UTC days that ended by ``moment`` (aware), oldest first."""
    today = moment.astimezone(timezone.utc).date()
    return [today - ONE_DAY * offset for offset in range(count, 0, -1)]


def day_window(day: date) -> TimeWindow:
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    return TimeWindow(start, start + ONE_DAY)


def day_counts(engine: Engine, model_name: str, start: datetime, end: datetime, version: str | None = None) -> dict[date, int]:
    """Predictions of ``model_name`` (of ``version`` only, when given) per UTC day of
    ``predicted_at`` in ``[start, end)`` (aware); days without predictions are absent. One
    ``GROUP BY`` over the model's time index."""
    day = sa.func.date(PREDICTIONS.c.predicted_at)
    query = _hinted(
        sa.select(day, sa.func.count())
        .select_from(PREDICTIONS)
        .where(
            PREDICTIONS.c.model_name == model_name,
            PREDICTIONS.c.predicted_at >= to_db_timestamp(start),
            PREDICTIONS.c.predicted_at < to_db_timestamp(end),
            *([] if version is None else [PREDICTIONS.c.model_version == version]),
        )
        .group_by(day)
    )
    with engine.connect() as connection:
        return {as_date(value): int(count) for value, count in connection.execute(query)}


@dataclass(frozen=True)
class StoredDay:
    """A stored day summary: the rows it counted, the writer's count of the day it was checked
    against (``None`` when they did not agree, or it was stored before counts), and its JSON text."""

    n_rows: int
    day_count: int | None
    summary: str


def stored_days(engine: Engine, model_name: str, model_version: str, reference: str, days: Sequence[date]) -> dict[date, StoredDay]:
    """The stored summaries of those ``days`` that have one."""
    if not days:
        return {}
    table, counts = DRIFT_DAY_SUMMARIES, DRIFT_DAY_SUMMARY_COUNTS
    joined = table.outerjoin(
        counts,
        sa.and_(*(table.c[name] == counts.c[name] for name in ("model_name", "model_version", "day", "reference_id"))),
    )
    query = (
        sa.select(table.c.day, table.c.n_rows, counts.c.day_count, table.c.summary)
        .select_from(joined)
        .where(
            table.c.model_name == model_name,
            table.c.model_version == model_version,
            table.c.reference_id == reference,
            table.c.day >= min(days),
            table.c.day <= max(days),
        )
    )
    with engine.connect() as connection:
        return {
            as_date(day): StoredDay(int(rows), None if count is None else int(count), text) for day, rows, count, text in connection.execute(query)
        }


def unchanged_days(engine: Engine, manifest: ModelManifest, stored: dict[date, StoredDay], counts: dict[date, int]) -> list[date]:
    """The days of ``stored`` whose rows are the ones their summary counted, ascending.

    A day stored with the writer's count (:attr:`StoredDay.day_count`) is unchanged while ``counts`` (the
    writer's counts now, :func:`sml.core.day_counts.read_day_counts`) still holds that count; a
    day stored without one while its ``COUNT(*)`` (one ``GROUP BY`` over those days' index range)
    equals the rows stored.
    """
    unchanged = [day for day, entry in stored.items() if entry.day_count is not None and counts.get(day) == entry.day_count == entry.n_rows]
    unknown = sorted(day for day, entry in stored.items() if entry.day_count is None)
    if unknown:
        counted = day_counts(engine, manifest.model_name, day_window(unknown[0]).start, day_window(unknown[-1]).end, manifest.version)
        unchanged += [day for day in unknown if counted.get(day, 0) == stored[day].n_rows]
    return sorted(unchanged)


def summarise_days(engine: Engine, manifest: ModelManifest, days: Iterable[date], *, now: datetime | None = None) -> DailyStepResult:
    """Count each of ``days`` into a summary against ``manifest``'s training reference and store it,
    unless the stored one is of the day's rows as they are now (see the module doc).

    The days to count are read in turn by :func:`sml.monitoring.windows.read_windows_summaries`
    (the database prepares the next day while this one is counted), each given its count to size
    its slices, so no day is counted with ``COUNT(*)`` first.

    :param days: UTC days that have ended (a day not yet over would be counted again tomorrow).
    :param now: the time recorded as ``computed_at`` (default: now).
    :returns: the days counted, with their rows, and the days left unchanged.
    """
    reference = SummaryReference.from_manifest(manifest)
    identity = reference_id(reference)
    days = sorted(set(days))
    result = DailyStepResult(manifest.model_name, manifest.version, identity)
    if not days:
        return result
    # Read before any row: an event stored after this read only makes its day look changed.
    counts = read_day_counts(engine, manifest.model_name, manifest.version, days[0], days[-1])
    unchanged = unchanged_days(engine, manifest, stored_days(engine, manifest.model_name, manifest.version, identity, days), counts)
    result.unchanged.extend(unchanged)
    changed = sorted(set(days).difference(unchanged))
    # The next day's rows are prepared by the database while this day's are counted.
    reads = read_windows_summaries(
        engine, manifest.model_name, [day_window(day) for day in changed], manifest.features, [reference],
        version=manifest.version, expected_rows=[counts.get(day) for day in changed],
    )
    for day, (_window, (summary,)) in zip(changed, reads):
        count = counts.get(day)
        _store_day(engine, manifest, identity, day, summary, count if count == summary.n_rows else None, now or datetime.now(timezone.utc))
        result.computed[day] = summary.n_rows
    return result


def read_window_from_days(engine: Engine, manifest: ModelManifest, window: TimeWindow) -> DaysRead | None:
    """``window``'s summary against ``manifest``'s training reference from the stored days that
    are unchanged, plus the live read of the rest (see the module doc).

    :returns: ``None`` when no whole day of the window has a usable stored summary (the caller
        reads the window as before).
    """
    reference = SummaryReference.from_manifest(manifest)
    identity = reference_id(reference)
    first = window.start.date() if window.start == day_window(window.start.date()).start else window.start.date() + ONE_DAY
    whole = [first + ONE_DAY * offset for offset in range(max(0, (window.end.date() - first).days))]
    if not whole:
        return None
    counts = read_day_counts(engine, manifest.model_name, manifest.version, whole[0], whole[-1])
    stored = stored_days(engine, manifest.model_name, manifest.version, identity, whole)
    usable = unchanged_days(engine, manifest, stored, counts)
    if not usable:
        return None
    merged = WindowSummariser(reference).summary()
    for day in usable:
        merged = merged.merge(WindowSummary.from_json(json.loads(stored[day].summary)))
    live = _live_ranges(window, [day_window(day) for day in usable])
    for _part, (summary,) in read_windows_summaries(engine, manifest.model_name, live, manifest.features, [reference], version=manifest.version):
        merged = merged.merge(summary)
    return DaysRead(summary=merged, stored_days=tuple(usable), live=tuple(live))


def _live_ranges(window: TimeWindow, covered: Sequence[TimeWindow]) -> list[TimeWindow]:
    """The parts of ``window`` outside ``covered`` (ascending, disjoint days inside it)."""
    ranges, cursor = [], window.start
    for day in covered:
        if day.start > cursor:
            ranges.append(TimeWindow(cursor, day.start))
        cursor = day.end
    if cursor < window.end:
        ranges.append(TimeWindow(cursor, window.end))
    return ranges


def _store_day(engine: Engine, manifest: ModelManifest, identity: str, day: date, summary: WindowSummary, day_count: int | None, now: datetime) -> None:
    key = {"model_name": manifest.model_name, "model_version": manifest.version, "day": day, "reference_id": identity}
    row = {
        **key,
        "n_rows": summary.n_rows,
        "summary": json.dumps(summary.to_json(), separators=(",", ":")),
        "computed_at": to_db_timestamp(now),
    }
    # Replace in one transaction: a weekly run reads the old row or the new one, never neither,
    # and never a summary beside another one's count.
    with engine.begin() as connection:
        for table in (DRIFT_DAY_SUMMARIES, DRIFT_DAY_SUMMARY_COUNTS):
            connection.execute(sa.delete(table).where(*(table.c[name] == value for name, value in key.items())))
        connection.execute(sa.insert(DRIFT_DAY_SUMMARIES).values(**row))
        if day_count is not None:
            connection.execute(sa.insert(DRIFT_DAY_SUMMARY_COUNTS).values(**key, day_count=day_count))
