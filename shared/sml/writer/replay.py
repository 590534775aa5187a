"""The dead-letter queue: what is in it and why, and moving it back to the events queue.

A replayed message keeps its body, so its ``prediction_id`` is unchanged and the writer's
idempotent insert turns any copy (a replay rerun after an interruption, a message that was both
sent and left behind) into a skipped duplicate, never a second row.

On AWS a replay is an SQS message move task (``StartMessageMoveTask``), which runs server-side.
Where that API is missing (moto, in-process or as a server) or a limited number of messages is
asked for, messages move one batch at a time: receive, send the same body and attributes to the
target, then delete from the DLQ. A message is deleted only after it was sent, so an interrupted
replay loses nothing and can simply be run again.

Example::

    summary = inspect_dlq(sqs, dlq_url)
    outcome = replay_dlq(sqs, dlq_url, queue_url, rate=50)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from botocore.exceptions import ClientError

from sml.core.errors import SmlError
from sml.core.events import EventValidationError, parse_event

PARSES_FINE = "parses fine (likely a database/data error; see the writer's logs)"
MAX_MOVE_RATE = 500  # StartMessageMoveTask's MaxNumberOfMessagesPerSecond limit
SQS_BATCH_LIMIT = 10  # most messages per ReceiveMessage / SendMessageBatch / DeleteMessageBatch
SQS_BATCH_PAYLOAD_LIMIT = 1_048_576  # bytes of bodies and attributes in one SendMessageBatch, the same as one message's
# Long enough to send and delete a batch; a message whose send failed reappears after it.
REPLAY_VISIBILITY_TIMEOUT_S = 60
# Error codes of an endpoint without message move tasks: moto's server answers a bare HTTP 500.
_MOVE_TASK_UNSUPPORTED_CODES = frozenset({"500", "501", "NotImplemented", "InvalidAction", "UnsupportedOperation"})
_TASK_FINISHED = frozenset({"COMPLETED", "CANCELLED", "FAILED"})
_EPOCH = datetime.fromtimestamp(0, timezone.utc)
# How long `sml dlq replay` follows a move task by default; the task itself runs on regardless.
DEFAULT_MOVE_TASK_WAIT_S = 3600.0

ReplayProgress = Callable[[int, int | None], None]
"""Called as ``progress(moved, total)`` after each step; ``total`` is SQS's approximate count."""


class MoveTasksUnsupported(SmlError):
    """The SQS endpoint has no message move tasks (moto); replays run in the foreground there."""


@dataclass(frozen=True)
class DlqMessageSample:
    """One message peeked at in the DLQ, with why the writer could not store it."""

    message_id: str
    sent_at: datetime | None
    receive_count: int | None
    body: str
    reason: str


@dataclass(frozen=True)
class DlqSummary:
    """What the DLQ holds.

    ``oldest_age_s`` is the age of the oldest message seen while peeking (SQS has no exact
    attribute for it; on AWS the ``ApproximateAgeOfOldestMessage`` metric is authoritative).
    """

    queue_url: str
    visible: int
    in_flight: int
    oldest_age_s: float | None
    samples: list[DlqMessageSample]


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay did.

    ``method`` is ``message-move-task`` (AWS moved them server-side), ``receive-send-delete``
    (moved here) or ``dry-run`` (nothing moved; ``moved`` is what would be). ``send_failures``
    counts messages the target refused; they stay in the DLQ. ``task_status`` is how a move task
    ended: ``COMPLETED`` or ``CANCELLED`` (someone ran ``--cancel``; what it moved stays moved).
    """

    method: Literal["message-move-task", "receive-send-delete", "dry-run"]
    moved: int
    send_failures: int = 0
    task_handle: str | None = None
    task_status: str | None = None


@dataclass(frozen=True)
class MoveTaskStatus:
    """One message move task of the DLQ, as ``ListMessageMoveTasks`` reports it."""

    status: str
    task_handle: str | None
    moved: int
    to_move: int | None
    destination_arn: str | None
    started_at: datetime | None
    failure_reason: str | None


def failure_reason(body: str) -> str:
    """Why the writer would not store ``body``: the parser's error, or :data:`PARSES_FINE`."""
    try:
        parse_event(body)
    except EventValidationError as exc:
        return f"unparseable event: {exc}"
    return PARSES_FINE


