"""Helpers for the drift tests: a model manifest with a known training reference, and synthetic
prediction traffic drawn from known distributions (optionally with one kind of shift)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from sml.core.events import build_prediction_event, build_refusal_event
from sml.lifecycle.manifest import CategoricalReference, FeatureSpec, ModelManifest, NumericReference, ReferenceData
from sml.writer.batch import insert_prediction_rows, insert_refusal_rows, prediction_row, refusal_rows

MODEL_NAME = "drift-test-model"
MODEL_VERSION = "v20250101-000000-abc123"
CLASSES = ("benign", "malignant")
COLOURS = ("red", "green", "blue")
FEATURES = (
    FeatureSpec("mean_shift", "numeric"),
    FeatureSpec("spread", "numeric"),
    FeatureSpec("steady", "numeric"),
    FeatureSpec("colour", "categorical", categories=COLOURS),
    FeatureSpec("nullable", "numeric", nullable=True),
)
WINDOW_END = datetime(2025, 3, 10, 6, 0, tzinfo=timezone.utc)
WINDOW = timedelta(days=7)

# Which test on which column each shift must flag, and nothing else.
EXPECTED_DRIFT = {
    "mean": {("mean_shift", "ks")},
    "variance": {("spread", "ks")},
    "category_mix": {("colour", "chi2")},
    "null_spike": {("nullable", "missing_rate")},
}


@dataclass(frozen=True)
class Traffic:
    """Columns of synthetic traffic (None = missing) and the predicted labels."""

    columns: dict[str, list[Any]]
    labels: list[str]

    @property
    def rows(self) -> int:
        return len(self.labels)


def draw_traffic(rows: int, *, seed: int, shift: str | None = None) -> Traffic:
    """``rows`` rows from the training distributions, or with ``shift`` (a key of EXPECTED_DRIFT)."""
    rng = np.random.default_rng(seed)
    mean = 0.5 if shift == "mean" else 0.0
    spread = 2.0 if shift == "variance" else 1.0
    colour_shares = (0.2, 0.3, 0.5) if shift == "category_mix" else (0.5, 0.3, 0.2)
    missing_rate = 0.4 if shift == "null_spike" else 0.02
    nullable = rng.normal(10.0, 3.0, rows)
    columns = {
        "mean_shift": rng.normal(mean, 1.0, rows).tolist(),
        "spread": rng.normal(0.0, spread, rows).tolist(),
        "steady": rng.normal(5.0, 2.0, rows).tolist(),
        "colour": rng.choice(COLOURS, size=rows, p=colour_shares).tolist(),
        "nullable": [None if missing else value for value, missing in zip(nullable.tolist(), rng.random(rows) < missing_rate)],
    }
    return Traffic(columns=columns, labels=rng.choice(CLASSES, size=rows, p=(0.6, 0.4)).tolist())


def build_manifest(
    training: Traffic, *, model_name: str = MODEL_NAME, version: str = MODEL_VERSION, features: tuple[FeatureSpec, ...] = FEATURES
) -> ModelManifest:
    """A manifest whose training reference summarises ``training``, as the trainer would."""
    references: dict[str, NumericReference | CategoricalReference] = {}
    for spec in features:
        values = training.columns[spec.name]
        present = [value for value in values if value is not None]
        if spec.kind == "numeric":
            references[spec.name] = NumericReference(sorted_values=tuple(sorted(present)), missing=len(values) - len(present))
        else:
            counts: dict[str, int] = {}
            for value in present:
                counts[value] = counts.get(value, 0) + 1
            references[spec.name] = CategoricalReference(counts=counts, missing=len(values) - len(present))
    label_counts: dict[str, int] = {}
    for label in training.labels:
        label_counts[label] = label_counts.get(label, 0) + 1
    return ModelManifest(
        model_name=model_name,
        version=version,
        created_at="2025-01-01T00:00:00Z",
        sha256="",
        artifact_key="",
        estimator="LogisticRegression",
        metrics={"f1": 0.95},
        params={},
        classes=CLASSES,
        features=features,
        reference=ReferenceData(n_rows=training.rows, features=references, label_counts=label_counts),
        library_versions={"scikit-learn": "1.5.0"},
    )


def store_traffic(
    engine: Engine, traffic: Traffic, *, start: datetime, end: datetime, model_name: str = MODEL_NAME, version: str = MODEL_VERSION
) -> None:
    """Store ``traffic`` as the writer would, its predictions spread evenly over ``[start, end)``."""
    with engine.begin() as connection:
        insert_prediction_rows(connection, traffic_rows(traffic, start=start, end=end, model_name=model_name, version=version))


def traffic_rows(traffic: Traffic, *, start: datetime, end: datetime, model_name: str = MODEL_NAME, version: str = MODEL_VERSION) -> list[dict[str, Any]]:
    """The ``predictions`` rows of ``traffic`` as the writer builds them, spread evenly over ``[start, end)``, stored at ``end``."""
    step = (end - start) / traffic.rows
    rows = []
    for index in range(traffic.rows):
        event = build_prediction_event(
            model_name=model_name,
            model_version=version,
            features={name: column[index] for name, column in traffic.columns.items()},
            prediction=traffic.labels[index],
            predicted_at=start + index * step,
        )
        rows.append(prediction_row(event, stored_at=end))
    return rows


def store_refusals(engine: Engine, refused: dict[str, dict[str, int]], *, at: datetime, times: int = 1, model_name: str = MODEL_NAME) -> None:
    """Store ``times`` refusal events of ``refused`` at ``at``, as the writer would."""
    events = [build_refusal_event(model_name=model_name, model_version=MODEL_VERSION, refused=refused, refused_at=at) for _ in range(times)]
    with engine.begin() as connection:
        insert_refusal_rows(connection, [{"refusal_id": event.refusal_id, "rows": refusal_rows(event, at)} for event in events])
