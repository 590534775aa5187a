"""Function URL events and responses, against AWS's documented payload format 2.0.

The fixture ``function_url_event_sample.json`` is the request payload example from AWS's
"Invoking Lambda function URLs" page (docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel

from sml.local.function_url import (
    HttpRequest,
    InvalidFunctionResponse,
    build_function_url_event,
    format_request_time,
    http_response_from_result,
)

SAMPLE = json.loads((Path(__file__).parents[1] / "fixtures" / "function_url_event_sample.json").read_text())
# AWS documents these as null or left out when the URL's auth type is NONE, which is ours.
ABSENT_WITHOUT_IAM = {"pathParameters", "stageVariables", "requestContext.authentication", "requestContext.authorizer"}
SAMPLE_RECEIVED_AT = datetime.fromtimestamp(SAMPLE["requestContext"]["timeEpoch"] / 1000, tz=timezone.utc)


def request(
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> HttpRequest:
    return HttpRequest(
        method=method, target=target, protocol="HTTP/1.1", headers=headers or [], body=body, source_ip="127.0.0.1"
    )


def event_for(http_request: HttpRequest) -> dict[str, Any]:
    return build_function_url_event(http_request, url_id="sml-predict", request_id="id", received_at=SAMPLE_RECEIVED_AT)


def sample_request() -> HttpRequest:
    """The HTTP request AWS's sample event describes."""
    return HttpRequest(
        method="POST",
        target="/my/path?parameter1=value1&parameter1=value2&parameter2=value",
        protocol="HTTP/1.1",
        headers=[
            ("Header1", "value1"),
            ("Header2", "value1"),
            ("Header2", "value2"),
            ("Cookie", "cookie1; cookie2"),
            ("User-Agent", "agent"),
            ("Content-Type", "text/plain"),
        ],
        body=b"Hello from client!",
        source_ip="123.123.123.123",
    )


def shape(value: Any, prefix: str = "") -> dict[str, type]:
    """Every key path of a JSON document mapped to the type of its value."""
    if not isinstance(value, dict):
        return {prefix: type(value)}
    paths: dict[str, type] = {prefix: dict} if prefix else {}
    for key, item in value.items():
        paths.update(shape(item, f"{prefix}.{key}" if prefix else key))
    return paths


def without_absent(paths: dict[str, type]) -> dict[str, type]:
    return {path: kind for path, kind in paths.items() if not any(path == a or path.startswith(f"{a}.") for a in ABSENT_WITHOUT_IAM)}


def test_the_event_has_the_keys_and_types_of_aws_sample() -> None:
    event = event_for(sample_request())

    ours = shape(event)
    ours = {path: kind for path, kind in ours.items() if not path.startswith("headers.")}
    theirs = {path: kind for path, kind in without_absent(shape(SAMPLE)).items() if not path.startswith("headers.")}
    assert ours == theirs


def test_the_event_carries_the_request_as_aws_sample_does() -> None:
    event = event_for(sample_request())

    for key in ("version", "routeKey", "rawPath", "rawQueryString", "cookies", "queryStringParameters", "body", "isBase64Encoded"):
        assert event[key] == SAMPLE[key], key
    assert {name: event["headers"][name] for name in SAMPLE["headers"]} == SAMPLE["headers"]
    assert event["requestContext"]["http"] == SAMPLE["requestContext"]["http"]
    for key in ("requestId", "routeKey", "stage", "timeEpoch"):
        assert event["requestContext"][key] == SAMPLE["requestContext"][key], key


def test_an_unauthenticated_url_reports_the_anonymous_account_and_no_authorizer() -> None:
    event = event_for(sample_request())

    assert event["requestContext"]["accountId"] == "anonymous"
    assert "authorizer" not in event["requestContext"]


