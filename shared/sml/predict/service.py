"""The champion behind ``POST /predict``: validated rows in, prediction events and responses out.

Pure apart from the model object it wraps: no clients, no logging. One model call per request:
``predict_proba`` for a classifier that has it (the label is the most probable class, as
scikit-learn's classifiers decide it), ``predict`` otherwise; a regression model's answer is a
number and has no probabilities. Rows reach the model through
:func:`sml.lifecycle.modeling.model_input_builder`, as an array or a DataFrame by the manifest's
``input_format``, prepared once per loaded model.

Failures: a model that raises (or answers non-finite values) on validated rows is a
:class:`~sml.predict.errors.ModelError` (500 ``model_error``), except where one value lies outside
what the model can compute: when putting that feature's training median in its place makes the
row computable, the row is refused as 422 ``out_of_range`` naming the feature.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.core.events import MAX_REFUSED_FIELDS, REQUEST_FIELD, PredictionEvent, build_prediction_event, utc_now
from sml.predict.errors import ApiError, ModelError
from sml.predict.validation import FeatureSchema, FeatureValue, PredictRequest, decode_json_body
from sml.lifecycle.manifest import CategoricalReference, ModelManifest, NumericReference
from sml.lifecycle.modeling import model_input_builder


NOT_DECODED = object()
"""``refused_values``'s payload when the body could not be decoded."""
_ROW_FIELD = re.compile(r"^(?:features|instances\[\d+\])\.(?P<name>.+)$")


class PredictionService:
    """Validates requests against a model's feature schema and predicts with it.

    :param model: the unpickled estimator; takes :func:`sml.lifecycle.modeling.model_input`'s input.
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
        self._is_regression = manifest.task == "regression"
        self._has_probabilities = not self._is_regression and hasattr(model, "predict_proba")
        self._model_input = model_input_builder(self.schema.features, manifest.input_format)
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

        A classifier's event holds the label and, when the model has ``predict_proba``, the
        probability of every class; a regression model's holds the predicted number and no
        probabilities.

        :param batch: whether the rows came as ``instances`` (error fields ``instances[i].name``)
            or as one ``features`` row (``features.name``).
        :raises ApiError: 422 ``out_of_range`` when a value lies outside what the model can
            compute (see the module docstring), naming the row and the feature; validation's
            :func:`~sml.predict.validation.served_range` keeps every model the project trains
            clear of this, so it guards models whose manifest has no training range.
        :raises ModelError: the model fails on the rows for any other reason.
        """
        inputs = self._model_input(rows)
        predicted_at = utc_now()
        output = self._infer(inputs)
        if isinstance(output, BaseException):
            raise self._diagnose(rows, batch, output)
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

    def reference_row(self) -> dict[str, FeatureValue]:
        """A typical row from the manifest's reference data (to warm a freshly loaded model up):
        each numeric feature's median, each categorical one's most frequent category (a boolean
        as ``bool``), ``None`` where the reference holds no value."""
        row: dict[str, FeatureValue] = {}
        for spec in self.schema.features:
            reference = self.manifest.reference.features.get(spec.name)
            value: FeatureValue = None
            if isinstance(reference, NumericReference) and reference.sorted_values:
                median = reference.sorted_values[len(reference.sorted_values) // 2]
                value = int(median) if spec.dtype == "integer" else median
            elif isinstance(reference, CategoricalReference) and reference.counts:
                top = max(reference.counts, key=reference.counts.__getitem__)
                value = top == "True" if spec.dtype == "boolean" else top
            row[spec.name] = value
        return row

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

    def _infer(self, inputs: Any) -> np.ndarray | BaseException:
        """The model's output for ``inputs`` (probabilities, labels or numbers), or why it has none.

        Whatever the model raises is returned, not raised: scikit-learn refuses input that is not
        finite in the dtype an estimator reads with a ``ValueError`` ("Input X contains infinity or
        a value too large for dtype('float32')"), which is how an overflow inside a pipeline (a
        scaler's output) surfaces, and only :meth:`_diagnose` can tell that from a model that
        fails on any input. Output that is not finite returns a :class:`ModelError` saying so.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                if self._has_probabilities:
                    output = np.asarray(self.model.predict_proba(inputs), dtype=np.float64)
                elif self._is_regression:
                    output = np.asarray(self.model.predict(inputs), dtype=np.float64).reshape(-1)
                else:
                    return np.asarray(self.model.predict(inputs))
            except Exception as exc:  # the model's own failure, diagnosed and answered by the caller
                return exc
        if not np.isfinite(output).all():
            return ModelError(f"the model answered values that are not finite: {output.tolist()[:5]}")
        return output

    def _computes(self, row: dict[str, FeatureValue]) -> bool:
        return not isinstance(self._infer(self._model_input([row])), BaseException)

    def _diagnose(self, rows: Sequence[dict[str, FeatureValue]], batch: bool, failure: BaseException) -> Exception:
        """What to answer when the model fails on ``rows`` with ``failure``.

        The first row the model cannot compute on its own is refused (422 ``out_of_range``) when
        putting the training median in place of its values outside their training range makes
        it computable: the value named is the one whose replacement alone suffices, furthest
        outside (in widths of its training range) first, else the furthest. Otherwise the model
        is at fault: a :class:`ModelError` whose ``__cause__`` is ``failure``.
        """
        for index, row in enumerate(rows):
            if self._computes(row):
                continue
            outside = [name for name in self._training_spread if _outside_by(row.get(name), *self._training_spread[name]) > 0]
            outside.sort(key=lambda name: -_outside_by(row.get(name), *self._training_spread[name]))
            if not outside or not self._computes({**row, **{name: self._training_median[name] for name in outside}}):
                return _model_error(f"the model cannot compute row {index} of {len(rows)}", failure)
            culprit = next((name for name in outside if self._computes({**row, name: self._training_median[name]})), outside[0])
            low, high = self._training_spread[culprit]
            field = f"instances[{index}].{culprit}" if batch else f"features.{culprit}"
            message = f"the model's arithmetic overflows on {row[culprit]:.17g} (seen in training: {low:g} to {high:g})"
            return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", message, field=field)
        # Every row computes alone: the model fails on the batch itself, which no request can fix.
        return _model_error(f"the model computes each of {len(rows)} rows alone but not the batch", failure)


def _model_error(message: str, failure: BaseException) -> ModelError:
    error = ModelError(f"{message}: {type(failure).__name__}: {failure}")
    error.__cause__ = failure
    return error


def _outside_by(value: Any, low: float, high: float) -> float:
    """How far ``value`` lies outside ``[low, high]``, in widths of that range (0 inside it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
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
