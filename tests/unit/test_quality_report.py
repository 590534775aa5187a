"""The model quality section of the report and the quality part of the alert."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import numpy as np

from sml.monitoring.alerts import alert_attributes, alert_message, alert_subject
from sml.monitoring.model_quality.metrics import QualityConfig, assess_quality
from sml.monitoring.model_quality.report import render_quality_section
from sml.monitoring.drift.stats import DriftVerdict
from sml.monitoring.store import DriftRun
from sml.monitoring.windows import TimeWindow
from sml.lifecycle.calibration import fit_calibrator

CLASSES = ("<b>enign", "malignant")


def _quality(flip: float, labelled: int = 600):
    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-2 * rng.normal(size=1_000)))
    truth = (rng.random(1_000) < p).astype(int)
    predicted = (p >= 0.5).astype(int)
    flipped = np.where((truth == predicted) & (rng.random(1_000) < flip), 1 - truth, truth)
    true_index = np.where(np.arange(1_000) < labelled, flipped, -1)
    probabilities = np.column_stack([1 - p, p])
    calibrator = fit_calibrator(truth, probabilities, CLASSES, "malignant", fitted_on="test")
    return assess_quality(
        classes=CLASSES,
        positive_class="malignant",
        predicted_index=predicted,
        probabilities=probabilities,
        true_index=true_index,
        delay_seconds=np.where(true_index >= 0, 7_200.0, np.nan),
        reference_metrics={"f1": 0.82, "accuracy": 0.8},
        calibrator=calibrator,
        config=QualityConfig(),
    )


def _run(quality) -> DriftRun:
    end = datetime(2025, 3, 10, tzinfo=timezone.utc)
    return DriftRun(
        run_id="r", model_name="m", model_version="v1", window=TimeWindow(datetime(2025, 3, 3, tzinfo=timezone.utc), end),
        reference_kind="training", reference_rows=10, current_rows=1_000, status=DriftVerdict.NO_DRIFT, results=(),
        parameters={}, created_at=end, quality=quality,
    )  # fmt: skip


def test_section_shows_verdict_coverage_delay_metrics_and_an_escaped_reliability_chart() -> None:
    quality = _quality(flip=0.4)
    section = render_quality_section(quality)

    assert "DEGRADED" in section and "600 of 1000 predictions labelled (60.0%)" in section
    assert "median 2.0 h" in section
    assert "&lt;b&gt;enign" in section and "<b>enign" not in section
    assert "no concept drift" in section
    svg = re.search(r"<svg.*?</svg>", section, re.S).group(0)
    assert svg.count("<circle") == len(quality.realized.reliability)
    f1_row = re.search(r"<tr[^>]*><td class=\"name\">f1</td>(.*?)</tr>", section).group(1)
    assert f"{quality.realized.get('f1').value:.4g}" in f1_row and f"{quality.estimated.get('f1').value:.4g}" in f1_row and "0.82" in f1_row


def test_alert_carries_quality_status_and_digest_and_says_degraded_in_the_subject() -> None:
    degraded = _run(_quality(flip=0.4))
    assert alert_attributes(degraded)["quality_status"] == {"DataType": "String", "StringValue": "DEGRADED"}
    assert alert_subject(degraded).startswith("[NO_DRIFT, quality DEGRADED] m v1")
    body = json.loads(alert_message(degraded))["quality"]
    assert body["status"] == "DEGRADED" and body["labelled"] == 600 and body["reference"] == 0.82
    assert body["realized"]["high"] < 0.82 - 0.05

    ok = _run(_quality(flip=0.0))
    assert alert_attributes(ok)["quality_status"]["StringValue"] == "OK"
    assert "quality" not in alert_subject(ok)

    without = _run(None)
    assert "quality_status" not in alert_attributes(without) and "quality" not in json.loads(alert_message(without))


def test_a_multiclass_section_has_its_metrics_a_confusion_matrix_and_a_top_label_reliability_chart() -> None:
    rng = np.random.default_rng(1)
    classes = ("a", "<b>", "c")
    truth = rng.integers(0, 3, 900)
    probabilities = rng.dirichlet(np.ones(3), 900)
    probabilities[np.arange(900), truth] += 1
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    quality = assess_quality(
        classes=classes, positive_class=None, predicted_index=predicted, probabilities=probabilities, true_index=truth,
        delay_seconds=np.zeros(900), reference_metrics={"f1_macro": 0.9}, calibrator=None, config=QualityConfig(),
    )
    section = render_quality_section(quality)

    for name in ("f1_macro", "f1_weighted", "roc_auc", "log_loss", "brier", "ece"):
        assert f'<td class="name">{name}</td>' in section
    assert "Confusion matrix" in section and "&lt;b&gt;" in section and "<b>" not in section
    cells = [int(cell) for cell in re.findall(r'<td style="background:rgba\([^"]+\)">(\d+)</td>', section)]
    assert sum(cells) == 900 and cells[0] == int(((truth == 0) & (predicted == 0)).sum())
    assert "fraction right" in section and "top label" in section


def test_a_regression_section_has_its_metrics_and_residual_plots_without_classes() -> None:
    from sml.monitoring.model_quality.metrics import assess_regression_quality

    rng = np.random.default_rng(2)
    predictions = 150 + 50 * rng.normal(size=800)
    truth = predictions + rng.normal(scale=20, size=800)
    quality = assess_regression_quality(
        predictions=predictions, truth=truth, n_labels_not_numbers=0, delay_seconds=np.zeros(800), reference_metrics={"rmse": 20.0},
        estimator=None, columns=None, config=QualityConfig(), prediction_edges=[100.0, 150.0, 200.0],
    )
    section = render_quality_section(quality)

    for name in ("mae", "rmse", "r2", "mean_error", "mape"):
        assert f'<td class="name">{name}</td>' in section
    assert "Residuals" in section and "error (prediction − label)" in section and "Confusion matrix" not in section
    assert section.count("<figure>") == 2 and "estimated (DLE)" in section
    assert len(re.findall(r"<circle ", section)) == 4
