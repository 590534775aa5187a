"""The OpenAPI 3.1 document of the predict Function URL, generated from the champion's manifest.

The routes are fixed but the request schema is the model's: one property per feature (numbers,
integers, booleans, categories as an enum, nullability) and the answer's task (a class with its
probabilities, or a regression model's number), so the document is built when the model is loaded
rather than maintained by hand. Schemas are JSON Schema 2020-12, as OpenAPI 3.1 uses it, so a
client (or a test) can validate against them directly. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from sml.predict.feedback import MAX_CLOCK_SKEW
from sml.predict.validation import INT64_MAX, INT64_MIN, MAX_CATEGORY_LENGTH, served_range
from sml.lifecycle.manifest import FeatureSpec, ModelManifest

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/"

ERROR_CODES = {
    "400": "empty_body, invalid_json",
    "405": "method_not_allowed",
    "413": "body_too_large",
    "422": (
        "invalid_type, invalid_request, unknown_key, unknown_feature, missing_feature, not_finite, out_of_range, "
        "null_not_allowed, unknown_category, too_long, invalid_characters, empty_instances, too_many_instances"
    ),
    "500": "model_error",
    "503": "model_unavailable, capture_failed",
}
FEEDBACK_ERROR_CODES = {
    "400": "empty_body, invalid_json",
    "405": "method_not_allowed",
    "413": "body_too_large",
    "422": (
        "invalid_type, invalid_request, unknown_key, missing_field, invalid_prediction_id, unknown_class, invalid_value, "
        "invalid_characters, invalid_timestamp, labelled_in_future, empty_labels, too_many_labels"
    ),
    "503": "model_unavailable, feedback_unavailable, feedback_not_recorded",
}


# Years 1970 to 9999: label times before 1970 are refused (no prediction is that old).
LABELLED_AT_PATTERN = "^(19[7-9][0-9]|[2-9][0-9]{3})-"
LABEL_CLOCK_SKEW_MINUTES = round(MAX_CLOCK_SKEW.total_seconds() / 60)


def build_openapi_document(manifest: ModelManifest, *, max_instances: int, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI document for ``manifest``'s model behind ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /openapi.json``.

    :param manifest: the champion's manifest (features, classes, version).
    :param max_instances: the most rows an ``instances`` request may carry.
    :param max_body_bytes: the largest request body accepted.
    :returns: a JSON-serialisable dict.
    """
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"serverless-ml predict: {manifest.model_name}",
            "version": manifest.version,
            "description": (
                f"Predictions from model {manifest.model_name!r} version {manifest.version}. Send one row as "
                f"{{\"features\": {{...}}}} or up to {max_instances} rows as {{\"instances\": [{{...}}, ...]}}; bodies "
                f"are limited to {max_body_bytes} bytes. POST /feedback records the true label of past predictions "
                f"(one label object, or up to {max_instances} as {{\"labels\": [...]}}). Every error is {{\"error\": {{\"code\", \"field\", \"message\"}}}}."
            ),
        },
        "paths": {
            "/predict": {"post": _predict_operation()},
            "/feedback": {"post": _feedback_operation(max_instances)},
            "/health": {"get": _get_operation("health", "The model being served and how long it took to load", "Health")},
            "/openapi.json": {"get": _get_operation("openapi", "This document", None)},
        },
        "components": {"schemas": _schemas(manifest, max_instances)},
    }


def features_schema(features: tuple[FeatureSpec, ...]) -> dict[str, Any]:
    """JSON Schema of one row: exactly the model's features, each with its type and constraints."""
    return {
        "type": "object",
        "properties": {spec.name: _feature_schema(spec) for spec in features},
        "required": [spec.name for spec in features],
        "additionalProperties": False,
    }


