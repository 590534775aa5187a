"""The capture extension against a local Lambda Extensions API over HTTP (127.0.0.1, free port):
registration and polling as AWS documents them, sending in the post-runtime phase, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import requests

from sml.core.events import PredictionEvent, build_prediction_event, parse_prediction_event
from sml.local.extensions_api import NEXT_PATH, REGISTER_PATH, ExtensionsApiServer
from sml.predict.capture import CaptureMiss, CaptureResult
from sml.predict.capture_extension import (
    DEADLINE_MARGIN_S,
    DEADLINE_MISS_REASON,
    SHUTDOWN_MISS_REASON,
    ExtensionsApiClient,
    ExtensionsApiError,
    PostResponseCapture,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:sml-predict"
REPO = Path(__file__).resolve().parents[2]


def events(count: int) -> list[PredictionEvent]:
    return [build_prediction_event(model_name="m", model_version="v1", features={"x": float(i)}, prediction="a") for i in range(count)]


class RecordingQueue:
    """Stands in for ``PredictionCapture.capture``: records what it sent; can be held until released."""

    def __init__(self, *, held: bool = False) -> None:
        self.sent: list[PredictionEvent] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()

    def publish(self, batch: Sequence[PredictionEvent]) -> CaptureResult:
        self.started.set()
        self.release.wait(30)
        self.sent.extend(batch)
        return CaptureResult(sent=len(batch), sampled_out=0, misses=())


@pytest.fixture
def api() -> Iterator[ExtensionsApiServer]:
    with ExtensionsApiServer(function_name="sml-predict", handler="functions.predict.app.handler") as server:
        yield server


def invoke(api: ExtensionsApiServer, extension: PostResponseCapture, batch: Sequence[PredictionEvent]) -> str:
    """What the runtime does for one invocation whose handler defers ``batch``; returns the request id."""
    request_id = str(uuid.uuid4())
    api.begin_invoke(request_id, deadline_ms=int((time.time() + 30) * 1000), invoked_function_arn=ARN)
    extension.defer(request_id, batch)
    extension.end_invocation(request_id)
    return request_id


def test_the_extension_registers_for_invoke_and_polls_with_its_identifier_as_aws_documents(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue()
    reports: list[CaptureResult] = []

    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=reports.append)
    api.end_init()

    register, first_next = api.calls[0], api.calls[1]
    assert (register.method, register.path, register.body) == ("POST", REGISTER_PATH, {"events": ["INVOKE"]})
    assert register.headers["Lambda-Extension-Name"] == "sml-capture"
    assert (first_next.method, first_next.path) == ("GET", NEXT_PATH)
    assert first_next.headers["Lambda-Extension-Identifier"] == extension.extension_id == api.extensions[0].identifier
    assert "Lambda-Extension-Identifier" not in register.headers


def test_events_are_sent_in_the_post_runtime_phase_and_next_is_called_only_after(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue(held=True)
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=lambda result: None)
    batch = events(3)

    invoke(api, extension, batch)

    assert queue.started.wait(10)
    calls_before_release = len(api.calls)
    with pytest.raises(TimeoutError):
        api.wait_post_invoke(timeout_s=0.2)  # the send is under way: the invocation is not over
    queue.release.set()
    api.wait_post_invoke(timeout_s=10)
    assert queue.sent == batch
    assert len(api.calls) == calls_before_release + 1 and api.calls[-1].path == NEXT_PATH


def test_every_invocation_is_sent_before_the_next_one_starts(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue()
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=lambda result: None)
    batches = [events(1), [], events(12), events(2)]

    expected: list[PredictionEvent] = []
    for batch in batches:
        invoke(api, extension, batch)
        api.wait_post_invoke(timeout_s=10)
        expected.extend(batch)
        assert queue.sent == expected


def test_misses_after_the_response_are_reported_with_their_bodies(api: ExtensionsApiServer) -> None:
    batch = events(2)
    reports: list[CaptureResult] = []

    def refuse(sent: Sequence[PredictionEvent]) -> CaptureResult:
        return CaptureResult(0, 0, tuple(CaptureMiss(e.prediction_id, json.dumps({"id": e.prediction_id}), "down") for e in sent))

    extension = PostResponseCapture.register(api.runtime_api, publish=refuse, report=reports.append)
    invoke(api, extension, batch)
    api.wait_post_invoke(timeout_s=10)

    assert [miss.event_id for miss in reports[0].misses] == [event.prediction_id for event in batch]


def test_shutdown_during_a_send_reports_the_unconfirmed_events_as_misses_once(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue(held=True)
    reports: list[CaptureResult] = []
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=reports.append)
    batch = events(3)
    invoke(api, extension, batch)
    assert queue.started.wait(10)

    result = extension.shutdown()

    assert [parse_prediction_event(miss.body) for miss in result.misses] == batch
    assert {miss.reason for miss in result.misses} == {SHUTDOWN_MISS_REASON}
    assert reports == [result]
    assert not extension.active and not extension.defer("later", events(1))
    queue.release.set()
    api.wait_post_invoke(timeout_s=10)
    assert reports == [result]  # the send finishing late does not report the events again


def test_a_handler_that_never_ends_its_invocation_holds_the_extension_only_until_the_deadline(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue()
    reports: list[CaptureResult] = []
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=reports.append)
    batch = events(1)
    request_id = str(uuid.uuid4())

    api.begin_invoke(request_id, deadline_ms=int(time.time() * 1000) + 300, invoked_function_arn=ARN)
    extension.defer(request_id, batch)
    api.wait_post_invoke(timeout_s=10)

    # No time is left to send at the deadline: the events are logged for resending instead.
    assert queue.sent == []
    assert [(miss.event_id, miss.reason) for miss in reports[0].misses] == [(batch[0].prediction_id, DEADLINE_MISS_REASON)]
    assert extension.active


def test_a_send_that_outlasts_the_deadline_is_given_up_on_and_its_events_reported_once(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue(held=True)
    reports: list[CaptureResult] = []
    # The extension's clock stands still, so the send always gets its 0.3 s however late the extension's
    # thread takes the INVOKE event (before: a thread held up for 0.3 s under load started no send at all).
    now = time.time()
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=reports.append, clock=lambda: now)
    batch = events(3)
    request_id = str(uuid.uuid4())

    # The margin kept before the deadline plus 0.3 s for the send.
    api.begin_invoke(request_id, deadline_ms=round((now + DEADLINE_MARGIN_S + 0.3) * 1000), invoked_function_arn=ARN)
    extension.defer(request_id, batch)
    extension.end_invocation(request_id)
    api.wait_post_invoke(timeout_s=10)  # the invocation ends although the send is still held

    assert queue.started.wait(10) and queue.sent == []  # the send began (its thread may reach publish late) and is still held
    assert [parse_prediction_event(miss.body) for miss in reports[0].misses] == batch
    assert {miss.reason for miss in reports[0].misses} == {DEADLINE_MISS_REASON}
    queue.release.set()
    invoke(api, extension, events(1))
    api.wait_post_invoke(timeout_s=10)
    assert [report.sent for report in reports] == [0, 1]  # the late send finishing is not reported again


def test_a_reporter_that_raises_does_not_end_the_extension(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue()

    def broken_report(result: CaptureResult) -> None:
        raise ValueError("log handler closed")

    def refuse(sent: Sequence[PredictionEvent]) -> CaptureResult:
        return CaptureResult(0, 0, tuple(CaptureMiss(e.prediction_id, "{}", "down") for e in sent))

    extension = PostResponseCapture.register(api.runtime_api, publish=refuse, report=broken_report)
    for _ in range(2):
        invoke(api, extension, events(2))
        api.wait_post_invoke(timeout_s=10)  # before: the thread died in the first report and this timed out
    assert extension.active and queue.sent == []


class FailingNextClient:
    """An Extensions API client whose ``next`` fails with an error that is not the API's."""

    def next_event(self, extension_id: str) -> dict:
        raise RuntimeError("decoder bug")


