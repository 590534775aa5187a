"""Model quality of one window per task: realized performance from labels, estimated performance without.

Pure computation, no I/O. A window is first counted into a mergeable **aggregate**
(:class:`ClassificationAggregate` or :class:`RegressionAggregate`, registered with
:func:`sml.monitoring.summaries.register_quality_aggregate`: merging adds counts and
pairwise-updates moments, so per-day aggregates make a week); every metric is then computed from the aggregate by the **metric
families registered for the model's task** (:func:`register_metrics`, keyed by task like
NannyML's ``MetricFactory``). Names and directions come from :mod:`sml.lifecycle.quality_metrics`.

**Classifiers** (inputs: class indices into the manifest's ``classes`` and the probability matrix
in that order). The aggregate holds the K×K confusion cells of labelled predictions; per class a
histogram of its probability (``SCORE_BINS`` bins) split by whether the label is that class; the
sums and sums of squares of the log loss and Brier score; the reliability table (positive class
for binary, top label for multiclass); and CBPE's expected confusion cells over all predictions.

- accuracy, precision/recall/F1 per class, macro and weighted (and of the positive class for a
  binary model): scikit-learn's :func:`~sklearn.metrics.precision_recall_fscore_support` on the
  cells weighted by their counts. Interval: equal-tailed, of the Dirichlet posterior of the cells'
  probabilities (the Bayesian reading of the confusion matrix: Caelen 2017, "A Bayesian
  interpretation of the confusion matrix", Ann. Math. Artif. Intell. 81:429-450; Tötsch & Hoffmann
  2021, "Classifier uncertainty: evidence, potential impact, and probabilistic treatment", PeerJ
  Comput. Sci. 7:e398), drawn with a fixed seed and scored vectorised (``_confusion_metrics``,
  tested equal to scikit-learn's). The prior is Perks' (weight 1 in all, spread evenly over the
  cells of the true classes the window holds): for a binary model's accuracy that is exactly the
  Jeffreys interval Brown, Cai & DasGupta (2001, "Interval estimation for a binomial proportion",
  Stat. Sci. 16:101-133) recommend, and as they do for it the interval is widened to hold the
  observed value. Unlike the percentile bootstrap, which resamples only the cells seen, it does
  not collapse at the boundary: a window without one error gets F1 1 with an interval reaching
  below 1 that narrows as the window grows;
- ROC AUC: scikit-learn's :func:`~sklearn.metrics.roc_auc_score` on the score histogram (bin
  centres weighted by counts; binary: the positive class, multiclass: one-vs-rest per class and
  their unweighted mean, as ``multi_class="ovr", average="macro"``). Scores in one bin count as
  ties, so the value differs from the exact one by at most half the share of (positive, negative)
  pairs that share a bin (bins of 0.001). Interval: the standard error of Hanley & McNeil (1982),
  "The meaning and use of the area under a ROC curve", Radiology 143:29-36, eq. 2, used as a
  score interval: the θ with |A − θ| ≤ z·SE(θ), the variance taken at the candidate θ rather
  than at the estimate A, as Wilson's interval does for a proportion (Newcombe 2006, "Confidence
  intervals for an effect size measure based on the Mann-Whitney statistic. Part 2", Stat. Med.
  25:559-573, evaluates this family). Unlike the Wald form A ± z·SE(A), it stays inside [0, 1]
  and does not collapse at A = 1 (SE(1) = 0): a window whose scores separate every pair gets an
  interval reaching below 1 that narrows as the window grows. For the macro mean: the mean of the
  classes' lower and upper margins, which bounds those of a mean of correlated estimates (the sd
  of a sum is at most the sum of the sds);
- log loss (probability of the true class clipped to [eps, 1], as :func:`sklearn.metrics.log_loss`)
  and Brier score (binary: of the positive class, as :func:`sklearn.metrics.brier_score_loss`;
  multiclass: Σ_k (p_k − y_k)², scikit-learn's multiclass definition): means of per-prediction
  losses, so normal intervals mean ± z·s/√n from their sums and sums of squares;
- ECE (Naeini et al. 2015; Guo et al. 2017): ``RELIABILITY_BINS`` equal-width bins as
  :func:`sklearn.calibration.calibration_curve` (``uniform``) bins them, of the positive class's
  probability (binary) or of the top label's probability against whether the top label was right
  (multiclass, "top-label calibration error"): Σ_b n_b/n · |fraction right_b − mean probability_b|.
  Interval: bootstrap of the (bin, outcome) cells with each bin's mean probability held fixed;
  ECE is biased upwards in small samples, and its interval describes sampling spread only.

**Regression** (inputs: predictions and labels as floats; error e = prediction − label). The
aggregate holds mergeable central moments (:class:`sml.monitoring.moments.MomentSums`, merged
with Chan, Golub & LeVeque's pairwise update, so a window counted slice by slice or day by day
gives numpy's moments of all its rows to rounding however far the labels are from the centre):
the means and second moments of e, |e| and e², of the label z = y − c (shifted by a fixed
centre c) up to its fourth, and the co-moments of e² with z and z²; the same of the absolute
percentage errors over non-zero labels; a residual histogram and per prediction bin the error's
mean and second moment for the report's residual plots.

- MAE, mean error (bias), MAPE (when no label is 0; scikit-learn's ``mean_absolute_percentage_error``
  otherwise divides by its epsilon): means, normal intervals (MAPE's holds for labels away from 0:
  near 0 its terms 1/|label| are heavy-tailed and no normal interval covers);
- RMSE: the normal interval of the MSE (variance of e² from Σe⁴), square-rooted;
- R² = 1 − SSE/SST as :func:`sklearn.metrics.r2_score`; interval by the delta method with the
  influence function of A/B (A = mean e², B = the label's variance):
  IF = [−(e² − A) + (A/B)((y − ȳ)² − B)] / B, whose mean square needs only those central moments.

**Estimated performance.** Classifiers, CBPE (confidence-based performance estimation, as NannyML):
the calibrator fitted at registration maps probabilities to calibrated ones; each prediction of
class j adds its calibrated probability of each true class k to expected cell (k, j), and the
expected matrix gives accuracy and precision/recall/F1; ROC AUC ranks predictions by the model's
probability of a class, each an expected positive of it with its calibrated probability (one vs
rest per class, macro-averaged for multiclass, as NannyML's CBPE estimates it). Regression, DLE (Direct Loss Estimation,
:class:`sml.lifecycle.calibration.DirectLossEstimator`): the mean of the predicted absolute and
squared errors estimates MAE and RMSE. Both assume **no concept drift** (the relation between
inputs and labels is the held-out data's); realized performance is what sees a changed relation.

Verdict (:func:`quality_verdict`): the chosen metric's interval against the manifest's held-out
value, in the metric's direction (:mod:`sml.lifecycle.quality_metrics`): DEGRADED when the whole
interval is worse than the held-out value by more than the tolerance (absolute, or a share of the
held-out value for metrics in the label's unit); INSUFFICIENT_DATA with fewer than ``min_labels``
labelled predictions, no held-out value, or a metric the window cannot define; OK otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
from scipy.stats import norm

from sml.core.errors import SmlError
from sml.lifecycle.calibration import Calibrator, DirectLossEstimator
from sml.lifecycle.manifest import Task, task_from_classes
from sml.lifecycle.quality_metrics import DEFAULT_VERDICT_METRIC, QUALITY_METRICS, check_verdict_metric, quality_metric
from sml.monitoring.moments import Exponents, MomentSums
from sml.monitoring.summaries import register_quality_aggregate

RELIABILITY_BINS = 10
SCORE_BINS = 1000
RESIDUAL_BINS = 32
PREDICTION_BINS = 10
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 20_161
UNLABELLED = -1
LABEL_OUTSIDE_CLASSES = -2
_EPS = float(np.finfo(np.float64).eps)


class QualityVerdict(StrEnum):
    """Outcome of a window's model quality check."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


