"""The weekly run's size check: the estimate from the measured per-row costs, and refusals that name the numbers."""

from __future__ import annotations

import pytest

from sml.monitoring.previous_reference import READ_STEP
from sml.monitoring.sizing import COSTS, HEADROOM, HELD_ROWS_STEP, RunTooLarge, check_run_fits, estimate_run, largest_run

# Peak RSS (VmHWM) of run_drift_job in a fresh process, per source and window size
# (bench/scale_bench.py and bench/results.md, "scale: the weekly run at 10M predictions").
MEASURED_PEAK_MIB = {
    ("database", 100_000): 225.6,
    ("database", 1_000_000): 226.0,
    ("database", 10_000_000): 227.2,
    ("duckdb", 300_000): 456.7,
    ("duckdb", 1_000_000): 491.0,
    ("duckdb", 10_000_000): 495.4,
}


def test_the_estimate_is_never_below_a_measured_peak_and_not_far_above() -> None:
    for (source, rows), peak in MEASURED_PEAK_MIB.items():
        estimate = estimate_run(rows, source).memory_mib
        assert peak <= estimate <= 1.2 * peak, (source, rows, estimate)


def test_the_deployed_default_is_bound_by_its_fifteen_minutes_not_its_memory() -> None:
    by_time = int(HEADROOM * 900 / COSTS["database"].seconds_per_million_rows * 1e6)
    assert largest_run(2048, 900) == by_time
    check_run_fits(rows=by_time, memory_limit_mib=2048, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"s against 900 s left"):
        check_run_fits(rows=by_time + 1_000_000, memory_limit_mib=2048, seconds_left=900)


def test_a_function_without_the_memory_it_needs_is_refused_naming_the_memory() -> None:
    with pytest.raises(RunTooLarge, match=r"1,000,000 predictions .* MiB of memory against 200 MiB .*drift_memory_mib") as refused:
        check_run_fits(rows=1_000_000, memory_limit_mib=200, seconds_left=900)
    assert "s left" not in str(refused.value)
    assert largest_run(200, 900) == 0


def test_the_archive_path_is_estimated_at_its_own_cost() -> None:
    # DuckDB's library and the row groups it decodes: a function sized for the database path may not fit it.
    check_run_fits(rows=1_000_000, memory_limit_mib=512, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"1,000,000 predictions .* against 512 MiB .*estimate from duckdb"):
        check_run_fits(rows=1_000_000, memory_limit_mib=512, seconds_left=900, source="duckdb")
    check_run_fits(rows=10_000_000, memory_limit_mib=1024, seconds_left=900, source="duckdb")


def test_the_previous_references_day_held_as_arrays_is_counted() -> None:
    # 14M rows read fit 2,048 MiB; holding a day of 2M of them as arrays (~500 MiB) is what would not fit 768 MiB.
    check_run_fits(rows=14_000_000, memory_limit_mib=768, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"14,000,000 predictions .* against 768 MiB .*2,000,000 held at once"):
        check_run_fits(rows=14_000_000, memory_limit_mib=768, seconds_left=900, held_rows=2_000_000)
    assert HELD_ROWS_STEP == READ_STEP


def test_a_run_without_the_time_it_needs_is_refused_naming_the_time() -> None:
    with pytest.raises(RunTooLarge, match=r"125 s against 60 s left") as refused:
        check_run_fits(rows=10_000_000, memory_limit_mib=10_240, seconds_left=60)
    assert "MiB of memory" not in str(refused.value)


def test_every_window_source_has_its_costs() -> None:
    from sml.monitoring.sources import SOURCES

    assert set(COSTS) == set(SOURCES)