def _feature_schema(spec: FeatureSpec) -> dict[str, Any]:
    if spec.kind == "numeric":
        json_type = "integer" if spec.dtype == "integer" else "number"
        schema: dict[str, Any] = {"type": [json_type, "null"] if spec.nullable else json_type}
        served = served_range(spec)
        if served is not None:
            schema["minimum"], schema["maximum"] = served
            schema["description"] = (
                f"seen in training: {spec.minimum:g} to {spec.maximum:g}; values outside are served up to minimum/maximum, "
                "the training range widened by its width / float32 epsilon"
            )
        if spec.dtype == "integer":
            schema["minimum"] = max(schema.get("minimum", INT64_MIN), INT64_MIN)
            schema["maximum"] = min(schema.get("maximum", INT64_MAX), INT64_MAX)
        return schema
    if spec.dtype == "boolean":
        schema = {"type": ["boolean", "null"] if spec.nullable else "boolean"}
        if spec.categories is not None:
            values = [category == "True" for category in spec.categories]
            schema["enum"] = [*values, None] if spec.nullable else values
        return schema
    schema = {"type": ["string", "null"] if spec.nullable else "string"}
    if spec.categories is not None:
        schema["enum"] = [*spec.categories, None] if spec.nullable else list(spec.categories)
    else:
        schema["maxLength"] = MAX_CATEGORY_LENGTH
    return schema


def _label_schema(manifest: ModelManifest) -> dict[str, Any]:
    """A label as POST /feedback takes it: a class, or a regression model's true value."""
    if manifest.task == "regression":
        return {"type": "number", "description": "the true value of the target (finite; kept exactly)"}
    return {"enum": list(manifest.classes), "description": "the true class"}


def _prediction_schemas(manifest: ModelManifest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schemas of ``prediction`` and ``probabilities``: a class and its probabilities, or a regression model's number."""
    if not manifest.is_classifier:
        return {"type": "number", "description": "the model's predicted value"}, {"type": "null", "description": "a regression model has no class probabilities"}
    labels = list(manifest.classes)
    probabilities = {
        "type": ["object", "null"],
        "properties": {str(label): {"type": "number", "minimum": 0, "maximum": 1} for label in labels},
        "required": [str(label) for label in labels],
        "additionalProperties": False,
    }
    return {"enum": labels}, probabilities


def _schemas(manifest: ModelManifest, max_instances: int) -> dict[str, Any]:
    prediction, probabilities = _prediction_schemas(manifest)
    return {
        "Features": features_schema(manifest.features),
        "SingleRequest": {
            "type": "object",
            "properties": {"features": {"$ref": f"{_REF}Features"}},
            "required": ["features"],
            "additionalProperties": False,
        },
        "BatchRequest": {
            "type": "object",
            "properties": {
                "instances": {"type": "array", "items": {"$ref": f"{_REF}Features"}, "minItems": 1, "maxItems": max_instances}
            },
            "required": ["instances"],
            "additionalProperties": False,
        },
        "Prediction": {
            "type": "object",
            "properties": {
                "prediction_id": {"type": "string", "format": "uuid", "description": "time-ordered (UUIDv7); the key of the stored event"},
                "prediction": prediction,
                "probabilities": probabilities,
                "model_version": {"type": "string"},
                "warnings": {
                    "type": "array",
                    "description": "only with SML_PREDICT_RANGE_WARNINGS=true: numeric values outside the training range",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "code": {"enum": ["outside_training_range"]},
                            "value": {"type": "number"},
                            "training_min": {"type": "number"},
                            "training_max": {"type": "number"},
                        },
                        "required": ["field", "code", "value", "training_min", "training_max"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["prediction_id", "prediction", "probabilities", "model_version"],
            "additionalProperties": False,
        },
        "BatchPrediction": {
            "type": "object",
            "properties": {"predictions": {"type": "array", "items": {"$ref": f"{_REF}Prediction"}}},
            "required": ["predictions"],
            "additionalProperties": False,
        },
        "Label": {
            "type": "object",
            "properties": {
                "prediction_id": {
                    "type": "string",
                    "format": "uuid",
                    "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                    "description": "the prediction_id POST /predict answered with",
                },
                "label": _label_schema(manifest),
                "labelled_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    # The earliest accepted year as a pattern a validator and a fuzzer can check; the latest
                    # instant moves with the server's clock, which JSON Schema cannot state: x-latest says it.
                    "pattern": LABELLED_AT_PATTERN,
                    "x-latest": f"the server's clock plus {LABEL_CLOCK_SKEW_MINUTES} minutes",
                    "description": (
                        f"when the label became known (RFC 3339 with a zone, from 1970 to at most {LABEL_CLOCK_SKEW_MINUTES} minutes ahead of "
                        "the server's clock; now by default; digits beyond microseconds are truncated); for one prediction the latest labelled_at wins"
                    ),
                },
                "source": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 128,
                    "pattern": "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\uFFFE\\uFFFF]*$",
                    "description": "where the label came from; no control characters",
                },
            },
            "required": ["prediction_id", "label"],
            "additionalProperties": False,
        },
        "LabelBatch": {
            "type": "object",
            "properties": {"labels": {"type": "array", "items": {"$ref": f"{_REF}Label"}, "minItems": 1, "maxItems": max_instances}},
            "required": ["labels"],
            "additionalProperties": False,
        },
        "FeedbackAccepted": {
            "type": "object",
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "labels": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"prediction_id": {"type": "string", "format": "uuid"}, "labelled_at": {"type": "string", "format": "date-time"}},
                        "required": ["prediction_id", "labelled_at"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["accepted", "labels"],
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"const": "ok"},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "model_loaded_at": {"type": "string", "format": "date-time"},
                "model_load_seconds": {"type": "number", "description": "reading the pointer, downloading, verifying, unpickling"},
                "init_seconds": {"type": "number", "description": "from importing the handler to the model being ready"},
                "cold_start": {"type": "boolean", "description": "whether this request loaded the model (the first of its container)"},
            },
            "required": ["status", "model_name", "model_version", "model_loaded_at", "model_load_seconds", "init_seconds", "cold_start"],
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "field": {"type": ["string", "null"], "description": "path into the body, e.g. instances[3].size_band"},
                        "message": {"type": "string"},
                    },
                    "required": ["code", "field", "message"],
                    "additionalProperties": False,
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
    }


