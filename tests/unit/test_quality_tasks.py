"""Model quality per task: regression and multiclass metrics against scikit-learn, interval
coverage, mergeable aggregates, direction-aware verdicts, and the held-out metrics registration records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, r2_score, root_mean_squared_error

from sml.lifecycle.quality_metrics import metrics_for
from sml.monitoring.model_quality.metrics import (
    METRIC_FAMILIES,
    UNLABELLED,
    ClassificationAggregate,
    MetricContext,
    QualityConfig,
    QualityVerdict,
    RegressionAggregate,
    assess_quality,
    assess_regression_quality,
    held_out_metrics,
    realized_from_aggregate,
)
from sml.monitoring.summaries import QUALITY_AGGREGATES

CONTEXT = MetricContext((), None, 0.95, 200, 1)


def _regression_world(rng: np.random.Generator, n: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    truth = offset + 150 + 50 * x + rng.normal(scale=20, size=n)
    predictions = offset + 150 + 50 * x + rng.normal(scale=5, size=n)
    return predictions, truth


def _regression(predictions: np.ndarray, truth: np.ndarray, centre: float = 0.0) -> RegressionAggregate:
    aggregate = RegressionAggregate.for_reference(centre, 20.0, [100.0, 150.0, 200.0])
    aggregate.add(predictions, truth)
    return aggregate


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_regression_metrics_equal_scikit_learn_whatever_the_labels_offset(offset: float) -> None:
    predictions, truth = _regression_world(np.random.default_rng(2), 3000, offset)
    realized = realized_from_aggregate("regression", _regression(predictions, truth, centre=offset + 140), CONTEXT)

    assert realized.get("mae").value == pytest.approx(mean_absolute_error(truth, predictions))
    assert realized.get("rmse").value == pytest.approx(root_mean_squared_error(truth, predictions))
    assert realized.get("r2").value == pytest.approx(r2_score(truth, predictions), rel=1e-9)
    assert realized.get("mape").value == pytest.approx(mean_absolute_percentage_error(truth, predictions))
    assert realized.get("mean_error").value == pytest.approx(np.mean(predictions - truth), abs=1e-9)
    assert {value.metric for value in realized.metrics} == set(metrics_for("regression"))
    for value in realized.metrics:
        assert value.low <= value.value <= value.high


def test_mape_is_left_out_when_a_label_is_zero() -> None:
    realized = realized_from_aggregate("regression", _regression(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0])), CONTEXT)
    assert realized.get("mape") is None and realized.get("mae").value == pytest.approx(2 / 3)


def test_regression_intervals_cover_the_population_value_about_as_often_as_stated() -> None:
    # Labels kept far from 0: MAPE's per-row terms 1/|label| have no finite variance near 0, and no normal interval covers then.
    rng = np.random.default_rng(5)
    population = realized_from_aggregate("regression", _regression(*_regression_world(rng, 400_000, 200.0)), CONTEXT)
    metrics = ("mae", "rmse", "r2", "mean_error", "mape")
    covered = dict.fromkeys(metrics, 0)
    trials = 300
    for _ in range(trials):
        sample = realized_from_aggregate("regression", _regression(*_regression_world(rng, 300, 200.0)), CONTEXT)
        for metric in metrics:
            value = sample.get(metric)
            covered[metric] += value.low <= population.get(metric).value <= value.high
    for metric in metrics:
        assert 0.90 <= covered[metric] / trials <= 0.99, (metric, covered[metric] / trials)


def _split(n: int, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), parts)


def test_aggregates_merge_by_adding_and_round_trip_through_json() -> None:
    rng = np.random.default_rng(9)
    predictions, truth = _regression_world(rng, 2000)
    truth[::3] = np.nan
    whole = _regression(predictions, truth, 150.0)
    parts = [_regression(predictions[rows], truth[rows], 150.0) for rows in _split(2000, 3, rng)]
    merged = parts[0].merge(parts[1]).merge(QUALITY_AGGREGATES["regression"].from_json(json.loads(json.dumps(parts[2].to_json()))))
    merged_metrics = realized_from_aggregate("regression", merged, CONTEXT).metrics
    whole_metrics = realized_from_aggregate("regression", whole, CONTEXT).metrics
    assert [m.metric for m in merged_metrics] == [m.metric for m in whole_metrics]
    assert [bound for m in merged_metrics for bound in (m.value, m.low, m.high)] == pytest.approx([bound for m in whole_metrics for bound in (m.value, m.low, m.high)])
    assert merged.residual_plots().counts == whole.residual_plots().counts
    k = 3
    truth_index = rng.integers(0, k, 3000)
    truth_index[::4] = UNLABELLED
    predicted = rng.integers(0, k, 3000)
    probabilities = rng.dirichlet(np.ones(k), 3000)
    whole_classes = ClassificationAggregate(k, None)
    whole_classes.add(predicted, probabilities, truth_index)
    pieces = []
    for rows in _split(3000, 4, rng):
        piece = ClassificationAggregate(k, None)
        piece.add(predicted[rows], probabilities[rows], truth_index[rows])
        pieces.append(QUALITY_AGGREGATES["classification"].from_json(json.loads(json.dumps(piece.to_json()))))
    merged_classes = pieces[0]
    for piece in pieces[1:]:
        merged_classes = merged_classes.merge(piece)
    context = MetricContext(("a", "b", "c"), None, 0.95, 200, 1)
    expected = realized_from_aggregate("multiclass", whole_classes, context)
    got = realized_from_aggregate("multiclass", merged_classes, context)
    assert [(m.metric, m.class_label) for m in got.metrics] == [(m.metric, m.class_label) for m in expected.metrics]
    assert [m.value for m in got.metrics] == pytest.approx([m.value for m in expected.metrics])
    assert [m.high for m in got.metrics] == pytest.approx([m.high for m in expected.metrics])


def test_aggregates_of_different_bins_or_classes_do_not_merge() -> None:
    with pytest.raises(ValueError, match="different centres or bins"):
        RegressionAggregate.for_reference(0.0, 1.0, ()).merge(RegressionAggregate.for_reference(0.0, 2.0, ()))
    with pytest.raises(ValueError, match="different classes"):
        ClassificationAggregate(3, None).merge(ClassificationAggregate(2, 1))


def _assess_regression(predictions: np.ndarray, truth: np.ndarray, reference: dict[str, float], metric: str | None = None):
    return assess_regression_quality(
        predictions=predictions, truth=truth, n_labels_not_numbers=0, delay_seconds=np.zeros(int(np.isfinite(truth).sum())),
        reference_metrics=reference, estimator=None, columns=None, config=QualityConfig(metric=metric, tolerance=0.1),
    )


def test_regression_verdicts_know_that_lower_errors_are_better() -> None:
    rng = np.random.default_rng(4)
    predictions, truth = _regression_world(rng, 2000)
    rmse = root_mean_squared_error(truth, predictions)
    reference = {"rmse": rmse, "mae": mean_absolute_error(truth, predictions), "r2": r2_score(truth, predictions)}
    same = _assess_regression(*_regression_world(rng, 2000), reference)
    assert same.status is QualityVerdict.OK and same.config.metric == "rmse"
    better = _assess_regression(predictions, predictions + rng.normal(scale=1, size=2000), reference)
    assert better.status is QualityVerdict.OK and better.realized.get("rmse").value < rmse / 5
    shuffled = _assess_regression(predictions, rng.permutation(truth), reference)
    assert shuffled.status is QualityVerdict.DEGRADED and "above the held-out" in shuffled.reason and "lower is better" in shuffled.reason
    for metric in ("mae", "r2"):
        assert _assess_regression(predictions, rng.permutation(truth), reference, metric).status is QualityVerdict.DEGRADED
    few = _assess_regression(predictions[:50], truth[:50], reference)
    assert few.status is QualityVerdict.INSUFFICIENT_DATA


def test_a_slightly_worse_rmse_inside_the_relative_tolerance_is_ok() -> None:
    rng = np.random.default_rng(6)
    predictions, truth = _regression_world(rng, 20_000)
    rmse = root_mean_squared_error(truth, predictions)
    outcome = _assess_regression(predictions, truth, {"rmse": rmse / 1.05})
    assert outcome.realized.get("rmse").low > rmse / 1.05
    assert outcome.status is QualityVerdict.OK


def test_multiclass_wrong_labels_are_degraded_on_macro_f1_and_right_ones_ok() -> None:
    rng = np.random.default_rng(12)
    classes = ("class_0", "class_1", "class_2")
    n = 3000
    truth = rng.integers(0, 3, n)
    probabilities = rng.dirichlet(np.ones(3) * 0.5, n)
    probabilities[np.arange(n), truth] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    reference = held_out_metrics("multiclass", truth=[classes[i] for i in truth], predictions=[classes[i] for i in predicted], probabilities=probabilities, classes=classes)
    assert set(reference) == set(metrics_for("multiclass"))

    def assess(labels: np.ndarray):
        return assess_quality(
            classes=classes, positive_class=None, predicted_index=predicted, probabilities=probabilities, true_index=labels,
            delay_seconds=np.zeros(n), reference_metrics=reference, calibrator=None, config=QualityConfig(),
        )

    right = assess(truth)
    assert right.status is QualityVerdict.OK and right.config.metric == "f1_macro" and right.task == "multiclass"
    assert right.realized.get("f1_macro").value == pytest.approx(reference["f1_macro"])
    assert len(right.realized.confusion) == 3 and sum(map(sum, right.realized.confusion)) == n
    wrong = assess((truth + 1) % 3)
    assert wrong.status is QualityVerdict.DEGRADED and "f1_macro" in wrong.reason


def test_held_out_metrics_of_a_regression_model_are_the_weekly_runs_metrics() -> None:
    predictions, truth = _regression_world(np.random.default_rng(1), 500)
    reference = held_out_metrics("regression", truth=truth, predictions=predictions)
    assert set(reference) == set(metrics_for("regression"))
    assert reference["rmse"] == pytest.approx(root_mean_squared_error(truth, predictions))


def test_every_task_has_a_metric_family_for_each_of_its_listed_metrics() -> None:
    for task, families in METRIC_FAMILIES.items():
        registered = {name for names, _ in families for name in names}
        assert registered == set(metrics_for(task)), task


def test_the_loss_sample_is_uniform_whatever_the_slicing_and_keeps_every_row_of_a_small_window() -> None:
    import msgspec

    from sml.monitoring.model_quality.store import LossSample

    row_type = msgspec.defstruct("Row", [("n0", float), ("c0", str)], rename={"n0": "x", "c0": "kind"})
    rows = [row_type(float(index), f"k{index % 3}") for index in range(1000)]
    predictions = np.arange(1000, dtype=float)
    predictions[7] = np.nan

    def sampled(size: int, cuts: list[int]) -> LossSample:
        sample = LossSample(["x", "kind", "absent"], size=size, seed=5)
        for start, end in zip([0, *cuts], [*cuts, 1000]):
            sample.add(predictions[start:end], rows[start:end])
        return sample.finish()

    def sampled_rows(sample: LossSample) -> list[tuple]:
        columns = sample.columns()
        return sorted(zip(sample.predictions.tolist(), columns["x"], columns["kind"], columns["absent"]))

    whole, sliced = sampled(100, []), sampled(100, [10, 333, 900])
    assert len(sampled_rows(whole)) == 100 and sampled_rows(whole) == sampled_rows(sliced)
    columns = whole.columns()
    assert set(columns) == {"x", "kind", "absent"} and columns["absent"] == [None] * 100
    # Each row's values stay together: here x is its prediction and kind follows from it.
    assert all(prediction == x and kind == f"k{int(x) % 3}" for prediction, x, kind, _ in sampled_rows(whole))
    everything = sampled(5000, [500])
    assert sorted(everything.columns()["x"]) == [float(index) for index in range(1000) if index != 7]
    assert LossSample(["x", "kind"]).finish().columns() == {"x": [], "kind": []}
    # Read in slices, it holds at most a quarter more rows than it keeps, and keeps the same ones.
    held, in_slices = [], LossSample(["x", "kind", "absent"], size=100, seed=5)
    for start in range(0, 1000, 10):
        in_slices.add(predictions[start : start + 10], rows[start : start + 10])
        held.append(len(in_slices.rows))
    assert max(held) < 125 and sampled_rows(in_slices.finish()) == sampled_rows(whole)


@pytest.mark.parametrize("text", ["null", "1, 2", "", "true", '"3"', "[4]", "1e400", "NaN", "5 6"])
def test_a_regression_label_that_is_not_one_finite_number_is_counted_and_never_shifts_the_others(text: str) -> None:
    from sml.monitoring.model_quality.store import RegressionColumns

    numbers = RegressionColumns()
    # (prediction, probabilities, label, delay µs): one label that is not a number among numbers and a missing one.
    numbers.add_rows([("1.5", None, "2", 1e6), ("7", None, text, 2e6), ("-3", None, None, None), ("0", None, " -4.25e1 ", 3e6)])
    numbers.add_rows([("2", None, "8", 4e6), ("1e2", None, None, None)])
    sample = numbers.sample({})
    np.testing.assert_array_equal(sample.predictions, [1.5, 7.0, -3.0, 0.0, 2.0, 100.0])
    np.testing.assert_array_equal(sample.truth, [2.0, np.nan, np.nan, -42.5, 8.0, np.nan])
    assert sample.n_labels_not_numbers == 1
    # A label that is not a number is still a label: only the missing ones have no delay.
    np.testing.assert_array_equal(sample.delay_seconds, [1.0, 2.0, np.nan, 3.0, 4.0, np.nan])
