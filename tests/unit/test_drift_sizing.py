"""The weekly run's size check: the estimate from SCALE-NOTES' measured costs, and refusals that name the numbers."""

from __future__ import annotations

import pytest

from sml.monitoring.sizing import RunTooLarge, check_run_fits, estimate_run, largest_run


def test_the_estimate_follows_the_measured_points_within_ten_percent() -> None:
    measured_peak_mib = {100_000: 222, 1_000_000: 447, 3_000_000: 880, 10_000_000: 2_649}
    for rows, peak in measured_peak_mib.items():
        assert abs(estimate_run(rows).memory_mib - peak) <= 0.1 * peak, rows


def test_the_deployed_default_refuses_near_seven_and_a_half_million_rows_as_measured() -> None:
    assert 6_500_000 < largest_run(2048, 900) < 7_500_000
    check_run_fits(rows=6_000_000, memory_limit_mib=2048, seconds_left=900)
    with pytest.raises(RunTooLarge, match=r"8,000,000 predictions .* 2,160 MiB of memory against 2,048 MiB .*drift_memory_mib"):
        check_run_fits(rows=8_000_000, memory_limit_mib=2048, seconds_left=900)


def test_a_run_without_the_time_it_needs_is_refused_naming_the_time() -> None:
    with pytest.raises(RunTooLarge, match=r"85 s against 60 s left") as refused:
        check_run_fits(rows=10_000_000, memory_limit_mib=10_240, seconds_left=60)
    assert "MiB of memory" not in str(refused.value)
