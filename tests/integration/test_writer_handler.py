"""The writer Lambda fed by an SQS event source (moto in-process) into SQLite and MariaDB.

The poller plays Lambda's event source mapping: it deletes what the handler acknowledged and
leaves the rest for a retry; moto's redrive policy moves a message to the DLQ after 5 receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy.engine import Engine
from writer_support import (
    REJECTED_MODEL,
    add_rejecting_trigger,
    drop_rejecting_trigger,
    create_queue_with_dlq,
    event_body,
    prediction_id_of,
    queue_bodies,
    row_count,
    send_bodies,
    stored_rows,
    unreachable_database_url,
)

from functions.writer import app
from sml.core.db import create_db_engine
from sml.local.lambda_context import new_lambda_context
from sml.local.poller import SqsEventSourcePoller
from sml.writer.replay import PARSES_FINE, inspect_dlq, replay_dlq

MAX_RECEIVE_COUNT = 5


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def forget_writer_engine() -> None:
    """Drop the writer's cached engine, as a new Lambda container starts without one."""
    if app.database_engine.cache_info().currsize:
        app.database_engine().dispose()
    app.database_engine.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_writer_container() -> Iterator[None]:
    forget_writer_engine()
    yield
    forget_writer_engine()


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point the writer at ``url`` from its next invocation on."""
    forget_writer_engine()
    monkeypatch.setenv("SML_DATABASE_URL", url)


@pytest.fixture
def engine(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The test's database, which the writer handler uses too."""
    use_database(monkeypatch, migrated_db_url)
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def poller(sqs: Any, queue_url: str, batch_size: int = 10) -> SqsEventSourcePoller:
    # Visibility timeout 0: a failed message is retried at once, so the test needs no waiting.
    return SqsEventSourcePoller(
        sqs, queue_url, app.handler, batch_size=batch_size, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0
    )


def drain(source: SqsEventSourcePoller, max_batches: int = 200) -> int:
    """Poll until the queue is empty; returns the number of batches."""
    for batch in range(max_batches):
        if source.poll_once() is None:
            return batch
    raise AssertionError(f"the queue was not empty after {max_batches} batches")


def emitted_metrics(output: str) -> dict[str, float]:
    """Sum of each metric in the EMF lines Powertools printed."""
    totals: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            values = blob[definition["Name"]]
            totals[definition["Name"]] = totals.get(definition["Name"], 0) + sum(values if isinstance(values, list) else [values])
    return totals


def test_every_event_delivered_twice_is_one_row_and_counted_as_a_duplicate(
    sqs: Any, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_url, _ = create_queue_with_dlq(sqs)
    bodies = [event_body(radius=float(index)) for index in range(30)]
    send_bodies(sqs, queue_url, bodies + bodies)

    drain(poller(sqs, queue_url))

    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in bodies}
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["rows_inserted"] == 30
    assert metrics["duplicates_skipped"] == 30
    assert metrics["records_failed"] == 0


def test_poison_fails_alone_good_rows_land_on_the_first_pass_and_poison_ends_in_the_dlq(sqs: Any, engine: Engine) -> None:
    add_rejecting_trigger(engine)
    queue_url, dlq_url = create_queue_with_dlq(sqs, max_receive_count=MAX_RECEIVE_COUNT)
    good = [event_body(radius=float(index)) for index in range(20)]
    poison = ["{not json", json.dumps({"schema_version": 1, "model_name": "x"}), event_body(REJECTED_MODEL)]
    send_bodies(sqs, queue_url, good[:7] + poison[:1] + good[7:14] + poison[1:] + good[14:])

    source = poller(sqs, queue_url)
    drain(source)

    # Each good message was received once and deleted: stored on its first pass.
    assert source.stats.deleted == len(good)
    assert source.stats.records == len(good) + len(poison) * MAX_RECEIVE_COUNT
    assert source.stats.failed == len(poison) * MAX_RECEIVE_COUNT
    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in good}
    assert sorted(queue_bodies(sqs, dlq_url)) == sorted(poison)


def test_a_body_nested_thousands_deep_fails_alone_and_inspect_says_why(sqs: Any, engine: Engine) -> None:
    # Explaining such a body raised RecursionError: its batch's valid events were retried five times
    # and went to the DLQ with it, where inspect called them "parses fine".
    queue_url, dlq_url = create_queue_with_dlq(sqs, max_receive_count=MAX_RECEIVE_COUNT)
    good = [event_body(radius=float(index)) for index in range(9)]
    deep = '{"features":' + "[" * 50_000 + "]" * 50_000 + "}"
    send_bodies(sqs, queue_url, good[:4] + [deep] + good[4:])

    source = poller(sqs, queue_url)
    drain(source)

    assert source.stats.deleted == len(good)
    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in good}
    [sample] = inspect_dlq(sqs, dlq_url).samples
    assert sample.body == deep and sample.reason == "unparseable event: body: JSON nested too deeply to read (an event nests 3 levels at most)"


