"""Model quality of one window: realized performance from labels, estimated performance (CBPE) without.

Pure computation, no I/O. Inputs are class indices into the model's ``classes`` (manifest order)
and the probability matrix the model returned (one column per class, same order).

**Realized performance** (predictions that have a label): accuracy, precision, recall and F1
(per class, macro, and for the positive class as the manifest's held-out metrics define them),
ROC AUC, log loss, Brier score and expected calibration error (ECE) with its reliability bins.
Point values come from :mod:`sklearn.metrics`. Intervals (``confidence``, default 95 %):

- confusion-matrix metrics (accuracy, precision, recall, F1): percentile bootstrap (Efron &
  Tibshirani 1993, ch. 13) with a fixed seed. Resampling labelled predictions with replacement
  only moves counts between the K×K confusion cells, so a replicate is one multinomial draw of
  the cell counts, exactly the row bootstrap at no cost per row. scikit-learn's metric functions
  cost ~6 ms a call in input validation, so 1,000 replicates are computed vectorised from the
  drawn matrices (``_confusion_metrics``), tested equal to scikit-learn's on random matrices;
- ROC AUC (binary): the analytic standard error of Hanley & McNeil (1982), "The meaning and use
  of the area under a ROC curve", Radiology 143:29-36, eq. 2, with a normal interval clipped to
  [0, 1];
- log loss and Brier score: means of per-prediction losses, so the normal (central limit)
  interval mean ± z·s/√n;
- ECE: bootstrap of the reliability table's (bin, label) cells with each cell's mean predicted
  probability held fixed; ECE is biased upwards in small samples, and its interval describes
  sampling spread only.

ECE (Naeini et al. 2015; Guo et al. 2017) uses ``RELIABILITY_BINS`` equal-width bins of the
positive class's probability, like :func:`sklearn.calibration.calibration_curve` with the
``uniform`` strategy: Σ_b n_b/n · |fraction positive_b − mean probability_b|.

**Estimated performance, CBPE** (confidence-based performance estimation, as NannyML): a
calibrator fitted at training on held-out data maps the model's probabilities to calibrated
ones (isotonic regression per class, :class:`sklearn.isotonic.IsotonicRegression`). Each
prediction of predicted class j then adds its calibrated probability of each true class k to the
expected confusion cell (k, j); the expected confusion matrix gives the estimated metrics for
every prediction, labelled or not. Assumption: **no concept drift** — P(label | model score) is
the same in production as on the held-out data. Covariate shift (inputs move, the relation holds)
is estimated correctly; a changed relation between inputs and labels is invisible to it, which
is what realized performance is for.

Verdict (:func:`quality_verdict`): DEGRADED when the upper end of the chosen metric's interval
lies more than ``tolerance`` below the manifest's held-out value; INSUFFICIENT_DATA with fewer
than ``min_labels`` labelled predictions (or no held-out value to compare with); OK otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import norm

from sml.lifecycle.calibration import Calibrator

RELIABILITY_BINS = 10
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 20_161
# Metrics a verdict can be based on: higher is better, and the manifest records them (training.evaluate).
VERDICT_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")
UNLABELLED = -1
LABEL_OUTSIDE_CLASSES = -2
PROBABILITY_EPSILON = 1e-15


class QualityVerdict(StrEnum):
    """Outcome of a window's model quality check."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


