"""Helpers for the model quality tests: a manifest with held-out metrics and a CBPE calibrator, and
labelled traffic from a calibrated model (P(malignant | x) is the probability it outputs)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import numpy as np
from drift_support import MODEL_NAME, MODEL_VERSION, WINDOW, WINDOW_END, build_manifest, draw_traffic
from sklearn.metrics import f1_score
from sqlalchemy.engine import Engine

from sml.core.db import GROUND_TRUTH, to_db_timestamp
from sml.core.events import build_prediction_event
from sml.lifecycle.calibration import fit_calibrator
from sml.lifecycle.manifest import ModelManifest
from sml.writer.batch import insert_prediction_rows, prediction_row

CLASSES = ("benign", "malignant")
WINDOW_START = WINDOW_END - WINDOW


def _world(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = 1 / (1 + np.exp(-2 * rng.normal(0, 1, n)))
    truth = (rng.random(n) < p).astype(int)
    return truth, (p >= 0.5).astype(int), p


def quality_manifest() -> ModelManifest:
    rng = np.random.default_rng(100)
    truth, predicted, p = _world(rng, 2_000)
    calibrator = fit_calibrator(truth, np.column_stack([1 - p, p]), CLASSES, "malignant", fitted_on="held-out test split")
    manifest = build_manifest(draw_traffic(2_000, seed=1))
    return replace(
        manifest,
        metrics={"f1": float(f1_score(truth, predicted)), "accuracy": float(np.mean(truth == predicted))},
        extra={"positive_class": "malignant", "calibration": calibrator.to_json()},
    )


MANIFEST = quality_manifest()


def store_labelled_traffic(engine: Engine, n: int, *, labelled_share: float, flip_share: float, seed: int) -> None:
    """``n`` predictions over the window; labels for ``labelled_share`` of them, a day late; ``flip_share`` of the correct ones contradicted."""
    rng = np.random.default_rng(seed)
    traffic = draw_traffic(n, seed=seed)
    truth, predicted, p = _world(rng, n)
    step = WINDOW / n
    rows, labels = [], []
    for index in range(n):
        predicted_at = WINDOW_START + index * step
        event = build_prediction_event(
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            features={name: column[index] for name, column in traffic.columns.items()},
            prediction=CLASSES[predicted[index]],
            probabilities={"benign": float(1 - p[index]), "malignant": float(p[index])},
            predicted_at=predicted_at,
        )
        rows.append(prediction_row(event, stored_at=WINDOW_END))
        if rng.random() < labelled_share:
            label = truth[index]
            if label == predicted[index] and rng.random() < flip_share:
                label = 1 - label
            labels.append(
                {
                    "prediction_id": event.prediction_id,
                    "label": json.dumps(CLASSES[label]),
                    "labelled_at": to_db_timestamp(predicted_at + timedelta(days=1)),
                    "source": "test",
                    "stored_at": to_db_timestamp(WINDOW_END),
                }
            )
    with engine.begin() as connection:
        insert_prediction_rows(connection, rows)
        connection.execute(GROUND_TRUTH.insert(), labels)
