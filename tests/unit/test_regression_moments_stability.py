"""Regression quality counted slice by slice against numpy on all the rows at once, for labels (and
predictions) far from the aggregate's centre, where plain power sums lose the spread; aggregates
stored as power sums still read; and the shared mergeable moments against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from sml.monitoring.model_quality.metrics import MetricContext, RegressionAggregate, realized_from_aggregate
from sml.monitoring.moments import MomentSums

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTEXT = MetricContext((), None, 0.95, 200, 1)
CENTRE = 5.0
REL = 1e-12


@st.composite
def far_windows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Predictions, labels and slice sizes (empty slices included) of a window whose labels sit 10⁶–10⁹ from the centre."""
    size = draw(st.sampled_from([1, 2, 7, 60, 300]))
    offset = draw(st.sampled_from([1e6, -3e7, 1e9]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from(["normal", "wide", "ties", "constant labels", "constant window", "stuck predictions"]))
    if shape in ("normal", "wide", "stuck predictions"):
        truth = offset + rng.normal(0, 1000.0 if shape == "wide" else 1.0, size)
    elif shape == "ties":
        truth = offset + rng.integers(0, 3, size).astype(float)
    else:
        truth = np.full(size, offset + 0.123456789)
    if shape == "stuck predictions":  # the labels drifted; the model still predicts the training mean
        predictions = CENTRE + rng.normal(0, 1, size)
    elif shape == "ties":
        predictions = offset + rng.integers(0, 3, size).astype(float)
    elif shape == "constant window":
        predictions = truth.copy()
    else:
        predictions = truth + rng.normal(0, 0.5, size)
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=8)))
    return predictions, truth, [end - start for start, end in zip([0, *cuts], [*cuts, size])]


def numpy_quality(predictions: np.ndarray, truth: np.ndarray) -> dict[str, tuple[float, float | None, float | None]]:
    """Every regression metric and its interval from all the rows at once, with numpy (labels moved by
    their first value, a shift exact in floating point, which R² does not see)."""
    n, z = truth.size, float(norm.ppf(0.975))
    error = predictions - truth
    ape = np.abs(error) / np.abs(truth)

    def normal(values: np.ndarray, floor: float | None = 0.0) -> tuple[float, float | None, float | None]:
        value = float(np.mean(values))
        if n < 2:
            return value, None, None
        half = z * math.sqrt(float(np.var(values)) / (n - 1))
        return value, value - half if floor is None else max(floor, value - half), value + half

    mse = normal(error * error)
    expected = {
        "mae": normal(np.abs(error)), "mean_error": normal(error, floor=None), "mape": normal(ape),
        "rmse": (math.sqrt(mse[0]), *((math.sqrt(mse[1]), math.sqrt(mse[2])) if n > 1 else (None, None))),
    }
    deviation = (truth - truth[0]) - np.mean(truth - truth[0])
    variance = float(np.mean(deviation * deviation))
    if n > 1 and variance > 0:
        a = float(np.mean(error * error))
        value = 1 - a / variance
        influence = -(error * error - a) + (a / variance) * (deviation * deviation - variance)
        half = z * math.sqrt(float(np.mean(influence * influence)) / n) / variance
        expected["r2"] = (value, value - half, value + half)
    return expected


def close(got: float | None, expected: float | None, scale: float) -> bool:
    if expected is None:
        return got is None
    return got is not None and abs(got - expected) <= REL * max(abs(expected), scale)


@SETTINGS
@given(window=far_windows())
def test_counted_slice_by_slice_far_from_the_centre_the_metrics_equal_numpys_on_all_rows(window: tuple[np.ndarray, np.ndarray, list[int]]) -> None:
    predictions, truth, slices = window
    aggregate = RegressionAggregate.for_reference(CENTRE, 1.0, [0.0, 10.0])
    start = 0
    for count in slices:
        part = RegressionAggregate.for_reference(CENTRE, 1.0, [0.0, 10.0])
        part.add(predictions[start : start + count], truth[start : start + count])
        aggregate = aggregate.merge(part)
        start += count

    realized = realized_from_aggregate("regression", aggregate, CONTEXT)
    got = {value.metric: (value.value, value.low, value.high) for value in realized.metrics}
    expected = numpy_quality(predictions, truth)

    assert got.keys() == expected.keys()
    for metric, bounds in expected.items():
        # R² = 1 − A/B carries A/B's rounding in absolute terms, a mean error near 0 that of Σ|e|; the rest are relative.
        scale = {"r2": 1 + abs(1 - bounds[0]), "mean_error": expected["mae"][0]}.get(metric, 0.0)
        if metric == "r2" and truth.size == 2:
            # Two labels: (y − ȳ)² is the same for both, so Var((y − ȳ)²) is 0 and its rounding times
            # (A/B)² (~10²⁴ for stuck predictions) decides the interval on any path, numpy's as ours.
            bounds = bounds[:1]
        # An interval's bound is the value ∓ a margin: its rounding is relative to the larger of the two,
        # so a low bound that nearly cancels (MAPE's 1.7e-7 − 1.69998e-7) is compared at the value's scale.
        scale = max(scale, abs(bounds[0]))
        assert all(close(g, e, scale) for g, e in zip(got[metric], bounds)), (metric, got[metric], bounds)
    # The residual plot's errors by prediction bin: count, mean and sd of each bin's errors.
    cells = np.searchsorted(aggregate.prediction_edges, predictions, side="right")
    for cell, (count, mean, sd) in enumerate(realized.residuals.by_prediction):
        errors = (predictions - truth)[cells == cell]
        assert count == errors.size
        if count:
            assert close(mean, float(np.mean(errors)), float(np.mean(np.abs(errors)))) and close(sd, float(np.std(errors)), 0.0), (cell, mean, sd)