def test_powertools_parses_the_event() -> None:
    parsed = LambdaFunctionUrlModel.model_validate(event_for(sample_request()))

    assert parsed.requestContext.http.method == "POST"
    assert parsed.queryStringParameters == {"parameter1": "value1,value2", "parameter2": "value"}


def test_the_cookie_header_moves_to_cookies() -> None:
    event = event_for(request(headers=[("Cookie", "a=1; b=2")]))

    assert event["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in event["headers"]


def test_a_request_without_query_cookies_or_body_leaves_those_keys_out() -> None:
    event = event_for(request("/health"))

    assert "queryStringParameters" not in event
    assert "cookies" not in event
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert event["rawQueryString"] == ""


def test_query_values_are_decoded_and_blank_values_kept() -> None:
    event = event_for(request("/?name=Jane%20Doe&empty="))

    assert event["queryStringParameters"] == {"name": "Jane Doe", "empty": ""}
    assert event["rawQueryString"] == "name=Jane%20Doe&empty="


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "text/plain", "text/csv", "application/xml", "application/javascript"],
)
def test_text_bodies_arrive_as_text(content_type: str) -> None:
    event = event_for(request(method="POST", headers=[("Content-Type", content_type)], body='{"é": 1}'.encode()))

    assert event["body"] == '{"é": 1}'
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/x-www-form-urlencoded", "image/png"])
def test_other_bodies_arrive_base64_encoded(content_type: str | None) -> None:
    body = b"\x00\x01binary\xff"
    headers = [("Content-Type", content_type)] if content_type else []

    event = event_for(request(method="POST", headers=headers, body=body))

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_text_that_is_not_utf8_arrives_base64_encoded() -> None:
    event = event_for(request(method="POST", headers=[("Content-Type", "text/plain")], body=b"\xff\xfe"))

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


def test_request_time_uses_english_month_names_and_utc() -> None:
    moment = datetime(2021, 9, 7, 22, 50, 22, tzinfo=timezone.utc)

    assert format_request_time(moment) == "07/Sep/2021:22:50:22 +0000"


def test_a_response_payload_becomes_status_headers_cookies_and_body() -> None:
    response = http_response_from_result(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "My-Custom-Header": "Custom Value"},
            "body": '{ "message": "Hello, world!" }',
            "cookies": ["Cookie_1=Value1; Max-Age=78000", "Cookie_2=Value2"],
            "isBase64Encoded": False,
        }
    )

    assert response.status == 201
    assert ("My-Custom-Header", "Custom Value") in response.headers
    assert [value for name, value in response.headers if name == "set-cookie"] == ["Cookie_1=Value1; Max-Age=78000", "Cookie_2=Value2"]
    assert response.body == b'{ "message": "Hello, world!" }'


def test_a_base64_response_body_is_decoded() -> None:
    response = http_response_from_result({"statusCode": 200, "body": base64.b64encode(b"\x89PNG").decode(), "isBase64Encoded": True})

    assert response.body == b"\x89PNG"


@pytest.mark.parametrize(
    ("result", "body"),
    [("Hello, world!", b'"Hello, world!"'), ({"message": "Hello, world!"}, b'{"message": "Hello, world!"}'), (None, b"null")],
)
def test_any_other_return_value_is_inferred_as_a_json_200(result: Any, body: bytes) -> None:
    response = http_response_from_result(result)

    assert response.status == 200
    assert response.headers == [("content-type", "application/json")]
    assert response.body == body


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"statusCode": "200"}, "statusCode"),
        ({"statusCode": 200, "body": {"a": 1}}, "body must be a string"),
        ({"statusCode": 200, "headers": ["x"]}, "headers"),
        ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "not valid base64"),
        ({"value": float("nan")}, "not JSON-serialisable"),
        (object(), "not JSON-serialisable"),
    ],
)
def test_a_response_aws_could_not_send_is_rejected(result: Any, problem: str) -> None:
    with pytest.raises(InvalidFunctionResponse, match=problem):
        http_response_from_result(result)
