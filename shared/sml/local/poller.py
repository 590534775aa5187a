"""A local SQS event source: polls a queue and calls a handler the way Lambda's mapping does.

Behaviour copied from Lambda's SQS event source mapping (with ``ReportBatchItemFailures``):
up to ``batch_size`` messages gathered for at most ``batching_window_s``; received messages stay
invisible for ``visibility_timeout_s``; the handler gets ``{"Records": [...]}`` in AWS's record
shape; afterwards every message is deleted except those the handler reported in
``batchItemFailures``. A handler that raises, or answers with a malformed ``batchItemFailures``,
fails the whole batch. Failed messages reappear after the visibility timeout and the queue's
redrive policy moves them to the DLQ after ``maxReceiveCount`` receives. With ``concurrency`` N,
N pollers gather and invoke batches side by side, as the mapping scales up to the function's
maximum concurrency.

Example::

    poller = SqsEventSourcePoller(sqs, queue_url, handler, batch_size=100, batching_window_s=2)
    poller.start()
    ...
    poller.stop()
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Self

from botocore.exceptions import BotoCoreError, ClientError

from sml.local.lambda_context import new_lambda_context

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

MAX_RECEIVE_PER_CALL = 10  # SQS's limit for one ReceiveMessage
MAX_DELETE_PER_CALL = 10  # and for one DeleteMessageBatch
# Lambda's and SQS's limits for the options
MAX_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW_S = 300
MAX_VISIBILITY_TIMEOUT_S = 43_200
MAX_POLL_WAIT_S = 20
MAX_CONCURRENCY = 1000  # Lambda's upper bound for an SQS mapping's maximum concurrency
IDLE_PAUSE_S = 0.1  # between receives that return at once (no long poll), so an empty queue costs no CPU


class MalformedBatchResponse(ValueError):
    """A ``batchItemFailures`` answer Lambda would reject, failing the whole batch."""


@dataclass
class PollerStats:
    """Running totals since the poller was created."""

    batches: int = 0
    records: int = 0
    deleted: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one batch: the message ids deleted and those left for a retry."""

    deleted: tuple[str, ...]
    failed: tuple[str, ...]


