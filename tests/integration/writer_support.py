"""Helpers shared by the writer and DLQ tests: events, a rejecting trigger, queues, reading rows back."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.db import PREDICTIONS, dialect_family
from sml.core.events import build_ground_truth_event, build_prediction_event, serialise_ground_truth_event, serialise_prediction_event

# Events of this model pass the contract but the database refuses them while the trigger exists:
# a stand-in for any data error, the same on SQLite and MySQL.
REJECTED_MODEL = "rejected-model"
TRIGGER_MESSAGE = "model rejected by the test trigger"
# Labels with this value pass the contract but the database refuses them while their trigger exists.
REJECTED_LABEL = "rejected-label"
LABELLED_AT = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)


def event_body(model_name: str = "breast-cancer", **features: Any) -> str:
    """The SQS body of a new, valid prediction event."""
    return serialise_prediction_event(
        build_prediction_event(
            model_name=model_name,
            model_version="v1",
            features=features or {"radius": 14.2, "texture": 20.1},
            prediction="malignant",
            probabilities={"benign": 0.3, "malignant": 0.7},
        )
    )


def label_body(prediction_id: str, label: Any = "benign", labelled_at: datetime = LABELLED_AT, source: str | None = "crm") -> str:
    """The SQS body of a valid ground-truth event."""
    return serialise_ground_truth_event(
        build_ground_truth_event(prediction_id=prediction_id, label=label, labelled_at=labelled_at, source=source)
    )


def prediction_id_of(body: str) -> str:
    return json.loads(body)["prediction_id"]


def add_rejecting_trigger(engine: Engine) -> None:
    """Make the database refuse rows of :data:`REJECTED_MODEL` with a data error."""
    if dialect_family(engine) == "sqlite":
        statement = (
            f"CREATE TRIGGER reject_model BEFORE INSERT ON predictions WHEN NEW.model_name = '{REJECTED_MODEL}' "
            f"BEGIN SELECT RAISE(ABORT, '{TRIGGER_MESSAGE}'); END"
        )
    else:
        statement = (
            f"CREATE TRIGGER reject_model BEFORE INSERT ON predictions FOR EACH ROW BEGIN "
            f"IF NEW.model_name = '{REJECTED_MODEL}' THEN SIGNAL SQLSTATE '22000' SET MESSAGE_TEXT = '{TRIGGER_MESSAGE}'; END IF; END"
        )
    with engine.begin() as connection:
        connection.exec_driver_sql(statement)


def drop_label_rejecting_trigger(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER reject_label")


def add_label_rejecting_trigger(engine: Engine) -> None:
    """Make the database refuse labels :data:`REJECTED_LABEL` with a data error (SQLSTATE 22000 / ABORT)."""
    stored = f'\'"{REJECTED_LABEL}"\''  # the label column holds JSON text
    if dialect_family(engine) == "sqlite":
        statement = (
            f"CREATE TRIGGER reject_label BEFORE INSERT ON ground_truth WHEN NEW.label = {stored} "
            "BEGIN SELECT RAISE(ABORT, 'label rejected by the test trigger'); END"
        )
    else:
        statement = (
            f"CREATE TRIGGER reject_label BEFORE INSERT ON ground_truth FOR EACH ROW BEGIN IF NEW.label = {stored} "
            "THEN SIGNAL SQLSTATE '22000' SET MESSAGE_TEXT = 'label rejected by the test trigger'; END IF; END"
        )
    with engine.begin() as connection:
        connection.exec_driver_sql(statement)


def drop_rejecting_trigger(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER reject_model")


def stored_rows(engine: Engine) -> dict[str, sa.Row[Any]]:
    """Every row of ``predictions`` by ``prediction_id``."""
    with engine.connect() as connection:
        return {row.prediction_id: row for row in connection.execute(sa.select(PREDICTIONS))}


def row_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(PREDICTIONS)).scalar_one()


def unreachable_database_url(db_url: str, tmp_path: Path) -> str:
    """A URL of the same kind as ``db_url`` where no database answers (refused, or unopenable)."""
    if db_url.startswith("sqlite"):
        directory = tmp_path / f"not-a-database-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        return f"sqlite:///{directory}"
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"mysql+pymysql://root@127.0.0.1:{port}/nowhere"


def create_queue_with_dlq(sqs: Any, *, max_receive_count: int = 5) -> tuple[str, str]:
    """An events queue whose redrive policy moves a message to a new DLQ after ``max_receive_count`` receives."""
    suffix = uuid.uuid4().hex[:12]
    dlq_url = sqs.create_queue(QueueName=f"sml-test-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue_url = sqs.create_queue(QueueName=f"sml-test-events-{suffix}", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    return queue_url, dlq_url


def send_bodies(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies[start : start + 10])]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]


def queue_bodies(sqs: Any, queue_url: str) -> list[str]:
    """Bodies of every visible message; the messages are visible again afterwards."""
    received: dict[str, dict[str, Any]] = {}
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", []):
        received.update({message["MessageId"]: message for message in messages})
    for message in received.values():
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return [message["Body"] for message in received.values()]
