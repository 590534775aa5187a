"""The default local AWS endpoint (fauxqs for SQS/SNS/S3, ministack for SSM), on its own.

What the stack relies on and fauxqs had to be checked for: redrive to the DLQ after
maxReceiveCount (the demo's maintenance window), replay back without move tasks, counts right
after a peek, any body SQS accepts, SNS → SQS, and a clean stop.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from sml.local.aws_endpoint import AwsServer, start_aws_server
from sml.local.stack import MAX_RECEIVE_COUNT, LocalStackConfig, create_stack_resources
from sml.writer.replay import inspect_dlq, replay_dlq

pytestmark = pytest.mark.e2e

WAIT_LIMIT_S = 30.0  # a bound on waiting, not a speed claim


@pytest.fixture(scope="module")
def server() -> Iterator[AwsServer]:
    started = start_aws_server("fauxqs", host="127.0.0.1", port=0)
    try:
        yield started
    finally:
        started.stop()


def client(service: str, server: AwsServer) -> Any:
    url = server.service_urls.get(service, server.url)
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")


@pytest.fixture
def stack_resources(server: AwsServer) -> dict[str, str]:
    name = f"e{uuid.uuid4().hex[:10]}"
    config = LocalStackConfig(app_name=name, bucket=f"{name}-models", visibility_timeout_s=1)
    return create_stack_resources({service: client(service, server) for service in ("s3", "sqs", "sns")}, config)


def counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def test_ssm_is_served_beside_fauxqs(server: AwsServer) -> None:
    assert set(server.service_urls) == {"ssm"} and server.service_urls["ssm"] != server.url
    ssm = client("ssm", server)
    ssm.put_parameter(Name="/e2e/champion", Value="v3", Type="String", Overwrite=True)
    assert ssm.get_parameter(Name="/e2e/champion")["Parameter"]["Value"] == "v3"


def test_an_event_that_keeps_failing_moves_to_the_dlq_and_replays_back_unchanged(server: AwsServer, stack_resources: dict[str, str]) -> None:
    sqs = client("sqs", server)
    queue_url, dlq_url = stack_resources["queue_url"], stack_resources["dlq_url"]
    body = json.dumps({"prediction_id": "0190a8c2-0000-7000-8000-00000000e2e1", "source": "lab 🧪"})
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    receives = []
    deadline = time.monotonic() + WAIT_LIMIT_S
    while counts(sqs, dlq_url) == (0, 0):  # never deleted, as a writer failing on a database in maintenance
        assert time.monotonic() < deadline, f"not in the DLQ after receive counts {receives}"
        for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]).get("Messages", []):
            receives.append(int(message["Attributes"]["ApproximateReceiveCount"]))
    assert receives == list(range(1, MAX_RECEIVE_COUNT + 1))

    summary = inspect_dlq(sqs, dlq_url)
    assert [sample.body for sample in summary.samples] == [body]
    assert counts(sqs, dlq_url) == (1, 0)  # the peek hides nothing: a replay right after sees it

    outcome = replay_dlq(sqs, dlq_url, queue_url)  # tries a move task first; fauxqs has none
    assert (outcome.method, outcome.moved) == ("receive-send-delete", 1)
    assert counts(sqs, dlq_url) == (0, 0)
    replayed = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5).get("Messages", [])
    assert [message["Body"] for message in replayed] == [body]


def test_a_replay_of_messages_too_large_to_batch_together_moves_them_all(server: AwsServer, stack_resources: dict[str, str]) -> None:
    # SQS caps a SendMessageBatch at 1 MiB in all, as one message: three of 600 KB go in three calls.
    sqs = client("sqs", server)
    queue_url, dlq_url = stack_resources["queue_url"], stack_resources["dlq_url"]
    bodies = sorted(json.dumps({"n": n, "pad": "😀" * 150_000}, ensure_ascii=False) for n in range(3))
    binary = {"why": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}}
    for body in bodies:
        sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageAttributes=binary)

    outcome = replay_dlq(sqs, dlq_url, queue_url, use_move_task=False)

    assert (outcome.moved, outcome.send_failures) == (3, 0)
    assert counts(sqs, dlq_url) == (0, 0)
    replayed = []
    deadline = time.monotonic() + WAIT_LIMIT_S
    while len(replayed) < 3 and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        replayed += messages.get("Messages", [])
    assert sorted(message["Body"] for message in replayed) == bodies
    assert all(message["MessageAttributes"] == binary for message in replayed)


def test_bodies_are_refused_exactly_where_sqs_refuses_them(server: AwsServer, stack_resources: dict[str, str]) -> None:
    sqs = client("sqs", server)
    outside_the_bmp = "😀 \U00057342"
    response = sqs.send_message_batch(
        QueueUrl=stack_resources["queue_url"],
        Entries=[{"Id": "astral", "MessageBody": outside_the_bmp}, {"Id": "control", "MessageBody": "bell \x07"}],
    )
    assert [entry["Id"] for entry in response["Successful"]] == ["astral"]
    assert [(entry["Id"], entry["Code"]) for entry in response["Failed"]] == [("control", "InvalidMessageContents")]


def test_the_alerts_topic_delivers_to_a_subscribed_queue(server: AwsServer, stack_resources: dict[str, str]) -> None:
    sqs, sns = client("sqs", server), client("sns", server)
    inbox = sqs.create_queue(QueueName=f"inbox-{stack_resources['topic_arn'].rsplit(':', 1)[1]}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack_resources["topic_arn"], Protocol="sqs", Endpoint=inbox_arn)

    sns.publish(TopicArn=stack_resources["topic_arn"], Subject="drift", Message="report", MessageAttributes={
        "drift_status": {"DataType": "String", "StringValue": "DRIFT"}})  # fmt: skip

    delivered = sqs.receive_message(QueueUrl=inbox, WaitTimeSeconds=5)["Messages"]
    envelope = json.loads(delivered[0]["Body"])
    assert (envelope["Subject"], envelope["Message"]) == ("drift", "report")
    assert envelope["MessageAttributes"]["drift_status"]["Value"] == "DRIFT"


def test_stopping_closes_every_port() -> None:
    started = start_aws_server("fauxqs", host="127.0.0.1", port=0)
    urls = [started.url, *started.service_urls.values()]
    started.stop()

    for url in urls:
        parts = urlsplit(url)
        with socket.socket() as probe:
            assert probe.connect_ex((parts.hostname, parts.port)) != 0, url
