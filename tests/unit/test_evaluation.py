"""Held-out metrics: named as the one list of quality metrics names them, computed as the weekly run computes them."""

from __future__ import annotations

import numpy as np
import pytest

from sml.lifecycle.evaluation import held_out_metrics
from sml.lifecycle.quality_metrics import metrics_for


def test_every_metric_held_out_metrics_returns_is_a_quality_metric_of_its_task() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    binary = held_out_metrics("binary", ["a", "b", "b", "b"], ["a", "b", "a", "b"], probabilities, ["a", "b"], "b")
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    multiclass = held_out_metrics("multiclass", [0, 1, 2, 1], [0, 1, 2, 0], three, [0, 1, 2])
    regression = held_out_metrics("regression", [1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
    for task, scores in (("binary", binary), ("multiclass", multiclass), ("regression", regression)):
        assert set(scores) <= set(metrics_for(task)), (task, scores)  # type: ignore[arg-type]
    assert binary["accuracy"] == 0.75 and binary["recall"] == pytest.approx(2 / 3) and binary["precision"] == 1.0
    assert set(binary) == set(metrics_for("binary")) and set(multiclass) == set(metrics_for("multiclass"))
    assert set(regression) == set(metrics_for("regression"))
    assert regression["mae"] == pytest.approx(0.5) and regression["rmse"] == pytest.approx(np.sqrt(1.25 / 3))
    assert regression["mean_error"] == pytest.approx(-0.5 / 3) and regression["mape"] == pytest.approx((0.5 + 0 + 0.25) / 3)


def test_metrics_the_rows_cannot_define_are_left_out() -> None:
    probabilities = np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]])
    assert "roc_auc" not in held_out_metrics("multiclass", [0, 1], [0, 1], probabilities, [0, 1, 2])
    assert "mape" not in held_out_metrics("regression", [0.0, 2.0], [1.0, 2.0])
    assert set(held_out_metrics("binary", ["a", "b"], ["a", "a"], None, ["a", "b"], "b")) == {"accuracy", "f1", "precision", "recall", *(
        f"{name}_{average}" for name in ("precision", "recall", "f1") for average in ("macro", "weighted"))}
