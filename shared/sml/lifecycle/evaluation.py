"""Held-out evaluation: the task's quality metrics of a model on rows it was not fitted on.

Registration and ``sml train`` record these in the manifest's ``metrics``; the weekly run compares
realized quality with them and ``sml promote --best-by`` ranks versions by them. Their names,
tasks and directions are :data:`sml.lifecycle.quality_metrics.QUALITY_METRICS`. Formulas are
scikit-learn's (:mod:`sklearn.metrics`); ``ece`` is the expected calibration error over ten
equal-width bins as :func:`sklearn.calibration.calibration_curve` bins them (``uniform``), of the
positive class's probability for a binary model and of the predicted class's for a multiclass one
(Guo et al., 2017, "On Calibration of Modern Neural Networks", eq. 3), as the weekly run computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 10


def held_out_metrics(
    task: str,
    truth: Sequence[Any],
    predicted: Sequence[Any],
    probabilities: np.ndarray | None = None,
    classes: Sequence[Any] = (),
    positive_class: Any = None,
) -> dict[str, float]:
    """The task's metrics of ``predicted`` against ``truth`` on held-out rows.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        truth, predicted: labels (classification) or values (regression), one per row.
        probabilities: ``(n, K)`` class probabilities in ``classes`` order, or ``None`` for a
            classifier without ``predict_proba`` (then only label metrics are computed).
        classes: the model's classes, in probability-column order.
        positive_class: the class F1, precision, recall, ROC AUC, Brier score and ECE are about (binary).

    Returns:
        Binary: accuracy, f1, precision, recall, and with probabilities roc_auc, log_loss, brier,
        ece. Multiclass: accuracy, f1_macro, precision_macro, recall_macro, and with
        probabilities roc_auc (one-vs-rest, macro average), log_loss, ece. Regression: mae, rmse,
        and r2 from two rows on. A metric undefined on these rows (ROC AUC with one class present)
        is left out.
    """
    from sklearn import metrics as sk

    if task == "regression":
        y_true, y_pred = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
        scores = {"mae": sk.mean_absolute_error(y_true, y_pred), "rmse": np.sqrt(sk.mean_squared_error(y_true, y_pred))}
        if y_true.size >= 2:
            scores["r2"] = sk.r2_score(y_true, y_pred)
        return {name: float(value) for name, value in scores.items()}
    # A typed array (int, str), not object: scikit-learn cannot tell the target type of an object array of ints.
    y_true, y_pred = np.asarray(list(truth)), np.asarray(list(predicted))
    labels = list(classes)
    scores = {"accuracy": sk.accuracy_score(y_true, y_pred)}
    if task == "binary":
        for name, score in (("f1", sk.f1_score), ("precision", sk.precision_score), ("recall", sk.recall_score)):
            scores[name] = score(y_true, y_pred, pos_label=positive_class, labels=labels, zero_division=0)
    else:
        for name, score in (("f1", sk.f1_score), ("precision", sk.precision_score), ("recall", sk.recall_score)):
            scores[f"{name}_macro"] = score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
    if probabilities is not None:
        index = {label: position for position, label in enumerate(labels)}
        true_index = np.array([index[label] for label in y_true.tolist()])
        scores.update(_probability_metrics(task, true_index, np.asarray(probabilities, dtype=float), len(labels), index.get(positive_class)))
    return {name: float(value) for name, value in scores.items()}


def expected_calibration_error(is_event: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = sum over equal-width bins b of n_b / n x |share of events in b - mean score in b|.

    Binned as :func:`sklearn.calibration.calibration_curve` (``strategy="uniform"``) bins: by
    ``searchsorted`` on the inner edges. ``is_event`` is whether each row is the positive class
    (binary) or whether the predicted class was right (multiclass, with ``scores`` its probability).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(which, minlength=bins)
    gaps = np.abs(np.bincount(which, weights=is_event.astype(float), minlength=bins) - np.bincount(which, weights=scores, minlength=bins))
    return float(gaps.sum() / counts.sum())


def _probability_metrics(task: str, true_index: np.ndarray, probabilities: np.ndarray, n_classes: int, positive: int | None) -> dict[str, float]:
    from sklearn import metrics as sk

    scores: dict[str, float] = {"log_loss": sk.log_loss(true_index, probabilities, labels=list(range(n_classes)))}
    present = np.unique(true_index)
    if task == "binary" and positive is not None:
        is_positive = true_index == positive
        scores["brier"] = sk.brier_score_loss(is_positive, probabilities[:, positive])
        scores["ece"] = expected_calibration_error(is_positive, probabilities[:, positive])
        if present.size == 2:
            scores["roc_auc"] = sk.roc_auc_score(is_positive, probabilities[:, positive])
        return scores
    predicted = probabilities.argmax(axis=1)
    scores["ece"] = expected_calibration_error(predicted == true_index, probabilities.max(axis=1))
    if present.size == n_classes:
        scores["roc_auc"] = sk.roc_auc_score(true_index, probabilities, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    return scores