def sqs_event_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The record Lambda puts in an SQS event for one message from ``ReceiveMessage``.

    Binary attribute values become base64 strings, as in AWS's events.
    """
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _event_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _event_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _b64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [_b64(item) for item in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def failed_message_ids(response: Any, message_ids: Sequence[str]) -> set[str]:
    """The message ids a handler's response reports as failed, by Lambda's rules.

    ``None``, a dict without ``batchItemFailures`` or an empty list mean the whole batch
    succeeded.

    :raises MalformedBatchResponse: the response is not an object, or an entry lacks an
        ``itemIdentifier``, has an empty one, or names a message outside the batch; Lambda
        then treats the whole batch as failed.
    """
    if response is None:
        return set()
    if not isinstance(response, dict):
        raise MalformedBatchResponse(f"expected an object or null, got {type(response).__name__}")
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        raise MalformedBatchResponse(f"batchItemFailures must be a list, got {type(failures).__name__}")
    in_batch = set(message_ids)
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier:
            raise MalformedBatchResponse(f"batchItemFailures entry without an itemIdentifier: {item!r}")
        if identifier not in in_batch:
            raise MalformedBatchResponse(f"itemIdentifier {identifier!r} is not a message of this batch")
        failed.add(identifier)
    return failed


class SqsEventSourcePoller:
    """Feeds batches from an SQS queue to ``handler(event, context)`` on a background thread.

    :param sqs_client: a boto3 SQS client (moto's server, or in-process ``mock_aws`` in tests).
    :param queue_url: the source queue.
    :param handler: the Lambda handler; it returns ``{"batchItemFailures": [...]}`` or nothing.
    :param batch_size: most records per invocation (1 to 10000, as on Lambda).
    :param batching_window_s: how long to keep gathering after the first message arrives.
    :param visibility_timeout_s: how long received messages stay hidden from other consumers.
    :param function_name: the name in the context passed to the handler.
    :param region: ``awsRegion`` of the records and region of the function ARN.
    :param timeout_s: the function timeout the context reports.
    :param poll_wait_s: long-poll wait per receive (0 to 20 s); bounds how long :meth:`stop`
        takes. 0 makes :meth:`poll_once` return at once on an empty queue (handy in tests).
    :param concurrency: how many batches may be in the handler at once (the mapping's maximum
        concurrency); each has its own polling thread. The handler must be thread-safe then
        (the local stack passes :meth:`sml.local.worker.FunctionContainers.invoke`).
    """

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        batching_window_s: float = 1.0,
        visibility_timeout_s: int = 30,
        function_name: str = "function",
        region: str = "us-east-1",
        timeout_s: float = 30.0,
        poll_wait_s: int = 1,
        concurrency: int = 1,
    ) -> None:
        for name, value, low, high in (
            ("batch_size", batch_size, 1, MAX_BATCH_SIZE),
            ("batching_window_s", batching_window_s, 0, MAX_BATCHING_WINDOW_S),
            ("visibility_timeout_s", visibility_timeout_s, 0, MAX_VISIBILITY_TIMEOUT_S),
            ("poll_wait_s", poll_wait_s, 0, MAX_POLL_WAIT_S),
            ("concurrency", concurrency, 1, MAX_CONCURRENCY),
        ):
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.batching_window_s = batching_window_s
        self.visibility_timeout_s = visibility_timeout_s
        self.function_name = function_name
        self.region = region
        self.timeout_s = timeout_s
        self.poll_wait_s = poll_wait_s
        self.concurrency = concurrency
        self.stats = PollerStats()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Guards the decision "invoke this batch" against stop(), so stop() knows whether a
        # handler is running (worth waiting for) or only a long poll is (not worth waiting for).
        self._invoke_lock = threading.Lock()
        self._invoking = 0
        self._stats_lock = threading.Lock()

    @cached_property
    def queue_arn(self) -> str:
        """The queue's ARN (``eventSourceARN`` of the records), read once from SQS."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        return attributes["Attributes"]["QueueArn"]

    @property
    def running(self) -> bool:
        """Whether the background thread is polling."""
        return any(thread.is_alive() for thread in self._threads)

    def poll_once(self) -> BatchOutcome | None:
        """Gather one batch, invoke the handler and settle it; ``None`` when the queue was empty."""
        messages = self._gather_batch()
        with self._invoke_lock:
            # Messages received while stopping are left alone: they reappear after the
            # visibility timeout, as they would for a Lambda poller that was shut down.
            if not messages or self._stopping.is_set():
                return None
            self._invoking += 1
        try:
            return self._invoke(messages)
        finally:
            with self._invoke_lock:
                self._invoking -= 1

    def run_forever(self) -> None:
        """Poll until :meth:`stop`; SQS errors are logged and retried after a second."""
        while not self._stopping.is_set():
            try:
                if self.poll_once() is None and self.poll_wait_s == 0:
                    self._stopping.wait(IDLE_PAUSE_S)
            except (BotoCoreError, ClientError) as exc:
                if self._stopping.is_set():
                    # The stack stops its endpoint after the poller, but a long poll still in
                    # flight on this daemon thread may see the endpoint go: expected, not news.
                    break
                logger.warning("polling %s failed, retrying: %s", self.queue_url, exc)
                self._stopping.wait(1.0)

    def start(self) -> Self:
        """Run :meth:`run_forever` on ``concurrency`` daemon threads; returns ``self``."""
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self.run_forever, name=f"sqs-poller-{self.function_name}-{index}", daemon=True)
            for index in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling; a handler already running finishes first (idempotent).

        A long poll in flight is not waited for: it cannot be interrupted, and whatever it
        receives is left for the visibility timeout to return (the thread is a daemon).
        """
        with self._invoke_lock:
            self._stopping.set()
            handler_running = self._invoking > 0
        deadline = time.monotonic() + (timeout_s if handler_running else 0.05)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if handler_running and self.running:
            logger.warning("the %s poller is still running its handler after %.0f s", self.function_name, timeout_s)
        self._threads = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until_drained(self, timeout_s: float, poll_interval_s: float = 0.1) -> bool:
        """Wait until the queue has no visible, in-flight or delayed message; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
        while True:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
            if all(int(attributes.get(name, 0)) == 0 for name in names):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_interval_s)

    def _gather_batch(self) -> list[dict[str, Any]]:
        batch = self._receive(self.batch_size, wait_s=self.poll_wait_s)
        if not batch:
            return batch
        window_ends = time.monotonic() + self.batching_window_s
        while len(batch) < self.batch_size and not self._stopping.is_set():
            remaining_s = window_ends - time.monotonic()
            if remaining_s <= 0:
                break
            wait_s = min(self.poll_wait_s, int(remaining_s))
            more = self._receive(self.batch_size - len(batch), wait_s=wait_s)
            batch.extend(more)
            if not more and wait_s == 0:  # the receive did not wait, so pause rather than spin
                self._stopping.wait(min(remaining_s, IDLE_PAUSE_S))
        return batch

    def _receive(self, wanted: int, *, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(wanted, MAX_RECEIVE_PER_CALL),
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=self.visibility_timeout_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _invoke(self, messages: list[dict[str, Any]]) -> BatchOutcome:
        event = {"Records": [sqs_event_record(m, queue_arn=self.queue_arn, region=self.region) for m in messages]}
        message_ids = [m["MessageId"] for m in messages]
        context = new_lambda_context(self.function_name, region=self.region, timeout_s=self.timeout_s)
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.records += len(messages)
        try:
            response = self.handler(event, context)
        except Exception:  # as on Lambda: logged, nothing deleted, the whole batch is retried
            logger.exception("%s failed on a batch of %d; all will be retried", self.function_name, len(messages))
            failed = set(message_ids)
        else:
            try:
                failed = failed_message_ids(response, message_ids)
            except MalformedBatchResponse as exc:
                logger.error("%s returned a malformed batch response, retrying all %d: %s", self.function_name, len(messages), exc)
                failed = set(message_ids)
        succeeded = [m for m in messages if m["MessageId"] not in failed]
        deleted = self._delete(succeeded)
        with self._stats_lock:
            self.stats.deleted += len(deleted)
            self.stats.failed += len(failed)
        return BatchOutcome(deleted=tuple(deleted), failed=tuple(i for i in message_ids if i in failed))

    def _delete(self, messages: list[dict[str, Any]]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(messages), MAX_DELETE_PER_CALL):
            chunk = messages[start : start + MAX_DELETE_PER_CALL]
            entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(chunk)]
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            deleted += [chunk[int(entry["Id"])]["MessageId"] for entry in response.get("Successful", [])]
            for entry in response.get("Failed", []):
                logger.warning("could not delete message %s: %s", chunk[int(entry["Id"])]["MessageId"], entry.get("Message"))
        return deleted
