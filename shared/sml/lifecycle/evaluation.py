"""Held-out evaluation: the task's quality metrics of a model on rows it was not fitted on.

Registration and ``sml train`` record these in the manifest's ``metrics``; the weekly run compares
realized quality with them and ``sml promote --best-by`` ranks versions by them. Their names,
tasks and directions are :data:`sml.lifecycle.quality_metrics.QUALITY_METRICS`; they are computed
by the weekly run's own metric registry (:mod:`sml.monitoring.model_quality.metrics`), so a
window's realized value and the held-out value it is compared with are one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
        Every model-level metric of the task that these rows define (see
        :func:`sml.lifecycle.quality_metrics.metrics_for`): ROC AUC needs every class present,
        MAPE no label of 0, R² two rows with different labels; the others are left out.
    """
    from sml.monitoring.model_quality.metrics import held_out_metrics as registry_metrics

    return registry_metrics(task, truth=truth, predictions=predicted, probabilities=probabilities, classes=classes, positive_class=positive_class)  # type: ignore[arg-type]