def _predict_operation() -> dict[str, Any]:
    responses = {
        "200": _json_response(
            "One prediction for `features`; `predictions` in row order for `instances`",
            {"oneOf": [{"$ref": f"{_REF}Prediction"}, {"$ref": f"{_REF}BatchPrediction"}]},
        )
    }
    for status in ("400", "405", "413", "422", "500", "503"):
        responses[status] = _json_response(f"error codes: {ERROR_CODES[status]}", {"$ref": f"{_REF}Error"})
    return {
        "operationId": "predict",
        "summary": "Predict one row (`features`) or several (`instances`)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [{"$ref": f"{_REF}SingleRequest"}, {"$ref": f"{_REF}BatchRequest"}]}}
            },
        },
        "responses": responses,
    }


def _feedback_operation(max_instances: int) -> dict[str, Any]:
    responses = {
        "202": _json_response(
            "Queued as ground-truth events; the writer stores them (a label for an unknown prediction_id is stored too)",
            {"$ref": f"{_REF}FeedbackAccepted"},
        )
    }
    for status in ("400", "405", "413", "422", "503"):
        responses[status] = _json_response(f"error codes: {FEEDBACK_ERROR_CODES[status]}", {"$ref": f"{_REF}Error"})
    return {
        "operationId": "feedback",
        "summary": f"Record the true label of one prediction, or of up to {max_instances} (`labels`)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [{"$ref": f"{_REF}Label"}, {"$ref": f"{_REF}LabelBatch"}]}}},
        },
        "responses": responses,
    }


def _get_operation(operation_id: str, summary: str, schema_name: str | None) -> dict[str, Any]:
    schema = {"$ref": f"{_REF}{schema_name}"} if schema_name else {"type": "object"}
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            "200": _json_response(summary, schema),
            "503": _json_response(f"error codes: {ERROR_CODES['503']}", {"$ref": f"{_REF}Error"}),
        },
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
