"""The predict handler end to end on moto: AWS's sample Function URL event, the registry, the queue.

Every bad input must come back as a precise 4xx with nothing queued but its refusal event (the
bad values counted per feature and code); a queue outage must still answer 200 with the missed
event in the structured log; fail-closed answers 503.
"""

from __future__ import annotations

import io
from pathlib import Path
import json
import math
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from functions.predict import app
from sml.core.events import RefusalEvent, parse_event, parse_prediction_event
from sml.local.lambda_context import new_lambda_context
from tests.predict_support import (  # noqa: F401 - registered_model, predict_stack, predict_log are fixtures
    APP_NAME,
    MODEL_NAME,
    PredictStack,
    register_champion,
    function_url_event,
    perturbed_row,
    predict_log,
    predict_stack,
    registered_model,
    valid_row,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def invoke(method: str, path: str, body: str | bytes | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = app.handler(function_url_event(method, path, body), new_lambda_context("predict", region="us-east-1", timeout_s=30))
    return response["statusCode"], response["headers"], json.loads(response["body"])


def log_records(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def emitted_metrics(stdout: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            record = json.loads(line)
            for definition in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                totals[definition["Name"]] = totals.get(definition["Name"], 0.0) + sum(record[definition["Name"]])
    return totals


def test_a_valid_row_returns_a_prediction_and_its_event_is_queued(predict_stack: PredictStack) -> None:
    status, headers, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {"prediction_id", "prediction", "probabilities", "model_version"}
    assert body["model_version"] == "v1"
    assert math.isclose(sum(body["probabilities"].values()), 1.0)
    [event] = predict_stack.queued()
    assert event["prediction_id"] == body["prediction_id"]
    assert (event["prediction"], event["probabilities"]) == (body["prediction"], body["probabilities"])
    assert event["features"] == valid_row()


def test_instances_return_one_prediction_per_row_in_order_and_every_event_is_queued(predict_stack: PredictStack) -> None:
    rows = [{**valid_row(), "mean_radius": 6.0 + index} for index in range(23)]

    status, _, body = invoke("POST", "/predict", json.dumps({"instances": rows}))

    assert status == 200
    assert len(body["predictions"]) == 23
    events = {event["prediction_id"]: event for event in predict_stack.queued()}
    assert set(events) == {item["prediction_id"] for item in body["predictions"]}
    assert [events[item["prediction_id"]]["features"]["mean_radius"] for item in body["predictions"]] == [6.0 + i for i in range(23)]


def test_a_base64_encoded_body_is_decoded(predict_stack: PredictStack) -> None:
    status, _, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}).encode("utf-8"))

    assert status == 200
    assert [event["prediction_id"] for event in predict_stack.queued()] == [body["prediction_id"]]


def body_with(**changes: Any) -> str:
    return json.dumps({"features": {**valid_row(), **changes}})


def without(name: str) -> str:
    return json.dumps({"features": {key: value for key, value in valid_row().items() if key != name}})


REQUEST = "_request"
# method, path, body, status, code, field, and what the refusal event counts (None: no event).
BAD_REQUESTS = [
    ("POST", "/predict", None, 400, "empty_body", "body", {REQUEST: {"empty_body": 1}}),
    ("POST", "/predict", "{features:", 400, "invalid_json", "body", {REQUEST: {"invalid_json": 1}}),
    ("POST", "/predict", b"\x89PNG\r\n", 400, "invalid_json", "body", {REQUEST: {"invalid_json": 1}}),
    ("POST", "/predict", json.dumps({"features": valid_row(), "pad": "x" * 5000}), 413, "body_too_large", "body", {REQUEST: {"body_too_large": 1}}),
    ("POST", "/predict", "[1, 2]", 422, "invalid_type", "body", {REQUEST: {"invalid_type": 1}}),
    ("POST", "/predict", without("mean_area"), 422, "missing_feature", "features.mean_area", {"mean_area": {"missing_feature": 1}}),
    ("POST", "/predict", body_with(mean_aera=1.0), 422, "unknown_feature", "features.mean_aera", {REQUEST: {"unknown_feature": 1}}),
    ("POST", "/predict", body_with(mean_area="large"), 422, "invalid_type", "features.mean_area", {"mean_area": {"invalid_type": 1}}),
    ("POST", "/predict", body_with(mean_area=True), 422, "invalid_type", "features.mean_area", {"mean_area": {"invalid_type": 1}}),
    ("POST", "/predict", body_with(mean_area=float("nan")), 422, "not_finite", "features.mean_area", {"mean_area": {"not_finite": 1}}),
    ("POST", "/predict", body_with(mean_area=float("inf")), 422, "not_finite", "features.mean_area", {"mean_area": {"not_finite": 1}}),
    ("POST", "/predict", body_with(concavity_grade="severe"), 422, "unknown_category", "features.concavity_grade",
     {"concavity_grade": {"unknown_category": 1}}),
    ("POST", "/predict", body_with(mean_smoothness=1e307), 422, "out_of_range", "features.mean_smoothness", {"mean_smoothness": {"out_of_range": 1}}),
    ("POST", "/predict", body_with(mean_area=-1.7976931348623157e308), 422, "out_of_range", "features.mean_area", {"mean_area": {"out_of_range": 1}}),
    ("POST", "/predict", json.dumps({"instances": [valid_row(), {**valid_row(), "mean_area": 1e300}]}), 422, "out_of_range",
     "instances[1].mean_area", {"mean_area": {"out_of_range": 1}}),
    ("POST", "/predict", json.dumps({"instances": []}), 422, "empty_instances", "instances", {REQUEST: {"empty_instances": 1}}),
    ("POST", "/predict", json.dumps({"instances": [valid_row()] * 4}), 422, "too_many_instances", "instances", {REQUEST: {"too_many_instances": 1}}),
    ("POST", "/predict", json.dumps({"instances": [valid_row(), {**valid_row(), "x": 1}]}), 422, "unknown_feature", "instances[1].x",
     {REQUEST: {"unknown_feature": 1}}),
    ("GET", "/predict", None, 405, "method_not_allowed", None, None),
    ("DELETE", "/health", None, 405, "method_not_allowed", None, None),
    ("POST", "/predictions", "{}", 404, "not_found", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "field", "refused"), BAD_REQUESTS)
def test_each_bad_request_gets_a_precise_4xx_and_only_its_refusal_is_queued(
    predict_stack: PredictStack,
    capsys: pytest.CaptureFixture[str],
    method: str,
    path: str,
    body: str | bytes | None,
    status: int,
    code: str,
    field: str | None,
    refused: dict[str, dict[str, int]] | None,
) -> None:
    predict_stack.configure(SML_MAX_BODY_BYTES="4096", SML_MAX_INSTANCES="3")
    capsys.readouterr()

    got_status, headers, document = invoke(method, path, body)

    assert (got_status, document["error"]["code"], document["error"]["field"]) == (status, code, field)
    assert document["error"]["message"]
    queued = [parse_event(json.dumps(event)) for event in predict_stack.queued()]
    if refused is None:
        assert queued == []
        assert refused_metrics(capsys.readouterr().out) == {}
    else:
        [refusal] = queued
        assert type(refusal) is RefusalEvent
        assert (refusal.refused, refusal.model_name, refusal.model_version) == (refused, MODEL_NAME, "v1")
        assert refused_metrics(capsys.readouterr().out) == {name: sum(reasons.values()) for name, reasons in refused.items()}
    if status == 405:
        assert headers["Allow"] == ("POST" if path == "/predict" else "GET")


def refused_metrics(stdout: str) -> dict[str, float]:
    """``RefusedValues`` per ``field`` dimension, from the EMF records printed."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith('{"_aws"') and "RefusedValues" in line:
            record = json.loads(line)
            assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "field"]]
            totals[record["field"]] = totals.get(record["field"], 0.0) + sum(record["RefusedValues"])
    return totals


def test_every_bad_value_of_a_refused_batch_is_counted_per_feature_and_code(predict_stack: PredictStack) -> None:
    rows = [valid_row(), {**valid_row(), "mean_area": 1e300}, {**valid_row(), "mean_area": float("nan"), "concavity_grade": "severe"}, "a row", {"x": 1}]

    status, _, document = invoke("POST", "/predict", json.dumps({"instances": rows}))

    assert (status, document["error"]["field"]) == (422, "instances[1].mean_area")
    [refusal] = [parse_event(json.dumps(event)) for event in predict_stack.queued()]
    missing = {name: {"missing_feature": 1} for name in valid_row()}
    assert refusal.refused == {
        **missing,
        "mean_area": {"out_of_range": 1, "not_finite": 1, "missing_feature": 1},
        "concavity_grade": {"unknown_category": 1, "missing_feature": 1},
        REQUEST: {"invalid_type": 1, "unknown_feature": 1},
    }


def test_a_refusal_under_fail_closed_with_the_queue_down_stays_a_4xx_and_is_logged(
    predict_stack: PredictStack, predict_log: io.StringIO
) -> None:
    predict_stack.configure(SML_CAPTURE_FAIL_CLOSED="true", SML_QUEUE_URL=predict_stack.queue_url.replace("events-", "gone-"))

    status, _, document = invoke("POST", "/predict", body_with(mean_area="large"))

    assert (status, document["error"]["code"]) == (422, "invalid_type")
    [miss] = [record for record in log_records(predict_log) if "capture_miss" in record]
    refusal = parse_event(miss["message_body"])
    assert miss["refusal_id"] == refusal.refusal_id
    assert refusal.refused == {"mean_area": {"invalid_type": 1}}


def test_when_the_queue_is_down_the_prediction_is_served_and_the_whole_event_is_logged(
    predict_stack: PredictStack, predict_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    predict_stack.configure(SML_QUEUE_URL=predict_stack.queue_url.replace("events-", "gone-"))
    rows = [valid_row(), {**valid_row(), "concavity_grade": "high"}]

    status, _, body = invoke("POST", "/predict", json.dumps({"instances": rows}))

    assert status == 200
    served = {item["prediction_id"]: item for item in body["predictions"]}
    misses = [record for record in log_records(predict_log) if "capture_miss" in record]
    assert {record["prediction_id"] for record in misses} == set(served)
    for record in misses:
        event = parse_prediction_event(record["message_body"])
        assert event.prediction == served[event.prediction_id]["prediction"]
        assert event.features["concavity_grade"] in ("moderate", "high")
        assert record["level"] == "ERROR"
        assert "NonExistentQueue" in record["capture_miss"]
        assert record["correlation_id"] == body["predictions"][0]["prediction_id"]
    assert emitted_metrics(capsys.readouterr().out)["CaptureMisses"] == 2
    assert predict_stack.queued() == []


def test_events_logged_during_an_outage_are_recovered_by_sml_capture_resend(
    predict_stack: PredictStack, predict_log: io.StringIO, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sml.cli.main import main

    live_queue = predict_stack.queue_url
    predict_stack.configure(SML_QUEUE_URL=live_queue.replace("events-", "gone-"))
    status, _, body = invoke("POST", "/predict", json.dumps({"instances": [valid_row(), valid_row()]}))
    assert status == 200 and predict_stack.queued() == []
    export = tmp_path / "predict-log.jsonl"
    export.write_text("2026-11-27T10:00:00Z " + predict_log.getvalue().replace("\n", "\n2026-11-27T10:00:00Z "))

    assert main(["capture", "resend", "--log-file", str(export), "--queue-url", live_queue]) == 0

    served = [item["prediction_id"] for item in body["predictions"]]
    assert sorted(message["prediction_id"] for message in predict_stack.queued()) == sorted(served)
    assert "sent 2 of 2 event(s)" in capsys.readouterr().out


def test_fail_closed_answers_503_when_the_event_cannot_be_recorded(predict_stack: PredictStack, predict_log: io.StringIO) -> None:
    predict_stack.configure(SML_QUEUE_URL=predict_stack.queue_url.replace("events-", "gone-"), SML_CAPTURE_FAIL_CLOSED="true")

    status, _, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))

    assert status == 503
    assert body["error"]["code"] == "capture_failed"
    assert "prediction_id" not in json.dumps(body)
    assert any("capture_failure" in record for record in log_records(predict_log))


def test_a_sampling_rate_of_zero_queues_nothing_and_needs_no_queue(predict_stack: PredictStack, capsys: pytest.CaptureFixture[str]) -> None:
    predict_stack.monkeypatch.delenv("SML_QUEUE_URL")
    predict_stack.configure(SML_CAPTURE_SAMPLING_RATE="0")

    status, _, _ = invoke("POST", "/predict", json.dumps({"instances": [valid_row()] * 3}))

    assert status == 200
    assert predict_stack.queued() == []
    assert emitted_metrics(capsys.readouterr().out)["PredictionsServed"] == 3


def test_range_warnings_are_off_by_default_and_name_the_field_when_on(predict_stack: PredictStack) -> None:
    outside = {**valid_row(), "mean_radius": 1_000.0}

    _, _, default = invoke("POST", "/predict", json.dumps({"features": outside}))
    predict_stack.configure(SML_PREDICT_RANGE_WARNINGS="true")
    status, _, warned = invoke("POST", "/predict", json.dumps({"instances": [valid_row(), outside]}))

    assert "warnings" not in default
    assert status == 200
    assert [[warning["field"] for warning in item["warnings"]] for item in warned["predictions"]] == [[], ["mean_radius"]]
    assert warned["predictions"][1]["warnings"][0]["code"] == "outside_training_range"


def test_health_reports_the_model_and_its_load_time_and_cold_start(predict_stack: PredictStack) -> None:
    status, _, first = invoke("GET", "/health")
    _, _, second = invoke("GET", "/health")

    assert status == 200
    assert (first["status"], first["model_name"], first["model_version"]) == ("ok", MODEL_NAME, "v1")
    assert 0 < first["model_load_seconds"] <= first["init_seconds"]
    assert (first["cold_start"], second["cold_start"]) == (True, False)
    assert second["model_loaded_at"] == first["model_loaded_at"]


def test_openapi_describes_the_champions_features(predict_stack: PredictStack) -> None:
    status, _, document = invoke("GET", "/openapi.json")

    assert status == 200
    assert document["components"]["schemas"]["Features"]["required"] == list(valid_row())
    assert document["components"]["schemas"]["BatchRequest"]["properties"]["instances"]["maxItems"] == 100


def test_every_answer_fits_the_served_openapi_document(predict_stack: PredictStack) -> None:
    _, _, document = invoke("GET", "/openapi.json")

    def check(schema_name: str, instance: dict[str, Any]) -> None:
        Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}).validate(instance)

    check("Prediction", invoke("POST", "/predict", json.dumps({"features": valid_row()}))[2])
    check("BatchPrediction", invoke("POST", "/predict", json.dumps({"instances": [valid_row()] * 2}))[2])
    check("Health", invoke("GET", "/health")[2])
    check("Error", invoke("POST", "/predict", body_with(mean_area=None, concavity_grade=7))[2])
    check("Error", invoke("PUT", "/openapi.json")[2])


def test_without_a_champion_predict_answers_503_until_one_is_promoted(predict_stack: PredictStack, predict_log: io.StringIO) -> None:
    model_name = f"other-{uuid.uuid4().hex[:8]}"
    predict_stack.configure(SML_MODEL_NAME=model_name)

    status, _, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))

    assert (status, body["error"]["code"]) == (503, "model_unavailable")
    assert "the function's log has the reason" in body["error"]["message"]
    assert any("has no champion" in record.get("champion_unavailable", "") for record in log_records(predict_log))
    assert predict_stack.queued() == []

    stack = predict_stack
    register_champion(stack.s3, stack.ssm, bucket=stack.bucket, work_dir=stack.work_dir, model_name=model_name)
    status, _, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))
    assert status == 200


def test_the_champion_pointer_is_not_read_again_within_the_ttl(predict_stack: PredictStack) -> None:
    invoke("GET", "/health")
    predict_stack.ssm.put_parameter(Name=f"/{APP_NAME}/{MODEL_NAME}/champion", Value="v-missing", Type="String", Overwrite=True)
    try:
        status, _, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))
    finally:
        predict_stack.ssm.put_parameter(Name=f"/{APP_NAME}/{MODEL_NAME}/champion", Value="v1", Type="String", Overwrite=True)

    assert (status, body["model_version"]) == (200, "v1")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
near_valid_rows = st.builds(
    perturbed_row, st.just(valid_row()), st.sampled_from([None, None, *valid_row(), "extra"]), json_values, st.booleans()
)


def _range_edges() -> list[float]:
    """The champion's training and served range ends per numeric feature, and the floats just past them."""
    from sml.predict.validation import served_range

    edges = []
    for spec in registered_features():
        if spec.kind == "numeric":
            for edge in (spec.minimum, spec.maximum, *served_range(spec)):
                edges += [edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
    return edges


def registered_features() -> tuple[Any, ...]:
    from tests.predict_support import trained_model

    return trained_model().features


# Floats across the whole finite range (both signs, subnormals) and just past the training and served ranges.
any_finite_number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-307, max_value=1e-307),
    st.sampled_from(_range_edges()),
)
numeric_names = [spec.name for spec in registered_features() if spec.kind == "numeric"]
rows_with_any_numbers = st.builds(perturbed_row, st.just(valid_row()), st.sampled_from(numeric_names), any_finite_number, st.just(False))
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value)),
    near_valid_rows.map(lambda row: json.dumps({"features": row})),
    st.lists(near_valid_rows, max_size=4).map(lambda rows: json.dumps({"instances": rows})),
    rows_with_any_numbers.map(lambda row: json.dumps({"features": row})),
    st.lists(rows_with_any_numbers, min_size=1, max_size=3).map(lambda rows: json.dumps({"instances": rows})),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_body_makes_predict_answer_5xx_and_only_served_rows_or_the_refusal_are_queued(predict_stack: PredictStack, body: str | bytes) -> None:
    status, _, document = invoke("POST", "/predict", body)

    assert 200 <= status < 500
    queued = [parse_event(json.dumps(event)) for event in predict_stack.queued()]
    if status == 200:
        served = document.get("predictions", [document])
        assert {event.prediction_id for event in queued} == {item["prediction_id"] for item in served}
    else:
        assert document["error"]["message"]
        [refusal] = queued
        assert type(refusal) is RefusalEvent
        named = re.match(r"^(?:features|instances\[\d+\])\.(.+)$", document["error"]["field"] or "")
        field = named[1] if named and named[1] in valid_row() else REQUEST
        assert document["error"]["code"] in refusal.refused[field]


