"""Capture against SQS endpoints that refuse connections or never answer: one retry, then a miss."""

from __future__ import annotations

import socket
import boto3

from sml.predict.capture import CAPTURE_CLIENT_CONFIG, PredictionCapture
from sml.core.events import build_prediction_event, serialise_prediction_event


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_endpoint_costs_one_retry_and_returns_every_event_as_a_miss() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    sqs = boto3.session.Session(region_name="us-east-1").client("sqs", endpoint_url=endpoint, config=CAPTURE_CLIENT_CONFIG)
    attempts: list[str] = []
    sqs.meta.events.register("before-send.sqs", lambda request, **_: attempts.append(request.url))
    events = [
        build_prediction_event(model_name="m", model_version="v1", features={"x": float(i)}, prediction="a") for i in range(12)
    ]

    result = PredictionCapture(sqs, f"{endpoint}/123456789012/events").capture(events)

    assert len(attempts) == 2
    assert result.sent == 0
    assert [miss.body for miss in result.misses] == [serialise_prediction_event(event) for event in events]
    assert all(miss.reason.startswith("EndpointConnectionError") for miss in result.misses)


def test_an_endpoint_that_never_answers_is_abandoned_after_the_read_timeout_and_one_retry() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        sqs = boto3.session.Session(region_name="us-east-1").client("sqs", endpoint_url=endpoint, config=CAPTURE_CLIENT_CONFIG)
        attempts: list[str] = []
        sqs.meta.events.register("before-send.sqs", lambda request, **_: attempts.append(request.url))
        [event] = [build_prediction_event(model_name="m", model_version="v1", features={"x": 1.0}, prediction="a")]

        [miss] = PredictionCapture(sqs, f"{endpoint}/123456789012/events").capture([event]).misses

    assert len(attempts) == 2
    assert miss.reason.startswith("ReadTimeoutError")
