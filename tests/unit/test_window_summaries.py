"""Window summaries: counts against the reference give the array path's KS exactly, merge by adding,
and survive a JSON round trip."""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from sml.lifecycle.manifest import CategoricalReference, FeatureSpec, ModelManifest, NumericReference, ReferenceData
from sml.monitoring.drift.stats import ks_two_sample, ks_two_sample_cells
from sml.monitoring.summaries import (
    MAX_UNSEEN_KEPT,
    CategoricalGrid,
    CategoricalSummary,
    NumericGrid,
    NumericSummary,
    SummaryError,
    SummaryReference,
    WindowSummariser,
    WindowSummary,
    register_quality_aggregate,
    summarise,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def samples(draw: st.DrawFn, max_size: int = 400) -> np.ndarray:
    """Continuous, heavily tied, constant or rounded values, sometimes shifted, sometimes empty."""
    size = draw(st.integers(0, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    shape = draw(st.sampled_from(["normal", "tied", "constant", "rounded", "wide"]))
    shift = draw(st.sampled_from([0.0, 0.2, 1.0]))
    rng = np.random.default_rng(seed)
    if shape == "normal":
        return rng.normal(shift, 1.0, size)
    if shape == "tied":
        return rng.integers(0, 4, size).astype(float) + round(shift)
    if shape == "constant":
        return np.full(size, 3.0 + shift)
    if shape == "rounded":
        return np.round(rng.normal(shift, 1.0, size), 1)
    return rng.standard_t(2, size) * 1e6


def _counted(reference: np.ndarray, window: np.ndarray) -> tuple[NumericGrid, NumericSummary]:
    grid = NumericGrid.from_sorted(np.sort(reference))
    summary = NumericSummary.empty(grid)
    summary.add(window, grid)
    return grid, summary


@SETTINGS
@given(reference=samples(), window=samples())
def test_a_values_cell_is_its_count_of_reference_values_below_plus_at_or_below(reference: np.ndarray, window: np.ndarray) -> None:
    grid = NumericGrid.from_sorted(np.sort(reference))
    values = np.sort(np.concatenate([window, grid.values[::3], -grid.values[:2], [0.0, -0.0]]))
    expected = np.searchsorted(grid.values, values, side="left") + np.searchsorted(grid.values, values, side="right")
    assert np.array_equal(grid.cells_of(values), expected)


@SETTINGS
@given(reference=samples(), window=samples())
def test_ks_from_cells_equals_the_array_path_bit_for_bit(reference: np.ndarray, window: np.ndarray) -> None:
    grid, summary = _counted(reference, window)
    from_cells = ks_two_sample_cells(grid.reference_cells(), summary.cells, grid.representatives())
    from_arrays = ks_two_sample(np.sort(reference), np.sort(window))
    assert (from_cells.statistic, from_cells.p_value, from_cells.method) == (from_arrays.statistic, from_arrays.p_value, from_arrays.method)
    if reference.size and window.size:
        assert from_cells.statistic == pytest.approx(stats.ks_2samp(reference, window).statistic, rel=1e-12)


def test_ks_from_cells_on_large_samples_uses_the_same_asymptotic_p_value() -> None:
    rng = np.random.default_rng(5)
    reference, window = rng.normal(0, 1, 30_000), rng.normal(0.05, 1, 50_000)
    grid, summary = _counted(reference, window)
    from_cells = ks_two_sample_cells(grid.reference_cells(), summary.cells, grid.representatives())
    assert from_cells == ks_two_sample(np.sort(reference), np.sort(window))
    assert from_cells.method == "kstwobign"


@SETTINGS
@given(reference=samples(), window=samples(), cut=st.floats(0, 1))
def test_merged_slices_equal_the_whole_window(reference: np.ndarray, window: np.ndarray, cut: float) -> None:
    grid = NumericGrid.from_sorted(np.sort(reference))
    split = int(cut * window.size)
    first, second, whole = NumericSummary.empty(grid), NumericSummary.empty(grid), NumericSummary.empty(grid)
    first.add(window[:split], grid)
    second.add(window[split:], grid)
    whole.add(window, grid)
    merged = first.merge(second)
    assert np.array_equal(merged.cells, whole.cells)
    assert (merged.missing, merged.minimum, merged.maximum) == (whole.missing, whole.minimum, whole.maximum)
    assert merged.total == pytest.approx(whole.total, rel=1e-9, abs=1e-6)
    assert merged.total_squares == pytest.approx(whole.total_squares, rel=1e-9)


def test_numeric_cells_put_each_value_in_its_own_cell_and_count_the_rest_missing() -> None:
    grid = NumericGrid.from_sorted([1.0, 2.0, 2.0, 5.0])
    summary = NumericSummary.empty(grid)
    summary.add([0.5, 1.0, 1.5, 2.0, 2.0, 3.0, 5.0, 9.0, None, math.nan, math.inf], grid)
    # cells: <1, =1, (1,2), =2, (2,5), =5, >5
    assert summary.cells.tolist() == [1, 1, 1, 2, 1, 1, 1]
    assert grid.reference_cells().tolist() == [0, 1, 0, 2, 0, 1, 0]
    assert (summary.missing, summary.out_of_range, summary.minimum, summary.maximum) == (3, 2, 0.5, 9.0)
    assert summary.total == pytest.approx(24.0)


def test_an_empty_reference_has_one_cell() -> None:
    grid = NumericGrid.from_sorted([])
    summary = NumericSummary.empty(grid)
    summary.add([1.0, 2.0], grid)
    assert summary.cells.tolist() == [2]
    result = ks_two_sample_cells(grid.reference_cells(), summary.cells, grid.representatives())
    assert (result.statistic, result.p_value, result.method) == (0.0, 1.0, "empty")


def test_an_unsorted_reference_is_refused() -> None:
    with pytest.raises(SummaryError, match="ascending"):
        NumericGrid.from_sorted([2.0, 1.0])


def test_summaries_against_different_references_do_not_merge() -> None:
    first, second = NumericGrid.from_sorted([1.0, 2.0, 3.0]), NumericGrid.from_sorted([1.0, 2.0, 4.0])
    with pytest.raises(SummaryError, match="'age': summaries counted against different references"):
        NumericSummary.empty(first).merge(NumericSummary.empty(second), column="age")


def test_categorical_counts_known_unseen_and_missing() -> None:
    grid = CategoricalGrid.from_counts({"red": 5, "blue": 3}, 1, categories=["green"])
    summary = CategoricalSummary.empty(grid)
    summary.add(["red", "red", "green", "violet", None, math.nan, 1, "violet"])
    assert summary.counts == {"red": 2, "blue": 0, "green": 1}
    assert (summary.unseen, summary.unseen_top, summary.missing, summary.n_rows) == (3, {"violet": 2, "1": 1}, 2, 8)


def test_unseen_values_kept_are_bounded_but_their_total_is_exact() -> None:
    grid = CategoricalGrid.from_counts({"a": 1})
    first, second = CategoricalSummary.empty(grid), CategoricalSummary.empty(grid)
    first.add([f"x{index}" for index in range(MAX_UNSEEN_KEPT + 20)] + ["often"] * 5)
    second.add(["often"] * 3 + [f"y{index}" for index in range(30)])
    merged = first.merge(second)
    assert merged.unseen == MAX_UNSEEN_KEPT + 20 + 5 + 3 + 30
    assert len(merged.unseen_top) == MAX_UNSEEN_KEPT
    assert merged.unseen_top["often"] == 8


@register_quality_aggregate
class _LabelledCount:
    name = "test_labelled_count"

    def __init__(self, labelled: int) -> None:
        self.labelled = labelled

    def merge(self, other: "_LabelledCount") -> "_LabelledCount":
        return _LabelledCount(self.labelled + other.labelled)

    def to_json(self) -> int:
        return self.labelled

    @classmethod
    def from_json(cls, data: int) -> "_LabelledCount":
        return cls(int(data))


def _manifest(task: str = "binary") -> ModelManifest:
    predictions = NumericReference(sorted_values=(1.0, 2.0, 3.0)) if task == "regression" else None
    return ModelManifest(
        model_name="m", version="v1", created_at="2026-01-01T00:00:00Z", sha256="0" * 64, artifact_key="k", estimator="e",
        metrics={}, params={}, classes=("no", "yes") if task == "binary" else (),
        features=(FeatureSpec("age", "numeric"), FeatureSpec("city", "categorical")),
        reference=ReferenceData(
            n_rows=4, features={"age": NumericReference(sorted_values=(20.0, 30.0, 30.0, 40.0)), "city": CategoricalReference(counts={"a": 3, "b": 1})},
            label_counts={"no": 3, "yes": 1} if task == "binary" else {}, predictions=predictions,
        ),
        library_versions={}, task=task,
    )


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_window_summary_round_trips_through_json_and_merges(task: str) -> None:
    reference = SummaryReference.from_manifest(_manifest(task))
    predictions = ([1.5, 2.0, 9.0], [3.0]) if task == "regression" else (["yes", "no", "maybe"], ["no"])
    first = summarise({"age": [25.0, 30.0, None], "city": ["a", "c", None]}, reference, predictions[0])
    first.quality["test_labelled_count"] = _LabelledCount(2)
    second = summarise({"age": [50.0], "city": ["b"]}, reference, predictions[1])
    second.quality["test_labelled_count"] = _LabelledCount(1)
    merged = WindowSummary.from_json(json.loads(json.dumps(first.to_json()))).merge(second)
    assert merged.to_json() == WindowSummary.from_json(merged.to_json()).to_json()
    assert merged.n_rows == 4
    assert merged.features["age"].cells.tolist() == [0, 0, 1, 1, 0, 0, 1]
    assert merged.features["city"].counts == {"a": 1, "b": 1} and merged.features["city"].unseen == 1
    assert merged.quality["test_labelled_count"].labelled == 3
    if task == "regression":
        assert merged.prediction.cells.tolist() == [0, 0, 1, 1, 0, 1, 1]
    else:
        assert (merged.prediction.counts, merged.prediction.unseen_top) == ({"no": 2, "yes": 1}, {"maybe": 1})


def test_a_regression_manifest_without_training_predictions_leaves_the_prediction_out() -> None:
    manifest = _manifest("regression")
    old = ModelManifest.from_json(manifest.to_json().replace('"predictions"', '"ignored"'))
    assert old.reference.predictions is None
    assert ModelManifest.from_json(manifest.to_json()).reference.predictions == manifest.reference.predictions
    summariser = WindowSummariser(SummaryReference.from_manifest(old))
    summariser.add_columns({"age": [1.0], "city": ["a"]}, [2.5])
    assert summariser.summary().prediction is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data["features"]["age"].update(index=[99], count=[1]), "column 'age': not a numeric summary"),
        (lambda data: data["features"]["city"].update(missing=-1), "column 'city': not a categorical summary"),
        (lambda data: data["features"]["city"].update(kind="text"), "column 'city': summary kind 'text'"),
        (lambda data: data["quality"].update(unknown=1), "quality aggregate 'unknown' is not registered"),
        (lambda data: data.update(format=7), "not a window summary of format 1"),
    ],
)
def test_a_damaged_summary_is_refused_naming_the_column(change, message: str) -> None:
    data = summarise({"age": [25.0], "city": ["a"]}, SummaryReference.from_manifest(_manifest())).to_json()
    change(data)
    with pytest.raises(SummaryError, match=message):
        WindowSummary.from_json(data)