def queue_arn(sqs: Any, queue_url: str) -> str:
    """The ARN of the queue at ``queue_url``."""
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _message_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return int(attributes.get(names[0], 0)), int(attributes.get(names[1], 0))


def inspect_dlq(sqs: Any, dlq_url: str, *, sample: int = 5, now: datetime | None = None) -> DlqSummary:
    """Count the DLQ's messages and peek at up to ``sample`` of them without hiding them.

    Peeking receives with a visibility timeout of 0, so a replay right after sees every message.

    :param sqs: a boto3 SQS client.
    :param dlq_url: the dead-letter queue.
    :param sample: how many messages to peek at (0 for counts only).
    :param now: the time ages are measured against; the current time by default.
    :returns: a :class:`DlqSummary`.
    """
    visible, in_flight = _message_counts(sqs, dlq_url)
    now = now or datetime.now(timezone.utc)
    samples: dict[str, DlqMessageSample] = {}
    while len(samples) < sample:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(SQS_BATCH_LIMIT, sample - len(samples)),
            VisibilityTimeout=0,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
        ).get("Messages", [])
        fresh = [message for message in messages if message["MessageId"] not in samples]
        if not fresh:
            break
        for message in fresh:
            samples[message["MessageId"]] = _sample(message)
    sent = [item.sent_at for item in samples.values() if item.sent_at is not None]
    oldest_age_s = (now - min(sent)).total_seconds() if sent else None
    return DlqSummary(dlq_url, visible, in_flight, oldest_age_s, list(samples.values()))


def _sample(message: dict[str, Any]) -> DlqMessageSample:
    attributes = message.get("Attributes", {})
    sent_ms = attributes.get("SentTimestamp")
    receive_count = attributes.get("ApproximateReceiveCount")
    return DlqMessageSample(
        message_id=message["MessageId"],
        sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, timezone.utc) if sent_ms else None,
        receive_count=int(receive_count) if receive_count else None,
        body=message["Body"],
        reason=failure_reason(message["Body"]),
    )


def replay_dlq(
    sqs: Any,
    dlq_url: str,
    target_queue_url: str,
    *,
    max_messages: int | None = None,
    rate: int | None = None,
    dry_run: bool = False,
    progress: ReplayProgress | None = None,
    poll_interval_s: float = 2.0,
    max_wait_s: float = DEFAULT_MOVE_TASK_WAIT_S,
    use_move_task: bool = True,
) -> ReplayOutcome:
    """Move the DLQ's messages back to ``target_queue_url`` with their bodies unchanged.

    Starts a message move task and follows it to the end; falls back to receive → send → delete
    when the endpoint has no move tasks or ``max_messages`` is given (a task cannot stop after N).
    Safe to interrupt and run again.

    :param sqs: a boto3 SQS client.
    :param dlq_url: the dead-letter queue.
    :param target_queue_url: where the messages go (the events queue).
    :param max_messages: move at most this many; all by default.
    :param rate: at most this many messages per second (1–500); unlimited by default.
    :param dry_run: only count what would move.
    :param progress: called as ``progress(moved, total)`` while moving.
    :param poll_interval_s: how often a move task's progress is read.
    :param max_wait_s: how long to follow a move task before giving up with an error (the task
        keeps running on AWS).
    :param use_move_task: ``False`` goes straight to receive → send → delete, sparing an endpoint
        known to lack move tasks (the local stack's moto server) a failing call.
    :returns: a :class:`ReplayOutcome`.
    :raises SmlError: ``max_messages`` or ``rate`` out of range, the move task failed, or it was
        still running after ``max_wait_s``.
    """
    if max_messages is not None and max_messages < 1:
        raise SmlError(f"--max must be at least 1, got {max_messages}")
    if rate is not None and not 1 <= rate <= MAX_MOVE_RATE:
        raise SmlError(f"--rate must be between 1 and {MAX_MOVE_RATE} messages per second, got {rate}")
    visible, _ = _message_counts(sqs, dlq_url)
    total = visible if max_messages is None else min(visible, max_messages)
    report = progress or _no_progress
    if dry_run:
        return ReplayOutcome("dry-run", total)
    if max_messages is None and use_move_task:
        try:
            return _run_move_task(sqs, dlq_url, target_queue_url, rate, report, poll_interval_s, max_wait_s)
        except MoveTasksUnsupported:
            pass
    return _receive_send_delete(sqs, dlq_url, target_queue_url, max_messages, rate, total, report)


