"""KS against a KLL-sketched reference: D̂ within its interval of scipy's D, and verdicts that account for it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from sml.monitoring.drift.run import DriftColumn, default_floors, run_drift_methods
from sml.monitoring.drift.sketch import SketchedNumericGrid, add_values, ks_against_sketch, merged, new_sketch
from sml.monitoring.drift.stats import DriftVerdict
from sml.monitoring.summaries import NumericGrid, SummaryReference, summarise

COLUMNS = [DriftColumn("x", "numeric")]


def sketched(values: np.ndarray, days: int = 1) -> SketchedNumericGrid:
    parts, missing = [], 0
    for chunk in np.array_split(values, days):
        sketch = new_sketch()
        missing += add_values(sketch, chunk)
        parts.append(sketch)
    return SketchedNumericGrid.from_sketch(merged(parts), missing)


def draws(kind: str, seed: int, size: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(loc=shift, size=size)
    if kind == "lognormal":
        return rng.lognormal(mean=shift, size=size)
    if kind == "tied":
        return np.round(rng.normal(loc=shift, size=size), 1)
    return np.full(size, 3.0 + shift)  # degenerate: one value


def cells(grid: NumericGrid, values: np.ndarray) -> np.ndarray:
    return np.bincount(grid.cells_of(values), minlength=grid.n_cells)


@pytest.mark.parametrize("kind", ["normal", "lognormal", "tied", "constant"])
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.2])
def test_scipys_statistic_lies_in_the_sketched_interval(kind: str, shift: float) -> None:
    for seed in range(3):
        reference = draws(kind, seed, 200_000)
        current = draws(kind, seed + 100, 50_000, shift)
        grid = sketched(reference, days=7)

        outcome = ks_against_sketch(grid, cells(grid, current))

        exact = stats.ks_2samp(reference, current).statistic
        assert outcome.lower <= exact <= outcome.upper, (kind, shift, seed)
        assert outcome.statistic - outcome.lower <= grid.rank_error + 1e-12


def test_the_grid_keeps_the_rows_and_k_below_1000_is_refused() -> None:
    grid = sketched(np.append(draws("normal", 1, 100_000), [np.nan, np.inf]))
    assert (grid.n_present, grid.missing, grid.k) == (100_000, 2, 1000)
    assert 0.003 < grid.rank_error < 0.004
    with pytest.raises(ValueError, match="KLL k must be at least 1000"):
        new_sketch(200)


def run(grid: NumericGrid, current: np.ndarray, floor: float = 0.1) -> Any:
    reference = SummaryReference(features={"x": grid}, prediction=None)
    floors = default_floors(COLUMNS, floors={"x": floor})
    ks, _missing = run_drift_methods(reference, summarise({"x": current}, reference), COLUMNS, floors)
    return ks


def test_a_clear_shift_is_drift_and_no_shift_on_many_rows_is_no_drift() -> None:
    grid = sketched(draws("normal", 1, 300_000))
    shifted = run(grid, draws("normal", 2, 100_000, shift=0.5))
    steady = run(grid, draws("normal", 3, 100_000))

    assert shifted.verdict is DriftVerdict.DRIFT and shifted.detail["method"] == "kll_sketch"
    assert steady.verdict is DriftVerdict.NO_DRIFT
    assert steady.effect_upper >= steady.effect_size + steady.detail["rank_error"]


def test_a_statistic_over_the_floor_by_less_than_the_rank_error_is_not_drift() -> None:
    reference, current = draws("normal", 4, 300_000), draws("normal", 5, 300_000, shift=0.3)
    # KLL's compactions are random, so one sketch is built and used throughout (a test against a given
    # sketch is deterministic); a second sketch could estimate D up to its rank error higher than the
    # first, past a floor set from the first (that failed about one run in 60).
    grid, values = sketched(reference), NumericGrid.from_sorted(np.sort(reference))
    probe, exact = run(grid, current), run(values, current)
    assert exact.effect_size - probe.effect_size < probe.detail["rank_error"] > probe.effect_size - exact.effect_size  # KLL's bound
    # Over the floor by less than the rank error for the sketch; at or over it for the exact values.
    floor = min(probe.effect_size - probe.detail["rank_error"] / 2, exact.effect_size)

    against_sketch = run(grid, current, floor=floor)
    against_values = run(values, current, floor=floor)

    assert against_sketch.verdict is DriftVerdict.INCONCLUSIVE and against_sketch.detail["reason"] == "near_floor"
    assert against_values.verdict is DriftVerdict.DRIFT


def test_the_p_value_is_a_bound_never_below_scipys() -> None:
    for seed in range(5):
        reference, current = draws("normal", seed, 20_000), draws("normal", seed + 50, 3_000, shift=0.05)

        outcome = run(sketched(reference), current)

        assert outcome.p_value >= stats.ks_2samp(reference, current).pvalue
        assert outcome.detail["p_value"].startswith("bound")