def power_sums_format(aggregate: RegressionAggregate, predictions: np.ndarray, truth: np.ndarray) -> dict:
    """``aggregate``'s stored data as it was written when the aggregate held plain power sums."""
    e, z = predictions - truth, truth - aggregate.centre
    ape = np.abs(e[truth != 0]) / np.abs(truth[truth != 0])
    data = {key: value for key, value in aggregate.to_json().items() if key not in ("errors", "percentages", "error_by_prediction")}
    cells = np.searchsorted(aggregate.prediction_edges, predictions, side="right")
    data["by_prediction"] = [[float((cells == cell).sum()), float(e[cells == cell].sum()), float((e[cells == cell] ** 2).sum())] for cell in range(aggregate.prediction_edges.size + 1)]
    data["sums"] = [float(v) for v in (e.sum(), np.abs(e).sum(), (e**2).sum(), (e**4).sum(), z.sum(), (z**2).sum(), (z**3).sum(), (z**4).sum(), (e**2 * z).sum(), (e**2 * z**2).sum(), ape.sum(), (ape**2).sum())]
    return data


def test_an_aggregate_stored_as_power_sums_reads_and_merges_with_a_new_one() -> None:
    rng = np.random.default_rng(7)
    predictions, truth = rng.normal(100, 10, 500), rng.normal(100, 12, 500)
    truth[:3] = 0.0
    old, new = RegressionAggregate.for_reference(95.0, 10.0, [90.0, 110.0]), RegressionAggregate.for_reference(95.0, 10.0, [90.0, 110.0])
    old.add(predictions[:200], truth[:200])
    new.add(predictions[200:], truth[200:])
    whole = RegressionAggregate.for_reference(95.0, 10.0, [90.0, 110.0])
    whole.add(predictions, truth)
    stored = power_sums_format(old, predictions[:200], truth[:200])

    read = RegressionAggregate.from_json(stored)
    merged = read.merge(new)

    for got, expected in ((read, old), (merged, whole)):
        assert (got.n_labelled, got.n_zero_labels, got.histogram.tolist()) == (expected.n_labelled, expected.n_zero_labels, expected.histogram.tolist())
        want_realized, have_realized = realized_from_aggregate("regression", expected, CONTEXT), realized_from_aggregate("regression", got, CONTEXT)
        want, have = {v.metric: v for v in want_realized.metrics}, {v.metric: v for v in have_realized.metrics}
        assert [cell[0] for cell in have_realized.residuals.by_prediction] == [cell[0] for cell in want_realized.residuals.by_prediction]
        assert np.array([cell[1:] for cell in have_realized.residuals.by_prediction]) == pytest.approx(np.array([cell[1:] for cell in want_realized.residuals.by_prediction]), rel=1e-9)
        assert have.keys() == want.keys() and "r2" in have
        for metric, value in want.items():
            assert (have[metric].value, have[metric].low, have[metric].high) == pytest.approx((value.value, value.low, value.high), rel=1e-9)
    # Written back, it holds the moments and reads to the same numbers, bit for bit.
    again = RegressionAggregate.from_json(merged.to_json())
    assert "sums" not in merged.to_json() and again.to_json() == merged.to_json()


MIXED = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (1, 2), (0, 3), (0, 4))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 1e6, 1e9, -1e8]), sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_moment_sums_merged_pairwise_equal_numpys_central_moments(seed: int, offset: float, sizes: list[int]) -> None:
    rng = np.random.default_rng(seed)
    values = np.column_stack([rng.normal(0, 3, sum(sizes)), offset + rng.integers(0, 4, sum(sizes)) * 0.7])
    moments = MomentSums.empty(MIXED)
    start = 0
    for size in sizes:
        moments = moments.merge(MomentSums.of(MIXED, values[start : start + size]))
        start += size

    assert moments.count == values.shape[0]
    if not values.shape[0]:
        assert all(total == 0 for total in moments.central().values())
        return
    deviations = (values - values[0]) - np.mean(values - values[0], axis=0)
    for exponents, total in moments.central().items():
        expected = float(np.sum(np.prod(deviations ** np.array(exponents, dtype=float), axis=1)))
        # Odd moments are ~0 beside their terms: compare to the size of the terms.
        scale = float(np.sum(np.prod(np.abs(deviations) ** np.array(exponents, dtype=float), axis=1)))
        assert abs(total - expected) <= REL * max(scale, 1e-300), (exponents, total, expected)


def test_moment_exponents_must_hold_every_lower_one_and_merge_only_alike() -> None:
    with pytest.raises(ValueError, match=r"\(0, 2\) without \(0, 1\)"):
        MomentSums.empty(((0, 0), (1, 0), (0, 2)))
    with pytest.raises(ValueError, match="different exponents"):
        MomentSums.empty(((0,), (1,), (2,))).merge(MomentSums.empty(((0,), (1,))))
    with pytest.raises(ValueError, match="reference of 1 and 3 sums"):
        MomentSums.from_sums(((0,), (1,), (2,)), [0.0], [1.0, 2.0])
