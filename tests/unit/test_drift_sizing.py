"""The weekly run's size check: the estimate from the measured per-row costs, and refusals that name the numbers."""

from __future__ import annotations

import pytest

from sml.monitoring.sizing import RunTooLarge, check_run_fits, estimate_run, largest_run


def test_the_estimate_follows_the_measured_points_within_ten_percent() -> None:
    measured_peak_mib = {100_000: 227, 300_000: 241.5, 1_000_000: 299.5}
    for rows, peak in measured_peak_mib.items():
        assert abs(estimate_run(rows).memory_mib - peak) <= 0.1 * peak, rows


def test_the_deployed_default_holds_about_nineteen_million_rows() -> None:
    assert 18_000_000 < largest_run(2048, 900) < 20_000_000
    check_run_fits(rows=18_000_000, memory_limit_mib=2048, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"21,000,000 predictions .* 2,000 MiB of memory against 1,024 MiB .*drift_memory_mib"):
        check_run_fits(rows=21_000_000, memory_limit_mib=1024, seconds_left=900)


def test_a_run_without_the_time_it_needs_is_refused_naming_the_time() -> None:
    with pytest.raises(RunTooLarge, match=r"125 s against 60 s left") as refused:
        check_run_fits(rows=10_000_000, memory_limit_mib=10_240, seconds_left=60)
    assert "MiB of memory" not in str(refused.value)


def test_the_archive_path_is_estimated_at_its_own_cost() -> None:
    # DuckDB's library and the row groups it decodes: a function sized for the database path may not fit it.
    check_run_fits(rows=1_000_000, memory_limit_mib=512, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"1,000,000 predictions .* against 512 MiB .*estimate from duckdb"):
        check_run_fits(rows=1_000_000, memory_limit_mib=512, seconds_left=900, source="duckdb")
    assert estimate_run(300_000, "duckdb").memory_mib >= 457  # the whole run measured at 300k rows
    assert estimate_run(10_000_000, "duckdb").memory_mib >= 464  # the drift read alone measured at 10M
