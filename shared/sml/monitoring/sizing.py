"""Will the weekly run fit its function? An estimate from the window's row count, checked before reading.

Lambda kills a function that passes its memory or its timeout and reports only an error: no stored
run, no report, no alert. The drift function therefore counts the rows it is about to read (one
``COUNT(*)`` over the ``(model_name, predicted_at)`` index) and refuses, naming the numbers, a run
whose estimate does not fit in what it has.

The costs are those measured for the weekly run that counts the window into summaries as it reads
it (``run_drift_job`` in a fresh process, peak RSS by ``VmHWM``; ``bench/scale_bench.py``: MariaDB
10.11, 20 numeric features, a 10,000-row training reference, model quality on, S3 and SNS on moto
in-process, on a shared 2-core machine). From the database: peak RSS 241.5 MiB at 300k rows and
299.5 MiB at 1M, i.e. ~215 MiB of imports and ~85 MiB per million rows, measured before the quality
read stopped keeping rows, so an overstatement now; client CPU 2.5 s and 7.9 s, to which the
database adds about 4.4 s per million (SCALE-NOTES.md), so ~12.5 s of CPU per million rows. From
DuckDB over the archive (``SML_WINDOW_SOURCE=duckdb``): 455–457 MiB at 300k rows for the whole run
and 464 MiB for the drift read alone at 10M (425 MiB at 1M): DuckDB's library and the row groups it
decodes, ~470 MiB and ~5 MiB per million; the time is taken as the database's.
(The run that held the window's arrays needed ~245 MiB per million.) A run keeps :data:`HEADROOM`
of its limits free for the estimate's error.

Example::

    estimate = check_run_fits(rows=30_000_000, memory_limit_mib=2048, seconds_left=890.0)  # raises RunTooLarge
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
    "database": RowCosts(base_mib=215.0, mib_per_million_rows=85.0, seconds_per_million_rows=12.5),
    "duckdb": RowCosts(base_mib=470.0, mib_per_million_rows=5.0, seconds_per_million_rows=12.5),
}
"""Per ``SML_WINDOW_SOURCE``; each rounded up from the measured figures, so a refusal comes early, never late."""
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


def estimate_run(rows: int, source: str = "database") -> RunEstimate:
    """The estimate for ``rows`` predictions read (the window's, plus the previous window's when it
    is the reference) with the drift summaries from ``source`` (a key of :data:`COSTS`)."""
    costs, millions = COSTS[source], rows / 1e6
    return RunEstimate(rows=rows, memory_mib=costs.base_mib + costs.mib_per_million_rows * millions, seconds=costs.seconds_per_million_rows * millions)


def largest_run(memory_limit_mib: float, seconds: float, source: str = "database") -> int:
    """The most rows a run from ``source`` may read with ``memory_limit_mib`` and ``seconds``, keeping :data:`HEADROOM`."""
    costs = COSTS[source]
    if HEADROOM * memory_limit_mib < costs.base_mib:
        return 0
    by_memory = (HEADROOM * memory_limit_mib - costs.base_mib) / costs.mib_per_million_rows
    by_time = HEADROOM * seconds / costs.seconds_per_million_rows
    return max(0, int(min(by_memory, by_time) * 1e6))


def check_run_fits(*, rows: int, memory_limit_mib: float, seconds_left: float, source: str = "database") -> RunEstimate:
    """Refuse a run whose estimate passes :data:`HEADROOM` of the memory or of the time left.

    :param rows: the predictions the run will read.
    :param memory_limit_mib: the function's memory (``context.memory_limit_in_mb``).
    :param seconds_left: the invocation's time left (``context.get_remaining_time_in_millis() / 1000``).
    :param source: where the drift summaries come from (``SML_WINDOW_SOURCE``: ``database`` or ``duckdb``).
    :returns: the estimate, when it fits.
    :raises RunTooLarge: naming the rows, the estimate, the limits and what to change.
    """
    estimate, costs = estimate_run(rows, source), COSTS[source]
    over = []
    if estimate.memory_mib > HEADROOM * memory_limit_mib:
        over.append(f"{estimate.memory_mib:,.0f} MiB of memory against {memory_limit_mib:,.0f} MiB")
    if estimate.seconds > HEADROOM * seconds_left:
        over.append(f"{estimate.seconds:,.0f} s against {seconds_left:,.0f} s left")
    if over:
        raise RunTooLarge(
            f"weekly run refused before reading: {rows:,} predictions to read need about {' and '.join(over)} "
            f"(estimate from {source}: {costs.base_mib:.0f} MiB + {costs.mib_per_million_rows:g} MiB and "
            f"{costs.seconds_per_million_rows:g} s per million rows; at most {largest_run(memory_limit_mib, seconds_left, source):,} rows fit); "
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