def test_an_unexpected_error_while_polling_stops_the_extension_so_the_handler_sends_inline() -> None:
    queue = RecordingQueue()
    extension = PostResponseCapture(FailingNextClient(), "id", publish=queue.publish, report=lambda result: None)
    assert extension.defer("before", events(2))
    extension._thread.start()
    extension._thread.join(10)

    assert not extension.active  # before: the thread died and active stayed true, so events were deferred forever
    assert not extension.defer("after", events(1))
    assert len(queue.sent) == 2  # what it held went out on the way down


def test_a_malformed_answer_to_next_is_an_api_error() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_garbage() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"garbage\r\n\r\n")
        connection.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    client = ExtensionsApiClient(f"127.0.0.1:{listener.getsockname()[1]}")
    with pytest.raises(ExtensionsApiError, match="BadStatusLine"):
        client.next_event("id")
    listener.close()


def test_when_the_api_goes_away_the_extension_sends_what_it_holds_and_refuses_more() -> None:
    queue = RecordingQueue(held=True)  # the flush is still sending when the extension already refuses events
    with ExtensionsApiServer() as api:
        extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=lambda result: None)
        api.end_init()
        extension.defer("unfinished", events(2))
    deadline = time.monotonic() + 10
    while extension.active and time.monotonic() < deadline:
        time.sleep(0.01)

    assert not extension.active
    assert not extension.defer("next", events(1))
    assert queue.started.wait(10)
    queue.release.set()
    extension._thread.join(10)  # before: the test read the queue when the extension stopped, not when its flush ended
    assert not extension._thread.is_alive()
    assert len(queue.sent) == 2


