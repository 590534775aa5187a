"""Will the weekly run fit its function? An estimate from the window's row count, checked before reading.

Lambda kills a function that passes its memory or its timeout and reports only an error: no stored
run, no report, no alert. The drift function therefore counts the rows it is about to read (one
``COUNT(*)`` over the ``(model_name, predicted_at)`` index) and refuses, naming the numbers, a run
whose estimate does not fit in what it has.

The costs are those measured for the weekly run that counts the window into summaries as it reads
it (``run_drift_job`` in a fresh process, peak RSS by ``VmHWM``; ``bench/scale_bench.py``: MariaDB
10.11, 20 numeric features, a 10,000-row training reference, model quality on, S3 and SNS on moto
in-process, on a shared 2-core machine, 2026-12-07). From the database: peak RSS 225.6 MiB at 100k
rows, 226.0 MiB at 1M and 227.2 MiB at 10M (215.2 MiB before the run): flat, taken as 230 MiB and
1 MiB per million; client CPU 6.4 s at 1M and 57.6 s at 10M, to which the database adds about
4.4 s per million (SCALE-NOTES.md), so ~12.5 s of CPU per million rows (the wall time on that
loaded machine, with the database on the same two cores, was 42 s per million). From
DuckDB over the archive (``SML_WINDOW_SOURCE=duckdb``): 491 MiB at 1M rows for the whole run (281.8
MiB before it; pyarrow and DuckDB imported) and 464 MiB for the drift read alone at 10M (425 MiB at
1M): DuckDB's library and the row groups it decodes, taken as 500 MiB and 5 MiB per million; the
time is taken as the database's.
Against the ``previous`` reference a run also holds one day of the previous window as arrays at a
time (:mod:`sml.monitoring.previous_reference`), costed at :data:`HELD_MIB_PER_MILLION_ROWS`, the
read that held a window's values. A run keeps :data:`HEADROOM` of its limits free for the
estimate's error.

Example::

    estimate = check_run_fits(rows=30_000_000, memory_limit_mib=2048, seconds_left=890.0)  # raises RunTooLarge
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.db import PREDICTIONS, to_db_timestamp
from sml.core.errors import SmlError


@dataclass(frozen=True)
class RowCosts:
    """What a weekly run costs reading from one window source: peak memory (MiB) as a base plus a
    slope per million rows read, and seconds of CPU (client and database) per million rows."""

    base_mib: float
    mib_per_million_rows: float
    seconds_per_million_rows: float


COSTS = {
    "database": RowCosts(base_mib=230.0, mib_per_million_rows=1.0, seconds_per_million_rows=12.5),
    "duckdb": RowCosts(base_mib=500.0, mib_per_million_rows=5.0, seconds_per_million_rows=12.5),
    # Not measured: Athena counts the cells and the function receives the counts, so it is taken as the database path.
    "athena": RowCosts(base_mib=230.0, mib_per_million_rows=1.0, seconds_per_million_rows=12.5),
}
"""Per ``SML_WINDOW_SOURCE``; each rounded up from the measured figures, so a refusal comes early, never late."""
HELD_MIB_PER_MILLION_ROWS = 250.0
"""Memory per million rows held as arrays: ~245 MiB measured for the read that kept a window's values (SCALE-NOTES.md)."""
HELD_ROWS_STEP = timedelta(days=1)
"""The part of the previous window held at once (``sml.monitoring.previous_reference.READ_STEP``)."""
HEADROOM = 0.9
"""Share of the memory and of the time left that a run's estimate may use."""
LAMBDA_MAX_MEMORY_MIB = 10_240


class RunTooLarge(SmlError):
    """A weekly run that would pass its function's memory or time; the message holds the numbers."""


@dataclass(frozen=True)
class RunEstimate:
    """What a run over ``rows`` predictions is estimated to need: peak memory (MiB) and time (s)."""

    rows: int
    memory_mib: float
    seconds: float


