"""The local Function URL server over real HTTP, with small handlers."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from aws_lambda_powertools import Logger

from sml.local.function_url import FunctionUrlServer
from sml.local.worker import FunctionTimeout, Throttled


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answers with the parts of the event and context the tests look at."""
    body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else (event.get("body") or "").encode()
    return {
        "statusCode": int(event.get("queryStringParameters", {}).get("status", 200)),
        "headers": {"content-type": "application/json", "x-echo-method": event["requestContext"]["http"]["method"]},
        "cookies": ["session=abc; HttpOnly", "theme=dark"],
        "body": json.dumps(
            {
                "rawPath": event["rawPath"],
                "query": event.get("queryStringParameters"),
                "header": event["headers"].get("x-custom"),
                "isBase64Encoded": event["isBase64Encoded"],
                "body_hex": body.hex(),
                "request_id": event["requestContext"]["requestId"],
                "context_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
            }
        ),
    }


def binary_image(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "image/png"}, "body": base64.b64encode(b"\x89PNG\x00").decode(), "isBase64Encoded": True}


def fails(event: dict[str, Any], context: Any) -> Any:
    raise ValueError("model not loaded")


def plain_value(event: dict[str, Any], context: Any) -> Any:
    return {"prediction": 1}


powertools_logger = Logger(service="sml-test")


@powertools_logger.inject_lambda_context
def with_powertools_context(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 204}


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FunctionUrlServer] = []

    def start(handler: Any, **options: Any) -> str:
        server = FunctionUrlServer(handler, function_name="sml-test", **options).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def test_a_request_round_trips_through_the_handler(serve: Any) -> None:
    url = serve(echo)

    response = requests.post(
        f"{url}models/predict?status=201&tag=a&tag=b", json={"x": 1}, headers={"X-Custom": "yes"}, timeout=10
    )

    assert response.status_code == 201
    assert response.headers["x-echo-method"] == "POST"
    assert response.cookies["session"] == "abc" and response.cookies["theme"] == "dark"
    seen = response.json()
    assert seen["rawPath"] == "/models/predict"
    assert seen["query"] == {"status": "201", "tag": "a,b"}
    assert seen["header"] == "yes"
    assert seen["isBase64Encoded"] is False
    assert bytes.fromhex(seen["body_hex"]) == b'{"x": 1}'
    assert seen["request_id"] == seen["context_request_id"]
    assert seen["function_name"] == "sml-test"
    assert seen["remaining_ms"] > 0


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY", "PROPFIND"])
def test_every_method_reaches_the_handler_which_decides_the_answer(serve: Any, method: str) -> None:
    url = serve(echo)

    response = requests.request(method, f"{url}predict?status=405", timeout=10)

    assert (response.status_code, response.headers["x-echo-method"]) == (405, method)


def test_a_binary_request_body_reaches_the_handler_base64_encoded(serve: Any) -> None:
    url = serve(echo)
    payload = bytes(range(256))

    seen = requests.post(url, data=payload, headers={"content-type": "application/octet-stream"}, timeout=10).json()

    assert seen["isBase64Encoded"] is True
    assert bytes.fromhex(seen["body_hex"]) == payload


def test_a_base64_response_body_is_sent_as_bytes(serve: Any) -> None:
    response = requests.get(serve(binary_image), timeout=10)

    assert response.headers["content-type"] == "image/png"
    assert response.content == b"\x89PNG\x00"


def test_a_handler_exception_becomes_a_502_with_lambda_error_body(serve: Any) -> None:
    response = requests.get(serve(fails), timeout=10)

    assert response.status_code == 502
    assert response.json() == {"errorType": "ValueError", "errorMessage": "model not loaded"}


def test_any_other_return_value_becomes_a_json_200(serve: Any) -> None:
    response = requests.get(serve(plain_value), timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"prediction": 1}


def test_a_body_over_the_limit_is_refused_with_413_before_the_handler_runs(serve: Any) -> None:
    calls: list[dict[str, Any]] = []
    url = serve(lambda event, context: calls.append(event), max_body_bytes=1024)

    response = requests.post(url, data=b"x" * 1025, timeout=10)

    assert response.status_code == 413
    assert "1024-byte limit" in response.json()["errorMessage"]
    assert calls == []


def test_powertools_logger_accepts_the_local_context(serve: Any) -> None:
    response = requests.get(serve(with_powertools_context), timeout=10)

    assert response.status_code == 204


def test_stop_releases_the_port() -> None:
    server = FunctionUrlServer(plain_value).start()
    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    server.stop()

    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((host, int(port)))


def test_responses_are_not_delayed_by_nagle_on_kept_alive_connections() -> None:
    # Regression: headers and body leave in separate writes; without TCP_NODELAY a keep-alive
    # client's delayed ACK held every response after the first for ~40 ms (13 ms p50 vs 56 ms).
    from sml.local.function_url import _request_handler_for

    with FunctionUrlServer(echo) as server:
        assert _request_handler_for(server).disable_nagle_algorithm is True



def test_an_environment_serves_waiting_invocations_in_arrival_order() -> None:
    from sml.local.function_url import _FirstComeFirstServed

    environment = _FirstComeFirstServed()
    entered: list[int] = []

    def invocation(number: int) -> None:
        with environment:
            entered.append(number)

    environment.__enter__()
    threads = []
    for number in range(6):
        threads.append(threading.Thread(target=invocation, args=(number,)))
        threads[-1].start()
        while environment.waiting < number + 1:  # this one queued before the next arrives
            time.sleep(0.001)
    environment.__exit__(None, None, None)
    for thread in threads:
        thread.join(10)

    assert entered == list(range(6))
def times_out(event: dict[str, Any], context: Any) -> Any:
    raise FunctionTimeout("Sandbox.Timedout", "Task timed out after 3.00 seconds")


def all_busy(event: dict[str, Any], context: Any) -> Any:
    raise Throttled("TooManyRequestsException", "sml-test: all 2 containers busy for 30 s")


def test_a_function_error_from_a_container_keeps_its_lambda_error_type(serve: Any) -> None:
    response = requests.get(serve(times_out), timeout=10)

    assert response.status_code == 502
    assert response.json() == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 3.00 seconds"}


def test_a_throttled_invocation_is_a_429(serve: Any) -> None:
    response = requests.get(serve(all_busy), timeout=10)

    assert response.status_code == 429
    assert response.json()["errorType"] == "TooManyRequestsException"