def test_registration_is_refused_without_a_name_for_shutdown_after_init_and_next_needs_a_known_identifier(api: ExtensionsApiServer) -> None:
    base = f"http://{api.runtime_api}"

    no_name = requests.post(base + REGISTER_PATH, json={"events": ["INVOKE"]}, timeout=5)
    shutdown = requests.post(base + REGISTER_PATH, json={"events": ["INVOKE", "SHUTDOWN"]}, headers={"Lambda-Extension-Name": "x"}, timeout=5)
    unknown = requests.get(base + NEXT_PATH, headers={"Lambda-Extension-Identifier": "nope"}, timeout=5)
    api.end_init()
    late = requests.post(base + REGISTER_PATH, json={"events": ["INVOKE"]}, headers={"Lambda-Extension-Name": "x"}, timeout=5)

    assert [no_name.status_code, shutdown.status_code, unknown.status_code, late.status_code] == [400, 400, 403, 403]
    assert all(set(response.json()) == {"errorMessage", "errorType"} for response in (no_name, shutdown, unknown, late))
    with pytest.raises(ExtensionsApiError, match="HTTP 403"):
        ExtensionsApiClient(api.runtime_api).register("late", ["INVOKE"])


def test_register_answers_the_function_and_next_answers_an_invoke_event_in_aws_shape(api: ExtensionsApiServer) -> None:
    base = f"http://{api.runtime_api}"
    registered = requests.post(base + REGISTER_PATH, json={"events": ["INVOKE"]}, headers={"Lambda-Extension-Name": "probe"}, timeout=5)
    identifier = registered.headers["Lambda-Extension-Identifier"]
    polled: list[requests.Response] = []
    poll = threading.Thread(target=lambda: polled.append(requests.get(base + NEXT_PATH, headers={"Lambda-Extension-Identifier": identifier}, timeout=10)))
    poll.start()

    api.begin_invoke("req-1", deadline_ms=1_700_000_000_000, invoked_function_arn=ARN)
    poll.join(10)

    assert registered.json() == {"functionName": "sml-predict", "functionVersion": "$LATEST", "handler": "functions.predict.app.handler"}
    [event] = polled
    assert event.headers["Lambda-Extension-Event-Identifier"]
    body = event.json()
    assert set(body) == {"eventType", "deadlineMs", "requestId", "invokedFunctionArn", "tracing"}
    assert (body["eventType"], body["deadlineMs"], body["requestId"], body["invokedFunctionArn"]) == ("INVOKE", 1_700_000_000_000, "req-1", ARN)
    assert body["tracing"]["type"] == "X-Amzn-Trace-Id" and body["tracing"]["value"].startswith("Root=1-")