def estimate_run(rows: int, source: str = "database", *, held_rows: int = 0) -> RunEstimate:
    """The estimate for ``rows`` predictions read (the window's, plus the previous window's when it
    is the reference) with the drift summaries from ``source`` (a key of :data:`COSTS`), of which
    ``held_rows`` are held as arrays at once (the ``previous`` reference's busiest day)."""
    costs, millions = COSTS[source], rows / 1e6
    memory = costs.base_mib + costs.mib_per_million_rows * millions + HELD_MIB_PER_MILLION_ROWS * held_rows / 1e6
    return RunEstimate(rows=rows, memory_mib=memory, seconds=costs.seconds_per_million_rows * millions)


def largest_run(memory_limit_mib: float, seconds: float, source: str = "database") -> int:
    """The most rows a run from ``source`` may read with ``memory_limit_mib`` and ``seconds``, keeping :data:`HEADROOM`."""
    costs = COSTS[source]
    if HEADROOM * memory_limit_mib < costs.base_mib:
        return 0
    by_memory = (HEADROOM * memory_limit_mib - costs.base_mib) / costs.mib_per_million_rows
    by_time = HEADROOM * seconds / costs.seconds_per_million_rows
    return max(0, int(min(by_memory, by_time) * 1e6))


def check_run_fits(*, rows: int, memory_limit_mib: float, seconds_left: float, source: str = "database", held_rows: int = 0) -> RunEstimate:
    """Refuse a run whose estimate passes :data:`HEADROOM` of the memory or of the time left.

    :param rows: the predictions the run will read.
    :param memory_limit_mib: the function's memory (``context.memory_limit_in_mb``).
    :param seconds_left: the invocation's time left (``context.get_remaining_time_in_millis() / 1000``).
    :param source: where the drift summaries come from (``SML_WINDOW_SOURCE``: ``database``, ``duckdb`` or ``athena``).
    :param held_rows: rows held as arrays at once (:func:`busiest_held_rows` for the ``previous`` reference).
    :returns: the estimate, when it fits.
    :raises RunTooLarge: naming the rows, the estimate, the limits and what to change.
    """
    estimate, costs = estimate_run(rows, source, held_rows=held_rows), COSTS[source]
    over = []
    if estimate.memory_mib > HEADROOM * memory_limit_mib:
        over.append(f"{estimate.memory_mib:,.0f} MiB of memory against {memory_limit_mib:,.0f} MiB")
    if estimate.seconds > HEADROOM * seconds_left:
        over.append(f"{estimate.seconds:,.0f} s against {seconds_left:,.0f} s left")
    if over:
        raise RunTooLarge(
            f"weekly run refused before reading: {rows:,} predictions to read need about {' and '.join(over)} "
            f"(estimate from {source}: {costs.base_mib:.0f} MiB + {costs.mib_per_million_rows:g} MiB and "
            f"{costs.seconds_per_million_rows:g} s per million rows"
            f"{f', and {HELD_MIB_PER_MILLION_ROWS:g} MiB per million of the {held_rows:,} held at once' if held_rows else ''}; at most {largest_run(memory_limit_mib, seconds_left, source):,} rows fit); "
            f"raise the drift function's memory (context drift_memory_mib, at most {LAMBDA_MAX_MEMORY_MIB:,}) or shorten SML_DRIFT_WINDOW_DAYS"
        )
    return estimate


def count_rows(engine: Engine, model_name: str, start: datetime, end: datetime) -> int:
    """Predictions of ``model_name`` with ``start <= predicted_at < end`` (aware UTC)."""
    query = (
        sa.select(sa.func.count())
        .select_from(PREDICTIONS)
        .where(
            PREDICTIONS.c.model_name == model_name,
            PREDICTIONS.c.predicted_at >= to_db_timestamp(start),
            PREDICTIONS.c.predicted_at < to_db_timestamp(end),
        )
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def busiest_held_rows(engine: Engine, model_name: str, start: datetime, end: datetime) -> int:
    """The most predictions of ``model_name`` in one :data:`HELD_ROWS_STEP` of ``[start, end)``,
    stepping from ``start`` as the ``previous`` reference reads it (aware UTC)."""
    busiest, step_start = 0, start
    while step_start < end:
        step_end = min(step_start + HELD_ROWS_STEP, end)
        busiest = max(busiest, count_rows(engine, model_name, step_start, step_end))
        step_start = step_end
    return busiest
