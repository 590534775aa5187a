"""PredictionService with the real training pipeline: predictions, events and response shapes."""

from __future__ import annotations

import json
from dataclasses import replace
from http import HTTPStatus

import pytest

from sml.core.errors import SmlError
from sml.core.events import REQUEST_FIELD, parse_prediction_event, serialise_prediction_event
from sml.predict.errors import ApiError
from sml.predict.service import NOT_DECODED, PredictionService, predict_response
from sml.lifecycle.modeling import rows_to_matrix
from tests.predict_support import manifest_for, trained_model, valid_row


@pytest.fixture(scope="module")
def service() -> PredictionService:
    return PredictionService(trained_model().pipeline, manifest_for("v7"), max_instances=5, max_body_bytes=10_000)


def test_predictions_are_the_pipelines_own_with_its_probabilities(service: PredictionService) -> None:
    rows = [valid_row(), {**valid_row(), "mean_radius": 28.0, "mean_concave_points": 0.2, "concavity_grade": "high"}]
    pipeline = trained_model().pipeline
    matrix = rows_to_matrix(rows, service.manifest.features)

    events = service.predict(service.schema.parse_request({"instances": rows}).rows)

    assert [event.prediction for event in events] == pipeline.predict(matrix).tolist()
    for event, expected in zip(events, pipeline.predict_proba(matrix).tolist()):
        assert event.probabilities == dict(zip(["benign", "malignant"], expected))


def test_each_event_carries_the_validated_features_and_the_model_version(service: PredictionService) -> None:
    request = service.parse_request(json.dumps({"features": valid_row()}), is_base64=False)

    [event] = service.predict(request.rows)

    assert (event.model_name, event.model_version) == ("breast-cancer", "v7")
    assert event.features == request.rows[0]
    assert parse_prediction_event(serialise_prediction_event(event)) == event


def test_each_row_gets_its_own_time_ordered_id(service: PredictionService) -> None:
    events = service.predict([valid_row()] * 5)

    ids = [event.prediction_id for event in events]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


def test_missing_values_are_imputed_when_the_schema_allows_null(service: PredictionService) -> None:
    row = {name: None for name in valid_row()}

    [event] = service.predict(service.schema.parse_request({"features": row}).rows)

    assert event.prediction in ("benign", "malignant")


def test_single_and_batch_responses(service: PredictionService) -> None:
    single = service.schema.parse_request({"features": valid_row()})
    batch = service.schema.parse_request({"instances": [valid_row(), valid_row()]})
    single_events, batch_events = service.predict(single.rows), service.predict(batch.rows)

    assert predict_response(single, single_events) == {
        "prediction_id": single_events[0].prediction_id,
        "prediction": single_events[0].prediction,
        "probabilities": single_events[0].probabilities,
        "model_version": "v7",
    }
    assert [item["prediction_id"] for item in predict_response(batch, batch_events)["predictions"]] == [
        event.prediction_id for event in batch_events
    ]


def test_range_warnings_name_values_outside_the_training_range_and_are_left_out_by_default(service: PredictionService) -> None:
    inside = valid_row()
    spec = next(spec for spec in service.manifest.features if spec.name == "mean_radius")
    outside = {**inside, "mean_radius": spec.maximum * 2}
    batch = service.schema.parse_request({"instances": [inside, outside]})
    events = service.predict(batch.rows)

    warnings = service.range_warnings(batch.rows)

    assert warnings == [[], [{"field": "mean_radius", "code": "outside_training_range", "value": spec.maximum * 2,
                              "training_min": spec.minimum, "training_max": spec.maximum}]]
    with_warnings = predict_response(batch, events, warnings)["predictions"]
    assert [item["warnings"] for item in with_warnings] == warnings
    assert all("warnings" not in item for item in predict_response(batch, events)["predictions"])
    single = service.schema.parse_request({"features": outside})
    assert predict_response(single, service.predict(single.rows), service.range_warnings(single.rows))["warnings"][0]["field"] == "mean_radius"


def test_the_body_limit_applies(service: PredictionService) -> None:
    with pytest.raises(ApiError) as caught:
        service.parse_request(json.dumps({"features": valid_row(), "padding": "x" * 10_000}), is_base64=False)

    assert caught.value.code == "body_too_large"