SIGTERM_SCRIPT = """
import json, sys, threading, time, uuid
from sml.core.events import build_prediction_event
from sml.local.extensions_api import ExtensionsApiServer
from sml.predict.capture import CaptureResult
from sml.predict.capture_extension import PostResponseCapture

def report(result):
    for miss in result.misses:
        print(json.dumps({"capture_miss": miss.reason, "prediction_id": miss.event_id, "message_body": miss.body}), flush=True)

never = threading.Event()
def publish(batch):
    print("sending", flush=True)
    never.wait()
    return CaptureResult(len(batch), 0, ())

api = ExtensionsApiServer().start()
extension = PostResponseCapture.register(api.runtime_api, publish=publish, report=report)
assert extension.install_sigterm_handler()
batch = [build_prediction_event(model_name="m", model_version="v1", features={"x": float(i)}, prediction="a") for i in range(3)]
api.begin_invoke("r1", deadline_ms=int((time.time() + 60) * 1000), invoked_function_arn="arn")
extension.defer("r1", batch)
extension.end_invocation("r1")
while True:
    time.sleep(0.05)
"""


def test_sigterm_while_a_send_is_under_way_logs_every_pending_event_and_still_ends_the_process() -> None:
    environment = {**os.environ, "PYTHONPATH": f"{REPO / 'shared'}{os.pathsep}{REPO}"}
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT], stdout=subprocess.PIPE, text=True, env=environment)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "sending"

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)

    assert process.returncode == -signal.SIGTERM
    misses = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(misses) == 3
    assert {miss["capture_miss"] for miss in misses} == {SHUTDOWN_MISS_REASON}
    assert [parse_prediction_event(miss["message_body"]).prediction_id for miss in misses] == [miss["prediction_id"] for miss in misses]


def test_events_of_an_invocation_whose_invoke_never_came_go_out_with_the_next_one(api: ExtensionsApiServer) -> None:
    queue = RecordingQueue()
    extension = PostResponseCapture.register(api.runtime_api, publish=queue.publish, report=lambda result: None)
    orphan = events(2)
    extension.defer("no-invoke-event", orphan)
    extension.end_invocation("no-invoke-event")

    batch = events(1)
    invoke(api, extension, batch)
    api.wait_post_invoke(timeout_s=10)

    assert sorted(event.prediction_id for event in queue.sent) == sorted(event.prediction_id for event in orphan + batch)


def test_a_publisher_that_raises_turns_the_events_into_misses_and_the_extension_keeps_going(api: ExtensionsApiServer) -> None:
    reports: list[CaptureResult] = []
    calls: list[int] = []

    def broken_then_fine(batch: Sequence[PredictionEvent]) -> CaptureResult:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model cache gone")
        return CaptureResult(len(batch), 0, ())

    extension = PostResponseCapture.register(api.runtime_api, publish=broken_then_fine, report=reports.append)
    first = events(2)
    invoke(api, extension, first)
    api.wait_post_invoke(timeout_s=10)
    invoke(api, extension, events(1))
    api.wait_post_invoke(timeout_s=10)

    assert [miss.event_id for miss in reports[0].misses] == [event.prediction_id for event in first]
    assert {miss.reason for miss in reports[0].misses} == {"RuntimeError: model cache gone"}
    assert calls == [2, 1] and reports[1].sent == 1 and extension.active
