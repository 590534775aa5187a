"""Predict's SQS publisher: one prediction event per row (and one refusal event per refused
request), bounded in time, never the database.

A capture failure never fails the prediction by itself: :meth:`PredictionCapture.capture`
returns the events that did not reach the queue (:class:`CaptureMiss`, with the exact message
body) and the caller decides what to do with them (log them for recovery, or fail closed).

Time is bounded by the client: build it with :data:`CAPTURE_CLIENT_CONFIG` (1 s to connect, 2 s
to read, at most one retry). After a call fails, the request's remaining events are not tried,
so a queue outage costs one bounded call per request, not one per chunk of ten.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sml.core.events import PredictionEvent, RefusalEvent, event_id, serialise_event

# botocore's "max_attempts" counts retries only; "total_max_attempts": 2 is the first try plus one retry.
CAPTURE_CLIENT_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})
SQS_BATCH_LIMIT = 10
CapturedEvent = PredictionEvent | RefusalEvent


@dataclass(frozen=True)
class CaptureMiss:
    """An event that did not reach the queue: its id (``prediction_id``, or ``refusal_id`` of a
    refusal), its message ``body`` as it would have been sent, and why."""

    event_id: str
    body: str
    reason: str


@dataclass(frozen=True)
class CaptureResult:
    """What happened to a request's events: ``sent`` and ``sampled_out`` counts and the ``misses``."""

    sent: int
    sampled_out: int
    misses: tuple[CaptureMiss, ...]


class PredictionCapture:
    """Publishes prediction events to the events queue, sampled at ``sampling_rate``.

    :param sqs_client: a boto3 SQS client, built with :data:`CAPTURE_CLIENT_CONFIG`.
    :param queue_url: the events queue.
    :param sampling_rate: the share of events sent, 0 to 1; each event is drawn independently.
    :param draw: returns a number in [0, 1) per event (``random.random``; fixed in tests).
    """

    def __init__(self, sqs_client: Any, queue_url: str, *, sampling_rate: float = 1.0, draw: Callable[[], float] = random.random) -> None:
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be within [0, 1], got {sampling_rate}")
        self.sqs_client = sqs_client
        self.queue_url = queue_url
        self.sampling_rate = sampling_rate
        self._draw = draw

    def capture(self, events: Sequence[CapturedEvent]) -> CaptureResult:
        """Send the sampled ``events``: SendMessage for one, SendMessageBatch in chunks of ten for more."""
        sampled = self.sample(events)
        result = self.send(sampled)
        return CaptureResult(sent=result.sent, sampled_out=len(events) - len(sampled), misses=result.misses)

    def sample(self, events: Sequence[CapturedEvent]) -> list[CapturedEvent]:
        """The events to capture, in order: each kept with probability ``sampling_rate``.

        Refusal events are sampled at the same rate as predictions, so the share of refused
        values that data quality computes from the stored rows stays unbiased."""
        if self.sampling_rate >= 1.0:
            return list(events)
        return [event for event in events if self._draw() < self.sampling_rate]

    def send(self, events: Sequence[CapturedEvent]) -> CaptureResult:
        """Send ``events`` as they are (already sampled); ``sampled_out`` is 0."""
        bodies = [(event_id(event), serialise_event(event)) for event in events]
        misses = publish_message_bodies(self.sqs_client, self.queue_url, bodies)
        return CaptureResult(sent=len(bodies) - len(misses), sampled_out=0, misses=tuple(misses))


def publish_message_bodies(sqs_client: Any, queue_url: str, bodies: Sequence[tuple[str, str]]) -> list[CaptureMiss]:
    """Send ``(event id, body)`` pairs to ``queue_url``; returns those that were not accepted.

    A failed call (unreachable, throttled, queue missing) makes every event not yet accepted a
    miss, without trying the rest; a partial batch failure makes only the refused entries misses.
    """
    if len(bodies) == 1:
        prediction_id, body = bodies[0]
        try:
            sqs_client.send_message(QueueUrl=queue_url, MessageBody=body)
        except (BotoCoreError, ClientError) as exc:
            return [CaptureMiss(prediction_id, body, _describe(exc))]
        return []
    misses: list[CaptureMiss] = []
    for start in range(0, len(bodies), SQS_BATCH_LIMIT):
        chunk = bodies[start : start + SQS_BATCH_LIMIT]
        entries = [{"Id": str(index), "MessageBody": body} for index, (_, body) in enumerate(chunk)]
        try:
            response = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            reason = _describe(exc)
            return misses + [CaptureMiss(prediction_id, body, reason) for prediction_id, body in bodies[start:]]
        for failure in response.get("Failed", []):
            prediction_id, body = chunk[int(failure["Id"])]
            misses.append(CaptureMiss(prediction_id, body, f"{failure.get('Code', 'error')}: {failure.get('Message', '')}".strip()))
    return misses


def _describe(exc: BotoCoreError | ClientError) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"