def test_a_champion_that_cannot_be_unpickled_answers_503_and_the_log_names_the_library(
    predict_stack: PredictStack, predict_log: io.StringIO
) -> None:
    from dataclasses import replace

    from sml.lifecycle.registry import ModelRegistry
    from tests.predict_support import manifest_for

    stack = predict_stack
    model_name = f"numpy-two-{uuid.uuid4().hex[:8]}"
    # A pickle naming a module this image lacks, as a numpy 2 pickle names numpy._core under numpy 1.
    artifact = stack.work_dir / f"{model_name}.joblib"
    artifact.write_bytes(b"\x80\x04cnumpy._core_of_another_numpy\n_reconstruct\n.")
    manifest = manifest_for("v1", model_name)
    manifest = replace(manifest, library_versions={**manifest.library_versions, "numpy": "0.9.0"})
    registry = ModelRegistry(stack.s3, stack.ssm, bucket=stack.bucket, app_name=APP_NAME, model_name=model_name)
    registry.register(artifact, manifest)
    registry.promote("v1")
    stack.configure(SML_MODEL_NAME=model_name)

    for method, path, body in (("GET", "/health", None), ("POST", "/predict", json.dumps({"features": valid_row()}))):
        status, _, answer = invoke(method, path, body)
        assert (status, answer["error"]["code"]) == (503, "model_unavailable"), path
    reasons = [record.get("champion_unavailable", "") for record in log_records(predict_log)]
    assert len(reasons) == 2
    assert all("ModuleNotFoundError" in reason and "trained with numpy 0.9.0, this is" in reason for reason in reasons)
    assert predict_stack.queued() == []
