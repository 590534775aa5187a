"""Predict's SQS publisher against an in-memory SQS: batching, partial failures, outages, sampling."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from sml.predict.capture import PredictionCapture, publish_message_bodies
from sml.core.events import PredictionEvent, build_prediction_event, parse_prediction_event, serialise_prediction_event


class FakeSqs:
    """The two SQS calls capture makes: ``refuse_ids`` fail inside a batch; ``down`` fails every
    call after the first ``down_after`` calls."""

    def __init__(self, *, refuse_ids: frozenset[str] = frozenset(), down: Exception | None = None, down_after: int = 0) -> None:
        self.refuse_ids = refuse_ids
        self.down = down
        self.down_after = down_after
        self.calls: list[tuple[str, int]] = []
        self.bodies: list[str] = []

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        self._call("send_message", 1)
        self.bodies.append(MessageBody)
        return {"MessageId": "m"}

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        self._call("send_message_batch", len(Entries))
        failed = []
        for entry in Entries:
            if parse_prediction_event(entry["MessageBody"]).prediction_id in self.refuse_ids:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidMessageContents", "Message": "refused"})
            else:
                self.bodies.append(entry["MessageBody"])
        return {"Successful": [], "Failed": failed}

    def _call(self, name: str, entries: int) -> None:
        self.calls.append((name, entries))
        if self.down and len(self.calls) > self.down_after:
            raise self.down


def events(count: int) -> list[PredictionEvent]:
    return [
        build_prediction_event(model_name="m", model_version="v1", features={"x": float(index)}, prediction="a", probabilities={"a": 1.0})
        for index in range(count)
    ]


def sent_ids(sqs: FakeSqs) -> list[str]:
    return [parse_prediction_event(body).prediction_id for body in sqs.bodies]


def test_one_event_goes_out_with_send_message_as_the_serialised_event() -> None:
    sqs = FakeSqs()
    [event] = events(1)

    result = PredictionCapture(sqs, "queue").capture([event])

    assert (result.sent, result.sampled_out, result.misses) == (1, 0, ())
    assert sqs.calls == [("send_message", 1)]
    assert parse_prediction_event(sqs.bodies[0]) == event


def test_many_events_go_out_in_batches_of_ten_in_order() -> None:
    sqs = FakeSqs()
    batch = events(23)

    result = PredictionCapture(sqs, "queue").capture(batch)

    assert result.sent == 23
    assert sqs.calls == [("send_message_batch", 10), ("send_message_batch", 10), ("send_message_batch", 3)]
    assert sent_ids(sqs) == [event.prediction_id for event in batch]


def test_refused_batch_entries_are_misses_with_their_body_and_reason() -> None:
    batch = events(12)
    refused = {batch[3].prediction_id, batch[11].prediction_id}
    sqs = FakeSqs(refuse_ids=frozenset(refused))

    result = PredictionCapture(sqs, "queue").capture(batch)

    assert result.sent == 10
    assert {miss.event_id for miss in result.misses} == refused
    assert all(parse_prediction_event(miss.body).prediction_id == miss.event_id for miss in result.misses)
    assert {miss.reason for miss in result.misses} == {"InvalidMessageContents: refused"}


@pytest.mark.parametrize(
    ("outage", "expected_reason"),
    [
        (
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            'EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:1"',
        ),
        (
            ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "no queue"}}, "SendMessageBatch"),
            "AWS.SimpleQueueService.NonExistentQueue: no queue",
        ),
    ],
)
def test_an_outage_makes_every_event_a_miss_after_one_call(outage: Exception, expected_reason: str) -> None:
    sqs = FakeSqs(down=outage)
    batch = events(25)

    result = PredictionCapture(sqs, "queue").capture(batch)

    assert sqs.calls == [("send_message_batch", 10)]
    assert result.sent == 0
    assert [miss.event_id for miss in result.misses] == [event.prediction_id for event in batch]
    assert {miss.reason for miss in result.misses} == {expected_reason}


def test_a_failure_after_a_sent_chunk_misses_only_the_rest() -> None:
    sqs = FakeSqs(down=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), down_after=1)
    batch = events(25)

    misses = publish_message_bodies(sqs, "queue", [(event.prediction_id, serialise_prediction_event(event)) for event in batch])

    assert len(sqs.calls) == 2
    assert sent_ids(sqs) == [event.prediction_id for event in batch[:10]]
    assert [miss.event_id for miss in misses] == [event.prediction_id for event in batch[10:]]


def test_a_single_event_outage_is_one_miss() -> None:
    sqs = FakeSqs(down=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    [event] = events(1)

    [miss] = PredictionCapture(sqs, "queue").capture([event]).misses

    assert (miss.event_id, miss.body) == (event.prediction_id, serialise_prediction_event(event))
    assert miss.reason.startswith("EndpointConnectionError: Could not connect")


def test_sampling_sends_only_the_events_whose_draw_is_below_the_rate() -> None:
    sqs = FakeSqs()
    batch = events(4)
    draws = iter([0.1, 0.5, 0.29, 0.3])

    result = PredictionCapture(sqs, "queue", sampling_rate=0.3, draw=lambda: next(draws)).capture(batch)

    assert (result.sent, result.sampled_out) == (2, 2)
    assert sent_ids(sqs) == [batch[0].prediction_id, batch[2].prediction_id]


def test_a_sampling_rate_of_zero_sends_nothing() -> None:
    sqs = FakeSqs()

    result = PredictionCapture(sqs, "queue", sampling_rate=0.0).capture(events(3))

    assert (result.sent, result.sampled_out, sqs.calls) == (0, 3, [])


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_sampling_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="sampling_rate must be within"):
        PredictionCapture(FakeSqs(), "queue", sampling_rate=rate)


def test_sample_then_send_is_capture_split_in_two_and_send_does_not_sample_again() -> None:
    sqs = FakeSqs()
    batch = events(4)
    draws = iter([0.1, 0.5, 0.29, 0.3])
    capture = PredictionCapture(sqs, "queue", sampling_rate=0.3, draw=lambda: next(draws))

    sampled = capture.sample(batch)
    result = capture.send(sampled)

    assert sampled == [batch[0], batch[2]]
    assert (result.sent, result.sampled_out, result.misses) == (2, 0, ())
    assert sent_ids(sqs) == [batch[0].prediction_id, batch[2].prediction_id]
