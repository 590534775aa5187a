"""POST /feedback end to end on moto: labels queued as ground-truth events, precise 4xx with nothing queued, 503 on an outage."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from functions.predict import app
from sml.core.events import GroundTruthEvent, parse_event
from sml.local.lambda_context import new_lambda_context
from tests.predict_support import (  # noqa: F401 - registered_model, predict_stack are fixtures
    PredictStack,
    function_url_event,
    predict_stack,
    registered_model,
    trained_model,
    valid_row,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def invoke(method: str, path: str, body: str | bytes | None = None) -> tuple[int, dict[str, Any]]:
    response = app.handler(function_url_event(method, path, body), new_lambda_context("predict", region="us-east-1", timeout_s=30))
    return response["statusCode"], json.loads(response["body"])


def queued_bodies(stack: PredictStack) -> list[str]:
    bodies = []
    while batch := stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [message["Body"] for message in batch]
        entries = [{"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(batch)]
        stack.sqs.delete_message_batch(QueueUrl=stack.queue_url, Entries=entries)
    return bodies


def predicted_id() -> str:
    status, body = invoke("POST", "/predict", json.dumps({"features": valid_row()}))
    assert status == 200
    return body["prediction_id"]


def test_a_label_for_a_served_prediction_is_queued_as_a_ground_truth_event(predict_stack: PredictStack) -> None:
    prediction_id = predicted_id()
    queued_bodies(predict_stack)
    label = trained_model().classes[1]

    status, body = invoke("POST", "/feedback", json.dumps({"prediction_id": prediction_id, "label": label, "labelled_at": "2026-11-27T07:01:02.5Z", "source": "biopsy"}))

    assert status == 202
    assert body == {"accepted": 1, "labels": [{"prediction_id": prediction_id, "labelled_at": "2026-11-27T07:01:02.500000Z"}]}
    [queued] = queued_bodies(predict_stack)
    event = parse_event(queued)
    assert isinstance(event, GroundTruthEvent)
    assert (event.prediction_id, event.label, event.source) == (prediction_id, label, "biopsy")
    assert event.labelled_at == datetime(2026, 11, 27, 7, 1, 2, 500000, tzinfo=timezone.utc)


def test_a_batch_of_labels_is_queued_whole_even_for_ids_predict_never_saw(predict_stack: PredictStack) -> None:
    ids = [predicted_id() for _ in range(3)] + ["0190b8f0-0000-7000-8000-000000000000"]
    queued_bodies(predict_stack)
    classes = trained_model().classes

    status, body = invoke("POST", "/feedback", json.dumps({"labels": [{"prediction_id": pid, "label": classes[0]} for pid in ids]}))

    assert status == 202 and body["accepted"] == 4
    events = [parse_event(queued) for queued in queued_bodies(predict_stack)]
    assert sorted(event.prediction_id for event in events) == sorted(ids)
    assert all(isinstance(event, GroundTruthEvent) and event.label == classes[0] for event in events)


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (None, 400, "empty_body", "body"),
        ("{", 400, "invalid_json", "body"),
        (json.dumps({"prediction_id": "0190b8f0-0000-7000-8000-000000000000", "label": "cancerous"}), 422, "unknown_class", "label"),
        (json.dumps({"prediction_id": "not-an-id", "label": "benign"}), 422, "invalid_prediction_id", "prediction_id"),
        (json.dumps({"label": "benign"}), 422, "missing_field", "prediction_id"),
        (json.dumps({"prediction_id": "0190b8f0-0000-7000-8000-000000000000"}), 422, "missing_field", "label"),
        (json.dumps({"labels": [{"prediction_id": "0190b8f0-0000-7000-8000-000000000000", "label": "benign"}] * 101}), 422, "too_many_labels", "labels"),
        ("[" + "1," * 600_000 + "1]", 413, "body_too_large", "body"),
    ],
)
def test_bad_feedback_gets_a_precise_error_and_queues_nothing(predict_stack: PredictStack, body: str | None, status: int, code: str, field: str) -> None:
    answered, document = invoke("POST", "/feedback", body)

    assert answered == status
    assert (document["error"]["code"], document["error"]["field"]) == (code, field)
    assert queued_bodies(predict_stack) == []


def test_feedback_accepts_post_only(predict_stack: PredictStack) -> None:
    status, body = invoke("GET", "/feedback")

    assert status == 405 and body["error"]["code"] == "method_not_allowed"


def test_an_unreachable_queue_answers_503_so_the_client_resends(predict_stack: PredictStack) -> None:
    predict_stack.configure(SML_QUEUE_URL=predict_stack.queue_url.replace("events-", "gone-"))

    status, body = invoke("POST", "/feedback", json.dumps({"prediction_id": "0190b8f0-0000-7000-8000-000000000000", "label": trained_model().classes[0]}))

    assert status == 503
    assert body["error"]["code"] == "feedback_not_recorded"


def test_labels_are_never_sampled_out_like_captured_predictions(predict_stack: PredictStack) -> None:
    predict_stack.configure(SML_CAPTURE_SAMPLING_RATE="0")
    labels = [{"prediction_id": f"0190b8f0-0000-7000-8000-00000000000{index}", "label": trained_model().classes[0]} for index in range(5)]

    status, _ = invoke("POST", "/feedback", json.dumps({"labels": labels}))

    assert status == 202
    assert len(queued_bodies(predict_stack)) == 5


def test_the_openapi_document_lists_feedback(predict_stack: PredictStack) -> None:
    status, document = invoke("GET", "/openapi.json")

    assert status == 200
    assert document["components"]["schemas"]["Label"]["properties"]["label"]["enum"] == list(trained_model().classes)


def test_the_whole_loop_over_http_predict_then_feedback_then_the_writer(predict_stack: PredictStack, migrated_db_url: str) -> None:
    from urllib.request import Request, urlopen

    from sml.core.db import create_db_engine
    from sml.local.function_url import FunctionUrlServer
    from sml.writer.batch import write_batch

    def post(url: str, payload: object) -> tuple[int, dict[str, Any]]:
        # A form content type: the Function URL base64-encodes the body, as curl's default would get.
        request = Request(url, data=json.dumps(payload).encode(), headers={"content-type": "application/x-www-form-urlencoded"}, method="POST")
        with urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())

    with FunctionUrlServer(app.handler, function_name="sml-predict") as server:
        _, predicted = post(f"{server.url}predict", {"instances": [valid_row(), valid_row()]})
        ids = [item["prediction_id"] for item in predicted["predictions"]]
        right, wrong = predicted["predictions"][0]["prediction"], next(c for c in trained_model().classes if c != predicted["predictions"][1]["prediction"])
        status, accepted = post(f"{server.url}feedback", {"labels": [{"prediction_id": ids[0], "label": right}, {"prediction_id": ids[1], "label": wrong}]})

    assert (status, accepted["accepted"]) == (202, 2)
    engine = create_db_engine(migrated_db_url)
    try:
        outcome = write_batch(engine, [(f"m{index}", body) for index, body in enumerate(queued_bodies(predict_stack))])
        with engine.connect() as connection:
            correct = dict(
                connection.exec_driver_sql(
                    "SELECT p.prediction_id, CASE WHEN g.label = p.prediction THEN 1 ELSE 0 END FROM predictions p JOIN ground_truth g ON g.prediction_id = p.prediction_id"
                ).all()
            )
    finally:
        engine.dispose()
    assert (outcome.inserted, outcome.labels_stored, outcome.failures) == (2, 2, [])
    assert correct == {ids[0]: 1, ids[1]: 0}


def test_without_an_events_queue_feedback_is_unavailable_but_still_validated(predict_stack: PredictStack) -> None:
    predict_stack.monkeypatch.delenv("SML_QUEUE_URL")
    predict_stack.configure(SML_CAPTURE_SAMPLING_RATE="0")
    label = {"prediction_id": "0190b8f0-0000-7000-8000-000000000000", "label": trained_model().classes[0]}

    assert invoke("POST", "/feedback", json.dumps({**label, "label": "cancerous"}))[0] == 422
    status, body = invoke("POST", "/feedback", json.dumps(label))

    assert status == 503 and body["error"]["code"] == "feedback_unavailable"
