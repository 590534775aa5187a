"""Ground-truth events through the writer Lambda fed by SQS (moto): mixed with predictions, poison to the DLQ, replayed unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_writer_handler import (  # noqa: F401 - sqs, engine and _fresh_writer_container are fixtures
    MAX_RECEIVE_COUNT,
    _fresh_writer_container,
    drain,
    emitted_metrics,
    engine,
    poller,
    sqs,
)
from writer_support import (
    REJECTED_LABEL,
    add_label_rejecting_trigger,
    create_queue_with_dlq,
    drop_label_rejecting_trigger,
    event_body,
    label_body,
    prediction_id_of,
    queue_bodies,
    send_bodies,
    stored_rows,
)

from sml.core.db import GROUND_TRUTH
from sml.core.events import new_prediction_id
from sml.writer.replay import PARSES_FINE, inspect_dlq, replay_dlq


def labels(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return {row.prediction_id: row.label for row in connection.execute(sa.select(GROUND_TRUTH))}


def test_labels_and_predictions_share_the_queue_and_a_poison_label_is_replayed_once_fixed(
    sqs: Any, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add_label_rejecting_trigger(engine)
    queue_url, dlq_url = create_queue_with_dlq(sqs, max_receive_count=MAX_RECEIVE_COUNT)
    predictions = [event_body(radius=float(index)) for index in range(8)]
    early = [label_body(new_prediction_id(), "malignant") for _ in range(3)]  # before (or without) their predictions
    late = [label_body(prediction_id_of(body)) for body in predictions[:4]]
    poison = label_body(new_prediction_id(), REJECTED_LABEL)
    send_bodies(sqs, queue_url, early + predictions + late + [poison, json.dumps({"event_type": "ground_truth"})] + late[:2])

    source = poller(sqs, queue_url)
    drain(source)

    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in predictions}
    assert set(labels(engine)) == {prediction_id_of(body) for body in early + late}
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics["rows_inserted"], metrics["labels_stored"], metrics["labels_skipped"]) == (8, 7, 2)
    assert metrics["records_failed"] == 2 * MAX_RECEIVE_COUNT
    dead = inspect_dlq(sqs, dlq_url)
    reasons = {sample.body: sample.reason for sample in dead.samples}
    assert reasons[poison] == PARSES_FINE
    assert reasons[json.dumps({"event_type": "ground_truth"})].startswith("unparseable event: prediction_id: ")

    drop_label_rejecting_trigger(engine)  # the fix
    replayed = replay_dlq(sqs, dlq_url, queue_url)
    drain(source)

    assert replayed.moved == 2
    assert labels(engine)[prediction_id_of(poison)] == f'"{REJECTED_LABEL}"'
    assert len(labels(engine)) == 8
    assert len(queue_bodies(sqs, dlq_url)) == 1, "the malformed one is back in the DLQ, nothing else"
