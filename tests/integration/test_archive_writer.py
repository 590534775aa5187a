"""The writer's archive step: every acknowledged record is landed and converted into the archive, a failed put is retried, copies are removed by compaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import boto3
import msgspec
import pytest
import sqlalchemy as sa
from archive_support import archived_rows, event_keys, new_archive, s3, write_and_archive  # noqa: F401 - s3 is a fixture
from moto import mock_aws
from sqlalchemy.engine import Engine
from writer_support import (
    REJECTED_LABEL,
    add_label_rejecting_trigger,
    create_queue_with_dlq,
    label_body,
    prediction_id_of,
    send_bodies,
    stored_rows,
    unreachable_database_url,
)

from functions.writer import app
from sml.archive.landing import convert_landing, landing_prefix, list_landing
from sml.archive.layout import Partition
from sml.archive.parquet import read_parquet_bytes
from sml.archive.rebuild import rebuild_tables
from sml.archive.store import ArchiveLocation, archive_rows, compact_partition, list_partition
from sml.core.db import create_db_engine
from sml.core.events import build_prediction_event, build_refusal_event, serialise_event, serialise_prediction_event
from sml.local.poller import SqsEventSourcePoller
from sml.writer.batch import parse_records

DAY = datetime(2026, 3, 4, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any]]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1"), boto3.client("s3", region_name="us-east-1")


@pytest.fixture(autouse=True)
def _fresh_writer_container() -> Iterator[None]:
    for cached in (app.database_engine, app.archive_landing):
        cached.cache_clear()
    yield
    if app.database_engine.cache_info().currsize:
        app.database_engine().dispose()
    for cached in (app.database_engine, app.archive_landing):
        cached.cache_clear()


@pytest.fixture
def engine(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("SML_DATABASE_URL", migrated_db_url)
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def archive_on(monkeypatch: pytest.MonkeyPatch, location: ArchiveLocation) -> None:
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)


def drain(sqs: Any, queue_url: str, batch_size: int = 10) -> None:
    source = SqsEventSourcePoller(sqs, queue_url, app.handler, batch_size=batch_size, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0)
    for _ in range(100):
        if source.poll_once() is None:
            return


def prediction(version: str = "v1", **features: Any) -> str:
    return serialise_prediction_event(
        build_prediction_event(
            model_name="breast-cancer",
            model_version=version,
            features=features or {"mean radius": 14.5, "grade": "b"},
            prediction="malignant",
            probabilities={"benign": 0.25, "malignant": 0.75},
            predicted_at=DAY,
        )
    )


def test_every_stored_event_is_archived_once_per_key_and_redelivery_is_removed_by_compaction(
    aws: tuple[Any, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, s3 = aws
    location = new_archive(s3)
    archive_on(monkeypatch, location)
    queue_url, _ = create_queue_with_dlq(sqs)
    bodies = [prediction() for _ in range(25)]
    labels = [label_body(prediction_id_of(body)) for body in bodies[:5]]
    send_bodies(sqs, queue_url, bodies + labels + bodies[:7])  # seven delivered twice
    drain(sqs, queue_url)
    # The writer landed its batches; nothing is in the tables' folders until the conversion step runs.
    landed = list(list_landing(s3, location))
    assert landed and archived_rows(s3, location, "predictions") == []
    converted = convert_landing(s3, location)
    assert (sorted(converted.converted), converted.failures) == (sorted(landed), [])
    assert list(list_landing(s3, location)) == []

    stored = stored_rows(engine)
    assert len(stored) == 25
    archived = archived_rows(s3, location, "predictions")
    assert set(event_keys("predictions", archived)) == {(prediction_id,) for prediction_id in stored}
    assert len(event_keys("ground_truth", archived_rows(s3, location, "ground_truth"))) >= 5
    for row in archived:
        table_row = stored[row["prediction_id"]]
        assert json.loads(row["features"]) == json.loads(table_row.features)
        assert (row["model_version"], row["prediction"], row["predicted_at"]) == (table_row.model_version, table_row.prediction, table_row.predicted_at)

    partition = Partition("predictions", DAY.date(), "breast-cancer")
    first = compact_partition(s3, location, partition)
    assert first.rows == 25 and len(first.written) == 1
    assert [item.key for item in list_partition(s3, location, partition)] == first.written
    compacted = archived_rows(s3, location, "predictions")
    assert event_keys("predictions", compacted) == sorted((prediction_id,) for prediction_id in stored)
    again = compact_partition(s3, location, partition)
    assert (again.merged, again.written) == ([], [])
    assert event_keys("predictions", archived_rows(s3, location, "predictions")) == event_keys("predictions", compacted)


def test_a_failed_put_fails_the_whole_batch_and_the_retry_archives_it(aws: tuple[Any, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs, s3 = aws
    location = ArchiveLocation("sml-archive-not-yet-created", "archive/")
    archive_on(monkeypatch, location)
    queue_url, dlq_url = create_queue_with_dlq(sqs)
    bodies = [prediction() for _ in range(12)]
    send_bodies(sqs, queue_url, bodies)
    poller = SqsEventSourcePoller(sqs, queue_url, app.handler, batch_size=10, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0)
    poller.poll_once()
    # The rows committed, but the bucket is missing: nothing may be acknowledged.
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    assert sum(int(value) for value in attributes["Attributes"].values()) == 12

    s3.create_bucket(Bucket=location.bucket)
    drain(sqs, queue_url)
    convert_landing(s3, location)
    assert sorted(prediction_id_of(body) for body in bodies) == sorted(stored_rows(engine))
    assert {key[0] for key in event_keys("predictions", archived_rows(s3, location, "predictions"))} == set(stored_rows(engine))
    assert sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_rows_the_database_rejects_are_not_archived_and_a_redelivery_is_archived_again(s3: Any, migrated_db_url: str) -> None:
    engine = create_db_engine(migrated_db_url)
    location = new_archive(s3)
    good = [prediction() for _ in range(3)]
    records = [(str(index), body) for index, body in enumerate(good)] + [("bad", "{not json")]
    outcome = write_and_archive(engine, s3, location, records, stored_at=DAY)
    assert [failure.message_id for failure in outcome.failures] == ["bad"]
    assert sorted(row["prediction_id"] for row in archived_rows(s3, location, "predictions")) == sorted(prediction_id_of(body) for body in good)
    # A redelivery finds the rows stored and lands them again: an archive put that failed before is not skipped.
    write_and_archive(engine, s3, location, records[:3], stored_at=DAY.replace(hour=11))
    archived = archived_rows(s3, location, "predictions")
    assert event_keys("predictions", archived) == sorted([(prediction_id_of(body),) for body in good] * 2)
    engine.dispose()


def test_versions_with_other_features_get_objects_of_their_own_and_stay_apart_when_compacted() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        location = new_archive(s3)
        stored_at = datetime(2026, 3, 5, tzinfo=timezone.utc)
        v1 = parse_records([(str(i), prediction("v1", a=1.5, b="x")) for i in range(3)], stored_at).rows
        v2 = parse_records([(str(i), prediction("v2", a=2.5, c=7)) for i in range(4)], stored_at).rows
        keys = archive_rows(s3, location, predictions=v1 + v2)
        assert len(keys) == 2
        partition = Partition("predictions", DAY.date(), "breast-cancer")
        compacted = compact_partition(s3, location, partition)
        assert len(compacted.written) == 2 and compacted.rows == 7
        columns = {}
        for key in compacted.written:
            table = read_parquet_bytes(s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())
            columns[table.column("model_version")[0].as_py()] = [name for name in table.column_names if name.startswith("f_")]
        assert columns == {"v1": ["f_a", "f_b"], "v2": ["f_a", "f_c"]}
        by_id = {row["prediction_id"]: json.loads(row["features"]) for row in archived_rows(s3, location, "predictions")}
        assert by_id == {row["prediction_id"]: msgspec.json.decode(row["features"]) for row in v1 + v2}


def test_refusals_and_labels_are_archived_with_their_event_ids(migrated_db_url: str) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        location = new_archive(s3)
        refusal = build_refusal_event(model_name="breast-cancer", model_version="v1", refused={"mean radius": {"out_of_range": 2}, "_request": {"not_json": 1}})
        body = serialise_event(refusal)
        label = label_body(prediction_id_of(prediction()))
        engine = create_db_engine(migrated_db_url)
        write_and_archive(engine, s3, location, [("r", body), ("l", label)])
        engine.dispose()
        refusals = archived_rows(s3, location, "predict_refusals")
        assert sorted((row["refusal_id"], row["field_name"], row["reason"], row["refused_count"]) for row in refusals) == sorted(
            [(refusal.refusal_id, "mean radius", "out_of_range", 2), (refusal.refusal_id, "_request", "not_json", 1)]
        )
        labels = archived_rows(s3, location, "ground_truth")
        assert [(row["prediction_id"], row["label"], row["source"]) for row in labels] == [(prediction_id_of(label), '"benign"', "crm")]


def test_every_label_event_of_a_batch_is_archived_and_the_table_keeps_the_latest(migrated_db_url: str) -> None:
    # The archive is the immutable log: two labels of one prediction in one batch are two events, and both must be
    # archived (a redelivered copy of one of them is not a third). The table still keeps the latest.
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        location = new_archive(s3)
        prediction_id = prediction_id_of(prediction())
        first = label_body(prediction_id, "benign", datetime(2026, 3, 4, 11, 0, tzinfo=timezone.utc))
        corrected = label_body(prediction_id, "malignant", datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc))
        engine = create_db_engine(migrated_db_url)
        outcome = write_and_archive(engine, s3, location, [("a", first), ("b", corrected), ("c", first)])
        assert outcome.failures == [] and outcome.labels_stored == 1 and outcome.labels_skipped == 2
        labels = archived_rows(s3, location, "ground_truth")
        assert sorted((row["label"], row["labelled_at"].hour) for row in labels) == [('"benign"', 11), ('"malignant"', 12)]
        # A rebuild from the archive restores the latest of them.
        for rebuilt_from_archive in (False, True):
            if rebuilt_from_archive:
                with engine.begin() as connection:
                    connection.execute(sa.text("DELETE FROM ground_truth"))
                rebuild_tables(engine, s3, location, DAY.date(), DAY.date(), tables=["ground_truth"])
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT label FROM ground_truth")).scalars().all() == ['"malignant"']
        engine.dispose()


def test_rows_the_database_rejects_are_not_landed_and_the_others_are_archived(s3: Any, migrated_db_url: str) -> None:
    engine = create_db_engine(migrated_db_url)
    add_label_rejecting_trigger(engine)
    location = new_archive(s3)
    bodies = [prediction(a=float(index), b="x") for index in range(4)]
    labels = [label_body(prediction_id_of(bodies[0])), label_body(prediction_id_of(bodies[1]), label=REJECTED_LABEL)]

    outcome = write_and_archive(engine, s3, location, [(str(index), body) for index, body in enumerate(bodies + labels)])

    assert [failure.message_id for failure in outcome.failures] == ["5"]
    archived = archived_rows(s3, location, "predictions")
    assert sorted(row["prediction_id"] for row in archived) == sorted(prediction_id_of(body) for body in bodies)
    assert {row["prediction_id"]: json.loads(row["features"]) for row in archived} == {
        prediction_id_of(body): json.loads(body)["features"] for body in bodies
    }
    assert [(row["prediction_id"], row["label"]) for row in archived_rows(s3, location, "ground_truth")] == [(prediction_id_of(bodies[0]), '"benign"')]
    engine.dispose()


def test_a_batch_the_database_does_not_take_lands_nothing(aws: tuple[Any, Any], migrated_db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    sqs, s3 = aws
    location = new_archive(s3)
    archive_on(monkeypatch, location)
    monkeypatch.setenv("SML_DATABASE_URL", unreachable_database_url(migrated_db_url, tmp_path))
    monkeypatch.setattr(app, "aws_client", lambda service, settings: s3)
    queue_url, _ = create_queue_with_dlq(sqs)
    send_bodies(sqs, queue_url, [prediction() for _ in range(3)])
    poller = SqsEventSourcePoller(sqs, queue_url, app.handler, batch_size=10, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0)

    poller.poll_once()  # the handler raised BatchNotStored: every record goes back to the queue

    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    assert sum(int(value) for value in attributes["Attributes"].values()) == 3
    assert s3.list_objects_v2(Bucket=location.bucket).get("KeyCount") == 0


def test_a_landing_put_failing_after_the_commit_fails_the_batch_and_its_retry_stores_once_and_reads_back_once(
    aws: tuple[Any, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, s3 = aws
    location = new_archive(s3)
    archive_on(monkeypatch, location)
    queue_url, dlq_url = create_queue_with_dlq(sqs)
    bodies = [prediction(a=float(index)) for index in range(8)]
    send_bodies(sqs, queue_url, bodies)
    put = s3.put_object
    puts: list[str] = []

    def first_put_fails(**kwargs: Any) -> Any:
        puts.append(kwargs["Key"])
        if len(puts) == 1:
            raise ConnectionError("stand-in for S3 failing after the rows committed")
        return put(**kwargs)

    monkeypatch.setattr(app, "aws_client", lambda service, settings: s3)
    monkeypatch.setattr(s3, "put_object", first_put_fails)
    drain(sqs, queue_url)
    convert_landing(s3, location)

    landing_puts = [key for key in puts if key.startswith(landing_prefix(location))]
    assert len(landing_puts) == 2 and landing_puts[0] != landing_puts[1]  # the retry is another batch: another stored_at, another key
    assert sorted(stored_rows(engine)) == sorted(prediction_id_of(body) for body in bodies)  # stored once: the retry inserted nothing
    archived = archived_rows(s3, location, "predictions")
    assert sorted(row["prediction_id"] for row in archived) == sorted(prediction_id_of(body) for body in bodies)
    assert sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"