def _no_progress(moved: int, total: int | None) -> None:
    return None


def _move_tasks_unsupported(error: Exception) -> bool:
    if isinstance(error, NotImplementedError):  # moto in-process raises it through botocore
        return True
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in _MOVE_TASK_UNSUPPORTED_CODES


def _call_move_task_api(sqs: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    try:
        return getattr(sqs, operation)(**kwargs)
    except (NotImplementedError, ClientError) as error:
        if _move_tasks_unsupported(error):
            raise MoveTasksUnsupported(
                "this SQS endpoint has no message move tasks (moto does not implement them); "
                "there `sml dlq replay` moves the messages itself, in the foreground: stop it with Ctrl-C"
            ) from error
        raise


def _run_move_task(
    sqs: Any,
    dlq_url: str,
    target_queue_url: str,
    rate: int | None,
    report: ReplayProgress,
    poll_interval_s: float,
    max_wait_s: float,
) -> ReplayOutcome:
    # ListMessageMoveTasks reports a TaskHandle only while a task is RUNNING (SQS API reference,
    # ListMessageMoveTasksResultEntry), so a finished task is recognised by its StartedTimestamp:
    # the first task to start after the newest one listed before ours was started is ours (a
    # queue runs one move task at a time).
    dlq_arn = queue_arn(sqs, dlq_url)
    arguments: dict[str, Any] = {"SourceArn": dlq_arn, "DestinationArn": queue_arn(sqs, target_queue_url)}
    if rate is not None:
        arguments["MaxNumberOfMessagesPerSecond"] = rate
    previous = _newest(_move_tasks_of(sqs, dlq_arn))
    handle = _call_move_task_api(sqs, "start_message_move_task", **arguments)["TaskHandle"]
    deadline = time.monotonic() + max_wait_s
    started_at: datetime | None = None
    task: MoveTaskStatus | None = None
    while True:
        task = _own_task(_move_tasks_of(sqs, dlq_arn), handle, started_at, previous)
        if task is not None:
            started_at = task.started_at
            report(task.moved, task.to_move)
            if task.status == "FAILED":
                raise SmlError(f"message move task {handle} failed after {task.moved} message(s): {task.failure_reason}")
            if task.status in _TASK_FINISHED:
                return ReplayOutcome("message-move-task", task.moved, task_handle=handle, task_status=task.status)
        if time.monotonic() >= deadline:
            seen = f"still {task.status} with {task.moved} message(s) moved" if task is not None else "not listed yet"
            raise SmlError(
                f"message move task {handle} is {seen} after {max_wait_s:g} s (--wait); it keeps running on AWS: "
                "follow it with `sml dlq replay --status`, stop it with `sml dlq replay --cancel`"
            )
        time.sleep(poll_interval_s)


def _newest(tasks: list[MoveTaskStatus]) -> MoveTaskStatus | None:
    dated = [task for task in tasks if task.started_at is not None]
    return max(dated, key=lambda task: task.started_at or _EPOCH, default=None)


def _own_task(
    tasks: list[MoveTaskStatus], handle: str, started_at: datetime | None, previous: MoveTaskStatus | None
) -> MoveTaskStatus | None:
    """The task ``handle`` names: by handle while RUNNING, then by its start time once it has none."""
    for task in tasks:
        if task.task_handle == handle:
            return task
    if started_at is not None:
        return next((task for task in tasks if task.started_at == started_at and task.task_handle is None), None)
    newest = _newest(tasks)
    if newest is None or newest.task_handle is not None:
        return None
    if previous is not None and previous.started_at is not None and newest.started_at is not None:
        if newest.started_at <= previous.started_at:
            return None
    return newest


def _receive_send_delete(
    sqs: Any,
    dlq_url: str,
    target_queue_url: str,
    max_messages: int | None,
    rate: int | None,
    total: int,
    report: ReplayProgress,
) -> ReplayOutcome:
    moved = send_failures = 0
    started = time.monotonic()
    report(0, total)
    while max_messages is None or moved < max_messages:
        wanted = SQS_BATCH_LIMIT if max_messages is None else min(SQS_BATCH_LIMIT, max_messages - moved)
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=wanted,
            VisibilityTimeout=REPLAY_VISIBILITY_TIMEOUT_S,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries = [{"Id": str(index), "MessageBody": m["Body"], **_sendable_attributes(m)} for index, m in enumerate(messages)]
        sent = []
        for batch in _within_payload_limit(entries):
            response = sqs.send_message_batch(QueueUrl=target_queue_url, Entries=batch)
            sent += [messages[int(entry["Id"])] for entry in response.get("Successful", [])]
            send_failures += len(response.get("Failed", []))
        if sent:
            sqs.delete_message_batch(
                QueueUrl=dlq_url, Entries=[{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(sent)]
            )
        moved += len(sent)
        report(moved, max(total, moved))
        if rate is not None:
            time.sleep(max(0.0, moved / rate - (time.monotonic() - started)))
    return ReplayOutcome("receive-send-delete", moved, send_failures)


def _within_payload_limit(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``entries`` in order, in batches SendMessageBatch takes: large messages (up to 1 MiB each) may need one call each."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = _payload_bytes(entry)
        if batch and size + entry_size > SQS_BATCH_PAYLOAD_LIMIT:
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        yield batch


def _payload_bytes(entry: dict[str, Any]) -> int:
    """What SQS counts of a message against the size limit: its body and each attribute's name, type and value."""
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode("utf-8")) + len(value["DataType"].encode("utf-8"))
        size += len(value["StringValue"].encode("utf-8")) if "StringValue" in value else len(value.get("BinaryValue", b""))
    return size


def _sendable_attributes(message: dict[str, Any]) -> dict[str, Any]:
    attributes = {
        name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {"MessageAttributes": attributes} if attributes else {}


def list_move_tasks(sqs: Any, dlq_url: str) -> list[MoveTaskStatus]:
    """The DLQ's recent message move tasks, newest first (``--status``).

    :raises MoveTasksUnsupported: the endpoint has no move tasks (moto).
    """
    return _move_tasks_of(sqs, queue_arn(sqs, dlq_url))


def _move_tasks_of(sqs: Any, source_arn: str) -> list[MoveTaskStatus]:
    response = _call_move_task_api(sqs, "list_message_move_tasks", SourceArn=source_arn, MaxResults=10)
    return [_move_task_status(item) for item in response.get("Results", [])]


def cancel_move_task(sqs: Any, dlq_url: str) -> MoveTaskStatus | None:
    """Cancel the DLQ's running message move task (``--cancel``); ``None`` when none runs.

    Messages it already moved stay moved.

    :returns: the task as it was when cancelled, with the count moved so far.
    :raises MoveTasksUnsupported: the endpoint has no move tasks (moto).
    """
    running = next((task for task in list_move_tasks(sqs, dlq_url) if task.status == "RUNNING"), None)
    if running is None:
        return None
    moved = _call_move_task_api(sqs, "cancel_message_move_task", TaskHandle=running.task_handle)
    return MoveTaskStatus(
        status="CANCELLING",
        task_handle=running.task_handle,
        moved=int(moved.get("ApproximateNumberOfMessagesMoved", running.moved)),
        to_move=running.to_move,
        destination_arn=running.destination_arn,
        started_at=running.started_at,
        failure_reason=None,
    )


def _move_task_status(item: dict[str, Any]) -> MoveTaskStatus:
    started_ms = item.get("StartedTimestamp")
    to_move = item.get("ApproximateNumberOfMessagesToMove")
    return MoveTaskStatus(
        status=item.get("Status", "UNKNOWN"),
        task_handle=item.get("TaskHandle"),
        moved=int(item.get("ApproximateNumberOfMessagesMoved", 0)),
        to_move=None if to_move is None else int(to_move),
        destination_arn=item.get("DestinationArn"),
        started_at=datetime.fromtimestamp(started_ms / 1000, timezone.utc) if started_ms else None,
        failure_reason=item.get("FailureReason"),
    )
