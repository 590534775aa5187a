"""The poller's pure parts: SQS event records and Lambda's rules for ``batchItemFailures``."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel

from sml.local.poller import MalformedBatchResponse, failed_message_ids, sqs_event_record

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:sml-events"
BATCH = ["id-1", "id-2", "id-3"]


def received_message(**extra: Any) -> dict[str, Any]:
    """One message as boto3's ``receive_message`` returns it."""
    return {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": "Test message.",
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        **extra,
    }


def test_a_record_has_aws_keys_and_values() -> None:
    record = sqs_event_record(received_message(), queue_arn=QUEUE_ARN, region="eu-west-1")

    assert record == {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": "Test message.",
        "attributes": received_message()["Attributes"],
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }


def test_message_attributes_take_aws_event_shape_with_binary_as_base64() -> None:
    message = received_message(
        MessageAttributes={
            "trace": {"StringValue": "abc", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
        MD5OfMessageAttributes="d25a6aea97eb8f585bfa92d314504a92",
    )

    record = sqs_event_record(message, queue_arn=QUEUE_ARN, region="eu-west-1")

    assert record["messageAttributes"] == {
        "trace": {"stringValue": "abc", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "blob": {"binaryValue": base64.b64encode(b"\x00\x01").decode(), "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }
    assert record["md5OfMessageAttributes"] == "d25a6aea97eb8f585bfa92d314504a92"


def test_powertools_parses_an_event_of_our_records() -> None:
    message = received_message(MessageAttributes={"trace": {"StringValue": "abc", "DataType": "String"}})

    parsed = SqsModel.model_validate({"Records": [sqs_event_record(message, queue_arn=QUEUE_ARN, region="eu-west-1")]})

    assert parsed.Records[0].messageAttributes["trace"].stringValue == "abc"
    assert parsed.Records[0].attributes.ApproximateReceiveCount == "1"


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, {"other": 1}])
def test_a_response_without_failures_means_the_whole_batch_succeeded(response: Any) -> None:
    assert failed_message_ids(response, BATCH) == set()


def test_reported_failures_are_the_failed_ids() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-3"}]}

    assert failed_message_ids(response, BATCH) == {"id-1", "id-3"}


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ("ok", "expected an object"),
        ({"batchItemFailures": "id-1"}, "must be a list"),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, "without an itemIdentifier"),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, "without an itemIdentifier"),
        ({"batchItemFailures": [{"itemIdentifer": "id-1"}]}, "without an itemIdentifier"),
        ({"batchItemFailures": [{"itemIdentifier": "id-9"}]}, "'id-9' is not a message of this batch"),
    ],
)
def test_a_malformed_response_fails_the_whole_batch(response: Any, problem: str) -> None:
    with pytest.raises(MalformedBatchResponse, match=problem):
        failed_message_ids(response, BATCH)


def test_a_long_poll_that_fails_because_the_stack_is_stopping_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    # At shutdown the endpoint stops while a long poll is still in flight on a daemon thread; its
    # connection error is expected then and must not reach the user as "polling ... failed".
    from botocore.exceptions import EndpointConnectionError

    from sml.local.poller import SqsEventSourcePoller as SqsPoller

    class EndpointGoingAway:
        def __init__(self) -> None:
            self.poller: SqsPoller | None = None

        def receive_message(self, **_: Any) -> dict[str, Any]:
            assert self.poller is not None
            self.poller._stopping.set()
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")

    sqs = EndpointGoingAway()
    poller = SqsPoller(sqs, "http://127.0.0.1:1/000000000000/q", lambda event, context: {}, poll_wait_s=1)
    sqs.poller = poller
    with caplog.at_level("WARNING", logger="sml.local.poller"):
        poller.run_forever()
    assert "failed" not in caplog.text
