"""The generated OpenAPI document: its routes, and schemas that agree with what predict does."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sml.predict.errors import ApiError
from sml.predict.validation import FeatureSchema, served_range
from sml.lifecycle.manifest import FeatureSpec
from sml.predict.openapi import build_openapi_document
from tests.predict_support import manifest_for, perturbed_row

MANIFEST = manifest_for("v3")
DOCUMENT = build_openapi_document(MANIFEST, max_instances=4, max_body_bytes=2048)
SCHEMA = FeatureSchema(MANIFEST.features, max_instances=4)


def validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", "components": DOCUMENT["components"]})


def request_validator() -> Draft202012Validator:
    schema = DOCUMENT["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def test_the_document_is_valid_json_schema_and_names_the_routes_and_the_model() -> None:
    Draft202012Validator.check_schema({"components": DOCUMENT["components"]})

    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["info"]["version"] == "v3"
    assert {path: list(operations) for path, operations in DOCUMENT["paths"].items()} == {
        "/predict": ["post"],
        "/feedback": ["post"],
        "/health": ["get"],
        "/openapi.json": ["get"],
    }
    assert "up to 4 rows" in DOCUMENT["info"]["description"] and "2048 bytes" in DOCUMENT["info"]["description"]


def test_the_feature_schema_is_the_manifests() -> None:
    features = DOCUMENT["components"]["schemas"]["Features"]

    assert features["required"] == MANIFEST.feature_names
    assert features["additionalProperties"] is False
    assert features["properties"]["mean_radius"]["type"] == ["number", "null"]
    assert "seen in training" in features["properties"]["mean_radius"]["description"]
    radius = next(spec for spec in MANIFEST.features if spec.name == "mean_radius")
    assert (features["properties"]["mean_radius"]["minimum"], features["properties"]["mean_radius"]["maximum"]) == served_range(radius)
    assert features["properties"]["concavity_grade"]["enum"] == ["low", "moderate", "high", None]


def test_a_closed_non_nullable_category_and_an_open_one() -> None:
    specs = (FeatureSpec("size", "categorical", categories=("s", "m")), FeatureSpec("site", "categorical"))
    document = build_openapi_document(replace(MANIFEST, features=specs), max_instances=1, max_body_bytes=1024)

    properties = document["components"]["schemas"]["Features"]["properties"]
    assert properties["size"] == {"type": "string", "enum": ["s", "m"]}
    assert properties["site"] == {"type": "string", "maxLength": 256}


def test_the_response_and_error_shapes_validate() -> None:
    prediction = {
        "prediction_id": "0190b8f0-0000-7000-8000-000000000000",
        "prediction": "benign",
        "probabilities": {"benign": 0.9, "malignant": 0.1},
        "model_version": "v3",
    }

    assert validator("Prediction").is_valid(prediction)
    assert validator("BatchPrediction").is_valid({"predictions": [prediction, prediction]})
    assert not validator("Prediction").is_valid({**prediction, "prediction": "unknown"})
    error = ApiError(422, "not_finite", "must be a finite number, got NaN", field="features.mean_radius").to_document()
    assert validator("Error").is_valid(error)
    assert validator("Error").is_valid(ApiError(404, "not_found", "no route").to_document())



def _edges() -> list[float]:
    """Each numeric feature's training and served range ends, and the floats just either side of them."""
    edges = []
    for spec in MANIFEST.features:
        if spec.kind == "numeric":
            for edge in (spec.minimum, spec.maximum, *served_range(spec)):
                edges += [edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
    return edges


# The whole finite range with both signs and subnormals, and the edges where predict's answer changes.
finite = st.floats(allow_nan=False, allow_infinity=False) | st.floats(min_value=-1e-307, max_value=1e-307) | st.sampled_from(_edges())
any_value = st.none() | st.booleans() | st.integers(-(10**20), 10**20) | finite | st.text(max_size=8) | st.sampled_from(["low", "high"])
valid_rows = st.fixed_dictionaries(
    {spec.name: st.none() | (finite if spec.kind == "numeric" else st.sampled_from(spec.categories)) for spec in MANIFEST.features}
)


rows = st.builds(perturbed_row, valid_rows, st.sampled_from([None, None, *MANIFEST.feature_names, "other"]), any_value, st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"features": rows}) | st.fixed_dictionaries({"instances": st.lists(rows, max_size=5)}))
def test_the_documented_request_schema_accepts_exactly_what_predict_accepts(payload: dict[str, Any]) -> None:
    try:
        SCHEMA.parse_request(payload)
        accepted = True
    except ApiError:
        accepted = False
    event(f"accepted by predict: {accepted}")

    assert request_validator().is_valid(payload) is accepted


def test_a_label_with_a_null_labelled_at_is_documented_as_feedback_accepts_it() -> None:
    from sml.predict.feedback import FeedbackSchema

    label = {"prediction_id": "01a22e29-2ec8-7b07-98c1-866daf2cb97d", "label": "benign", "labelled_at": None}

    assert validator("LabelBatch").is_valid({"labels": [label]})
    assert FeedbackSchema(MANIFEST.classes, max_items=4).parse_request({"labels": [label]})


def test_booleans_and_integers_are_typed_and_the_document_accepts_exactly_what_validation_accepts() -> None:
    features = (
        FeatureSpec("flag", "categorical", dtype="boolean", nullable=True, categories=("False", "True")),
        FeatureSpec("count", "numeric", dtype="integer"),
    )
    document = build_openapi_document(replace(MANIFEST, features=features), max_instances=4, max_body_bytes=2048)
    properties = document["components"]["schemas"]["Features"]["properties"]
    assert properties["flag"] == {"type": ["boolean", "null"], "enum": [False, True, None]}
    assert properties["count"] == {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    rows = Draft202012Validator({"$ref": "#/components/schemas/Features", "components": document["components"]})
    schema = FeatureSchema(features, max_instances=4)
    for row in ({"flag": True, "count": 3}, {"flag": None, "count": 3.0}, {"flag": "true", "count": 3}, {"flag": 1, "count": 3}, {"flag": False, "count": 2.5}):
        try:
            schema.validate_row(row, "features")
            accepted = True
        except ApiError:
            accepted = False
        assert rows.is_valid(row) == accepted, row


def test_a_regression_model_answers_a_number_without_probabilities_and_takes_numeric_labels() -> None:
    from tests.byom_support import diabetes_manifest

    schemas = build_openapi_document(diabetes_manifest(), max_instances=4, max_body_bytes=2048)["components"]["schemas"]
    assert schemas["Prediction"]["properties"]["prediction"]["type"] == "number"
    assert schemas["Prediction"]["properties"]["probabilities"]["type"] == "null"
    assert schemas["Label"]["properties"]["label"]["type"] == "number"
