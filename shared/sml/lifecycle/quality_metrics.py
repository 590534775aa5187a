"""The model quality metrics by name: which tasks have them and which way is better.

One list for everyone who compares quality values: the weekly run's verdict
(:mod:`sml.monitoring.model_quality.metrics`, whose registry computes each of them), a model's
drift config (``[quality] metric``), the held-out metrics a manifest records, and the ranking of
versions (``sml promote --best-by``). Pure data, no I/O.

Directions: ``higher`` (accuracy, F1, ROC AUC, R²), ``lower`` (errors and losses: MAE, RMSE,
MAPE, log loss, Brier score, calibration error) and ``zero`` (the mean error, a bias: best at 0,
either sign as bad). A metric's ``tolerance`` says how a verdict's tolerance is read: ``absolute``
for scale-free metrics (0.05 of F1), ``relative`` for metrics in the label's unit (0.1 of the
held-out RMSE), so one tolerance means the same for a model of house prices and of blood sugar.

Example::

    spec = quality_metric("rmse")
    spec.direction            # "lower"
    best = max(versions, key=lambda v: ranking_key("rmse", v.metrics["rmse"]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sml.lifecycle.manifest import Task

Direction = Literal["higher", "lower", "zero"]
ToleranceKind = Literal["absolute", "relative"]
CLASSIFICATION: tuple[Task, ...] = ("binary", "multiclass")


@dataclass(frozen=True)
class QualityMetric:
    """One quality metric's name, tasks, direction and how a tolerance applies to it.

    :param verdict: whether the weekly verdict may be based on it (the mean error is reported,
        but a bias of either sign has no one-sided threshold).
    """

    name: str
    tasks: tuple[Task, ...]
    direction: Direction
    tolerance: ToleranceKind = "absolute"
    verdict: bool = True
    description: str = ""


QUALITY_METRICS: dict[str, QualityMetric] = {
    metric.name: metric
    for metric in (
        QualityMetric("accuracy", CLASSIFICATION, "higher", description="share of correct predictions"),
        QualityMetric("precision", ("binary",), "higher", description="precision of the positive class"),
        QualityMetric("recall", ("binary",), "higher", description="recall of the positive class"),
        QualityMetric("f1", ("binary",), "higher", description="F1 of the positive class"),
        QualityMetric("precision_macro", CLASSIFICATION, "higher", description="unweighted mean of the per-class precisions"),
        QualityMetric("recall_macro", CLASSIFICATION, "higher", description="unweighted mean of the per-class recalls"),
        QualityMetric("f1_macro", CLASSIFICATION, "higher", description="unweighted mean of the per-class F1 scores"),
        QualityMetric("precision_weighted", CLASSIFICATION, "higher", description="per-class precisions weighted by class frequency"),
        QualityMetric("recall_weighted", CLASSIFICATION, "higher", description="per-class recalls weighted by class frequency"),
        QualityMetric("f1_weighted", CLASSIFICATION, "higher", description="per-class F1 scores weighted by class frequency"),
        QualityMetric("roc_auc", CLASSIFICATION, "higher", description="ROC AUC of the positive class (binary) or one-vs-rest, macro (multiclass)"),
        QualityMetric("log_loss", CLASSIFICATION, "lower", description="mean negative log-likelihood of the true class"),
        QualityMetric("brier", CLASSIFICATION, "lower", description="mean squared distance of the probabilities from the one-hot label"),
        QualityMetric("ece", CLASSIFICATION, "lower", description="expected calibration error (positive class for binary, top label for multiclass)"),
        QualityMetric("mae", ("regression",), "lower", "relative", description="mean absolute error, in the label's unit"),
        QualityMetric("rmse", ("regression",), "lower", "relative", description="root mean squared error, in the label's unit"),
        QualityMetric("r2", ("regression",), "higher", description="coefficient of determination"),
        QualityMetric("mean_error", ("regression",), "zero", "relative", verdict=False, description="mean of prediction minus label (bias)"),
        QualityMetric("mape", ("regression",), "lower", description="mean absolute percentage error, a share (defined when no label is 0)"),
    )
}

DEFAULT_VERDICT_METRIC: dict[Task, str] = {"binary": "f1", "multiclass": "f1_macro", "regression": "rmse"}


def quality_metric(name: str) -> QualityMetric:
    """The metric named ``name``.

    :raises ValueError: no such metric (the message lists them).
    """
    try:
        return QUALITY_METRICS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a quality metric; choose one of {', '.join(QUALITY_METRICS)}") from None


def metrics_for(task: Task, *, verdict_only: bool = False) -> tuple[str, ...]:
    """The names of the metrics ``task`` has (only those a verdict can use with ``verdict_only``), in list order."""
    return tuple(name for name, metric in QUALITY_METRICS.items() if task in metric.tasks and (metric.verdict or not verdict_only))


def check_verdict_metric(name: str, task: Task) -> QualityMetric:
    """The metric ``name`` if a verdict on a ``task`` model can use it.

    :raises ValueError: unknown, not a metric of ``task`` or not for verdicts (names the choices).
    """
    choices = metrics_for(task, verdict_only=True)
    if name not in choices:
        raise ValueError(f"{name!r} is not a verdict metric of a {task} model; choose one of {', '.join(choices)}")
    return QUALITY_METRICS[name]


def ranking_key(name: str, value: float) -> float:
    """A key that is larger for a better value of metric ``name`` (``max`` over it picks the best).

    :raises ValueError: unknown metric.
    """
    direction = quality_metric(name).direction
    if direction == "higher":
        return value
    if direction == "lower":
        return -value
    return -abs(value)