@dataclass(frozen=True)
class QualityConfig:
    """How quality is judged.

    :param metric: the metric the verdict compares with the manifest; ``None``: the task's default
        (:data:`sml.lifecycle.quality_metrics.DEFAULT_VERDICT_METRIC`: F1 of the positive class,
        macro F1, RMSE). Checked against the model's task by :meth:`for_task`.
    :param tolerance: how far the interval must lie beyond the held-out value for DEGRADED:
        absolute, or a share of the held-out value for metrics in the label's unit (MAE, RMSE).
    :param min_labels: fewer labelled predictions in the window give INSUFFICIENT_DATA.
    :param confidence: the intervals' confidence level.
    """

    metric: str | None = None
    tolerance: float = 0.05
    min_labels: int = 100
    confidence: float = 0.95
    bootstrap_replicates: int = BOOTSTRAP_REPLICATES
    seed: int = BOOTSTRAP_SEED

    def __post_init__(self) -> None:
        if self.metric is not None:
            spec = QUALITY_METRICS.get(self.metric)
            if spec is None or not spec.verdict:
                choices = [name for name, metric in QUALITY_METRICS.items() if metric.verdict]
                raise ValueError(f"quality metric {self.metric!r}: choose one of {', '.join(choices)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"quality confidence {self.confidence}: must be between 0 and 1")

    def for_task(self, task: Task) -> QualityConfig:
        """This config with the metric resolved for ``task`` (its default when none is set).

        :raises ValueError: the metric is not a verdict metric of ``task`` (names the choices).
        """
        metric = self.metric or DEFAULT_VERDICT_METRIC[task]
        check_verdict_metric(metric, task)
        return QualityConfig(metric, self.tolerance, self.min_labels, self.confidence, self.bootstrap_replicates, self.seed)

    def parameters(self) -> dict[str, Any]:
        """What the verdict depends on, as stored with the run."""
        return {"metric": self.metric, "tolerance": self.tolerance, "min_labels": self.min_labels, "confidence": self.confidence}

    @classmethod
    def from_settings(cls, metric: str | None, tolerance: float, min_labels: int) -> QualityConfig:
        """The deployment's config (``SML_QUALITY_METRIC``, ``_TOLERANCE``, ``_MIN_LABELS``).

        :raises SmlError: an unknown metric, naming ``SML_QUALITY_METRIC`` and the choices.
        """
        try:
            return cls(metric=metric, tolerance=tolerance, min_labels=min_labels)
        except ValueError as exc:
            raise SmlError(f"SML_QUALITY_METRIC: {exc}") from None


@dataclass(frozen=True)
class MetricValue:
    """One metric: its value and interval (``None`` where none applies or too little data).

    :param class_label: the class of a per-class metric; ``None`` for a model-level one.
    :param interval: how the interval was computed (``dirichlet``, ``bootstrap``, ``hanley-mcneil``,
        ``normal``, ``delta``) or ``None``.
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
class ResidualPlots:
    """A regression window's residual plots: a histogram of errors and the errors by predicted value.

    :param edges: ``RESIDUAL_BINS + 1`` edges of the error histogram; ``counts`` has two more
        entries, the errors below the first and above the last edge.
    :param prediction_edges: edges of the prediction bins (``by_prediction`` has one more entry
        than edges: below, between, above); per bin ``(count, mean error, sd of error)``.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    prediction_edges: tuple[float, ...]
    by_prediction: tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class RealizedQuality:
    """Realized performance on ``n_labelled`` labelled predictions (``n_scored`` of them with probabilities)."""

    n_labelled: int
    n_scored: int
    metrics: tuple[MetricValue, ...]
    reliability: tuple[ReliabilityBin, ...] = ()
    label_counts: tuple[int, ...] = ()
    positive_class: str | None = None
    classes: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()
    residuals: ResidualPlots | None = None

    def get(self, metric: str, class_label: str | None = None) -> MetricValue | None:
        """The named metric (model-level unless ``class_label``), or ``None`` if it was not computed."""
        return next((value for value in self.metrics if value.metric == metric and value.class_label == class_label), None)


@dataclass(frozen=True)
class EstimatedQuality:
    """The label-free estimate on ``n_predictions`` predictions: CBPE's metrics and expected
    confusion matrix (true × predicted), or DLE's MAE and RMSE (``n_evaluated`` rows walked)."""

    n_predictions: int
    metrics: tuple[MetricValue, ...]
    expected_confusion: tuple[tuple[float, ...], ...] = ()
    method: str = "cbpe"
    n_evaluated: int = 0

    def get(self, metric: str, class_label: str | None = None) -> MetricValue | None:
        return next((value for value in self.metrics if value.metric == metric and value.class_label == class_label), None)


@dataclass(frozen=True)
class LabelDelay:
    """``labelled_at - predicted_at`` in seconds over labelled predictions (percentiles, linear
    interpolation), leaving out the ``before_prediction`` labels dated before their prediction: a
    delay below zero is a clock or a client that is wrong, and would pull the percentiles below the
    time labels really take (NaN when every label is such one). Such labels are still scored."""

    p50: float
    p90: float
    p99: float
    maximum: float
    before_prediction: int = 0


@dataclass(frozen=True)
class QualityResult:
    """Model quality of one window: coverage, delay, realized and estimated performance, verdict.

    :param n_predictions: predictions in the window; ``n_labelled`` of them have a usable label
        (a class of the model, or a finite number for regression); ``n_labels_outside_classes``
        have one that is not (not scored).
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
    task: Task = "binary"

    @property
    def coverage(self) -> float:
        """Labelled / predicted (0 for an empty window)."""
        return self.n_labelled / self.n_predictions if self.n_predictions else 0.0


# --------------------------------------------------------------------------------------------
# Aggregates


def _array(data: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(data, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"expected an array of shape {shape}, got {array.shape}")
    return array


@register_quality_aggregate
@dataclass
class ClassificationAggregate:
    """A classifier's window, counted (see the module's docstring); merges by adding.

    :param positive: the positive class's index (binary) or ``None`` (multiclass: top label).
    :param scores: ``(K, 2, SCORE_BINS)`` counts of class k's probability among labelled
        predictions whose label is not k (``[k, 0]``) and is k (``[k, 1]``).
    :param reliability: ``(RELIABILITY_BINS, 3)``: count, sum of probabilities, count right.
    :param losses: sums over scored predictions of log loss, its square, Brier score, its square.
    :param expected: CBPE's expected confusion cells over ``n_estimated`` predictions (zeros without a calibrator).
    :param expected_scores: ``(K, 2, SCORE_BINS)``: over the same predictions, class k's probability
        binned as ``scores`` bins labelled ones, each prediction weighted by its calibrated chance
        of not being k (``[k, 0]``) and of being k (``[k, 1]``): CBPE's ROC AUC.
    :param calibrator: the calibrator :meth:`add` uses when given none (not stored: the manifest holds it).
    """

    name: ClassVar[str] = "classification"
    n_classes: int
    positive: int | None
    n_predictions: int = 0
    n_outside: int = 0
    n_scored: int = 0
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]
    scores: np.ndarray = field(default=None)  # type: ignore[assignment]
    reliability: np.ndarray = field(default=None)  # type: ignore[assignment]
    losses: np.ndarray = field(default=None)  # type: ignore[assignment]
    expected: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_estimated: int = 0
    expected_scores: np.ndarray = field(default=None)  # type: ignore[assignment]
    calibrator: Calibrator | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.n_classes
        for name, shape, dtype in (
            ("confusion", (k, k), np.int64),
            ("scores", (k, 2, SCORE_BINS), np.int64),
            ("reliability", (RELIABILITY_BINS, 3), np.float64),
            ("losses", (4,), np.float64),
            ("expected", (k, k), np.float64),
            ("expected_scores", (k, 2, SCORE_BINS), np.float64),
        ):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=dtype))

    def add(
        self, predicted_index: np.ndarray, probabilities: np.ndarray | None, true_index: np.ndarray, calibrator: Calibrator | None = None
    ) -> None:
        """Count a slice: per prediction its class index (``-1``: not a class), ``(n, K)``
        probabilities (NaN rows: none) and its label's index (``UNLABELLED``, ``LABEL_OUTSIDE_CLASSES``)."""
        k = self.n_classes
        self.n_predictions += int(predicted_index.size)
        known = predicted_index >= 0
        self.n_outside += int((true_index == LABEL_OUTSIDE_CLASSES).sum())
        labelled = known & (true_index >= 0)
        truth, predicted = true_index[labelled], predicted_index[labelled]
        self.confusion += np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
        if probabilities is None:
            return
        calibrator = calibrator if calibrator is not None else self.calibrator
        if calibrator is not None:
            complete = known & ~np.isnan(probabilities).any(axis=1)
            calibrated = calibrator.calibrate(probabilities[complete])
            chosen = predicted_index[complete]
            for j in range(k):
                self.expected[:, j] += calibrated[chosen == j].sum(axis=0)
            self.n_estimated += int(complete.sum())
            # Ranked by the model's own score, as the realized AUC is; weighted by the calibrated chance.
            score_cells = np.clip((probabilities[complete] * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
            for index in range(k):
                share = calibrated[:, index]
                self.expected_scores[index, 0] += np.bincount(score_cells[:, index], weights=1.0 - share, minlength=SCORE_BINS)
                self.expected_scores[index, 1] += np.bincount(score_cells[:, index], weights=share, minlength=SCORE_BINS)
        scored_rows = probabilities[labelled]
        complete = ~np.isnan(scored_rows).any(axis=1)
        truth, scored = truth[complete], scored_rows[complete]
        n = int(truth.size)
        if not n:
            return
        self.n_scored += n
        rows = np.arange(n)
        log_loss = -np.log(np.clip(scored[rows, truth], _EPS, 1.0))
        onehot = np.zeros_like(scored)
        onehot[rows, truth] = 1.0
        if self.positive is not None:
            brier = (scored[:, self.positive] - onehot[:, self.positive]) ** 2
        else:
            brier = ((scored - onehot) ** 2).sum(axis=1)
        self.losses += (log_loss.sum(), (log_loss**2).sum(), brier.sum(), (brier**2).sum())
        cells = np.clip((scored * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
        for index in range(k):
            self.scores[index] += np.bincount(onehot[:, index].astype(np.int64) * SCORE_BINS + cells[:, index], minlength=2 * SCORE_BINS).reshape(2, SCORE_BINS)
        if self.positive is not None:
            confidence, right = scored[:, self.positive], onehot[:, self.positive]
        else:
            top = scored.argmax(axis=1)
            confidence, right = scored[rows, top], (top == truth).astype(float)
        # calibration_curve's binning: searchsorted on the inner edges (left side).
        bins = np.searchsorted(np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)[1:-1], confidence)
        self.reliability[:, 0] += np.bincount(bins, minlength=RELIABILITY_BINS)
        self.reliability[:, 1] += np.bincount(bins, weights=confidence, minlength=RELIABILITY_BINS)
        self.reliability[:, 2] += np.bincount(bins, weights=right, minlength=RELIABILITY_BINS)

    @property
    def n_labelled(self) -> int:
        return int(self.confusion.sum())

    def merge(self, other: ClassificationAggregate) -> ClassificationAggregate:
        if (self.n_classes, self.positive) != (other.n_classes, other.positive):
            raise ValueError("classification aggregates of different classes cannot merge")
        return ClassificationAggregate(
            self.n_classes, self.positive, self.n_predictions + other.n_predictions, self.n_outside + other.n_outside,
            self.n_scored + other.n_scored, self.confusion + other.confusion, self.scores + other.scores,
            self.reliability + other.reliability, self.losses + other.losses, self.expected + other.expected,
            self.n_estimated + other.n_estimated, self.expected_scores + other.expected_scores, calibrator=self.calibrator,
        )

    def to_json(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.scores)
        return {
            "n_classes": self.n_classes, "positive": self.positive, "n_predictions": self.n_predictions, "n_outside": self.n_outside,
            "n_scored": self.n_scored, "confusion": self.confusion.tolist(), "score_index": nonzero.tolist(),
            "score_count": self.scores.ravel()[nonzero].tolist(), "reliability": self.reliability.tolist(), "losses": self.losses.tolist(),
            "expected": self.expected.tolist(), "n_estimated": self.n_estimated,
            "expected_score_index": np.flatnonzero(self.expected_scores).tolist(),
            "expected_score_weight": self.expected_scores.ravel()[np.flatnonzero(self.expected_scores)].tolist(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassificationAggregate:
        k = int(data["n_classes"])
        scores = np.zeros(k * 2 * SCORE_BINS, dtype=np.int64)
        scores[np.asarray(data["score_index"], dtype=np.int64)] = np.asarray(data["score_count"], dtype=np.int64)
        # Summaries stored before CBPE estimated ROC AUC have no expected scores: zeros, so no estimate.
        expected_scores = np.zeros(k * 2 * SCORE_BINS, dtype=np.float64)
        expected_scores[np.asarray(data.get("expected_score_index", []), dtype=np.int64)] = np.asarray(data.get("expected_score_weight", []), dtype=np.float64)
        positive = data["positive"]
        return cls(
            k, None if positive is None else int(positive), int(data["n_predictions"]), int(data["n_outside"]), int(data["n_scored"]),
            _array(data["confusion"], np.int64, (k, k)), scores.reshape(k, 2, SCORE_BINS),
            _array(data["reliability"], np.float64, (RELIABILITY_BINS, 3)), _array(data["losses"], np.float64, (4,)),
            _array(data["expected"], np.float64, (k, k)), int(data["n_estimated"]), expected_scores.reshape(k, 2, SCORE_BINS),
        )


# Moments of a regression window over the variables (e, a, w, z): e = prediction − label, a = |e|,
# w = e², z = label − centre; and of the absolute percentage error over non-zero labels.
_ERROR_MOMENTS: Exponents = (
    (0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (2, 0, 0, 0), (0, 2, 0, 0), (0, 0, 2, 0),
    (0, 0, 0, 2), (0, 0, 0, 3), (0, 0, 0, 4), (0, 0, 1, 1), (0, 0, 1, 2),
)
_PERCENTAGE_MOMENTS: Exponents = ((0,), (1,), (2,))
# Of the error per prediction bin, for the residual plots.
_BIN_ERROR_MOMENTS: Exponents = ((0,), (1,), (2,))
# Aggregates stored before the central moments held plain power sums of these, in this order.
_STORED_POWER_SUMS = ("e", "a", "e2", "e4", "z", "z2", "z3", "z4", "e2z", "e2z2", "ape", "ape2")


def _from_power_sums(sums: Sequence[float], n_labelled: int, n_zero_labels: int) -> tuple[MomentSums, MomentSums]:
    """The moments of an aggregate stored as power sums (e, |e|, e² around 0, z around the centre): the
    sums around a reference of 0, which the moments merge with and read as any other."""
    stored = dict(zip(_STORED_POWER_SUMS, _array(sums, np.float64, (len(_STORED_POWER_SUMS),)).tolist()))
    by_exponent = {
        (0, 0, 0, 0): n_labelled, (1, 0, 0, 0): stored["e"], (0, 1, 0, 0): stored["a"], (0, 0, 1, 0): stored["e2"], (0, 0, 0, 1): stored["z"],
        (2, 0, 0, 0): stored["e2"], (0, 2, 0, 0): stored["e2"], (0, 0, 2, 0): stored["e4"], (0, 0, 0, 2): stored["z2"],
        (0, 0, 0, 3): stored["z3"], (0, 0, 0, 4): stored["z4"], (0, 0, 1, 1): stored["e2z"], (0, 0, 1, 2): stored["e2z2"],
    }
    errors = MomentSums.from_sums(_ERROR_MOMENTS, [0.0] * 4, [by_exponent[p] for p in _ERROR_MOMENTS])
    percentages = MomentSums.from_sums(_PERCENTAGE_MOMENTS, [0.0], [n_labelled - n_zero_labels, stored["ape"], stored["ape2"]])
    return errors, percentages


@register_quality_aggregate
@dataclass
class RegressionAggregate:
    """A regression model's window, counted (see the module's docstring); merges by adding counts and
    pairwise-updating moments.

    :param centre: subtracted from labels before their moments (the held-out mean); aggregates merge
        only with the same centre.
    :param edges, prediction_edges: fixed bin edges of the residual plots (see :class:`ResidualPlots`).
    :param estimated: DLE's expected absolute and squared error totals standing for ``n_estimated`` predictions.
    """

    name: ClassVar[str] = "regression"
    centre: float
    edges: np.ndarray
    prediction_edges: np.ndarray
    n_predictions: int = 0
    n_outside: int = 0
    n_labelled: int = 0
    n_zero_labels: int = 0
    errors: MomentSums = field(default=None)  # type: ignore[assignment]
    percentages: MomentSums = field(default=None)  # type: ignore[assignment]
    histogram: np.ndarray = field(default=None)  # type: ignore[assignment]
    by_prediction: list[MomentSums] = field(default=None)  # type: ignore[assignment]
    estimated: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_estimated: int = 0
    n_evaluated: int = 0

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.float64)
        self.prediction_edges = np.asarray(self.prediction_edges, dtype=np.float64)
        self.errors = MomentSums.empty(_ERROR_MOMENTS) if self.errors is None else self.errors
        self.percentages = MomentSums.empty(_PERCENTAGE_MOMENTS) if self.percentages is None else self.percentages
        if self.by_prediction is None:
            self.by_prediction = [MomentSums.empty(_BIN_ERROR_MOMENTS) for _ in range(self.prediction_edges.size + 1)]
        for name, shape in (
            ("histogram", (self.edges.size + 1,)),
            ("estimated", (2,)),
        ):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape))

    @classmethod
    def for_reference(cls, centre: float, scale: float, prediction_edges: Sequence[float]) -> RegressionAggregate:
        """An empty aggregate: residual bins of ``scale`` / 4 over ±4 ``scale`` (e.g. the held-out RMSE)."""
        scale = scale if math.isfinite(scale) and scale > 0 else 1.0
        return cls(centre=float(centre), edges=np.linspace(-4 * scale, 4 * scale, RESIDUAL_BINS + 1), prediction_edges=np.unique(np.asarray(prediction_edges, dtype=float)))

    def add(self, predictions: np.ndarray, truth: np.ndarray, outside: int = 0) -> None:
        """Count a slice: predictions (NaN: not a number) and labels (NaN: unlabelled); ``outside``
        labels that were not numbers."""
        self.n_predictions += int(predictions.size)
        self.n_outside += int(outside)
        labelled = np.isfinite(truth) & np.isfinite(predictions)
        predicted, label = predictions[labelled], truth[labelled]
        self.n_labelled += int(label.size)
        if not label.size:
            return
        error = predicted - label
        e2 = error * error
        nonzero = label != 0
        self.n_zero_labels += int((~nonzero).sum())
        ape = np.abs(error[nonzero]) / np.abs(label[nonzero])
        self.errors = self.errors.merge(MomentSums.of(_ERROR_MOMENTS, np.column_stack([error, np.abs(error), e2, label - self.centre])))
        self.percentages = self.percentages.merge(MomentSums.of(_PERCENTAGE_MOMENTS, ape[:, None]))
        self.histogram += np.bincount(np.searchsorted(self.edges, error, side="right"), minlength=self.edges.size + 1)
        cells = np.searchsorted(self.prediction_edges, predicted, side="right")
        for cell in np.unique(cells).tolist():
            self.by_prediction[cell] = self.by_prediction[cell].merge(MomentSums.of(_BIN_ERROR_MOMENTS, error[cells == cell][:, None]))

    def add_estimate(self, mae: float, rmse: float, n_predictions: int, n_evaluated: int) -> None:
        """DLE's estimate over ``n_predictions`` predictions (from ``n_evaluated`` of them), as totals that merge by adding."""
        if n_predictions and math.isfinite(mae):
            self.estimated += (mae * n_predictions, rmse * rmse * n_predictions)
            self.n_estimated += int(n_predictions)
            self.n_evaluated += int(n_evaluated)

    def merge(self, other: RegressionAggregate) -> RegressionAggregate:
        if self.centre != other.centre or not np.array_equal(self.edges, other.edges) or not np.array_equal(self.prediction_edges, other.prediction_edges):
            raise ValueError("regression aggregates with different centres or bins cannot merge")
        return RegressionAggregate(
            self.centre, self.edges, self.prediction_edges, self.n_predictions + other.n_predictions, self.n_outside + other.n_outside,
            self.n_labelled + other.n_labelled, self.n_zero_labels + other.n_zero_labels, self.errors.merge(other.errors),
            self.percentages.merge(other.percentages),
            self.histogram + other.histogram, [a.merge(b) for a, b in zip(self.by_prediction, other.by_prediction)], self.estimated + other.estimated,
            self.n_estimated + other.n_estimated, self.n_evaluated + other.n_evaluated,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "centre": self.centre, "edges": self.edges.tolist(), "prediction_edges": self.prediction_edges.tolist(),
            "n_predictions": self.n_predictions, "n_outside": self.n_outside, "n_labelled": self.n_labelled,
            "n_zero_labels": self.n_zero_labels, "errors": self.errors.to_json(), "percentages": self.percentages.to_json(), "histogram": self.histogram.tolist(),
            "error_by_prediction": [cell.to_json() for cell in self.by_prediction], "estimated": self.estimated.tolist(), "n_estimated": self.n_estimated,
            "n_evaluated": self.n_evaluated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegressionAggregate:
        """The aggregate of :meth:`to_json`'s data, or of one stored as power sums (``sums``, and
        ``by_prediction`` rows of count, sum and sum of squares of errors) before.

        :raises ValueError: arrays of the wrong shape.
        """
        edges, prediction_edges = np.asarray(data["edges"], dtype=float), np.asarray(data["prediction_edges"], dtype=float)
        n_labelled, n_zero_labels = int(data["n_labelled"]), int(data["n_zero_labels"])
        if "sums" in data:
            errors, percentages = _from_power_sums(data["sums"], n_labelled, n_zero_labels)
        else:
            errors, percentages = MomentSums.from_json(_ERROR_MOMENTS, data["errors"]), MomentSums.from_json(_PERCENTAGE_MOMENTS, data["percentages"])
        if "by_prediction" in data:
            rows = _array(data["by_prediction"], np.float64, (prediction_edges.size + 1, 3)).tolist()
            by_prediction = [MomentSums.from_sums(_BIN_ERROR_MOMENTS, [0.0], row) for row in rows]
        else:
            by_prediction = [MomentSums.from_json(_BIN_ERROR_MOMENTS, cell) for cell in data["error_by_prediction"]]
            if len(by_prediction) != prediction_edges.size + 1:
                raise ValueError(f"expected {prediction_edges.size + 1} prediction bins' errors, got {len(by_prediction)}")
        return cls(
            float(data["centre"]), edges, prediction_edges, int(data["n_predictions"]), int(data["n_outside"]), n_labelled,
            n_zero_labels, errors, percentages,
            _array(data["histogram"], np.float64, (edges.size + 1,)), by_prediction,
            _array(data["estimated"], np.float64, (2,)), int(data["n_estimated"]), int(data["n_evaluated"]),
        )

    def residual_plots(self) -> ResidualPlots:
        by_prediction = []
        for cell in self.by_prediction:
            count = cell.count
            sd = math.sqrt(max(cell.central()[(2,)], 0.0) / count) if count else math.nan
            by_prediction.append((count, float(cell.mean[0]), sd))
        return ResidualPlots(tuple(self.edges.tolist()), tuple(int(c) for c in self.histogram), tuple(self.prediction_edges.tolist()), tuple(by_prediction))


QualityAggregate = ClassificationAggregate | RegressionAggregate


# --------------------------------------------------------------------------------------------
# Metric registry


@dataclass(frozen=True)
class MetricContext:
    """What a metric family needs beside the aggregate: the classes, the positive class and the interval settings."""

    classes: tuple[str, ...]
    positive: int | None
    confidence: float
    replicates: int
    seed: int

    @property
    def z(self) -> float:
        return float(norm.ppf(0.5 + self.confidence / 2))


MetricFamily = Callable[[Any, MetricContext], list[MetricValue]]
METRIC_FAMILIES: dict[Task, list[tuple[tuple[str, ...], MetricFamily]]] = {"binary": [], "multiclass": [], "regression": []}


def register_metrics(*names: str, tasks: Sequence[Task]) -> Callable[[MetricFamily], MetricFamily]:
    """Register a function computing the model-level metrics ``names`` (and any per-class ones)
    from a task's aggregate, for each of ``tasks``.

    :raises ValueError: a name not in :data:`sml.lifecycle.quality_metrics.QUALITY_METRICS`, or
        not a metric of one of ``tasks``.
    """

    def decorator(family: MetricFamily) -> MetricFamily:
        for name in names:
            for task in tasks:
                if task not in quality_metric(name).tasks:
                    raise ValueError(f"metric {name!r} is not a metric of a {task} model")
        for task in tasks:
            METRIC_FAMILIES[task].append((names, family))
        return family

    return decorator


def compute_metrics(task: Task, aggregate: QualityAggregate, context: MetricContext) -> list[MetricValue]:
    """Every registered metric of ``task`` from ``aggregate``, family by family in registration order."""
    return [value for _, family in METRIC_FAMILIES[task] for value in family(aggregate, context)]


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def _confusion_point_values(cells: np.ndarray) -> dict[str, Any]:
    """scikit-learn's accuracy and precision/recall/F1 (per class, macro, weighted) of a confusion matrix."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    k = cells.shape[0]
    cell_true, cell_predicted = np.divmod(np.arange(k * k), k)
    weights = cells.ravel().astype(float)
    labels = list(range(k))
    values: dict[str, Any] = {"accuracy": accuracy_score(cell_true, cell_predicted, sample_weight=weights)}
    values["precision"], values["recall"], values["f1"], _ = precision_recall_fscore_support(
        cell_true, cell_predicted, labels=labels, sample_weight=weights, zero_division=0
    )
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(cell_true, cell_predicted, labels=labels, sample_weight=weights, average=average, zero_division=0)
        values.update({f"precision_{average}": precision, f"recall_{average}": recall, f"f1_{average}": f1})
    return values


def posterior_cell_draws(cells: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """``draws`` samples of the confusion cells' probabilities from their Dirichlet posterior, ``(draws, K, K)``.

    The prior is Perks' (total weight 1) over the cells of the true classes the window holds, so
    a class absent from the window stays absent (its metrics keep scikit-learn's zero-division
    value) while a cell never seen still gets probability. Drawn as independent Gamma variates
    (a Dirichlet draw before normalising, which the metrics, all ratios, do not need), because
    :meth:`numpy.random.Generator.dirichlet` refuses the zero weights of absent classes.
    """
    observed_rows = cells.sum(axis=1) > 0
    weights = np.zeros(cells.shape)
    weights[observed_rows] = 1.0 / (observed_rows.sum() * cells.shape[1])
    concentration = (cells + weights).ravel()
    samples = np.zeros((draws, concentration.size))
    present = concentration > 0
    samples[:, present] = np.random.default_rng(seed).standard_gamma(concentration[present], size=(draws, int(present.sum())))
    return samples.reshape(draws, *cells.shape)


def _confusion_metrics(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and per-class, macro and weighted precision, recall and F1 of a stack of confusion matrices.

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
        support = np.where(total[:, None] > 0, actual / total[:, None], 0.0)
    metrics = {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}
    for name, per_class in (("precision", precision), ("recall", recall), ("f1", f1)):
        metrics[f"{name}_macro"] = per_class.mean(axis=1)
        metrics[f"{name}_weighted"] = (per_class * support).sum(axis=1)
    return metrics


_AVERAGED = ("precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted")


@register_metrics("accuracy", *_AVERAGED, tasks=("multiclass",))
@register_metrics("accuracy", *_AVERAGED, "precision", "recall", "f1", tasks=("binary",))
def _confusion_family(aggregate: ClassificationAggregate, context: MetricContext) -> list[MetricValue]:
    n = aggregate.n_labelled
    if not n:
        return []
    cells = aggregate.confusion
    point = _confusion_point_values(cells)
    boot = _confusion_metrics(posterior_cell_draws(cells, context.replicates, context.seed))

    def metric(name: str, value: float, samples: np.ndarray, class_label: str | None = None) -> MetricValue:
        low, high = _percentile_interval(samples, context.confidence)
        return MetricValue(name, float(value), min(low, float(value)), max(high, float(value)), class_label=class_label, interval="dirichlet")

    metrics = [metric("accuracy", point["accuracy"], boot["accuracy"])]
    for name in ("precision", "recall", "f1"):
        for average in ("macro", "weighted"):
            metrics.append(metric(f"{name}_{average}", point[f"{name}_{average}"], boot[f"{name}_{average}"]))
        if context.positive is not None:
            metrics.append(metric(name, point[name][context.positive], boot[name][:, context.positive]))
        metrics.extend(metric(name, point[name][index], boot[name][:, index], label) for index, label in enumerate(context.classes))
    return metrics


def _hanley_mcneil_variance(auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982), eq. 2: SE² = [A(1−A) + (n₁−1)(Q₁−A²) + (n₂−1)(Q₂−A²)] / (n₁n₂), Q₁ = A/(2−A), Q₂ = 2A²/(1+A)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (n_positive * n_negative)
    return max(variance, 0.0)


def _auc_score_interval(auc: float, n_positive: int, n_negative: int, z: float) -> tuple[float, float]:
    """The θ in [0, 1] with (A − θ)² ≤ z²·SE²(θ), SE² Hanley & McNeil's eq. 2 at θ: ``(low, high)``.

    SE²(θ) is 0 at θ = 0 and θ = 1 and positive between, so ``(A − θ)² − z²SE²(θ)`` is positive
    at the far end of [0, 1] from A and not positive at A; each end of the interval is the root
    on its side (Brent's method). At A = 1 the lower end is the root below 1, found from just
    under 1, where SE² is still positive.
    """
    from scipy.optimize import brentq

    def excess(theta: float) -> float:
        return (auc - theta) ** 2 - z * z * _hanley_mcneil_variance(theta, n_positive, n_negative)

    inside = min(max(auc, 1e-9), 1 - 1e-9)  # where excess() <= 0: A itself, or just inside [0, 1] at its ends
    low = 0.0 if excess(0.0) <= 0 else brentq(excess, 0.0, inside, xtol=1e-12)
    high = 1.0 if excess(1.0) <= 0 else brentq(excess, inside, 1.0, xtol=1e-12)
    return min(low, auc), max(high, auc)


def _histogram_auc(histogram: np.ndarray) -> float:
    """scikit-learn's ROC AUC of scores given as ``(2, SCORE_BINS)`` counts (negatives, positives) at the bin centres."""
    from sklearn.metrics import roc_auc_score

    centres = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS
    outcome, cell = np.nonzero(histogram)
    return float(roc_auc_score(outcome, centres[cell], sample_weight=histogram[outcome, cell]))


@register_metrics("roc_auc", tasks=("binary", "multiclass"))
def _roc_auc_family(aggregate: ClassificationAggregate, context: MetricContext) -> list[MetricValue]:
    z = context.z
    classes = [context.positive] if context.positive is not None else range(aggregate.n_classes)
    values, below, above, metrics = [], [], [], []
    for index in classes:
        histogram = aggregate.scores[index]
        n_negative, n_positive = int(histogram[0].sum()), int(histogram[1].sum())
        if not (n_positive and n_negative):
            return metrics if context.positive is not None else []
        auc = _histogram_auc(histogram)
        low, high = _auc_score_interval(auc, n_positive, n_negative, z)
        values.append(auc)
        below.append(auc - low)
        above.append(high - auc)
        if context.positive is None:
            metrics.append(MetricValue("roc_auc", auc, low, high, context.classes[index], "hanley-mcneil"))
    auc = float(np.mean(values))
    low, high = max(0.0, auc - float(np.mean(below))), min(1.0, auc + float(np.mean(above)))
    return [MetricValue("roc_auc", auc, low, high, interval="hanley-mcneil"), *metrics]


def _normal_interval(name: str, value: float, central_squares: float, n: int, z: float, floor: float | None = 0.0) -> MetricValue:
    """A mean's normal interval from its central sum of squares (``n·`` the variance); ``floor`` bounds it below."""
    if n < 2:
        return MetricValue(name, value)
    half = z * math.sqrt(max(central_squares, 0.0) / (n - 1) / n)
    return MetricValue(name, value, value - half if floor is None else max(floor, value - half), value + half, interval="normal")


def _normal_mean(name: str, total: float, squares: float, n: int, z: float) -> MetricValue:
    """A bounded loss's mean and normal interval from its sum and sum of squares (log loss ≤ ~36, Brier ≤ 2:
    Σx² − (Σx)²/n loses only the digits the mean's square has over the variance, not those of an interval)."""
    return _normal_interval(name, total / n, squares - total * total / n, n, z)


@register_metrics("log_loss", "brier", tasks=("binary", "multiclass"))
def _loss_family(aggregate: ClassificationAggregate, context: MetricContext) -> list[MetricValue]:
    n = aggregate.n_scored
    if not n:
        return []
    log_loss, log_squares, brier, brier_squares = aggregate.losses.tolist()
    return [_normal_mean("log_loss", log_loss, log_squares, n, context.z), _normal_mean("brier", brier, brier_squares, n, context.z)]


def reliability_from_table(table: np.ndarray) -> tuple[ReliabilityBin, ...]:
    """The non-empty bins of a ``(RELIABILITY_BINS, 3)`` table (count, sum of probabilities, count right)."""
    edges = np.linspace(0.0, 1.0, table.shape[0] + 1)
    return tuple(
        ReliabilityBin(float(edges[b]), float(edges[b + 1]), int(count), float(total / count), float(right / count))
        for b, (count, total, right) in enumerate(table.tolist())
        if count
    )


def reliability_bins(is_positive: np.ndarray, scores: np.ndarray, n_bins: int = RELIABILITY_BINS) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of ``scores`` on [0, 1], as :func:`sklearn.calibration.calibration_curve` (``uniform``) bins them.

    Empty bins are left out (as there). A bin's ``fraction_positive`` and ``mean_predicted`` are
    the curve's ``prob_true`` and ``prob_pred``.
    """
    index = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], scores)
    table = np.column_stack(
        [np.bincount(index, minlength=n_bins), np.bincount(index, weights=scores, minlength=n_bins), np.bincount(index, weights=is_positive.astype(float), minlength=n_bins)]
    )
    return reliability_from_table(table)


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """ECE = Σ_b n_b/n · |fraction positive_b − mean predicted_b| over the reliability bins."""
    total = sum(bin_.count for bin_ in bins)
    return float(sum(bin_.count / total * abs(bin_.fraction_positive - bin_.mean_predicted) for bin_ in bins)) if total else float("nan")


@register_metrics("ece", tasks=("binary", "multiclass"))
def _ece_family(aggregate: ClassificationAggregate, context: MetricContext) -> list[MetricValue]:
    bins = reliability_from_table(aggregate.reliability)
    if not bins:
        return []
    value = expected_calibration_error(bins)
    counts = np.array([[b.count - round(b.fraction_positive * b.count), round(b.fraction_positive * b.count)] for b in bins], dtype=float)
    mean_predicted = np.array([b.mean_predicted for b in bins])
    n = int(counts.sum())
    draws = np.random.default_rng(context.seed + 1).multinomial(n, counts.ravel() / n, size=context.replicates).reshape(context.replicates, len(bins), 2)
    per_bin = draws.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(per_bin > 0, draws[:, :, 1] / per_bin, 0.0)
    samples = (per_bin / n * np.abs(fraction - mean_predicted) * (per_bin > 0)).sum(axis=1)
    return [MetricValue("ece", value, *_percentile_interval(samples, context.confidence), interval="bootstrap")]


@register_metrics("mae", "rmse", "mean_error", tasks=("regression",))
def _error_family(aggregate: RegressionAggregate, context: MetricContext) -> list[MetricValue]:
    n = aggregate.n_labelled
    if not n:
        return []
    mean_error, mae, mse, _ = aggregate.errors.mean.tolist()
    central = aggregate.errors.central()
    z = context.z
    mae_value = _normal_interval("mae", mae, central[(0, 2, 0, 0)], n, z)
    mse_value = _normal_interval("mse", mse, central[(0, 0, 2, 0)], n, z)
    rmse = MetricValue("rmse", math.sqrt(mse), *((math.sqrt(mse_value.low), math.sqrt(mse_value.high)) if mse_value.low is not None else (None, None)), interval=mse_value.interval)
    return [mae_value, rmse, _normal_interval("mean_error", mean_error, central[(2, 0, 0, 0)], n, z, floor=None)]


@register_metrics("r2", tasks=("regression",))
def _r2_family(aggregate: RegressionAggregate, context: MetricContext) -> list[MetricValue]:
    n = aggregate.n_labelled
    if n < 2:
        return []
    m = {p: total / n for p, total in aggregate.errors.central().items()}
    variance = m[(0, 0, 0, 2)]  # B: the label's (population) variance
    if variance <= 0:
        return []
    mse = float(aggregate.errors.mean[2])  # A
    value = 1 - mse / variance
    ratio = mse / variance
    # Var(e²) − 2(A/B)·Cov(e², (y − ȳ)²) + (A/B)²·Var((y − ȳ)²), each a central moment.
    spread = m[(0, 0, 2, 0)] - 2 * ratio * m[(0, 0, 1, 2)] + ratio**2 * (m[(0, 0, 0, 4)] - variance**2)
    half = context.z * math.sqrt(max(spread, 0.0) / n) / variance
    return [MetricValue("r2", value, value - half, value + half, interval="delta")]


@register_metrics("mape", tasks=("regression",))
def _mape_family(aggregate: RegressionAggregate, context: MetricContext) -> list[MetricValue]:
    n = aggregate.n_labelled
    if not n or aggregate.n_zero_labels:
        return []
    return [_normal_interval("mape", float(aggregate.percentages.mean[0]), aggregate.percentages.central()[(2,)], n, context.z)]


# --------------------------------------------------------------------------------------------
# Realized and estimated quality from an aggregate


def realized_from_aggregate(task: Task, aggregate: QualityAggregate, context: MetricContext) -> RealizedQuality:
    """Realized quality of a window's aggregate: every registered metric of ``task`` and the report's tables."""
    metrics = tuple(compute_metrics(task, aggregate, context)) if aggregate.n_labelled else ()
    positive_class = context.classes[context.positive] if context.positive is not None else None
    if isinstance(aggregate, RegressionAggregate):
        return RealizedQuality(n_labelled=aggregate.n_labelled, n_scored=aggregate.n_labelled, metrics=metrics, residuals=aggregate.residual_plots() if aggregate.n_labelled else None)
    return RealizedQuality(
        n_labelled=aggregate.n_labelled,
        n_scored=aggregate.n_scored,
        metrics=metrics,
        reliability=reliability_from_table(aggregate.reliability),
        label_counts=tuple(int(count) for count in aggregate.confusion.sum(axis=1)),
        positive_class=positive_class,
        classes=context.classes,
        confusion=tuple(tuple(int(cell) for cell in row) for row in aggregate.confusion.tolist()),
    )


def estimated_from_aggregate(aggregate: QualityAggregate, context: MetricContext) -> EstimatedQuality | None:
    """CBPE's or DLE's estimate held in ``aggregate``; ``None`` when it holds none."""
    if isinstance(aggregate, RegressionAggregate):
        if not aggregate.n_estimated:
            return None
        absolute, squared = aggregate.estimated.tolist()
        metrics = (MetricValue("mae", absolute / aggregate.n_estimated), MetricValue("rmse", math.sqrt(squared / aggregate.n_estimated)))
        return EstimatedQuality(n_predictions=aggregate.n_estimated, metrics=metrics, method="dle", n_evaluated=aggregate.n_evaluated)
    if not aggregate.n_estimated:
        return None
    point = _confusion_point_values(aggregate.expected)
    metrics = [MetricValue("accuracy", float(point["accuracy"]))]
    for name in ("precision", "recall", "f1"):
        metrics += [MetricValue(f"{name}_{average}", float(point[f"{name}_{average}"])) for average in ("macro", "weighted")]
        if context.positive is not None:
            metrics.append(MetricValue(name, float(point[name][context.positive])))
        metrics.extend(MetricValue(name, float(point[name][index]), class_label=label) for index, label in enumerate(context.classes))
    metrics += _estimated_roc_auc(aggregate, context)
    return EstimatedQuality(
        n_predictions=aggregate.n_estimated, metrics=tuple(metrics), expected_confusion=tuple(tuple(row) for row in aggregate.expected.tolist())
    )


def _estimated_roc_auc(aggregate: ClassificationAggregate, context: MetricContext) -> list[MetricValue]:
    """CBPE's ROC AUC: each prediction counts as a positive of class k with weight its calibrated
    probability of k and as a negative with the rest (NannyML's CBPE estimate of ROC AUC), ranked
    by the model's probability of k as the realized AUC ranks it (a multiclass calibrator's
    normalised rows need not keep that order); a multiclass model's is the macro average of the one-vs-rest estimates,
    as the realized one. None when a class is never expected to be (or not to be) the label, or
    the window was summarised before the estimate existed."""
    indices = [context.positive] if context.positive is not None else range(aggregate.n_classes)
    per_class = []
    for index in indices:
        histogram = aggregate.expected_scores[index]
        if not (histogram[0].sum() > 0 and histogram[1].sum() > 0):
            return []
        per_class.append(_histogram_auc(histogram))
    if context.positive is not None:
        return [MetricValue("roc_auc", per_class[0])]
    return [MetricValue("roc_auc", float(np.mean(per_class))),
            *(MetricValue("roc_auc", auc, class_label=context.classes[index]) for index, auc in zip(indices, per_class))]


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
    """A classifier's realized metrics with intervals on labelled predictions (see the module's docstring).

    :param true_index, predicted_index: int arrays of class indices, one per labelled prediction.
    :param probabilities: ``(n, K)`` float array in class order, a row of NaN where the prediction
        has no probabilities; ``None`` when none has. Probability metrics use the complete rows.
    :param positive_class: a binary model's positive class (its precision/recall/F1, ROC AUC,
        Brier and ECE); ``None`` for a multiclass model (one-vs-rest ROC AUC, top-label ECE).
    """
    classes = tuple(classes)
    if true_index.size == 0:
        return RealizedQuality(n_labelled=0, n_scored=0, metrics=(), classes=classes, positive_class=positive_class)
    positive = classes.index(positive_class) if positive_class in classes else None
    aggregate = ClassificationAggregate(len(classes), positive)
    aggregate.add(predicted_index, probabilities, true_index)
    task: Task = "binary" if positive is not None else "multiclass"
    return realized_from_aggregate(task, aggregate, MetricContext(classes, positive, confidence, replicates, seed))


def estimated_quality(predicted_index: np.ndarray, probabilities: np.ndarray, calibrator: Calibrator, positive_class: str | None) -> EstimatedQuality:
    """CBPE: the expected confusion matrix from calibrated probabilities, and metrics from it (rows without probabilities left out)."""
    classes = tuple(calibrator.classes)
    positive = classes.index(positive_class) if positive_class in classes else None
    aggregate = ClassificationAggregate(len(classes), positive)
    aggregate.add(predicted_index, probabilities, np.full(predicted_index.size, UNLABELLED), calibrator)
    estimate = estimated_from_aggregate(aggregate, MetricContext(classes, positive, 0.95, 1, BOOTSTRAP_SEED))
    return estimate or EstimatedQuality(n_predictions=0, metrics=(), expected_confusion=tuple(tuple(row) for row in aggregate.expected.tolist()))


def held_out_metrics(
    task: Task,
    *,
    truth: Sequence[Any],
    predictions: Sequence[Any],
    probabilities: np.ndarray | None = None,
    classes: Sequence[str | int] = (),
    positive_class: str | int | None = None,
) -> dict[str, float]:
    """The model-level metrics of ``task`` on held-out data, as a manifest's ``metrics`` records them.

    The same registry and definitions as the weekly run, so a window's realized value and the
    held-out value it is compared with are the same metric.

    :param truth, predictions: labels and the model's predictions (classes as the manifest lists them, or numbers).
    :param probabilities: classifiers: ``(n, K)`` ``predict_proba`` in ``classes`` order (probability metrics need it).
    :param positive_class: binary: the positive class (default: the second class).
    :raises ValueError: a label or prediction that is not a class, or lengths that differ.
    """
    context_classes = tuple(str(label) for label in classes)
    if task == "regression":
        truth_values, predicted = np.asarray(truth, dtype=float), np.asarray(predictions, dtype=float)
        if truth_values.shape != predicted.shape:
            raise ValueError(f"truth and predictions differ in length ({truth_values.size}, {predicted.size})")
        aggregate: QualityAggregate = RegressionAggregate.for_reference(float(np.mean(truth_values)) if truth_values.size else 0.0, 1.0, ())
        aggregate.add(predicted, truth_values)
        positive = None
    else:
        names = list(context_classes)
        try:
            true_index = np.array([names.index(str(label)) for label in truth], dtype=np.int64)
            predicted_index = np.array([names.index(str(label)) for label in predictions], dtype=np.int64)
        except ValueError:
            raise ValueError(f"a held-out label or prediction is not one of the classes {names}") from None
        if true_index.shape != predicted_index.shape:
            raise ValueError(f"truth and predictions differ in length ({true_index.size}, {predicted_index.size})")
        positive = names.index(str(positive_class) if positive_class is not None else names[1]) if task == "binary" else None
        aggregate = ClassificationAggregate(len(names), positive)
        aggregate.add(predicted_index, None if probabilities is None else np.asarray(probabilities, dtype=float), true_index)
    realized = realized_from_aggregate(task, aggregate, MetricContext(context_classes, positive, 0.95, 1, BOOTSTRAP_SEED))
    return {value.metric: value.value for value in realized.metrics if value.class_label is None and math.isfinite(value.value)}


# --------------------------------------------------------------------------------------------
# Delay, verdict, and the whole window


def label_delay(delay_seconds: np.ndarray) -> LabelDelay | None:
    """Percentiles of the labels' delays (seconds) that are not negative, and how many are; ``None`` without labels."""
    if delay_seconds.size == 0:
        return None
    before = delay_seconds < 0
    valid = delay_seconds[~before]
    if not valid.size:
        return LabelDelay(math.nan, math.nan, math.nan, math.nan, int(before.sum()))
    p50, p90, p99 = np.percentile(valid, [50, 90, 99])
    return LabelDelay(float(p50), float(p90), float(p99), float(valid.max()), int(before.sum()))


def quality_verdict(realized: RealizedQuality | None, reference_value: float | None, config: QualityConfig) -> tuple[QualityVerdict, str]:
    """The verdict and a one-line reason (see the module's docstring); ``config.metric`` must be resolved (:meth:`QualityConfig.for_task`)."""
    metric = config.metric
    if metric is None:
        raise ValueError("the quality config's metric is not resolved for the model's task (QualityConfig.for_task)")
    n = realized.n_labelled if realized else 0
    if n < config.min_labels:
        return QualityVerdict.INSUFFICIENT_DATA, f"{n} labelled predictions, fewer than the {config.min_labels} required"
    if reference_value is None:
        return QualityVerdict.INSUFFICIENT_DATA, f"the manifest has no held-out {metric} to compare with"
    value = realized.get(metric) if realized else None
    if value is None or value.high is None or value.low is None:
        return QualityVerdict.INSUFFICIENT_DATA, f"{metric} could not be computed from the labelled predictions"
    if metric in ("f1", "recall") and realized.positive_class in realized.classes:
        if realized.label_counts[realized.classes.index(realized.positive_class)] == 0:
            # F1 and recall of a class no label belongs to are undefined (scikit-learn's zero_division), not bad.
            return QualityVerdict.INSUFFICIENT_DATA, f"no labelled prediction is of the positive class {realized.positive_class!r}, so {metric} is undefined"
    spec = quality_metric(metric)
    margin = config.tolerance * (abs(reference_value) if spec.tolerance == "relative" else 1.0)
    interval = f"{metric} {value.value:.4g} ({config.confidence:.0%} interval {value.low:.4g} to {value.high:.4g})"
    tolerance = f"{config.tolerance:.0%} of it" if spec.tolerance == "relative" else f"{config.tolerance}"
    if spec.direction == "higher" and value.high < reference_value - margin:
        return QualityVerdict.DEGRADED, f"{interval} is below the held-out {reference_value:.4g} by more than {tolerance}"
    if spec.direction == "lower" and value.low > reference_value + margin:
        return QualityVerdict.DEGRADED, f"{interval} is above the held-out {reference_value:.4g} by more than {tolerance} (lower is better)"
    return QualityVerdict.OK, f"{interval}; held-out {reference_value:.4g}, tolerance {tolerance}"


def assess_aggregate(
    task: Task,
    aggregate: QualityAggregate,
    *,
    classes: Sequence[str],
    positive_class: str | None,
    delay_seconds: np.ndarray,
    reference_metrics: Mapping[str, float],
    config: QualityConfig,
) -> QualityResult:
    """Model quality of a window from its aggregate (see the module's docstring).

    :param delay_seconds: labelled_at − predicted_at of the window's labels, in seconds.
    :raises ValueError: ``config.metric`` is not a verdict metric of ``task``.
    """
    config = config.for_task(task)
    classes = tuple(classes)
    positive = classes.index(positive_class) if positive_class in classes else None
    context = MetricContext(classes, positive, config.confidence, config.bootstrap_replicates, config.seed)
    realized = realized_from_aggregate(task, aggregate, context)
    reference_value = reference_metrics.get(config.metric or "")
    status, reason = quality_verdict(realized, reference_value, config)
    return QualityResult(
        status=status,
        reason=reason,
        config=config,
        classes=classes,
        positive_class=positive_class if positive is not None else None,
        n_predictions=aggregate.n_predictions,
        n_labelled=aggregate.n_labelled,
        n_labels_outside_classes=aggregate.n_outside,
        reference_value=reference_value,
        realized=realized,
        estimated=estimated_from_aggregate(aggregate, context),
        delay=label_delay(delay_seconds),
        reference_metrics=dict(reference_metrics),
        task=task,
    )


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
    task: Task | None = None,
) -> QualityResult:
    """Model quality of a classifier's window from its arrays.

    :param predicted_index: the class index of every prediction in the window (``-1`` for a
        stored prediction that is not a class of the model; such rows are not scored).
    :param true_index: per prediction, the label's class index, ``UNLABELLED`` or ``LABEL_OUTSIDE_CLASSES``.
    :param delay_seconds: per prediction, labelled_at − predicted_at in seconds (NaN when unlabelled).
    :param calibrator: the manifest's CBPE calibrator; ``None`` skips the estimate.
    :param task: ``binary`` or ``multiclass``; by default the one the classes imply.
    """
    classes = tuple(classes)
    task = task or task_from_classes(classes)
    positive = classes.index(positive_class) if task == "binary" and positive_class in classes else None
    aggregate = ClassificationAggregate(len(classes), positive)
    usable = calibrator if calibrator is not None and tuple(calibrator.classes) == classes else None
    aggregate.add(predicted_index, probabilities, true_index, usable)
    return assess_aggregate(
        task, aggregate, classes=classes, positive_class=positive_class, delay_seconds=delay_seconds[true_index != UNLABELLED],
        reference_metrics=reference_metrics, config=config,
    )


def add_direct_loss_estimate(aggregate: RegressionAggregate, estimator: DirectLossEstimator, predictions: np.ndarray, columns: Mapping[str, Any]) -> None:
    """Add DLE's estimate over the window's numeric predictions to ``aggregate``.

    :param columns: the window's feature columns by name, aligned with ``predictions``.
    """
    known = np.isfinite(predictions)
    kept = columns
    if not known.all():
        kept = {name: (values[known] if isinstance(values, np.ndarray) else [value for value, keep in zip(values, known.tolist()) if keep]) for name, values in columns.items()}
    mae, rmse, evaluated = estimator.estimate(kept, predictions[known])
    aggregate.add_estimate(mae, rmse, int(known.sum()), evaluated)


def assess_regression_quality(
    *,
    predictions: np.ndarray,
    truth: np.ndarray,
    n_labels_not_numbers: int,
    delay_seconds: np.ndarray,
    reference_metrics: Mapping[str, float],
    estimator: DirectLossEstimator | None,
    columns: Mapping[str, Any] | None,
    config: QualityConfig,
    prediction_edges: Sequence[float] = (),
    centre: float | None = None,
) -> QualityResult:
    """Model quality of a regression model's window from its arrays.

    :param predictions: every prediction of the window (NaN: not a number).
    :param truth: per prediction its label (NaN: unlabelled, or a label that is not a number).
    :param n_labels_not_numbers: labels that are not finite numbers (counted, not scored).
    :param delay_seconds: the delays of the window's labels, seconds.
    :param estimator, columns: DLE and the window's feature columns (aligned with ``predictions``);
        ``None`` skips the estimate.
    :param prediction_edges: the residual plot's prediction bins (e.g. deciles of the training predictions).
    :param centre: subtracted from labels in the power sums (fixed per model so that windows merge,
        e.g. the mean training prediction); by default the window's mean label.
    """
    if centre is None:
        centre = float(np.nanmean(truth)) if np.isfinite(truth).any() else 0.0
    aggregate = RegressionAggregate.for_reference(centre, reference_metrics.get("rmse", math.nan), prediction_edges)
    aggregate.add(predictions, truth, n_labels_not_numbers)
    if estimator is not None and columns is not None:
        add_direct_loss_estimate(aggregate, estimator, predictions, columns)
    return assess_aggregate(
        "regression", aggregate, classes=(), positive_class=None, delay_seconds=delay_seconds, reference_metrics=reference_metrics, config=config
    )