def test_poison_in_the_dlq_is_fixed_then_replayed_and_its_row_written_once(sqs: Any, engine: Engine) -> None:
    add_rejecting_trigger(engine)
    queue_url, dlq_url = create_queue_with_dlq(sqs, max_receive_count=MAX_RECEIVE_COUNT)
    good, rejected = [event_body(radius=float(index)) for index in range(5)], event_body(REJECTED_MODEL)
    send_bodies(sqs, queue_url, [*good, rejected])
    source = poller(sqs, queue_url)
    drain(source)
    summary = inspect_dlq(sqs, dlq_url)

    drop_rejecting_trigger(engine)  # the fix
    send_bodies(sqs, queue_url, [rejected])  # as if an interrupted replay had sent it without deleting it
    replayed = replay_dlq(sqs, dlq_url, queue_url)
    drain(source)

    assert [(sample.body, sample.reason) for sample in summary.samples] == [(rejected, PARSES_FINE)]
    assert replayed.moved == 1
    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in [*good, rejected]}
    assert row_count(engine) == len(good) + 1
    assert queue_bodies(sqs, dlq_url) == [] and queue_bodies(sqs, queue_url) == []


def test_database_down_mid_load_acknowledges_nothing_and_loses_nothing(
    sqs: Any, engine: Engine, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    queue_url, dlq_url = create_queue_with_dlq(sqs)
    bodies = [event_body(radius=float(index)) for index in range(45)]
    send_bodies(sqs, queue_url, bodies)
    source = poller(sqs, queue_url)
    source.poll_once()
    stored_before_outage = row_count(engine)

    use_database(monkeypatch, unreachable_database_url(migrated_db_url, tmp_path))
    outage = [source.poll_once() for _ in range(2)]
    use_database(monkeypatch, migrated_db_url)
    drain(source)

    assert stored_before_outage == 10
    assert all(batch is not None and batch.deleted == () and len(batch.failed) == 10 for batch in outage)
    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in bodies}
    assert queue_bodies(sqs, dlq_url) == []


def test_an_all_poison_batch_is_reported_not_raised_and_logged_with_reasons(
    sqs: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, _ = create_queue_with_dlq(sqs)
    send_bodies(sqs, queue_url, ["nope", "[]"])

    batch = poller(sqs, queue_url).poll_once()

    assert batch is not None and batch.deleted == () and len(batch.failed) == 2
    (warning,) = [record for record in caplog.records if record.name == "writer" and record.levelname == "WARNING"]
    assert warning.getMessage() == "2 of 2 records not stored; SQS retries them, then moves them to the DLQ"
    assert {failure["message_id"] for failure in warning.failures} == set(batch.failed)
    assert any("not valid JSON" in failure["reason"] for failure in warning.failures)


def test_migrate_action_applies_the_schema_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_database(monkeypatch, db_url)
    context = new_lambda_context("writer", region="us-east-1", timeout_s=30)

    first = app.handler({"sml_action": "migrate"}, context)
    second = app.handler({"sml_action": "migrate"}, context)

    assert first["applied"][0] == "0000_schema_migrations" and "0001_predictions" in first["applied"]
    assert second == {"applied": []}
    assert emitted_metrics(capsys.readouterr().out)["migrations_applied"] == len(first["applied"])


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_an_unknown_action_is_refused_naming_it() -> None:
    context = new_lambda_context("writer", region="us-east-1", timeout_s=30)
    with pytest.raises(ValueError, match="sml_action: unknown action 'drop'"):
        app.handler({"sml_action": "drop"}, context)


def test_an_event_reusing_an_id_with_other_content_is_logged_and_counted(
    sqs: Any, engine: Engine, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_url, _ = create_queue_with_dlq(sqs)
    original = json.loads(event_body())
    send_bodies(sqs, queue_url, [json.dumps(original)])
    drain(poller(sqs, queue_url))
    send_bodies(sqs, queue_url, [json.dumps({**original, "prediction": "benign"})])

    drain(poller(sqs, queue_url))

    (warning,) = [record for record in caplog.records if record.name == "writer" and "reuse a stored prediction_id" in record.getMessage()]
    assert warning.conflicting_prediction_ids == [original["prediction_id"]]
    assert emitted_metrics(capsys.readouterr().out)["conflicting_events"] == 1
    assert stored_rows(engine)[original["prediction_id"]].prediction == '"malignant"'


def test_retention_action_runs_for_the_day_of_the_event_time(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_RETENTION_DAYS", "30")
    context = new_lambda_context("writer", region="us-east-1", timeout_s=30)

    summary = app.handler({"sml_action": "retention", "time": "2026-12-07T02:00:00Z"}, context)

    assert summary["cutoff"] == "2026-11-07"


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_retention_under_the_minimum_is_refused_naming_the_setting(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.core.settings import SettingsError

    monkeypatch.setenv("SML_RETENTION_DAYS", "7")
    context = new_lambda_context("writer", region="us-east-1", timeout_s=30)

    with pytest.raises(SettingsError, match=r"SML_RETENTION_DAYS: .*under the minimum of 22"):
        app.handler({"sml_action": "retention"}, context)
