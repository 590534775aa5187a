"""Held-out metrics: named as the one list of quality metrics names them, computed as the weekly run computes them."""

from __future__ import annotations

import numpy as np
import pytest

from sml.lifecycle.evaluation import expected_calibration_error, held_out_metrics
from sml.lifecycle.quality_metrics import metrics_for
from sml.monitoring.model_quality.metrics import expected_calibration_error as weekly_ece
from sml.monitoring.model_quality.metrics import reliability_bins


def test_every_metric_held_out_metrics_returns_is_a_quality_metric_of_its_task() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    binary = held_out_metrics("binary", ["a", "b", "b", "b"], ["a", "b", "a", "b"], probabilities, ["a", "b"], "b")
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    multiclass = held_out_metrics("multiclass", [0, 1, 2, 1], [0, 1, 2, 0], three, [0, 1, 2])
    regression = held_out_metrics("regression", [1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
    for task, scores in (("binary", binary), ("multiclass", multiclass), ("regression", regression)):
        assert set(scores) <= set(metrics_for(task)), (task, scores)  # type: ignore[arg-type]
    assert binary["accuracy"] == 0.75 and binary["recall"] == pytest.approx(2 / 3) and binary["precision"] == 1.0
    assert set(binary) == {"accuracy", "f1", "precision", "recall", "roc_auc", "log_loss", "brier", "ece"}
    assert set(multiclass) == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss", "ece"}
    assert regression["mae"] == pytest.approx(0.5) and regression["rmse"] == pytest.approx(np.sqrt(1.25 / 3))


def test_ece_is_the_weekly_runs_ece() -> None:
    rng = np.random.default_rng(4)
    scores = rng.random(500)
    is_positive = rng.random(500) < scores**2
    assert expected_calibration_error(is_positive, scores) == pytest.approx(weekly_ece(reliability_bins(is_positive, scores)))


def test_ece_is_the_weighted_gap_between_share_and_mean_score_per_bin() -> None:
    # Two rows at 0.95 (one event), two at 0.65 (both events): 0.5 x |0.5 - 0.95| + 0.5 x |1 - 0.65|.
    assert expected_calibration_error(np.array([True, False, True, True]), np.array([0.95, 0.95, 0.65, 0.65])) == pytest.approx(0.4)
