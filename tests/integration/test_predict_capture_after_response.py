"""Predict with SML_CAPTURE_MODE=after_response over real HTTP: the local Function URL server is one
execution environment with a local Extensions API, the handler module's capture extension registered
with it, SQS on moto. The caller's answer never waits on the queue; every answered event is sent or
logged after it."""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from functions.predict import app
from sml.core.events import parse_prediction_event
from sml.local.extensions_api import ExtensionsApiServer
from sml.local.function_url import FunctionUrlServer
from tests.integration.test_predict_handler import emitted_metrics, log_records
from tests.predict_support import (  # noqa: F401 - registered_model, predict_stack, predict_log are fixtures
    PredictStack,
    predict_log,
    predict_stack,
    registered_model,
    valid_row,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@dataclass
class Environment:
    """One local execution environment of predict: its URL, its Extensions API and the stack."""

    url: str
    api: ExtensionsApiServer
    stack: PredictStack

    def post(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}predict", json=body, timeout=30)

    def settle(self) -> None:
        """Wait for the post-runtime phase of the last invocation to end."""
        self.api.wait_post_invoke(timeout_s=30)


@pytest.fixture
def environment(predict_stack: PredictStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Environment]:
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    with ExtensionsApiServer(function_name="sml-predict", handler="functions.predict.app.handler") as api:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.runtime_api)
        monkeypatch.setattr(app, "_capture_extension", app.start_capture_extension())
        assert app._capture_extension is not None
        with FunctionUrlServer(app.handler, function_name="sml-predict", extensions_api=api) as server:
            yield Environment(server.url, api, predict_stack)
    signal.signal(signal.SIGTERM, previous_sigterm)


def served_ids(response: requests.Response) -> list[str]:
    document = response.json()
    return [item["prediction_id"] for item in document.get("predictions", [document])]


def test_the_answer_reaches_the_caller_while_the_send_is_still_held(environment: Environment) -> None:
    assert requests.get(f"{environment.url}health", timeout=30).status_code == 200  # builds the container's runtime
    environment.settle()
    order: list[str] = []
    answered = threading.Event()
    waited: list[bool] = []

    def hold_the_send(**_: Any) -> None:
        order.append(f"send started on {threading.current_thread().name}")
        waited.append(answered.wait(30))  # a bound for a broken build, not a timing threshold
        order.append("send released")

    app.load_runtime().capture.sqs_client.meta.events.register("before-send.sqs.SendMessage", hold_the_send)
    response = environment.post({"features": valid_row()})
    order.append("caller has its answer")
    answered.set()
    environment.settle()

    assert response.status_code == 200
    assert waited == [True]  # the send was held until the caller had its answer: it never waited on the send
    assert order.index("caller has its answer") < order.index("send released")
    # On the extension's send thread, which the extension waits for only until the deadline.
    assert [step for step in order if step.startswith("send started")] == ["send started on sml-capture-send"]
    assert [message["prediction_id"] for message in environment.stack.queued()] == served_ids(response)


def test_the_events_of_every_answered_request_reach_the_queue(environment: Environment) -> None:
    served: list[str] = []
    for body in ({"features": valid_row()}, {"instances": [valid_row()] * 12}, {"features": {"nope": 1}}, {"instances": [valid_row()] * 2}):
        response = environment.post(body)
        if response.status_code == 200:
            served.extend(served_ids(response))
    environment.settle()

    assert len(served) == 15
    queued = environment.stack.queued()
    assert sorted(message["prediction_id"] for message in queued if "prediction_id" in message) == sorted(served)
    [refusal] = [message for message in queued if "refusal_id" in message]  # the refused request's, after its answer too
    assert refusal["refused"] == {"_request": {"unknown_feature": 1}, **{name: {"missing_feature": 1} for name in valid_row()}}


def test_a_queue_outage_after_the_answer_logs_every_event_and_counts_the_misses(
    environment: Environment, predict_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.stack.configure(SML_QUEUE_URL=environment.stack.queue_url.replace("events-", "gone-"))

    response = environment.post({"instances": [valid_row(), {**valid_row(), "concavity_grade": "high"}]})
    environment.settle()

    assert response.status_code == 200
    misses = [record for record in log_records(predict_log) if "capture_miss" in record]
    assert sorted(record["prediction_id"] for record in misses) == sorted(served_ids(response))
    for record in misses:
        assert parse_prediction_event(record["message_body"]).prediction_id == record["prediction_id"]
        assert "NonExistentQueue" in record["capture_miss"] and record["level"] == "ERROR"
    assert emitted_metrics(capsys.readouterr().out)["CaptureMisses"] == 2
    assert environment.stack.queued() == []


def test_fail_closed_still_sends_before_answering_and_answers_503_when_the_queue_is_down(
    environment: Environment, predict_log: io.StringIO
) -> None:
    environment.stack.configure(SML_QUEUE_URL=environment.stack.queue_url.replace("events-", "gone-"), SML_CAPTURE_FAIL_CLOSED="true")

    response = environment.post({"features": valid_row()})
    environment.settle()

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "capture_failed"
    assert any("capture_failure" in record for record in log_records(predict_log))
    assert not any("capture_miss" in record for record in log_records(predict_log))


def test_inline_mode_sends_before_answering_even_with_the_extension_registered(environment: Environment) -> None:
    environment.stack.configure(SML_CAPTURE_MODE="inline")
    requests.get(f"{environment.url}health", timeout=30)
    environment.settle()
    sending_threads: list[str] = []
    app.load_runtime().capture.sqs_client.meta.events.register(
        "before-send.sqs.SendMessage", lambda **_: sending_threads.append(threading.current_thread().name)
    )

    response = environment.post({"features": valid_row()})
    environment.settle()

    assert response.status_code == 200
    assert sending_threads and not any(name.startswith("sml-capture") for name in sending_threads)
    assert [message["prediction_id"] for message in environment.stack.queued()] == served_ids(response)


def test_without_an_extensions_api_capture_falls_back_to_inline_and_says_so_once(
    predict_stack: PredictStack, predict_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)

    assert app.start_capture_extension() is None

    [record] = [record for record in log_records(predict_log) if "falls back" in record["message"]]
    assert "AWS_LAMBDA_RUNTIME_API" in record["message"] and record["level"] == "WARNING"


@pytest.mark.parametrize(
    "variables",
    [{"SML_CAPTURE_MODE": "inline"}, {"SML_CAPTURE_FAIL_CLOSED": "true"}, {"SML_CAPTURE_SAMPLING_RATE": "0"}],
)
def test_no_extension_registers_when_events_are_sent_inline_or_not_at_all(
    predict_stack: PredictStack, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    with ExtensionsApiServer() as api:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.runtime_api)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

        assert app.start_capture_extension() is None
        assert api.calls == []
