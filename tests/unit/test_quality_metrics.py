"""Model quality metrics against scikit-learn, interval coverage by simulation, CBPE on simulated shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from sml.core.errors import SmlError
from sml.lifecycle.calibration import Calibrator, fit_calibrator
from sml.monitoring.model_quality.metrics import (
    LABEL_OUTSIDE_CLASSES,
    SCORE_BINS,
    UNLABELLED,
    QualityConfig,
    QualityVerdict,
    _confusion_metrics,
    assess_quality,
    estimated_quality,
    expected_calibration_error,
    label_delay,
    realized_quality,
    reliability_bins,
)

CLASSES = ("benign", "malignant")


def _binary_world(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A calibrated-by-construction binary model: x ~ N(shift, 1), P(malignant | x) = sigmoid(2x); the model outputs that probability."""
    x = rng.normal(shift, 1.0, n)
    p = 1 / (1 + np.exp(-2 * x))
    truth = (rng.random(n) < p).astype(int)
    probabilities = np.column_stack([1 - p, p])
    predicted = (p >= 0.5).astype(int)
    return truth, predicted, probabilities


def _histogram_tie_bound(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Half the share of (positive, negative) pairs whose scores share a histogram bin: the most binning can move ROC AUC."""
    cells = np.clip((scores * SCORE_BINS).astype(int), 0, SCORE_BINS - 1)
    positives = np.bincount(cells[is_positive], minlength=SCORE_BINS)
    negatives = np.bincount(cells[~is_positive], minlength=SCORE_BINS)
    return float((positives * negatives).sum()) / (2 * positives.sum() * negatives.sum()) + 1e-12


@pytest.mark.parametrize("case", range(6))
def test_realized_metrics_equal_scikit_learn_on_random_cases(case: int) -> None:
    rng = np.random.default_rng(case)
    n_classes = 2 if case < 4 else 3
    classes = CLASSES if n_classes == 2 else ("a", "b", "c")
    n = int(rng.integers(50, 2000))
    truth = rng.integers(0, n_classes, n)
    predicted = np.where(rng.random(n) < 0.7, truth, rng.integers(0, n_classes, n))
    raw = rng.dirichlet(np.ones(n_classes), n)
    positive = "malignant" if n_classes == 2 else None
    result = realized_quality(truth, predicted, raw, classes, positive, replicates=200)

    labels = list(range(n_classes))
    assert result.get("accuracy").value == pytest.approx(accuracy_score(truth, predicted))
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    for index, label in enumerate(classes):
        assert result.get("precision", label).value == pytest.approx(precision[index])
        assert result.get("recall", label).value == pytest.approx(recall[index])
        assert result.get("f1", label).value == pytest.approx(f1[index])
    assert result.get("f1_macro").value == pytest.approx(f1_score(truth, predicted, average="macro", labels=labels))
    assert result.get("log_loss").value == pytest.approx(log_loss(truth, raw, labels=labels))
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(truth, predicted, labels=labels, average=average, zero_division=0)
        assert [result.get(f"{name}_{average}").value for name in ("precision", "recall", "f1")] == pytest.approx(expected[:3])
    if n_classes == 2:
        assert result.get("f1").value == pytest.approx(f1_score(truth, predicted, pos_label=1))
        assert result.get("roc_auc").value == pytest.approx(roc_auc_score(truth, raw[:, 1]), abs=_histogram_tie_bound(truth == 1, raw[:, 1]))
        assert result.get("brier").value == pytest.approx(brier_score_loss(truth, raw[:, 1]))
        prob_true, prob_pred = calibration_curve(truth, raw[:, 1], n_bins=10)
        bins = result.reliability
        assert [b.fraction_positive for b in bins] == pytest.approx(prob_true)
        assert [b.mean_predicted for b in bins] == pytest.approx(prob_pred)
        assert sum(b.count for b in bins) == n
        counts = np.array([b.count for b in bins])
        assert result.get("ece").value == pytest.approx(float(np.sum(counts / n * np.abs(prob_true - prob_pred))))
    else:
        assert result.get("f1") is None
        bound = max(_histogram_tie_bound(truth == k, raw[:, k]) for k in labels)
        assert result.get("roc_auc").value == pytest.approx(roc_auc_score(truth, raw, multi_class="ovr", average="macro", labels=labels), abs=bound)
        for k, label in enumerate(classes):
            assert result.get("roc_auc", label).value == pytest.approx(roc_auc_score(truth == k, raw[:, k]), abs=bound)
        assert result.get("brier").value == pytest.approx(brier_score_loss(truth, raw, labels=labels))
        top = raw.argmax(axis=1)
        prob_true, prob_pred = calibration_curve(top == truth, raw.max(axis=1), n_bins=10)
        counts = np.array([b.count for b in result.reliability])
        assert result.get("ece").value == pytest.approx(float(np.sum(counts / n * np.abs(prob_true - prob_pred))))
    for metric in result.metrics:
        if metric.low is not None:
            assert metric.low <= metric.value + 1e-12 <= metric.high + 2e-12 or metric.metric == "ece", metric


def test_vectorised_bootstrap_metrics_equal_scikit_learn_on_random_confusion_matrices() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        k = int(rng.integers(2, 5))
        matrix = rng.integers(0, 30, (k, k))
        matrix[rng.integers(0, k)] = 0  # an empty true class: zero_division cases
        true_cells, predicted_cells = np.divmod(np.arange(k * k), k)
        weights = matrix.ravel()
        if weights.sum() == 0:
            continue
        ours = _confusion_metrics(matrix[None])
        precision, recall, f1, _ = precision_recall_fscore_support(true_cells, predicted_cells, labels=list(range(k)), sample_weight=weights, zero_division=0)
        np.testing.assert_allclose(ours["precision"][0], precision)
        np.testing.assert_allclose(ours["recall"][0], recall)
        np.testing.assert_allclose(ours["f1"][0], f1)
        assert ours["accuracy"][0] == pytest.approx(accuracy_score(true_cells, predicted_cells, sample_weight=weights))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_a_window_without_an_error_gets_an_interval_below_one_that_narrows_with_its_size(n_classes: int) -> None:
    # The bootstrap resampled only the cells seen: a perfect window showed F1 "1 [1, 1]".
    classes = tuple(f"class {index}" for index in range(n_classes))
    positive = classes[1] if n_classes == 2 else None
    widths = []
    for n in (40, 400, 4_000):
        truth = np.arange(n) % n_classes
        result = realized_quality(truth, truth, None, classes, positive)
        for name in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", *(("f1", "precision", "recall") if positive else ())):
            metric = result.get(name)
            assert (metric.value, metric.high, metric.interval) == (1.0, 1.0, "dirichlet"), name
            assert 0.5 < metric.low < 1.0, (name, metric.low)
        widths.append(1.0 - result.get("f1_macro").low)
    assert widths[0] > widths[1] > widths[2] > 0
    # For a binary model's accuracy the interval is Jeffreys' (Brown, Cai & DasGupta 2001), upper end 1 when x = n.
    n = 400
    jeffreys_low = float(stats.beta.ppf(0.025, n + 0.5, 0.5))
    accuracy = realized_quality(np.arange(n) % 2, np.arange(n) % 2, None, CLASSES, "malignant", replicates=20_000).get("accuracy")
    assert accuracy.low == pytest.approx(jeffreys_low, abs=2e-3)


def test_a_class_absent_from_the_window_keeps_its_zero_and_the_others_their_intervals() -> None:
    classes = ("a", "b", "c")
    truth = np.array([0, 1] * 100)
    predicted = np.array([0, 1] * 99 + [1, 0])
    result = realized_quality(truth, predicted, None, classes, None)
    absent = result.get("f1", "c")
    assert (absent.value, absent.low, absent.high) == (0.0, 0.0, 0.0)
    present = result.get("f1", "a")
    assert present.low < present.value < present.high


def test_reliability_bins_match_calibration_curve_at_bin_edges() -> None:
    scores = np.array([0.0, 0.1, 0.1, 0.2, 0.5, 0.9, 1.0, 1.0])
    truth = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    prob_true, prob_pred = calibration_curve(truth, scores, n_bins=10)
    bins = reliability_bins(truth == 1, scores)
    assert [b.fraction_positive for b in bins] == pytest.approx(prob_true)
    assert [b.mean_predicted for b in bins] == pytest.approx(prob_pred)


def test_a_perfectly_calibrated_reliability_table_has_no_calibration_error() -> None:
    scores = np.repeat([0.25, 0.75], 4)
    truth = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(reliability_bins(truth == 1, scores)) == pytest.approx(0.0)


def test_intervals_cover_the_population_value_about_as_often_as_stated() -> None:
    """200 samples of 400 from one population; each 95 % interval must hold the population value in 90-99 % of them."""
    rng = np.random.default_rng(11)
    metrics = ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "brier")
    population = realized_quality(*_binary_world(rng, 400_000), CLASSES, "malignant", replicates=10)
    targets = {metric: population.get(metric).value for metric in metrics}
    covered = dict.fromkeys(metrics, 0)
    trials = 200
    for _ in range(trials):
        sample = realized_quality(*_binary_world(rng, 400), CLASSES, "malignant", replicates=400, seed=int(rng.integers(1 << 30)))
        for metric in metrics:
            covered[metric] += sample.get(metric).low <= targets[metric] <= sample.get(metric).high
    rates = {metric: count / trials for metric, count in covered.items()}
    assert all(0.90 <= rate <= 0.99 for rate in rates.values()), rates


def _fitted_calibrator(rng: np.random.Generator, distort: bool) -> tuple[Calibrator, callable]:
    """A model whose raw probabilities are a distorted (overconfident) version of the truth, and its calibrator."""

    def model(n: int, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth, _, probabilities = _binary_world(rng, n, shift)
        p = probabilities[:, 1]
        raw = p**2 / (p**2 + (1 - p) ** 2) if distort else p
        return truth, (raw >= 0.5).astype(int), np.column_stack([1 - raw, raw])

    truth, _, raw = model(5_000, 0.0)
    return fit_calibrator(truth, raw, CLASSES, "malignant", fitted_on="test"), model


def test_calibrator_evaluates_like_scikit_learns_isotonic_regression_and_survives_json() -> None:
    rng = np.random.default_rng(5)
    truth, _, raw = _binary_world(rng, 2_000)
    calibrator = fit_calibrator(truth, raw, CLASSES, "malignant", fitted_on="held-out split")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw[:, 1], truth)
    probe = np.column_stack([1 - (grid := np.linspace(-0.1, 1.1, 301)), grid])
    np.testing.assert_allclose(Calibrator.from_json(calibrator.to_json()).calibrate(probe)[:, 1], reference.predict(grid), atol=1e-12)


def test_calibrator_json_with_a_decreasing_map_is_refused() -> None:
    data = {"method": "isotonic", "classes": list(CLASSES), "maps": {"malignant": {"x": [0.5, 0.1], "y": [0.2, 0.3]}}}
    with pytest.raises(ValueError, match="increasing map"):
        Calibrator.from_json(data)


@pytest.mark.parametrize("shift", [0.0, 0.7, -0.7])
def test_cbpe_estimate_lands_inside_the_realized_interval_under_covariate_shift(shift: float) -> None:
    rng = np.random.default_rng(21)
    calibrator, model = _fitted_calibrator(rng, distort=True)
    truth, predicted, raw = model(3_000, shift)
    realized = realized_quality(truth, predicted, raw, CLASSES, "malignant")
    estimated = estimated_quality(predicted, raw, calibrator, "malignant")
    for metric in ("accuracy", "f1", "precision", "recall"):
        interval = realized.get(metric)
        assert interval.low <= estimated.get(metric).value <= interval.high, (metric, interval, estimated.get(metric))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_cbpe_estimates_roc_auc_one_vs_rest_within_the_realized_interval_on_calibrated_data(n_classes: int) -> None:
    # Well calibrated: each label is drawn from the model's own probabilities (the calibrator,
    # fitted on a held-out draw, is then close to the identity).
    rng = np.random.default_rng(31 + n_classes)
    classes = CLASSES if n_classes == 2 else ("a", "b", "c")
    positive = "malignant" if n_classes == 2 else None

    def world(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth_probabilities = rng.dirichlet(np.full(n_classes, 0.8), n)
        labels = (truth_probabilities.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
        return labels, truth_probabilities.argmax(axis=1), truth_probabilities

    calibrator = fit_calibrator(*world(20_000)[::2], classes, positive, fitted_on="test")
    truth, predicted, raw = world(8_000)
    realized = realized_quality(truth, predicted, raw, classes, positive).get("roc_auc")
    estimated = estimated_quality(predicted, raw, calibrator, positive)
    assert realized.low <= estimated.get("roc_auc").value <= realized.high, (realized, estimated.get("roc_auc"))
    assert abs(estimated.get("roc_auc").value - realized.value) < 0.01
    if n_classes == 3:
        per_class = [metric for metric in estimated.metrics if metric.metric == "roc_auc" and metric.class_label is not None]
        assert [metric.class_label for metric in per_class] == list(classes)
        assert estimated.get("roc_auc").value == pytest.approx(np.mean([metric.value for metric in per_class]))


def test_label_flips_leave_the_estimate_unchanged_while_realized_f1_falls_to_degraded() -> None:
    rng = np.random.default_rng(8)
    calibrator, model = _fitted_calibrator(rng, distort=False)
    truth, predicted, raw = model(4_000, 0.0)
    flipped = truth.copy()
    flip = (rng.random(truth.size) < 0.3) & (predicted == truth)
    flipped[flip] = 1 - flipped[flip]
    reference = realized_quality(truth, predicted, raw, CLASSES, "malignant").get("f1").value
    config = QualityConfig(tolerance=0.05, min_labels=100)
    outcome = assess_quality(
        classes=CLASSES,
        positive_class="malignant",
        predicted_index=predicted,
        probabilities=raw,
        true_index=flipped,
        delay_seconds=np.full(truth.size, 3600.0),
        reference_metrics={"f1": reference},
        calibrator=calibrator,
        config=config,
    )
    assert outcome.status is QualityVerdict.DEGRADED
    assert outcome.realized.get("f1").high < reference - 0.05
    assert abs(outcome.estimated.get("f1").value - reference) < 0.03


def test_verdict_is_insufficient_data_below_the_minimum_labels_and_ok_when_near_the_reference() -> None:
    rng = np.random.default_rng(2)
    truth, predicted, raw = _binary_world(rng, 1_000)
    true_index = np.full(truth.size, UNLABELLED)
    true_index[:50] = truth[:50]
    true_index[50] = LABEL_OUTSIDE_CLASSES
    delays = np.where(true_index != UNLABELLED, 120.0, np.nan)
    kwargs = dict(classes=CLASSES, positive_class="malignant", predicted_index=predicted, probabilities=raw, calibrator=None)
    few = assess_quality(true_index=true_index, delay_seconds=delays, reference_metrics={"f1": 0.8}, config=QualityConfig(min_labels=100), **kwargs)
    assert few.status is QualityVerdict.INSUFFICIENT_DATA and "50 labelled" in few.reason
    assert few.coverage == pytest.approx(0.05) and few.n_labels_outside_classes == 1
    assert few.delay.p50 == 120.0
    enough = assess_quality(true_index=truth, delay_seconds=np.zeros(truth.size), reference_metrics={"f1": f1_score(truth, predicted)}, config=QualityConfig(), **kwargs)
    assert enough.status is QualityVerdict.OK
    no_reference = assess_quality(true_index=truth, delay_seconds=np.zeros(truth.size), reference_metrics={}, config=QualityConfig(), **kwargs)
    assert no_reference.status is QualityVerdict.INSUFFICIENT_DATA and "no held-out f1" in no_reference.reason


def test_a_window_without_positive_labels_is_insufficient_data_not_degraded() -> None:
    n = 500
    negatives = np.zeros(n, dtype=int)
    probabilities = np.column_stack([np.full(n, 0.9), np.full(n, 0.1)])
    outcome = assess_quality(
        classes=CLASSES,
        positive_class="malignant",
        predicted_index=negatives,
        probabilities=probabilities,
        true_index=negatives,
        delay_seconds=np.zeros(n),
        reference_metrics={"f1": 0.9},
        calibrator=None,
        config=QualityConfig(),
    )
    assert outcome.realized.get("f1").value == 0.0  # scikit-learn's zero_division
    assert outcome.status is QualityVerdict.INSUFFICIENT_DATA and "positive class 'malignant'" in outcome.reason


def test_quality_config_refuses_a_metric_no_verdict_can_use_and_one_of_another_task() -> None:
    with pytest.raises(ValueError, match="'mean_error': choose one of accuracy"):
        QualityConfig(metric="mean_error")
    with pytest.raises(ValueError, match="'auc'"):
        QualityConfig(metric="auc")
    with pytest.raises(ValueError, match="not a verdict metric of a binary model"):
        QualityConfig(metric="rmse").for_task("binary")
    assert QualityConfig().for_task("multiclass").metric == "f1_macro"
    assert QualityConfig().for_task("regression").metric == "rmse"
    with pytest.raises(SmlError, match="SML_QUALITY_METRIC: quality metric 'f2'"):
        QualityConfig.from_settings("f2", 0.05, 100)


def test_hanley_mcneil_interval_width_shrinks_like_one_over_root_n() -> None:
    rng = np.random.default_rng(4)
    widths = []
    for n in (400, 1600):
        truth, predicted, raw = _binary_world(rng, n)
        auc = realized_quality(truth, predicted, raw, CLASSES, "malignant", replicates=10).get("roc_auc")
        widths.append(auc.high - auc.low)
    assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.15)
    assert math.isfinite(widths[0])


def test_a_window_whose_scores_separate_every_pair_gets_an_auc_interval_below_one_that_narrows() -> None:
    # The Wald form A ± z·SE(A) has SE(1) = 0: a perfect window showed ROC AUC "1 [1, 1]".
    lows = []
    for n in (40, 400, 4_000):
        truth = np.arange(n) % 2
        scores = np.where(truth == 1, 0.9, 0.1)
        raw = np.column_stack([1 - scores, scores])
        auc = realized_quality(truth, truth, raw, CLASSES, "malignant", replicates=10).get("roc_auc")
        assert (auc.value, auc.high) == (1.0, 1.0)
        assert 0.5 < auc.low < 1.0
        lows.append(auc.low)
    assert lows[0] < lows[1] < lows[2] < 1.0


def test_the_auc_score_interval_holds_its_estimate_and_meets_the_wald_interval_inside() -> None:
    from sml.monitoring.model_quality.metrics import _auc_score_interval, _hanley_mcneil_variance

    z = 1.959963984540054
    for auc, n_positive, n_negative in ((0.83, 2_000, 3_000), (0.6, 500, 700), (0.97, 5_000, 5_000)):
        low, high = _auc_score_interval(auc, n_positive, n_negative, z)
        half = z * math.sqrt(_hanley_mcneil_variance(auc, n_positive, n_negative))
        assert low < auc < high
        assert low == pytest.approx(auc - half, rel=2e-3) and high == pytest.approx(auc + half, rel=2e-3)
    assert _auc_score_interval(0.0, 30, 30, z)[0] == 0.0 and 0.0 < _auc_score_interval(0.0, 30, 30, z)[1] < 0.5
    assert _auc_score_interval(1.0, 30, 30, z)[1] == 1.0


def test_a_window_without_labels_does_not_import_scikit_learn() -> None:
    # scikit-learn costs ~0.3 s to import in the drift function; a weekly run with no labelled
    # prediction has nothing to score with it (it was imported first and made the run 1.9x the raw
    # read of its window in bench/drift_bench.py).
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from sml.monitoring.model_quality.metrics import realized_quality\n"
        "empty = np.array([], dtype=int)\n"
        "assert realized_quality(empty, empty, None, ['a', 'b'], 'b').n_labelled == 0\n"
        "print('sklearn' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert completed.stdout.strip() == "False"


def test_label_delays_below_zero_are_counted_and_left_out_of_the_percentiles() -> None:
    delays = np.array([3600.0] * 90 + [-1.8e9] * 10)

    delay = label_delay(delays)

    assert (delay.p50, delay.maximum, delay.before_prediction) == (3600.0, 3600.0, 10)
    every_label_early = label_delay(np.array([-5.0, -1.0]))
    assert every_label_early.before_prediction == 2 and math.isnan(every_label_early.p50)
