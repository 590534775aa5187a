"""The champion behind ``POST /predict``: validated rows in, prediction events and responses out.

Pure apart from the model object it wraps: no clients, no logging. One ``predict_proba`` call per
request (the label is the most probable class, as scikit-learn's classifiers decide it), so the
handler adds little on top of the model itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.core.events import MAX_REFUSED_FIELDS, REQUEST_FIELD, PredictionEvent, build_prediction_event, utc_now
from sml.predict.errors import ApiError
from sml.predict.validation import FeatureSchema, FeatureValue, PredictRequest, decode_json_body
from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.modeling import rows_to_matrix


NOT_DECODED = object()
"""``refused_values``'s payload when the body could not be decoded."""
_ROW_FIELD = re.compile(r"^(?:features|instances\[\d+\])\.(?P<name>.+)$")


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
        # Per numeric feature, from the manifest's reference sample of the training split.
        numeric = {
            spec.name: manifest.reference.features[spec.name].sorted_values
            for spec in manifest.features
            if spec.kind == "numeric" and getattr(manifest.reference.features.get(spec.name), "sorted_values", None)
        }
        self._training_spread = {name: (values[0], values[-1]) for name, values in numeric.items()}
        self._training_median = {name: values[len(values) // 2] for name, values in numeric.items()}
        self._training_ranges = {
            spec.name: (spec.minimum, spec.maximum)
            for spec in manifest.features
            if spec.kind == "numeric" and spec.minimum is not None and spec.maximum is not None
        }

    def decode_body(self, body: str | None, *, is_base64: bool) -> Any:
        """A Function URL body as JSON; raises :class:`~sml.predict.errors.ApiError` (400, 413)."""
        return decode_json_body(body, is_base64=is_base64, max_bytes=self.max_body_bytes)

    def parse_request(self, body: str | None, *, is_base64: bool) -> PredictRequest:
        """Decode, parse and validate a Function URL body; raises :class:`~sml.predict.errors.ApiError`."""
        return self.schema.parse_request(self.decode_body(body, is_base64=is_base64))

    def refused_values(self, error: ApiError, payload: Any = NOT_DECODED) -> dict[str, dict[str, int]]:
        """What a refused ``POST /predict`` counts for data quality: field -> error code -> values.

        :param error: the 4xx the request is answered with.
        :param payload: the decoded body; :data:`NOT_DECODED` when decoding failed.
        :returns: every problem of the rows (:meth:`FeatureSchema.refused_values`); when they hold
            none (the body is not JSON or not a request, or the model could not compute a valid
            row) the error alone, under its feature or :data:`~sml.core.events.REQUEST_FIELD`.
            At most :data:`~sml.core.events.MAX_REFUSED_FIELDS` fields: the rest are folded into
            ``REQUEST_FIELD`` as ``other_fields``.
        """
        counts = {} if payload is NOT_DECODED else self.schema.refused_values(payload)
        if not counts:
            counts = {self._field_of(error.field): {error.code: 1}}
        if len(counts) <= MAX_REFUSED_FIELDS:
            return counts
        request = counts.pop(REQUEST_FIELD, {})
        kept = sorted(counts, key=lambda name: -sum(counts[name].values()))[: MAX_REFUSED_FIELDS - 1]
        folded = sum(sum(reasons.values()) for name, reasons in counts.items() if name not in kept)
        return {**{name: counts[name] for name in kept}, REQUEST_FIELD: {**request, "other_fields": request.get("other_fields", 0) + folded}}

    def _field_of(self, error_field: str | None) -> str:
        """The feature an error path names (``features.x``, ``instances[3].x``), else ``REQUEST_FIELD``."""
        match = _ROW_FIELD.match(error_field or "")
        return match["name"] if match and match["name"] in self.schema.names else REQUEST_FIELD

    def predict(self, rows: Sequence[dict[str, FeatureValue]], *, batch: bool = True) -> list[PredictionEvent]:
        """One prediction event per validated row, in order, each with a new time-ordered id.

        :param batch: whether the rows came as ``instances`` (error fields ``instances[i].name``)
            or as one ``features`` row (``features.name``).
        :raises ApiError: 422 ``out_of_range`` when the model cannot compute a row (it raises on
            it, or its probabilities are not finite), naming the row and the feature that causes
            it; validation's :func:`~sml.predict.validation.served_range` keeps every model the
            project trains clear of this, so it guards models whose manifest has no training range.
        """
        matrix = rows_to_matrix(rows, self.schema.features)
        predicted_at = utc_now()
        output = self._infer(matrix)
        if output is None:
            raise self._not_computable(rows, batch)
        if self._has_probabilities:
            # Clipped because some estimators overshoot [0, 1] by a rounding error, which the event contract refuses.
            probabilities = np.clip(output, 0.0, 1.0)
            outcomes = [
                (self._labels[best], dict(zip(self._probability_keys, row)))
                for best, row in zip(probabilities.argmax(axis=1).tolist(), probabilities.tolist())
            ]
        else:
            outcomes = [(label, None) for label in output.tolist()]
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

    def range_warnings(self, rows: Sequence[dict[str, FeatureValue]]) -> list[list[dict[str, Any]]]:
        """Per row, one warning per numeric value outside the training range (the schema's ``minimum``/``maximum``).

        Each warning: ``field``, ``code`` (``outside_training_range``), ``value``, ``training_min``,
        ``training_max``. The row is still predicted: the model extrapolates, and the caller may
        want to know (the drift job's data-quality checks count the same values per window).
        """
        warnings = []
        for row in rows:
            row_warnings = []
            for name, (low, high) in self._training_ranges.items():
                value = row.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
                    row_warnings.append(
                        {"field": name, "code": "outside_training_range", "value": value, "training_min": low, "training_max": high}
                    )
            warnings.append(row_warnings)
        return warnings

    def _infer(self, matrix: np.ndarray) -> np.ndarray | None:
        """Probabilities (or labels), or ``None`` when the model cannot compute ``matrix``.

        scikit-learn refuses input that is not finite in the dtype an estimator reads with a
        ``ValueError`` ("Input X contains infinity or a value too large for dtype('float32')"),
        which is how an overflow inside the pipeline (a scaler's output) surfaces.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                if not self._has_probabilities:
                    return self.model.predict(matrix)
                probabilities = self.model.predict_proba(matrix)
            except ValueError:
                return None
        return probabilities if np.isfinite(probabilities).all() else None

    def _computes(self, row: dict[str, FeatureValue]) -> bool:
        return self._infer(rows_to_matrix([row], self.schema.features)) is not None

    def _not_computable(self, rows: Sequence[dict[str, FeatureValue]], batch: bool) -> Exception:
        """The 422 for the first row the model cannot compute on its own, naming the feature that
        makes it so: the one, furthest outside its training range first, whose training median in
        its place makes the row computable (else the furthest one)."""
        for index, row in enumerate(rows):
            if self._computes(row):
                continue
            field = f"instances[{index}]" if batch else "features"
            suspects = sorted(self._training_spread, key=lambda name: -_outside_by(row.get(name), *self._training_spread[name]))
            suspects = [name for name in suspects if isinstance(row.get(name), float)]
            if not suspects:
                message = "the model cannot compute a prediction for this row"
                return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", message, field=field)
            culprit = next((name for name in suspects if self._computes({**row, name: self._training_median[name]})), suspects[0])
            low, high = self._training_spread[culprit]
            message = f"the model's arithmetic overflows on {row[culprit]:.17g} (seen in training: {low:g} to {high:g})"
            return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", message, field=f"{field}.{culprit}")
        # Every row computes alone: the model fails on the batch itself, which no request can fix.
        return SmlError(f"model {self.manifest.model_name!r} version {self.manifest.version} cannot compute a batch of {len(rows)} rows")


def _outside_by(value: Any, low: float, high: float) -> float:
    """How far ``value`` lies outside ``[low, high]``, in widths of that range (0 inside it)."""
    if not isinstance(value, float):
        return 0.0
    width = high - low or abs(low) or 1.0
    return max(low - value, value - high, 0.0) / width


def prediction_response(event: PredictionEvent, warnings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The response for one row: ``prediction_id``, ``prediction``, ``probabilities``, ``model_version``,
    and ``warnings`` only when given (``SML_PREDICT_RANGE_WARNINGS``)."""
    response = {
        "prediction_id": event.prediction_id,
        "prediction": event.prediction,
        "probabilities": event.probabilities,
        "model_version": event.model_version,
    }
    if warnings is not None:
        response["warnings"] = warnings
    return response


def predict_response(
    request: PredictRequest, events: Sequence[PredictionEvent], warnings: Sequence[list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """The body of a 200: one prediction for ``features``, ``{"predictions": [...]}`` in row order for ``instances``.

    :param warnings: per row, from :meth:`PredictionService.range_warnings`; ``None`` leaves them out
        (the default response, unchanged).
    """
    per_row = list(warnings) if warnings is not None else [None] * len(events)
    if request.batch:
        return {"predictions": [prediction_response(event, row) for event, row in zip(events, per_row)]}
    return prediction_response(events[0], per_row[0])
