"""The champion behind ``POST /predict``: validated rows in, prediction events and responses out.

Pure apart from the model object it wraps: no clients, no logging. One ``predict_proba`` call per
request (the label is the most probable class, as scikit-learn's classifiers decide it), so the
handler adds little on top of the model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.core.events import PredictionEvent, build_prediction_event, utc_now
from sml.predict.validation import FeatureSchema, FeatureValue, PredictRequest, decode_json_body
from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.modeling import rows_to_matrix


class PredictionService:
    """Validates requests against a model's feature schema and predicts with it.

    :param model: the unpickled pipeline; takes :func:`sml.lifecycle.modeling.rows_to_matrix`'s matrix.
    :param manifest: the manifest it was registered with (feature schema, classes, version).
    :param max_instances: the most rows one ``instances`` request may carry.
    :param max_body_bytes: the largest request body accepted.
    :raises SmlError: the model's classes differ from the manifest's.
    """

    def __init__(self, model: Any, manifest: ModelManifest, *, max_instances: int, max_body_bytes: int) -> None:
        self.model = model
        self.manifest = manifest
        self.max_body_bytes = max_body_bytes
        self.schema = FeatureSchema(manifest.features, max_instances=max_instances)
        self._has_probabilities = hasattr(model, "predict_proba")
        model_classes = getattr(model, "classes_", None)
        self._labels: list[Any] = model_classes.tolist() if model_classes is not None else list(manifest.classes)
        if self._labels != list(manifest.classes):
            raise SmlError(
                f"model {manifest.model_name!r} version {manifest.version}: the artifact's classes {self._labels} "
                f"differ from the manifest's {list(manifest.classes)}"
            )
        self._probability_keys = [str(label) for label in self._labels]

    def parse_request(self, body: str | None, *, is_base64: bool) -> PredictRequest:
        """Decode, parse and validate a Function URL body; raises :class:`~sml.predict.errors.ApiError`."""
        return self.schema.parse_request(decode_json_body(body, is_base64=is_base64, max_bytes=self.max_body_bytes))

    def predict(self, rows: Sequence[dict[str, FeatureValue]]) -> list[PredictionEvent]:
        """One prediction event per validated row, in order, each with a new time-ordered id."""
        matrix = rows_to_matrix(rows, self.schema.features)
        predicted_at = utc_now()
        if self._has_probabilities:
            # Clipped because some estimators overshoot [0, 1] by a rounding error, which the event contract refuses.
            probabilities = np.clip(self.model.predict_proba(matrix), 0.0, 1.0)
            outcomes = [
                (self._labels[best], dict(zip(self._probability_keys, row)))
                for best, row in zip(probabilities.argmax(axis=1).tolist(), probabilities.tolist())
            ]
        else:
            outcomes = [(label, None) for label in self.model.predict(matrix).tolist()]
        return [
            build_prediction_event(
                model_name=self.manifest.model_name,
                model_version=self.manifest.version,
                features=features,
                prediction=label,
                probabilities=probabilities,
                predicted_at=predicted_at,
            )
            for features, (label, probabilities) in zip(rows, outcomes)
        ]


def prediction_response(event: PredictionEvent) -> dict[str, Any]:
    """The response for one row: ``prediction_id``, ``prediction``, ``probabilities``, ``model_version``."""
    return {
        "prediction_id": event.prediction_id,
        "prediction": event.prediction,
        "probabilities": event.probabilities,
        "model_version": event.model_version,
    }


def predict_response(request: PredictRequest, events: Sequence[PredictionEvent]) -> dict[str, Any]:
    """The body of a 200: one prediction for ``features``, ``{"predictions": [...]}`` in row order for ``instances``."""
    if request.batch:
        return {"predictions": [prediction_response(event) for event in events]}
    return prediction_response(events[0])
