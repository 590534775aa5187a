"""Will the weekly run fit its function? An estimate from the window's row count, checked before reading.

Lambda kills a function that passes its memory or its timeout and reports only an error: no stored
run, no report, no alert. The drift function therefore counts the rows it is about to read (one
``COUNT(*)`` over the ``(model_name, predicted_at)`` index) and refuses, naming the numbers, a run
whose estimate does not fit in what it has.

The per-row costs are those measured for the weekly run that counts the window into summaries as
it reads it (``run_drift_job`` in a fresh process, MariaDB 10.11, 20 numeric features, a 10,000-row
training reference, 2026-12-07 on a loaded 2-core machine): peak RSS 241.5 MiB at 300k rows and
299.5 MiB at 1M, i.e. ~215 MiB of imports and ~85 MiB per million rows; client CPU 2.5 s and
7.9 s, to which the database adds about 4.4 s per million (SCALE-NOTES.md), so ~12.5 s of CPU per
million rows. (The run that held the window's arrays needed ~245 MiB per million.) A run keeps
:data:`HEADROOM` of its limits free for the estimate's error.

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

BASE_MIB = 215.0
MIB_PER_MILLION_ROWS = 85.0
SECONDS_PER_MILLION_ROWS = 12.5
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


def estimate_run(rows: int) -> RunEstimate:
    """The estimate for ``rows`` predictions read (the window's, plus the previous window's when it is the reference)."""
    millions = rows / 1e6
    return RunEstimate(rows=rows, memory_mib=BASE_MIB + MIB_PER_MILLION_ROWS * millions, seconds=SECONDS_PER_MILLION_ROWS * millions)


def largest_run(memory_limit_mib: float, seconds: float) -> int:
    """The most rows a run may read with ``memory_limit_mib`` and ``seconds``, keeping :data:`HEADROOM`."""
    by_memory = (HEADROOM * memory_limit_mib - BASE_MIB) / MIB_PER_MILLION_ROWS
    by_time = HEADROOM * seconds / SECONDS_PER_MILLION_ROWS
    return max(0, int(min(by_memory, by_time) * 1e6))


def check_run_fits(*, rows: int, memory_limit_mib: float, seconds_left: float) -> RunEstimate:
    """Refuse a run whose estimate passes :data:`HEADROOM` of the memory or of the time left.

    :param rows: the predictions the run will read.
    :param memory_limit_mib: the function's memory (``context.memory_limit_in_mb``).
    :param seconds_left: the invocation's time left (``context.get_remaining_time_in_millis() / 1000``).
    :returns: the estimate, when it fits.
    :raises RunTooLarge: naming the rows, the estimate, the limits and what to change.
    """
    estimate = estimate_run(rows)
    over = []
    if estimate.memory_mib > HEADROOM * memory_limit_mib:
        over.append(f"{estimate.memory_mib:,.0f} MiB of memory against {memory_limit_mib:,.0f} MiB")
    if estimate.seconds > HEADROOM * seconds_left:
        over.append(f"{estimate.seconds:,.0f} s against {seconds_left:,.0f} s left")
    if over:
        raise RunTooLarge(
            f"weekly run refused before reading: {rows:,} predictions to read need about {' and '.join(over)} "
            f"(estimate: {BASE_MIB:.0f} MiB + {MIB_PER_MILLION_ROWS:.0f} MiB and {SECONDS_PER_MILLION_ROWS:g} s per million rows; "
            f"at most {largest_run(memory_limit_mib, seconds_left):,} rows fit); raise the drift function's memory "
            f"(context drift_memory_mib, at most {LAMBDA_MAX_MEMORY_MIB:,}) or shorten SML_DRIFT_WINDOW_DAYS"
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