@dataclass(frozen=True)
class QualityConfig:
    """How quality is judged.

    :param metric: the metric the verdict compares with the manifest (one of ``VERDICT_METRICS``).
    :param tolerance: how far (absolute) below the held-out value the interval must lie for DEGRADED.
    :param min_labels: fewer labelled predictions in the window give INSUFFICIENT_DATA.
    :param confidence: the intervals' confidence level.
    """

    metric: str = "f1"
    tolerance: float = 0.05
    min_labels: int = 100
    confidence: float = 0.95
    bootstrap_replicates: int = BOOTSTRAP_REPLICATES
    seed: int = BOOTSTRAP_SEED

    def __post_init__(self) -> None:
        if self.metric not in VERDICT_METRICS:
            raise ValueError(f"quality metric {self.metric!r}: choose one of {', '.join(VERDICT_METRICS)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"quality confidence {self.confidence}: must be between 0 and 1")

    def parameters(self) -> dict[str, Any]:
        """What the verdict depends on, as stored with the run."""
        return {"metric": self.metric, "tolerance": self.tolerance, "min_labels": self.min_labels, "confidence": self.confidence}


@dataclass(frozen=True)
class MetricValue:
    """One metric: its value and interval (``None`` where none applies or too little data).

    :param class_label: the class of a per-class metric; ``None`` for a model-level one.
    :param interval: how the interval was computed (``bootstrap``, ``hanley-mcneil``, ``normal``) or ``None``.
    """

    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    class_label: str | None = None
    interval: str | None = None


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the reliability chart: probabilities in ``(lower, upper]`` (the first bin closed)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float
    fraction_positive: float


@dataclass(frozen=True)
class RealizedQuality:
    """Realized performance on ``n_labelled`` labelled predictions (``n_scored`` of them with probabilities)."""

    n_labelled: int
    n_scored: int
    metrics: tuple[MetricValue, ...]
    reliability: tuple[ReliabilityBin, ...]
    label_counts: tuple[int, ...] = ()
    positive_class: str | None = None
    classes: tuple[str, ...] = ()

    def get(self, metric: str, class_label: str | None = None) -> MetricValue | None:
        """The named metric (model-level unless ``class_label``), or ``None`` if it was not computed."""
        return next((value for value in self.metrics if value.metric == metric and value.class_label == class_label), None)


@dataclass(frozen=True)
class EstimatedQuality:
    """CBPE's estimate on ``n_predictions`` predictions: metrics and the expected confusion matrix (true × predicted)."""

    n_predictions: int
    metrics: tuple[MetricValue, ...]
    expected_confusion: tuple[tuple[float, ...], ...]

    def get(self, metric: str, class_label: str | None = None) -> MetricValue | None:
        return next((value for value in self.metrics if value.metric == metric and value.class_label == class_label), None)


@dataclass(frozen=True)
class LabelDelay:
    """``labelled_at - predicted_at`` in seconds over labelled predictions (percentiles, linear interpolation)."""

    p50: float
    p90: float
    p99: float
    maximum: float


@dataclass(frozen=True)
class QualityResult:
    """Model quality of one window: coverage, delay, realized and estimated performance, verdict.

    :param n_predictions: predictions in the window; ``n_labelled`` of them have a label among the
        model's classes; ``n_labels_outside_classes`` have a label that is not a class (not scored).
    :param reference_value: the manifest's held-out value of ``config.metric`` (``None`` if absent).
    :param n_unmatched_labels: labels labelled in the window whose prediction is not stored (yet):
        counted, never scored (a prediction may still arrive; a wrong id never will).
    """

    status: QualityVerdict
    reason: str
    config: QualityConfig
    classes: tuple[str, ...]
    positive_class: str | None
    n_predictions: int
    n_labelled: int
    n_labels_outside_classes: int
    reference_value: float | None
    realized: RealizedQuality | None
    estimated: EstimatedQuality | None
    delay: LabelDelay | None
    reference_metrics: dict[str, float] = field(default_factory=dict)
    n_unmatched_labels: int = 0

    @property
    def coverage(self) -> float:
        """Labelled / predicted (0 for an empty window)."""
        return self.n_labelled / self.n_predictions if self.n_predictions else 0.0


# --------------------------------------------------------------------------------------------
# Realized performance


def realized_quality(
    true_index: np.ndarray,
    predicted_index: np.ndarray,
    probabilities: np.ndarray | None,
    classes: Sequence[str],
    positive_class: str | None,
    *,
    confidence: float = 0.95,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> RealizedQuality:
    """Realized metrics with intervals (see the module's docstring for methods and sources).

    :param true_index, predicted_index: int arrays of class indices, one per labelled prediction.
    :param probabilities: ``(n, K)`` float array in class order, a row of NaN where the prediction
        has no probabilities; ``None`` when none has. Probability metrics use the complete rows.
    :param positive_class: the class the model-level precision/recall/F1/ROC AUC/Brier/ECE refer
        to (binary models); ``None`` makes them macro averages and skips Brier, ROC AUC and ECE.
    :returns: a :class:`RealizedQuality`; with no labelled prediction its metrics are empty.
    """
    classes = tuple(classes)
    n = int(true_index.size)
    if n == 0:
        return RealizedQuality(n_labelled=0, n_scored=0, metrics=(), reliability=(), classes=classes, positive_class=positive_class)
    # Imported here, after the no-label case: scikit-learn costs ~0.3 s to import in the drift function.
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    z = float(norm.ppf(0.5 + confidence / 2))
    metrics: list[MetricValue] = []
    # Confusion-matrix metrics depend on the rows only through the K×K cell counts, so scikit-learn
    # scores the cells weighted by their counts: the same values, at a cost that does not grow with n.
    cells = confusion_cells(true_index, predicted_index, len(classes))
    cell_true, cell_predicted = np.divmod(np.arange(cells.size), len(classes))
    weights = cells.ravel()
    precision, recall, f1, _ = precision_recall_fscore_support(cell_true, cell_predicted, labels=labels, sample_weight=weights, zero_division=0)
    macro = precision_recall_fscore_support(cell_true, cell_predicted, labels=labels, sample_weight=weights, average="macro", zero_division=0)
    accuracy = accuracy_score(cell_true, cell_predicted, sample_weight=weights)
    replicate_matrices = np.random.default_rng(seed).multinomial(n, cells.ravel() / n, size=replicates).reshape(replicates, *cells.shape)
    boot = _confusion_metrics(replicate_matrices)
    alpha = (1 - confidence) / 2

    def interval(samples: np.ndarray) -> tuple[float, float]:
        low, high = np.quantile(samples, [alpha, 1 - alpha])
        return float(low), float(high)

    metrics.append(MetricValue("accuracy", float(accuracy), *interval(boot["accuracy"]), interval="bootstrap"))
    positive = classes.index(positive_class) if positive_class in classes else None
    for name, per_class, macro_value in (("precision", precision, macro[0]), ("recall", recall, macro[1]), ("f1", f1, macro[2])):
        metrics.append(MetricValue(f"{name}_macro", float(macro_value), *interval(boot[f"{name}_macro"]), interval="bootstrap"))
        if positive is not None:
            metrics.append(MetricValue(name, float(per_class[positive]), *interval(boot[name][:, positive]), interval="bootstrap"))
        else:
            metrics.append(MetricValue(name, float(macro_value), *interval(boot[f"{name}_macro"]), interval="bootstrap"))
        for index, label in enumerate(classes):
            metrics.append(MetricValue(name, float(per_class[index]), *interval(boot[name][:, index]), class_label=label, interval="bootstrap"))
    reliability: tuple[ReliabilityBin, ...] = ()
    n_scored = 0
    if probabilities is not None:
        complete = ~np.isnan(probabilities).any(axis=1)
        n_scored = int(complete.sum())
        if n_scored:
            scored_truth, scored = true_index[complete], probabilities[complete]
            metrics.extend(_probability_metrics(scored_truth, scored, classes, positive, z))
            if positive is not None:
                reliability = reliability_bins(scored_truth == positive, scored[:, positive])
                metrics.append(_ece_metric(reliability, confidence, replicates, seed))
    return RealizedQuality(
        n_labelled=n,
        n_scored=n_scored,
        metrics=tuple(metrics),
        reliability=reliability,
        label_counts=tuple(int(count) for count in cells.sum(axis=1)),
        positive_class=positive_class,
        classes=classes,
    )


def confusion_cells(true_index: np.ndarray, predicted_index: np.ndarray, n_classes: int) -> np.ndarray:
    """The ``(K, K)`` confusion matrix of counts, true class by row (as :func:`sklearn.metrics.confusion_matrix`)."""
    return np.bincount(true_index * n_classes + predicted_index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _confusion_metrics(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and per-class/macro precision, recall and F1 of a stack of confusion matrices.

    The definitions of :func:`sklearn.metrics.precision_recall_fscore_support` with
    ``zero_division=0`` (a ratio with a zero denominator is 0), vectorised over the stack.
    """
    matrices = matrices.astype(float)
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    predicted = matrices.sum(axis=1)
    actual = matrices.sum(axis=2)
    total = matrices.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, diagonal / predicted, 0.0)
        recall = np.where(actual > 0, diagonal / actual, 0.0)
        f1 = np.where(actual + predicted > 0, 2 * diagonal / (actual + predicted), 0.0)
        accuracy = np.where(total > 0, diagonal.sum(axis=1) / total, 0.0)
    return {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "precision_macro": precision.mean(axis=1),
        "recall_macro": recall.mean(axis=1),
        "f1_macro": f1.mean(axis=1),
    }


def _probability_metrics(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], positive: int | None, z: float) -> list[MetricValue]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    n = truth.size
    labels = list(range(len(classes)))
    metrics = []
    # log_loss clips to [eps, 1 - eps] with eps the dtype's; per-prediction losses the same way for the spread.
    clipped = np.clip(probabilities[np.arange(n), truth], np.finfo(probabilities.dtype).eps, 1.0)
    value = float(log_loss(truth, probabilities, labels=labels))
    metrics.append(_normal_metric("log_loss", value, -np.log(clipped), z))
    if positive is None:
        return metrics
    is_positive = truth == positive
    scores = probabilities[:, positive]
    brier = float(brier_score_loss(is_positive, scores))
    metrics.append(_normal_metric("brier", brier, (scores - is_positive) ** 2, z))
    n_positive, n_negative = int(is_positive.sum()), int(n - is_positive.sum())
    if n_positive and n_negative:
        auc = float(roc_auc_score(is_positive, scores))
        low, high = _hanley_mcneil_interval(auc, n_positive, n_negative, z)
        metrics.append(MetricValue("roc_auc", auc, low, high, interval="hanley-mcneil"))
    return metrics


def _normal_metric(name: str, value: float, losses: np.ndarray, z: float) -> MetricValue:
    if losses.size < 2:
        return MetricValue(name, value)
    half = z * float(np.std(losses, ddof=1)) / math.sqrt(losses.size)
    return MetricValue(name, value, max(0.0, value - half), value + half, interval="normal")


def _hanley_mcneil_interval(auc: float, n_positive: int, n_negative: int, z: float) -> tuple[float, float]:
    """Hanley & McNeil (1982), eq. 2: SE² = [A(1−A) + (n₁−1)(Q₁−A²) + (n₂−1)(Q₂−A²)] / (n₁n₂), Q₁ = A/(2−A), Q₂ = 2A²/(1+A)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (n_positive * n_negative)
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def reliability_bins(is_positive: np.ndarray, scores: np.ndarray, n_bins: int = RELIABILITY_BINS) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of ``scores`` on [0, 1], as :func:`sklearn.calibration.calibration_curve` (``uniform``) bins them.

    Empty bins are left out (as there). A bin's ``fraction_positive`` and ``mean_predicted`` are
    the curve's ``prob_true`` and ``prob_pred``.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # calibration_curve's binning: searchsorted on the inner edges (left side).
    index = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(index, minlength=n_bins)
    sums = np.bincount(index, weights=scores, minlength=n_bins)
    positives = np.bincount(index, weights=is_positive.astype(float), minlength=n_bins)
    return tuple(
        ReliabilityBin(float(edges[b]), float(edges[b + 1]), int(counts[b]), float(sums[b] / counts[b]), float(positives[b] / counts[b]))
        for b in range(n_bins)
        if counts[b]
    )


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """ECE = Σ_b n_b/n · |fraction positive_b − mean predicted_b| over the reliability bins."""
    total = sum(bin_.count for bin_ in bins)
    return float(sum(bin_.count / total * abs(bin_.fraction_positive - bin_.mean_predicted) for bin_ in bins)) if total else float("nan")


def _ece_metric(bins: Sequence[ReliabilityBin], confidence: float, replicates: int, seed: int) -> MetricValue:
    value = expected_calibration_error(bins)
    counts = np.array([[b.count - round(b.fraction_positive * b.count), round(b.fraction_positive * b.count)] for b in bins], dtype=float)
    mean_predicted = np.array([b.mean_predicted for b in bins])
    n = int(counts.sum())
    draws = np.random.default_rng(seed + 1).multinomial(n, counts.ravel() / n, size=replicates).reshape(replicates, len(bins), 2)
    per_bin = draws.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(per_bin > 0, draws[:, :, 1] / per_bin, 0.0)
    samples = (per_bin / n * np.abs(fraction - mean_predicted) * (per_bin > 0)).sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return MetricValue("ece", value, float(low), float(high), interval="bootstrap")


# --------------------------------------------------------------------------------------------
# CBPE


def estimated_quality(predicted_index: np.ndarray, probabilities: np.ndarray, calibrator: Calibrator, positive_class: str | None) -> EstimatedQuality:
    """CBPE: the expected confusion matrix from calibrated probabilities, and metrics from it.

    Rows without probabilities are left out. The metrics are scikit-learn's on the K×K cells
    weighted by their expected counts (a fractional confusion matrix).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = calibrator.classes
    k = len(classes)
    complete = ~np.isnan(probabilities).any(axis=1)
    calibrated = calibrator.calibrate(probabilities[complete])
    predicted = predicted_index[complete]
    expected = np.zeros((k, k))
    for j in range(k):
        expected[:, j] = calibrated[predicted == j].sum(axis=0)
    n = int(complete.sum())
    if n == 0:
        return EstimatedQuality(n_predictions=0, metrics=(), expected_confusion=tuple(tuple(row) for row in expected.tolist()))
    true_cells, predicted_cells = np.divmod(np.arange(k * k), k)
    weights = expected.ravel()
    labels = list(range(k))
    precision, recall, f1, _ = precision_recall_fscore_support(true_cells, predicted_cells, labels=labels, sample_weight=weights, zero_division=0)
    macro = precision_recall_fscore_support(true_cells, predicted_cells, labels=labels, sample_weight=weights, average="macro", zero_division=0)
    metrics = [MetricValue("accuracy", float(accuracy_score(true_cells, predicted_cells, sample_weight=weights)))]
    positive = classes.index(positive_class) if positive_class in classes else None
    for name, per_class, macro_value in (("precision", precision, macro[0]), ("recall", recall, macro[1]), ("f1", f1, macro[2])):
        metrics.append(MetricValue(f"{name}_macro", float(macro_value)))
        metrics.append(MetricValue(name, float(per_class[positive] if positive is not None else macro_value)))
        metrics.extend(MetricValue(name, float(per_class[index]), class_label=label) for index, label in enumerate(classes))
    return EstimatedQuality(n_predictions=n, metrics=tuple(metrics), expected_confusion=tuple(tuple(row) for row in expected.tolist()))


# --------------------------------------------------------------------------------------------
# Delay, verdict, and the whole window


def label_delay(delay_seconds: np.ndarray) -> LabelDelay | None:
    """Percentiles of the labels' delays (seconds); ``None`` without labels."""
    if delay_seconds.size == 0:
        return None
    p50, p90, p99 = np.percentile(delay_seconds, [50, 90, 99])
    return LabelDelay(float(p50), float(p90), float(p99), float(delay_seconds.max()))


def quality_verdict(realized: RealizedQuality | None, reference_value: float | None, config: QualityConfig) -> tuple[QualityVerdict, str]:
    """The verdict and a one-line reason (see the module's docstring)."""
    n = realized.n_labelled if realized else 0
    if n < config.min_labels:
        return QualityVerdict.INSUFFICIENT_DATA, f"{n} labelled predictions, fewer than the {config.min_labels} required"
    if reference_value is None:
        return QualityVerdict.INSUFFICIENT_DATA, f"the manifest has no held-out {config.metric} to compare with"
    value = realized.get(config.metric) if realized else None
    if value is None or value.high is None:
        return QualityVerdict.INSUFFICIENT_DATA, f"{config.metric} could not be computed from the labelled predictions"
    if config.metric in ("f1", "recall") and realized.positive_class in realized.classes:
        if realized.label_counts[realized.classes.index(realized.positive_class)] == 0:
            # F1 and recall of a class no label belongs to are undefined (scikit-learn's zero_division), not bad.
            return QualityVerdict.INSUFFICIENT_DATA, f"no labelled prediction is of the positive class {realized.positive_class!r}, so {config.metric} is undefined"
    threshold = reference_value - config.tolerance
    interval = f"{config.metric} {value.value:.3f} ({config.confidence:.0%} interval {value.low:.3f} to {value.high:.3f})"
    if value.high < threshold:
        return QualityVerdict.DEGRADED, f"{interval} is below the held-out {reference_value:.3f} by more than {config.tolerance}"
    return QualityVerdict.OK, f"{interval}; held-out {reference_value:.3f}, tolerance {config.tolerance}"


def assess_quality(
    *,
    classes: Sequence[str],
    positive_class: str | None,
    predicted_index: np.ndarray,
    probabilities: np.ndarray | None,
    true_index: np.ndarray,
    delay_seconds: np.ndarray,
    reference_metrics: Mapping[str, float],
    calibrator: Calibrator | None,
    config: QualityConfig,
) -> QualityResult:
    """Model quality of one window.

    :param predicted_index: the class index of every prediction in the window (``-1`` for a
        stored prediction that is not a class of the model; such rows are not scored).
    :param true_index: per prediction, the label's class index, ``UNLABELLED`` or ``LABEL_OUTSIDE_CLASSES``.
    :param delay_seconds: per prediction, labelled_at − predicted_at in seconds (NaN when unlabelled).
    :param calibrator: the manifest's CBPE calibrator; ``None`` skips the estimate.
    """
    classes = tuple(classes)
    known_prediction = predicted_index >= 0
    labelled = (true_index >= 0) & known_prediction
    scored_probabilities = probabilities[labelled] if probabilities is not None else None
    realized = realized_quality(
        true_index[labelled],
        predicted_index[labelled],
        scored_probabilities,
        classes,
        positive_class,
        confidence=config.confidence,
        replicates=config.bootstrap_replicates,
        seed=config.seed,
    )
    estimated = None
    if calibrator is not None and probabilities is not None and tuple(calibrator.classes) == classes:
        estimated = estimated_quality(predicted_index[known_prediction], probabilities[known_prediction], calibrator, positive_class)
    reference_value = reference_metrics.get(config.metric)
    status, reason = quality_verdict(realized, reference_value, config)
    return QualityResult(
        status=status,
        reason=reason,
        config=config,
        classes=classes,
        positive_class=positive_class,
        n_predictions=int(predicted_index.size),
        n_labelled=int(labelled.sum()),
        n_labels_outside_classes=int((true_index == LABEL_OUTSIDE_CLASSES).sum()),
        reference_value=reference_value,
        realized=realized,
        estimated=estimated,
        delay=label_delay(delay_seconds[true_index != UNLABELLED]),
        reference_metrics=dict(reference_metrics),
    )
