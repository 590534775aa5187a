"""Model quality in the weekly run, on SQLite and MariaDB with moto in-process S3 and SNS.

The traffic comes from a calibrated model (P(malignant | x) is the probability it outputs); labels
arrive for part of it, late, and in the concept-drift case some labels contradict what the model
got right, which the realized metrics must catch and the estimate cannot see.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from drift_support import MODEL_NAME, WINDOW_END
from moto import mock_aws
from quality_support import MANIFEST, store_labelled_traffic
from sqlalchemy.engine import Engine

from sml.core.db import QUALITY_RUNS, create_db_engine
from sml.monitoring.job import DriftJobConfig, DriftJobResult, run_drift_job
from sml.monitoring.model_quality.metrics import QualityConfig, QualityVerdict
from sml.monitoring.model_quality.store import assess_window_quality, load_quality
from sml.monitoring.store import load_drift_run
from sml.monitoring.windows import TimeWindow

@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        bucket = f"sml-quality-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        topic_arn = sns.create_topic(Name=f"quality-{uuid.uuid4().hex[:12]}")["TopicArn"]
        queue_url = sqs.create_queue(QueueName=f"degraded-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"FilterPolicy": json.dumps({"quality_status": ["DEGRADED"]})})
        yield {"s3": s3, "sns": sns, "sqs": sqs, "bucket": bucket, "topic_arn": topic_arn, "degraded_queue_url": queue_url}


def run_job(engine: Engine, aws: dict[str, Any], tmp_path: Any, **config: Any) -> DriftJobResult:
    return run_drift_job(
        DriftJobConfig(bucket=aws["bucket"], topic_arn=aws["topic_arn"], **config),
        MANIFEST,
        engine=engine,
        s3_client=aws["s3"],
        sns_client=aws["sns"],
        window_end=WINDOW_END,
        report_dir=tmp_path,
    )


def degraded_alerts(aws: dict[str, Any]) -> list[dict[str, Any]]:
    messages = aws["sqs"].receive_message(QueueUrl=aws["degraded_queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_labels_that_agree_with_the_model_give_ok_with_the_estimate_inside_the_interval(engine: Engine, aws: dict[str, Any], tmp_path: Any) -> None:
    store_labelled_traffic(engine, 3_000, labelled_share=0.4, flip_share=0.0, seed=5)

    outcome = run_job(engine, aws, tmp_path)

    quality = outcome.run.quality
    assert quality.status is QualityVerdict.OK, quality.reason
    assert quality.n_predictions == 3_000 and 0.35 < quality.coverage < 0.45
    assert quality.delay.p50 == pytest.approx(86_400.0)
    realized, estimated = quality.realized.get("f1"), quality.estimated.get("f1")
    assert realized.low <= estimated.value <= realized.high
    assert quality.estimated.n_predictions == 3_000
    assert degraded_alerts(aws) == []
    summary = outcome.summary()
    assert summary["quality_status"] == "OK" and summary["labelled"] == quality.n_labelled


def test_concept_drift_is_degraded_in_the_store_report_and_alert_while_the_estimate_holds(engine: Engine, aws: dict[str, Any], tmp_path: Any) -> None:
    store_labelled_traffic(engine, 3_000, labelled_share=0.4, flip_share=0.3, seed=6)

    outcome = run_job(engine, aws, tmp_path)
    outcome = run_job(engine, aws, tmp_path)  # a rerun of the window replaces its quality

    quality = outcome.run.quality
    assert quality.status is QualityVerdict.DEGRADED, quality.reason
    assert quality.realized.get("f1").high < MANIFEST.metrics["f1"] - 0.05
    assert abs(quality.estimated.get("f1").value - MANIFEST.metrics["f1"]) < 0.05

    stored_run = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    stored = load_quality(engine, stored_run.run["run_id"])
    assert stored.run["status"] == "DEGRADED" and stored.run["n_labelled"] == quality.n_labelled
    assert stored.value("realized", "f1")["ci_high"] == pytest.approx(quality.realized.get("f1").high)
    assert stored.value("estimated", "f1")["value"] == pytest.approx(quality.estimated.get("f1").value)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(QUALITY_RUNS)).scalar_one() == 1

    report = outcome.report_path.read_text(encoding="utf-8")
    assert "Model quality" in report and "reliability chart" in report and "DEGRADED" in report
    assert f"{quality.n_labelled} of 3000 predictions labelled" in report

    alerts = degraded_alerts(aws)
    assert len(alerts) == 2  # one per run; only the DEGRADED ones pass the filter
    attributes = {name: value["Value"] for name, value in alerts[0]["MessageAttributes"].items()}
    assert attributes["quality_status"] == "DEGRADED"
    assert "quality DEGRADED" in alerts[0]["Subject"]
    body = json.loads(alerts[0]["Message"])
    assert body["quality"]["status"] == "DEGRADED" and body["quality"]["metric"] == "f1"
    assert body["quality"]["labelled"] == quality.n_labelled


def test_too_few_labels_is_insufficient_data_and_quality_can_be_switched_off(engine: Engine, aws: dict[str, Any], tmp_path: Any) -> None:
    store_labelled_traffic(engine, 1_000, labelled_share=0.05, flip_share=0.5, seed=7)

    outcome = run_job(engine, aws, tmp_path, quality=QualityConfig(min_labels=100))
    assert outcome.run.quality.status is QualityVerdict.INSUFFICIENT_DATA
    assert "fewer than the 100 required" in outcome.run.quality.reason

    without = run_job(engine, aws, tmp_path, quality=None)
    assert without.run.quality is None and "quality_status" not in without.summary()
    assert load_quality(engine, without.run.run_id) is None


def test_the_run_reads_the_window_once_for_drift_and_quality_with_the_same_quality(engine: Engine, aws: dict[str, Any], tmp_path: Any) -> None:
    store_labelled_traffic(engine, 2_000, labelled_share=0.3, flip_share=0.2, seed=8)
    window_reads: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        # Every statement over the window's predictions has the window's range on predicted_at.
        if "predictions.predicted_at >=" in statement:
            window_reads.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        outcome = run_job(engine, aws, tmp_path)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    # Counts (of the window, its days, its versions), then its slices: one pass over the rows that
    # carries features, probabilities and labels.
    row_reads = [statement for statement in window_reads if "predictions.features" in statement]
    assert len(row_reads) == 1, window_reads
    [slices] = row_reads
    assert all("count(" in statement.lower() for statement in window_reads if statement not in row_reads)
    assert "features" in slices and "probabilities" in slices and "ground_truth" in slices
    config = DriftJobConfig(bucket=aws["bucket"])
    read_alone = assess_window_quality(engine, MANIFEST, TimeWindow.ending_at(WINDOW_END, config.window_length), config.quality)
    assert outcome.run.quality == read_alone
    assert outcome.run.quality.n_predictions == outcome.run.current_rows == 2_000


def test_each_summary_carries_the_quality_aggregate_and_two_halves_merge_into_the_whole_window(engine: Engine, aws: dict[str, Any], tmp_path: Any) -> None:
    from drift_support import WINDOW

    from sml.monitoring.model_quality.metrics import assess_aggregate
    from sml.monitoring.model_quality.store import read_window_summaries_with_quality
    from sml.monitoring.summaries import SummaryReference, WindowSummary

    store_labelled_traffic(engine, 2_000, labelled_share=0.5, flip_share=0.1, seed=4)
    reference = SummaryReference.from_manifest(MANIFEST)
    whole_window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    middle = WINDOW_END - WINDOW / 2

    def summary(window: TimeWindow) -> WindowSummary:
        [read], sample = read_window_summaries_with_quality(engine, MODEL_NAME, window, MANIFEST.features, MANIFEST.classes, [reference], manifest=MANIFEST)
        assert read.quality["classification"] is sample.aggregate
        return WindowSummary.from_json(json.loads(json.dumps(read.to_json())))

    whole = summary(whole_window)
    merged = summary(TimeWindow(whole_window.start, middle)).merge(summary(TimeWindow(middle, WINDOW_END)))

    def assessed(window_summary: WindowSummary):
        return assess_aggregate("binary", window_summary.quality["classification"], classes=("benign", "malignant"), positive_class="malignant",
                                delay_seconds=np.zeros(0), reference_metrics=MANIFEST.metrics, config=QualityConfig())  # fmt: skip

    expected, got = assessed(whole), assessed(merged)
    assert got.n_labelled == expected.n_labelled == run_job(engine, aws, tmp_path).run.quality.n_labelled
    assert [(m.metric, m.class_label) for m in got.realized.metrics] == [(m.metric, m.class_label) for m in expected.realized.metrics]
    # Sums added in another order: equal to the last bits.
    assert [bound for m in got.realized.metrics for bound in (m.value, m.low, m.high)] == pytest.approx(
        [bound for m in expected.realized.metrics for bound in (m.value, m.low, m.high)], rel=1e-12
    )
    assert np.allclose(got.estimated.expected_confusion, expected.estimated.expected_confusion)
    assert got.status is expected.status


def test_a_regression_models_weekly_read_keeps_no_row_and_gives_the_quality_of_the_array_path(engine: Engine) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from drift_support import WINDOW, MODEL_VERSION, Traffic, build_manifest, draw_traffic, traffic_rows

    from sml.core.db import GROUND_TRUTH, to_db_timestamp
    from sml.lifecycle.calibration import LABEL_FREE_KEY, fit_label_free_estimator
    from sml.lifecycle.manifest import NumericReference
    from sml.monitoring.model_quality.store import read_window_summaries_with_quality
    from sml.monitoring.summaries import SummaryReference
    from sml.writer.batch import insert_prediction_rows

    rng = np.random.default_rng(8)

    def numbers(traffic: Traffic) -> Traffic:
        predicted = [round(150 + 20 * shift + 5 * steady, 6) for shift, steady in zip(traffic.columns["mean_shift"], traffic.columns["steady"])]
        return Traffic(columns=traffic.columns, labels=predicted)  # type: ignore[arg-type]

    held_out = numbers(draw_traffic(1_000, seed=21))
    held_out_truth = [value + float(rng.normal(0, 4)) for value in held_out.labels]
    base = build_manifest(Traffic(columns=held_out.columns, labels=["x"] * held_out.rows))
    estimator = fit_label_free_estimator(
        "regression", truth=held_out_truth, predictions=held_out.labels, features=base.features, columns=held_out.columns
    )
    manifest = replace(
        base, classes=(), task="regression", estimator="LinearRegression", metrics={"rmse": 4.0, "mae": 3.2},
        reference=replace(base.reference, label_counts={}, predictions=NumericReference(sorted_values=tuple(sorted(held_out.labels)))),
        extra={LABEL_FREE_KEY: estimator},
    )
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    traffic = numbers(draw_traffic(2_000, seed=22))
    rows = traffic_rows(traffic, start=window.start, end=window.end, version=MODEL_VERSION)
    labels = []
    for row, value in zip(rows, traffic.labels):
        if rng.random() < 0.4:
            # Ties among the labels and their delays (whole hours), and one label that is not a number.
            label = json.dumps(round(value + float(rng.normal(0, 4)))) if labels else '"unknown"'
            labelled_at = row["predicted_at"] + timedelta(hours=int(rng.integers(-1, 72)))
            labels.append({"prediction_id": row["prediction_id"], "label": label, "labelled_at": labelled_at, "source": "test", "stored_at": to_db_timestamp(WINDOW_END)})
    with engine.begin() as connection:
        insert_prediction_rows(connection, rows)
        connection.execute(GROUND_TRUTH.insert(), labels)

    [_], weekly = read_window_summaries_with_quality(
        engine, MODEL_NAME, window, manifest.features, manifest.classes, [SummaryReference.from_manifest(manifest)], manifest=manifest
    )
    # Counted into the aggregate as read: no row's prediction or label is kept, only the labels' delays.
    assert weekly.predictions.size == weekly.truth.size == 0 and weekly.delay_seconds.size == len(labels)
    config = QualityConfig(min_labels=10)
    got = assess_window_quality(engine, manifest, window, config, weekly)
    expected = assess_window_quality(engine, manifest, window, config)  # the array path: every row read, then counted

    assert (got.status, got.n_predictions, got.n_labelled, got.n_labels_outside_classes) == (expected.status, 2_000, len(labels) - 1, 1)
    assert got.delay == expected.delay and got.delay.before_prediction > 0
    assert [(m.metric, m.interval) for m in got.realized.metrics] == [(m.metric, m.interval) for m in expected.realized.metrics]
    assert [bound for m in got.realized.metrics for bound in (m.value, m.low, m.high)] == pytest.approx(
        [bound for m in expected.realized.metrics for bound in (m.value, m.low, m.high)], rel=1e-9
    )
    assert got.realized.residuals.counts == expected.realized.residuals.counts
    assert (got.estimated.n_predictions, got.estimated.n_evaluated) == (expected.estimated.n_predictions, expected.estimated.n_evaluated) == (2_000, 2_000)
    assert [m.value for m in got.estimated.metrics] == pytest.approx([m.value for m in expected.estimated.metrics], rel=1e-9)
