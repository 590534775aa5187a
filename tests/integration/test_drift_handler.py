"""The drift Lambda handler fed AWS's sample scheduled event, against moto and SQLite/MariaDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from drift_support import MODEL_NAME, MODEL_VERSION, build_manifest, draw_traffic, store_traffic
from moto import mock_aws

from functions.drift import app
from sml.core.db import DRIFT_RUNS, PREDICTIONS, create_db_engine
from sml.local.lambda_context import new_lambda_context
from sml.lifecycle.registry import ModelRegistry
from sml.core.settings import SettingsError

SCHEDULED_EVENT = json.loads((Path(__file__).parents[1] / "fixtures" / "eventbridge_scheduled_event.json").read_text())
EVENT_TIME = datetime(2015, 10, 8, 16, 53, 6, tzinfo=timezone.utc)


def reset_containers() -> None:
    """Forget the cached settings, clients and engine, as a new Lambda container would."""
    if app.database_engine.cache_info().currsize:
        app.database_engine().dispose()
    for factory in (app.drift_settings, app.client, app.database_engine):
        factory.cache_clear()


@pytest.fixture
def deployed(migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A champion registered in moto's S3/SSM, an alerts topic with a queue, and the function's environment."""
    with mock_aws():
        bucket = f"sml-drift-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic_arn = sns.create_topic(Name=f"drift-{uuid.uuid4().hex[:12]}")["TopicArn"]
        queue_url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        registry = ModelRegistry(s3, boto3.client("ssm", region_name="us-east-1"), bucket=bucket, app_name="sml", model_name=MODEL_NAME)
        artifact = tmp_path / "model.joblib"
        artifact.write_bytes(b"not a real model; drift reads only the manifest")
        registry.register(artifact, build_manifest(draw_traffic(10_000, seed=1)))
        registry.promote(MODEL_VERSION)
        for name, value in {
            "SML_DATABASE_URL": migrated_db_url,
            "SML_BUCKET": bucket,
            "SML_TOPIC_ARN": topic_arn,
            "SML_MODEL_NAME": MODEL_NAME,
            "SML_APP_NAME": "sml",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        reset_containers()
        yield {"database_url": migrated_db_url, "sqs": sqs, "queue_url": queue_url}
        reset_containers()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return app.handler(event, new_lambda_context("drift", region="us-east-1", timeout_s=900))


def test_scheduled_event_runs_the_window_ending_at_its_time_and_a_retry_replaces_it(deployed: dict[str, Any]) -> None:
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2, shift="mean"), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)

    first = invoke(SCHEDULED_EVENT)
    retry = invoke(SCHEDULED_EVENT)

    assert first["status"] == "DRIFT" and first["drifted_features"] == ["mean_shift"]
    assert first["window_end"] == "2015-10-08T16:53:06+00:00" and first["window_start"] == "2015-10-01T16:53:06+00:00"
    assert (first["model_name"], first["model_version"], first["current_rows"]) == (MODEL_NAME, MODEL_VERSION, 3_000)
    with engine.connect() as connection:
        assert connection.execute(sa.select(DRIFT_RUNS.c.run_id)).scalars().all() == [retry["run_id"]]
    engine.dispose()
    messages = deployed["sqs"].receive_message(QueueUrl=deployed["queue_url"], MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 2
    assert {json.loads(message["Body"])["MessageId"] for message in messages} == {first["message_id"], retry["message_id"]}


def test_the_daily_action_stores_the_champions_days_once_and_the_weekly_run_merges_them(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2, shift="mean"), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    daily = {**SCHEDULED_EVENT, "sml_action": "daily_summaries"}

    first = invoke(daily)
    again = invoke(daily)
    weekly = invoke(SCHEDULED_EVENT)

    # Eight whole days before 2015-10-08: the window's six whole days, the day it starts in, and one before.
    assert list(first["days_computed"]) == ["2015-09-30", *(f"2015-10-0{day}" for day in range(1, 8))]
    assert sum(first["days_computed"].values()) == 3_000 - rows_on(engine, "2015-10-08")
    assert again["days_computed"] == {} and again["days_unchanged"] == list(first["days_computed"])
    assert (first["model_name"], first["model_version"]) == (MODEL_NAME, MODEL_VERSION)
    assert weekly["status"] == "DRIFT" and weekly["drifted_features"] == ["mean_shift"] and weekly["current_rows"] == 3_000
    # Only the weekly run counts towards the DriftDidNotRun alarm's metric.
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{") and "_aws" in line]
    assert [record.get("weekly_runs") for record in emitted if "weekly_runs" in record or "summary_days_computed" in record] == [None, None, [1.0]]
    engine.dispose()


def rows_on(engine: Any, day: str) -> int:
    with engine.connect() as connection:
        return sum(1 for (at,) in connection.execute(sa.select(PREDICTIONS.c.predicted_at)) if str(at).startswith(day))


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_an_unknown_action_is_refused_naming_the_field(deployed: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="event field 'sml_action': 'retention' is not 'daily_summaries'"):
        invoke({**SCHEDULED_EVENT, "sml_action": "retention"})


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_missing_topic_is_refused_naming_the_variable(deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SML_TOPIC_ARN")
    reset_containers()

    with pytest.raises(SettingsError, match="^setting SML_TOPIC_ARN: required"):
        invoke(SCHEDULED_EVENT)


def test_each_feature_test_is_emitted_as_an_emf_metric_with_its_own_dimensions(deployed: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2, shift="mean"), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    engine.dispose()
    capsys.readouterr()

    invoke(SCHEDULED_EVENT)

    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{") and '"_aws"' in line]
    per_test = {(doc["feature"], doc["test"]): doc for doc in documents if "feature" in doc}
    assert ("mean_shift", "ks") in per_test and ("(predicted label)", "chi2") in per_test
    shifted = per_test[("mean_shift", "ks")]
    [directive] = shifted["_aws"]["CloudWatchMetrics"]
    assert sorted(directive["Dimensions"][0]) == ["feature", "model_name", "service", "test"]
    assert {metric["Name"] for metric in directive["Metrics"]} == {"effect_size", "effect_upper", "effect_floor", "verdict"}
    # Powertools writes each metric's values as a list (EMF allows several per document).
    assert shifted["verdict"] == [2.0] and shifted["effect_size"][0] >= shifted["effect_floor"][0] == 0.1
    assert per_test[("steady", "ks")]["verdict"] == [0.0] and per_test[("steady", "ks")]["effect_upper"][0] < 0.1


def test_a_window_that_would_not_fit_the_functions_memory_is_refused_before_reading_and_alerted(deployed: dict[str, Any]) -> None:
    from sml.monitoring.sizing import RunTooLarge

    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    small = new_lambda_context("drift", region="us-east-1", timeout_s=900, memory_limit_in_mb=200)

    with pytest.raises(RunTooLarge, match=r"3,000 predictions to read need about 230 MiB of memory against 200 MiB"):
        app.handler(SCHEDULED_EVENT, small)

    with engine.connect() as connection:
        assert connection.execute(sa.select(DRIFT_RUNS.c.run_id)).scalars().all() == []
    engine.dispose()
    [message] = deployed["sqs"].receive_message(QueueUrl=deployed["queue_url"], MaxNumberOfMessages=10)["Messages"]
    alert = json.loads(message["Body"])
    assert alert["Subject"] == f"[{MODEL_NAME}] weekly drift run refused: 3,000 predictions do not fit"
    assert "drift_memory_mib" in alert["Message"]


def test_a_run_from_the_archive_is_estimated_at_duckdbs_cost(deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # 400 MiB holds a run from the database, not DuckDB's library and the row groups it decodes.
    from sml.monitoring.sizing import RunTooLarge

    monkeypatch.setenv("SML_WINDOW_SOURCE", "duckdb")
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", "archive/")
    reset_containers()
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    engine.dispose()
    context = new_lambda_context("drift", region="us-east-1", timeout_s=900, memory_limit_in_mb=400)

    with pytest.raises(RunTooLarge, match=r"3,000 predictions to read need about 500 MiB of memory against 400 MiB \(estimate from duckdb"):
        app.handler(SCHEDULED_EVENT, context)


def test_against_the_previous_window_its_busiest_day_held_as_arrays_is_counted(deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # 6,000 rows read (230.0 MiB) fit 0.9 × 256 MiB; the previous window's day of 3,000 held as arrays (+0.75 MiB) does not.
    from sml.monitoring.sizing import RunTooLarge

    monkeypatch.setenv("SML_DRIFT_REFERENCE", "previous")
    reset_containers()
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2), start=EVENT_TIME - timedelta(days=10), end=EVENT_TIME - timedelta(days=9, hours=1))
    store_traffic(engine, draw_traffic(3_000, seed=3), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    engine.dispose()
    context = new_lambda_context("drift", region="us-east-1", timeout_s=900, memory_limit_in_mb=256)

    with pytest.raises(RunTooLarge, match=r"6,000 predictions .* against 256 MiB .*3,000 held at once"):
        app.handler(SCHEDULED_EVENT, context)


def test_event_time_is_read_as_utc_and_a_missing_time_names_the_field() -> None:
    assert app.scheduled_time(SCHEDULED_EVENT) == EVENT_TIME
    assert app.scheduled_time({**SCHEDULED_EVENT, "time": "2015-10-08T18:53:06+02:00"}) == EVENT_TIME
    with pytest.raises(ValueError, match="event field 'time'"):
        app.scheduled_time({"detail-type": "Scheduled Event"})
    with pytest.raises(ValueError, match="event field 'time': 'yesterday'"):
        app.scheduled_time({**SCHEDULED_EVENT, "time": "yesterday"})


def test_a_rule_naming_its_model_checks_that_model_and_alerts_with_it(deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Several models in one deployment: the function's SML_MODEL_NAME is the first model's; each
    # weekly rule's input names its own model and keeps the scheduled time.
    monkeypatch.setenv("SML_MODEL_NAME", "first-model")
    reset_containers()
    engine = create_db_engine(deployed["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=2, shift="mean"), start=EVENT_TIME - timedelta(days=7), end=EVENT_TIME)
    engine.dispose()

    summary = invoke({"model_name": MODEL_NAME, "time": SCHEDULED_EVENT["time"]})

    assert (summary["model_name"], summary["window_end"]) == (MODEL_NAME, "2015-10-08T16:53:06+00:00")
    [message] = deployed["sqs"].receive_message(QueueUrl=deployed["queue_url"], MaxNumberOfMessages=10)["Messages"]
    attributes = json.loads(message["Body"])["MessageAttributes"]
    assert attributes["model_name"]["Value"] == MODEL_NAME


def test_an_event_model_name_that_is_no_model_name_is_refused_naming_the_field() -> None:
    assert app.event_model_name({}, "breast-cancer") == "breast-cancer"
    with pytest.raises(ValueError, match="event field 'model_name'"):
        app.event_model_name({"model_name": "../other"}, "breast-cancer")


def test_an_event_may_name_the_version_to_check_and_a_bad_one_is_refused_naming_the_field() -> None:
    assert app.event_model_version({}) is None
    assert app.event_model_version({"model_version": "v20250101-000000-abc123"}) == "v20250101-000000-abc123"
    with pytest.raises(ValueError, match="event field 'model_version'"):
        app.event_model_version({"model_version": "../v1"})