def test_a_manifest_whose_classes_differ_from_the_artifact_is_refused() -> None:
    manifest = replace(manifest_for("v8"), classes=("malignant", "benign"))

    with pytest.raises(SmlError, match=r"version v8: the artifact's classes \['benign', 'malignant'\] differ"):
        PredictionService(trained_model().pipeline, manifest, max_instances=5, max_body_bytes=10_000)


def refusal_of(service: PredictionService, body: str) -> dict[str, dict[str, int]]:
    """What a refused body counts, as predict's handler asks for it."""
    payload = NOT_DECODED
    try:
        payload = service.decode_body(body, is_base64=False)
        service.predict(service.schema.parse_request(payload).rows)
    except ApiError as error:
        return service.refused_values(error, payload)
    raise AssertionError("the body was served")


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ("", {REQUEST_FIELD: {"empty_body": 1}}),
        ("{nope", {REQUEST_FIELD: {"invalid_json": 1}}),
        ("x" * 10_001, {REQUEST_FIELD: {"body_too_large": 1}}),
        ("[]", {REQUEST_FIELD: {"invalid_type": 1}}),
        (json.dumps({"features": valid_row(), "instances": []}), {REQUEST_FIELD: {"invalid_request": 1}}),
        (json.dumps({"instances": [valid_row()] * 6}), {REQUEST_FIELD: {"too_many_instances": 1}}),
        (json.dumps({"features": {**valid_row(), "mean_radius": "big"}}), {"mean_radius": {"invalid_type": 1}}),
        (json.dumps({"features": {**valid_row(), "mean_radius": float("nan")}}), {"mean_radius": {"not_finite": 1}}),
        (json.dumps({"features": {**valid_row(), "mean_radius": 1e308}}), {"mean_radius": {"out_of_range": 1}}),
        (
            json.dumps({"instances": [{**valid_row(), "mean_radius": 1e308}, {**valid_row(), "mean_radius": 1e307, "concavity_grade": "x"}]}),
            {"mean_radius": {"out_of_range": 2}, "concavity_grade": {"unknown_category": 1}},
        ),
    ],
)
def test_a_refused_request_counts_each_bad_value_by_feature_and_code(service: PredictionService, body: str, refused: dict[str, dict[str, int]]) -> None:
    assert refusal_of(service, body) == refused


def test_problems_that_name_no_feature_count_once_per_request_however_many_keys_or_rows_hold_them(service: PredictionService) -> None:
    # One hostile request with hundreds of unknown names (or rows that are not objects) is one refused request:
    # the _request line counts requests, so it must not read "300 requests refused".
    many_names = json.dumps({"features": {**valid_row(), **{f"f{i}": i for i in range(300)}}})
    assert refusal_of(service, many_names) == {REQUEST_FIELD: {"unknown_feature": 1}}
    odd_rows = json.dumps({"instances": [1, "a", None, {**valid_row(), "x": 1, "y": 2}, {**valid_row(), "z": 3}]})
    assert refusal_of(service, odd_rows) == {REQUEST_FIELD: {"invalid_type": 1, "unknown_feature": 1}}


def test_a_row_the_model_cannot_compute_counts_the_feature_the_error_names(service: PredictionService) -> None:
    error = ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", "overflows", field="instances[2].mean_area")
    assert service.refused_values(error, {"instances": [valid_row()] * 3}) == {"mean_area": {"out_of_range": 1}}
    unnamed = ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", "cannot compute", field="features")
    assert service.refused_values(unnamed, {"features": valid_row()}) == {REQUEST_FIELD: {"out_of_range": 1}}


def test_more_refused_fields_than_an_event_holds_fold_into_the_request_line(monkeypatch: pytest.MonkeyPatch, service: PredictionService) -> None:
    import sml.predict.service as module

    monkeypatch.setattr(module, "MAX_REFUSED_FIELDS", 3)
    names = list(valid_row())
    bad = {name: ["not", "a", "value"] for name in names}
    error = ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_type", "x", field=f"features.{names[0]}")

    refused = service.refused_values(error, {"instances": [bad, {**valid_row(), names[1]: "x"}, {"x": 1, **valid_row()}]})

    assert len(refused) == 3 and names[1] in refused and refused[names[1]] == {"invalid_type": 2}
    assert refused[REQUEST_FIELD]["unknown_feature"] == 1
    assert sum(sum(reasons.values()) for reasons in refused.values()) == len(names) + 2, "nothing is lost, only folded"
