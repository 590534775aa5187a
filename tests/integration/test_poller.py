"""The SQS poller against moto in-process, with small handlers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from moto import mock_aws

from sml.local.poller import SqsEventSourcePoller


@dataclass
class Queues:
    sqs: Any
    queue_url: str
    dlq_url: str

    def send(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def count(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def bodies(self, queue_url: str) -> list[str]:
        messages = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return sorted(m["Body"] for m in messages.get("Messages", []))


@pytest.fixture
def queues() -> Iterator[Queues]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        name = f"events-{uuid.uuid4().hex[:12]}"
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=name, Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})}
        )["QueueUrl"]
        yield Queues(sqs, queue_url, dlq_url)


class RecordingHandler:
    """Records every event; reports records whose body is in ``failing`` as batch item failures."""

    def __init__(self, failing: Collection[str] = ()) -> None:
        self.failing = set(failing)
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {
            "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] in self.failing]
        }

    @property
    def batch_sizes(self) -> list[int]:
        return [len(event["Records"]) for event in self.events]


def poller(queues: Queues, handler: Any, **options: Any) -> SqsEventSourcePoller:
    # Visibility 0 and no long poll: retries and empty receives happen at once, so tests never wait.
    options = {"batching_window_s": 0, "visibility_timeout_s": 0, "poll_wait_s": 0, **options}
    return SqsEventSourcePoller(queues.sqs, queues.queue_url, handler, function_name="sml-writer", **options)


def drain(source: SqsEventSourcePoller) -> None:
    while source.poll_once() is not None:
        pass


def test_batches_never_exceed_the_batch_size(queues: Queues) -> None:
    queues.send(*[f"m{i}" for i in range(10)])
    handler = RecordingHandler()

    drain(poller(queues, handler, batch_size=4))

    assert handler.batch_sizes == [4, 4, 2]
    assert queues.count(queues.queue_url) == 0


def test_the_batching_window_gathers_more_than_one_receive(queues: Queues) -> None:
    queues.send(*[f"m{i}" for i in range(25)])
    handler = RecordingHandler()

    poller(queues, handler, batch_size=25, batching_window_s=5).poll_once()

    assert handler.batch_sizes == [25]


def test_without_a_batching_window_one_receive_is_one_batch(queues: Queues) -> None:
    queues.send(*[f"m{i}" for i in range(25)])
    handler = RecordingHandler()

    poller(queues, handler, batch_size=25, batching_window_s=0).poll_once()

    assert handler.batch_sizes == [10]


def test_records_name_their_queue_and_region(queues: Queues) -> None:
    queues.send("m")
    handler = RecordingHandler()
    source = poller(queues, handler, region="us-east-1")

    source.poll_once()

    record = handler.events[0]["Records"][0]
    assert record["eventSourceARN"] == source.queue_arn
    assert source.queue_arn.endswith(queues.queue_url.rsplit("/", 1)[1])
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_reported_failures_stay_in_the_queue_and_the_rest_is_deleted(queues: Queues) -> None:
    queues.send("good-1", "bad-1", "good-2", "bad-2")
    source = poller(queues, RecordingHandler(failing={"bad-1", "bad-2"}))

    outcome = source.poll_once()

    assert outcome is not None and len(outcome.deleted) == 2 and len(outcome.failed) == 2
    assert queues.bodies(queues.queue_url) == ["bad-1", "bad-2"]
    assert (source.stats.deleted, source.stats.failed) == (2, 2)


def test_a_handler_that_raises_deletes_nothing(queues: Queues) -> None:
    queues.send("a", "b", "c")

    def broken(event: dict[str, Any], context: Any) -> None:
        raise ConnectionError("database down")

    outcome = poller(queues, broken).poll_once()

    assert outcome is not None and outcome.deleted == ()
    assert queues.bodies(queues.queue_url) == ["a", "b", "c"]


def test_a_malformed_batch_response_deletes_nothing(queues: Queues) -> None:
    queues.send("a", "b")

    outcome = poller(queues, lambda event, context: {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}).poll_once()

    assert outcome is not None and outcome.deleted == ()
    assert queues.bodies(queues.queue_url) == ["a", "b"]


def test_a_poison_message_lands_in_the_dlq_after_five_receives(queues: Queues) -> None:
    queues.send("poison", "fine")
    handler = RecordingHandler(failing={"poison"})
    source = poller(queues, handler)

    drain(source)

    poison_receive_counts = [
        record["attributes"]["ApproximateReceiveCount"]
        for event in handler.events
        for record in event["Records"]
        if record["body"] == "poison"
    ]
    assert poison_receive_counts == ["1", "2", "3", "4", "5"]
    assert queues.count(queues.queue_url) == 0
    assert queues.bodies(queues.dlq_url) == ["poison"]


def test_a_powertools_batch_handler_reports_only_its_bad_records(queues: Queues) -> None:
    processor = BatchProcessor(event_type=EventType.SQS)
    stored: list[str] = []

    def store(record: Any) -> None:
        if record.body.startswith("bad"):
            raise ValueError(f"cannot parse {record.body}")
        stored.append(record.body)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_partial_response(event=event, record_handler=store, processor=processor, context=context)

    queues.send("ok-1", "bad-1", "ok-2")

    poller(queues, handler).poll_once()

    assert sorted(stored) == ["ok-1", "ok-2"]
    assert queues.bodies(queues.queue_url) == ["bad-1"]


def test_the_background_thread_drains_the_queue_and_stops(queues: Queues) -> None:
    queues.send(*[f"m{i}" for i in range(15)])
    handler = RecordingHandler()
    source = poller(queues, handler, batch_size=10, visibility_timeout_s=30, poll_wait_s=1).start()
    assert source.running

    drained = source.wait_until_drained(timeout_s=30)
    source.stop()

    assert drained
    assert sum(handler.batch_sizes) == 15
    assert source.stats.records == 15 and source.stats.deleted == 15
    assert not source.running


def test_invalid_options_name_the_option(queues: Queues) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        poller(queues, RecordingHandler(), batch_size=0)


def test_stop_waits_for_a_running_handler_to_finish_its_batch(queues: Queues) -> None:
    started, finished = threading.Event(), threading.Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started.set()
        time.sleep(0.3)
        finished.set()
        return {"batchItemFailures": []}

    queues.send("one")
    source = poller(queues, slow, poll_wait_s=1, visibility_timeout_s=30).start()
    assert started.wait(10)
    source.stop()
    assert finished.is_set()
    assert queues.count(queues.queue_url) == 0


class HeldReceive:
    """An SQS client whose ``ReceiveMessage`` waits until released: a long poll in flight, held there."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.receiving = threading.Event()
        self.release = threading.Event()

    def receive_message(self, **request: Any) -> dict[str, Any]:
        self.receiving.set()
        self.release.wait(30)
        return self._sqs.receive_message(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_messages_a_stopping_poller_receives_are_left_for_the_visibility_timeout(queues: Queues) -> None:
    # stop() does not wait out a long poll in flight; what that poll brings back after stop() is
    # neither handed to the handler nor deleted, as with a Lambda poller that was shut down.
    # Before: sleeps that assumed the poll had begun within 0.2 s and returned within 2 s.
    handler = RecordingHandler()
    sqs = HeldReceive(queues.sqs)
    source = SqsEventSourcePoller(sqs, queues.queue_url, handler, function_name="sml-writer", batching_window_s=0, visibility_timeout_s=0, poll_wait_s=2)
    source.start()
    polling = list(source._threads)
    assert sqs.receiving.wait(10)
    source.stop()
    queues.send("arrived during shutdown")
    sqs.release.set()  # the poll in flight now returns the message
    for thread in polling:
        thread.join(10)
        assert not thread.is_alive()

    assert handler.events == []
    [message] = queues.sqs.receive_message(QueueUrl=queues.queue_url, VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert message["Body"] == "arrived during shutdown"
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"  # the stopping poller received it once and left it


def test_with_concurrency_several_batches_are_in_the_handler_at_once(queues: Queues) -> None:
    queues.send(*[f"m{i}" for i in range(6)])
    inside, most_inside, lock = 0, 0, threading.Lock()
    three_inside, all_handled = threading.Event(), threading.Event()
    handled: list[str] = []

    def held_until_three_are_inside(event: dict[str, Any], context: Any) -> None:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
            if inside == 3:
                three_inside.set()
        # Before: a 1 s sleep, which a poller thread held up for longer under load did not overlap.
        three_inside.wait(30)  # a bound for a broken build, not a timing threshold
        with lock:
            inside -= 1
            handled.extend(record["body"] for record in event["Records"])
            if len(handled) == 6:
                all_handled.set()

    source = poller(queues, held_until_three_are_inside, batch_size=1, concurrency=3, visibility_timeout_s=30).start()
    try:
        assert all_handled.wait(30)
    finally:
        source.stop()  # waits for the last batch's delete: its handler is still running

    assert sorted(handled) == [f"m{i}" for i in range(6)]
    assert most_inside == 3
    assert source.stats.batches == 6 and source.stats.deleted == 6