def test_sums_that_overflow_stay_readable_and_the_counts_exact() -> None:
    grid = NumericGrid.from_sorted([-1e308, 0.0, 1e308])
    summary = NumericSummary.empty(grid)
    summary.add([1e308, 1e308, -1e308], grid)
    data = json.loads(json.dumps(summary.to_json(), allow_nan=False))
    back = NumericSummary.from_json(data)
    assert back.cells.tolist() == [0, 1, 0, 0, 0, 2, 0]
    assert back.total_squares == math.inf and back.total == summary.total


def _two_numeric_manifest(task: str) -> ModelManifest:
    base = _manifest(task)
    features = (FeatureSpec("age", "numeric"), FeatureSpec("income", "numeric"), FeatureSpec("city", "categorical"))
    references = {**base.reference.features, "income": NumericReference(sorted_values=(-1.0, 0.0, 0.0, 2.5))}
    return dataclasses.replace(base, features=features, reference=dataclasses.replace(base.reference, features=references))


@pytest.mark.parametrize("task", ["binary", "regression"])
@SETTINGS
@given(st.lists(st.tuples(*[st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 20.0, 30.0, 31.5, -1.0, 2.5, 1e308])] * 2), max_size=40))
def test_a_slice_counted_as_the_window_read_gives_it_counts_as_its_columns_do(task: str, rows: list[tuple[float, float]]) -> None:
    """The window read's way in (numeric columns as one matrix, predictions as counts per text)
    gives the summary that the same columns and predictions give value by value."""
    reference = SummaryReference.from_manifest(_two_numeric_manifest(task))
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), 2).T
    cities = ["a", None, "c", math.nan, "b"] * 8
    cities = cities[: len(rows)]
    if task == "regression":
        values: list = [1.0, 2.0, math.nan, None, 7.5, 3.0] * 7
    else:
        # Values that are equal in Python (1, 1.0, True) but are separate categories.
        values = ["yes", 1, 1.0, True, None, math.nan, "no"] * 6
    values = values[: len(rows)]
    pairs: dict[int, tuple] = {}
    for value in values:
        pairs[id(value)] = (value, pairs.get(id(value), (value, 0))[1] + 1)
    expected = summarise({"age": matrix[0], "income": matrix[1], "city": cities}, reference, values)
    summariser = WindowSummariser(reference)
    summariser.add_slice(["age", "income"], matrix, {"city": cities}, list(pairs.values()), len(rows))
    assert summariser.summary().to_json() == expected.to_json()
