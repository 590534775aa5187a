"""The weekly run's regression quality read, which counts each slice into the aggregate and drops
its rows, against the array path that keeps every row (the oracle): random, tied and degenerate
windows read in random slices must give the same quality, and the read must keep only the labels'
delays."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sml.monitoring.model_quality.metrics import QualityConfig, QualityResult, RegressionAggregate, assess_aggregate
from sml.monitoring.model_quality.store import RegressionColumns, RegressionSample

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFERENCE_METRICS = {"rmse": 2.0, "mae": 1.5}
CONFIG = QualityConfig(min_labels=5)


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[tuple[Any, ...]], list[int], float]:
    """Rows as the window read hands them over (prediction text, probabilities, label text, delay µs),
    slice sizes, and the aggregate's centre (the manifest's mean training prediction: near the labels)."""
    size = draw(st.sampled_from([0, 1, 7, 60, 400]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from(["normal", "tied", "constant", "zero labels", "huge offset"]))
    centre = {"normal": 10.0, "tied": 1.0, "constant": 4.0, "zero labels": 0.0, "huge offset": 1e6}[shape]
    if shape == "normal":
        predictions = rng.normal(10, 3, size)
        truth = predictions + rng.normal(0, 2, size)
    elif shape == "tied":
        predictions = rng.integers(0, 3, size).astype(float)
        truth = rng.integers(0, 3, size).astype(float)
    elif shape == "constant":
        predictions, truth = np.full(size, 4.0), np.full(size, 4.0 if draw(st.booleans()) else 5.5)
    elif shape == "zero labels":
        predictions = rng.normal(0, 1, size)
        truth = np.where(rng.random(size) < 0.3, 0.0, rng.normal(0, 1, size))
    else:
        predictions = 1e6 + rng.normal(0, 1, size)
        truth = predictions + rng.normal(0, 0.5, size)
    labelled = rng.random(size) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    not_numbers = rng.random(size) < draw(st.sampled_from([0.0, 0.05]))
    bad_predictions = rng.random(size) < draw(st.sampled_from([0.0, 0.05]))
    delays = rng.integers(-5_000_000, 10**11, size) if draw(st.booleans()) else np.full(size, 86_400_000_000)
    rows = []
    for index in range(size):
        prediction = '"n/a"' if bad_predictions[index] else json.dumps(float(predictions[index]))
        label = None
        if labelled[index]:
            label = '"unknown"' if not_numbers[index] else json.dumps(float(truth[index]))
        rows.append((prediction, None, label, None if label is None else int(delays[index])))
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=5)))
    slices = [end - start for start, end in zip([0, *cuts], [*cuts, size])]
    return rows, slices, centre


def read(rows: list[tuple[Any, ...]], slices: list[int], columns: RegressionColumns) -> RegressionSample:
    start = 0
    for count in slices:
        columns.add_rows(rows[start : start + count])
        start += count
    return columns.sample({})


def empty_aggregate(centre: float) -> RegressionAggregate:
    return RegressionAggregate.for_reference(centre, REFERENCE_METRICS["rmse"], [centre - 5.0, centre, centre + 5.0])


def assessed(aggregate: RegressionAggregate, delays: np.ndarray) -> QualityResult:
    return assess_aggregate("regression", aggregate, classes=(), positive_class=None, delay_seconds=delays, reference_metrics=REFERENCE_METRICS, config=CONFIG)


def same_number(got: float | None, expected: float | None, rel: float) -> bool:
    if got is None or expected is None:
        return got is expected
    if math.isnan(expected):
        return math.isnan(got)
    if rel == 0:
        return got == expected
    return got == pytest.approx(expected, rel=rel, abs=1e-9 * max(1.0, abs(expected)))


def assert_same_quality(got: QualityResult, expected: QualityResult, rel: float) -> None:
    assert (got.status, got.n_predictions, got.n_labelled, got.n_labels_outside_classes) == (
        expected.status, expected.n_predictions, expected.n_labelled, expected.n_labels_outside_classes,
    )
    assert (got.realized is None) is (expected.realized is None)
    if expected.realized is not None:
        assert [(m.metric, m.interval) for m in got.realized.metrics] == [(m.metric, m.interval) for m in expected.realized.metrics]
        for value, oracle in zip(got.realized.metrics, expected.realized.metrics):
            for bound, oracle_bound in ((value.value, oracle.value), (value.low, oracle.low), (value.high, oracle.high)):
                assert same_number(bound, oracle_bound, rel), (value, oracle)
        assert (got.realized.residuals is None) is (expected.realized.residuals is None)
    if expected.realized is not None and expected.realized.residuals is not None:
        assert got.realized.residuals.counts == expected.realized.residuals.counts
        for cell, oracle_cell in zip(got.realized.residuals.by_prediction, expected.realized.residuals.by_prediction):
            assert cell[0] == oracle_cell[0] and all(same_number(a, b, rel) for a, b in zip(cell[1:], oracle_cell[1:]))
    # The delays' percentiles come from the very same values: exact.
    assert got.delay == expected.delay


@SETTINGS
@given(window=windows())
def test_the_weekly_read_gives_the_quality_of_the_array_path_and_keeps_only_the_labels_delays(window: tuple[list[tuple[Any, ...]], list[int], float]) -> None:
    rows, slices, centre = window
    counted = RegressionColumns(empty_aggregate(centre))
    weekly = read(rows, slices, counted)
    # The oracle: every row's numbers kept, then counted at once (assess_window_quality without an aggregate).
    arrays = read(rows, [len(rows)], RegressionColumns())
    whole = empty_aggregate(centre)
    whole.add(arrays.predictions, arrays.truth, arrays.n_labels_not_numbers)
    expected = assessed(whole, arrays.delay_seconds[~np.isnan(arrays.delay_seconds)])

    labels = sum(row[2] is not None for row in rows)
    assert weekly.predictions.size == weekly.truth.size == 0 and weekly.delay_seconds.size == labels
    assert counted.n_numbers == int(np.isfinite(arrays.predictions).sum())
    assert weekly.aggregate.n_predictions == len(rows) and weekly.n_rows == len(rows)
    # Sums added slice by slice rather than at once: equal to rounding.
    assert_same_quality(assessed(weekly.aggregate, weekly.delay_seconds), expected, rel=1e-9)


@SETTINGS
@given(window=windows())
def test_dropping_the_rows_changes_nothing_the_read_counted_before(window: tuple[list[tuple[Any, ...]], list[int], float]) -> None:
    # The read kept the rows beside the aggregate; slice for slice the aggregate is the same, to the bit.
    rows, slices, centre = window
    dropped = read(rows, slices, RegressionColumns(empty_aggregate(centre)))
    kept = read(rows, slices, RegressionColumns(empty_aggregate(centre), keep_rows=True))

    assert dropped.aggregate.to_json() == kept.aggregate.to_json()
    np.testing.assert_array_equal(dropped.delay_seconds, kept.delay_seconds[~np.isnan(kept.delay_seconds)])
    assert_same_quality(assessed(dropped.aggregate, dropped.delay_seconds), assessed(kept.aggregate, kept.delay_seconds[~np.isnan(kept.delay_seconds)]), rel=0)


def test_rows_are_dropped_only_into_an_aggregate() -> None:
    with pytest.raises(ValueError, match="only when they are counted into an aggregate"):
        RegressionColumns(keep_rows=False)
