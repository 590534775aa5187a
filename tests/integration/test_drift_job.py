"""The drift job on SQLite and MariaDB with moto in-process S3, SNS and SQS.

Traffic is drawn from known distributions; each kind of shift must be flagged on its own column
and test only, identical traffic must not be flagged, and too little traffic must say so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from drift_support import (
    store_refusals,
    EXPECTED_DRIFT,
    FEATURES,
    MODEL_NAME,
    MODEL_VERSION,
    WINDOW,
    WINDOW_END,
    Traffic,
    build_manifest,
    draw_traffic,
    store_traffic,
)
from moto import mock_aws
from sqlalchemy.engine import Engine

from sml.core.db import DATA_QUALITY_CHECKS, DRIFT_FEATURES, DRIFT_RUNS, create_db_engine
from sml.monitoring.drift.run import CLASS_PREDICTION_COLUMN as LABEL_COLUMN, REGRESSION_PREDICTION_COLUMN
from sml.monitoring.job import DriftJobConfig, DriftJobResult, run_drift_job
from sml.monitoring.drift.stats import DriftVerdict
from sml.core.errors import SmlError
from sml.core.events import new_prediction_id
from sml.monitoring.model_quality.store import latest_quality
from sml.monitoring.store import drift_history, feature_trends, load_drift_run, save_drift_run
from sml.monitoring.windows import MAX_CLOCK_SKEW, TimeWindow
from sml.lifecycle.manifest import ModelManifest, NumericReference

WINDOW_START = WINDOW_END - WINDOW
TRAINING = build_manifest(draw_traffic(10_000, seed=1))


@dataclass(frozen=True)
class Aws:
    s3: Any
    sns: Any
    sqs: Any
    bucket: str
    topic_arn: str
    all_queue_url: str
    drift_only_queue_url: str


def subscribe_queue(aws_sns: Any, sqs: Any, topic_arn: str, filter_policy: dict[str, Any] | None = None) -> str:
    queue_url = sqs.create_queue(QueueName=f"drift-alerts-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    aws_sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes)
    return queue_url


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        bucket = f"sml-drift-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        topic_arn = sns.create_topic(Name=f"drift-{uuid.uuid4().hex[:12]}")["TopicArn"]
        yield Aws(
            s3=s3,
            sns=sns,
            sqs=sqs,
            bucket=bucket,
            topic_arn=topic_arn,
            all_queue_url=subscribe_queue(sns, sqs, topic_arn),
            drift_only_queue_url=subscribe_queue(sns, sqs, topic_arn, {"status": ["DRIFT"]}),
        )


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def run_job(engine: Engine, aws: Aws, *, manifest: ModelManifest = TRAINING, report_dir: Path | None = None, **config: Any) -> DriftJobResult:
    return run_drift_job(
        DriftJobConfig(bucket=aws.bucket, topic_arn=aws.topic_arn, **config),
        manifest,
        engine=engine,
        s3_client=aws.s3,
        sns_client=aws.sns,
        window_end=WINDOW_END,
        report_dir=report_dir,
    )


def drifted_tests(outcome: DriftJobResult) -> set[tuple[str, str]]:
    return {(result.feature, result.test) for result in outcome.run.results if result.verdict is DriftVerdict.DRIFT}


def received(aws: Aws, queue_url: str) -> list[dict[str, Any]]:
    messages = aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def table_rows(engine: Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.select(table)).mappings()]


@pytest.mark.parametrize("shift", sorted(EXPECTED_DRIFT))
def test_each_shift_is_flagged_on_its_column_and_test_only(engine: Engine, aws: Aws, shift: str) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=2, shift=shift), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    assert outcome.run.status is DriftVerdict.DRIFT
    assert drifted_tests(outcome) == EXPECTED_DRIFT[shift]
    assert outcome.run.current_rows == 3_000


def test_identical_distributions_at_50k_rows_are_not_flagged(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(50_000, seed=3), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    assert outcome.run.status is DriftVerdict.NO_DRIFT
    assert {result.verdict for result in outcome.run.results} == {DriftVerdict.NO_DRIFT}
    assert outcome.run.current_rows == 50_000


@pytest.mark.parametrize("rows", [0, 20])
def test_too_few_rows_give_an_inconclusive_run(engine: Engine, aws: Aws, rows: int) -> None:
    if rows:
        store_traffic(engine, draw_traffic(rows, seed=4, shift="mean"), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    assert outcome.run.status is DriftVerdict.INCONCLUSIVE
    assert outcome.run.current_rows == rows
    main_tests = [result for result in outcome.run.results if result.test in ("ks", "chi2")]
    assert {result.verdict for result in main_tests} == {DriftVerdict.INCONCLUSIVE}
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert stored is not None and stored.run["status"] == "INCONCLUSIVE"
    reasons = {row["reason"] for row in stored.features if row["test"] in ("ks", "chi2")}
    assert reasons == {"below_min_samples" if rows else "empty_sample"}


def test_only_the_windows_rows_of_the_model_are_read(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=5), start=WINDOW_START, end=WINDOW_END)
    shifted = draw_traffic(500, seed=6, shift="mean")
    store_traffic(engine, shifted, start=WINDOW_START - timedelta(days=1), end=WINDOW_START)
    store_traffic(engine, shifted, start=WINDOW_END, end=WINDOW_END + timedelta(days=1))
    store_traffic(engine, draw_traffic(3_000, seed=7, shift="variance"), start=WINDOW_START, end=WINDOW_END, model_name="other-model")

    outcome = run_job(engine, aws)

    assert outcome.run.current_rows == 3_000
    assert outcome.run.status is DriftVerdict.NO_DRIFT


def test_previous_window_reference_compares_with_the_week_before(engine: Engine, aws: Aws) -> None:
    # Both weeks are shifted away from training: drift against training, none week over week.
    store_traffic(engine, draw_traffic(2_000, seed=8, shift="mean"), start=WINDOW_START - WINDOW, end=WINDOW_START)
    store_traffic(engine, draw_traffic(3_000, seed=9, shift="mean"), start=WINDOW_START, end=WINDOW_END)

    week_over_week = run_job(engine, aws, reference_kind="previous")
    against_training = run_job(engine, aws, reference_kind="training")

    assert week_over_week.run.status is DriftVerdict.NO_DRIFT
    assert week_over_week.run.reference_rows == 2_000
    assert week_over_week.run.reference_window is not None and week_over_week.run.reference_window.end == WINDOW_START
    assert drifted_tests(against_training) == EXPECTED_DRIFT["mean"]
    # The week before is a sketch, not a sample: the run and its report say so.
    assert "KLL sketches" in week_over_week.run.parameters["reference_method"]
    assert {result.detail["method"] for result in week_over_week.run.results if result.test == "ks"} == {"kll_sketch"}
    assert "reference_method" not in against_training.run.parameters


def test_rerun_of_the_same_window_replaces_the_stored_run(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=10, shift="null_spike"), start=WINDOW_START, end=WINDOW_END)

    first = run_job(engine, aws)
    second = run_job(engine, aws)

    runs = table_rows(engine, DRIFT_RUNS)
    features = table_rows(engine, DRIFT_FEATURES)
    assert [run["run_id"] for run in runs] == [second.run.run_id] != [first.run.run_id]
    assert {row["run_id"] for row in features} == {second.run.run_id}
    assert len(features) == len(second.run.results)
    checks = table_rows(engine, DATA_QUALITY_CHECKS)
    assert {row["run_id"] for row in checks} == {second.run.run_id} and len(checks) == len(second.run.data_quality)


def test_runs_of_two_versions_for_one_window_are_both_kept_and_each_rerun_replaces_only_its_own(engine: Engine, aws: Aws) -> None:
    # A run of another version for the same window end replaced the champion's stored run before.
    store_traffic(engine, draw_traffic(600, seed=18), start=WINDOW_START, end=WINDOW_END)
    champion = run_job(engine, aws).run
    other = replace(champion, run_id=new_prediction_id(), model_version="other", created_at=champion.created_at + timedelta(seconds=1))
    save_drift_run(engine, other)
    rerun = replace(other, run_id=new_prediction_id(), created_at=other.created_at + timedelta(seconds=1))
    save_drift_run(engine, rerun)

    assert sorted(row["run_id"] for row in table_rows(engine, DRIFT_RUNS)) == sorted([champion.run_id, rerun.run_id])
    assert {row["run_id"] for row in table_rows(engine, DRIFT_FEATURES)} == {champion.run_id, rerun.run_id}
    kept = load_drift_run(engine, MODEL_NAME, WINDOW_END, version=champion.model_version)
    assert kept is not None and kept.run["run_id"] == champion.run_id and kept.features
    latest = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert latest is not None and latest.run["run_id"] == rerun.run_id
    assert [row["model_version"] for row in drift_history(engine, MODEL_NAME)] == ["other", champion.model_version]
    found = latest_quality(engine, MODEL_NAME, WINDOW_END, version=champion.model_version)
    assert found is not None and found[0]["run_id"] == champion.run_id and found[1] is not None


def test_every_run_has_its_own_report_even_in_one_second_or_for_one_window(engine: Engine, aws: Aws) -> None:
    # The key was the window end truncated to the second: runs ending 0.25 s apart (distinct runs,
    # keyed to the microsecond) wrote one object, and the first run's link and alert showed the second.
    store_traffic(engine, draw_traffic(600, seed=16), start=WINDOW_START, end=WINDOW_END)
    config = DriftJobConfig(bucket=aws.bucket, topic_arn=aws.topic_arn)
    ends = [WINDOW_END, WINDOW_END + timedelta(microseconds=250_000), WINDOW_END]

    outcomes = [run_drift_job(config, TRAINING, engine=engine, s3_client=aws.s3, sns_client=aws.sns, window_end=end) for end in ends]

    keys = [outcome.run.report_uri.removeprefix(f"s3://{aws.bucket}/") for outcome in outcomes]
    assert len(set(keys)) == 3
    for key, outcome in zip(keys, outcomes):
        page = aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read().decode()
        assert f"<dt>run id</dt><dd>{outcome.run.run_id}</dd>" in page
        assert outcome.run.window.end.strftime("%H%M%S.%f") in key
    alerts = [json.loads(envelope["Message"]) for envelope in received(aws, aws.all_queue_url)]
    assert sorted(alert["report"]["uri"] for alert in alerts) == sorted(outcome.run.report_uri for outcome in outcomes)


def test_a_window_that_has_not_ended_is_refused_beyond_a_little_clock_skew(engine: Engine, aws: Aws) -> None:
    now = datetime.now(timezone.utc)
    config = DriftJobConfig(bucket=aws.bucket, topic_arn=None)

    with pytest.raises(SmlError, match=r"window end: 9999-12-31T00:00:00\+00:00 is in the future .*clock skew"):
        run_drift_job(config, TRAINING, engine=engine, s3_client=aws.s3, sns_client=None, window_end=datetime(9999, 12, 31, tzinfo=timezone.utc))
    with pytest.raises(SmlError, match="is in the future"):
        run_drift_job(config, TRAINING, engine=engine, s3_client=aws.s3, sns_client=None, window_end=now + MAX_CLOCK_SKEW + timedelta(seconds=30))
    assert table_rows(engine, DRIFT_RUNS) == []

    # A scheduled time a little ahead of this host's clock is a run like any other.
    outcome = run_drift_job(config, TRAINING, engine=engine, s3_client=aws.s3, sns_client=None, window_end=now + timedelta(seconds=30))
    assert [row["run_id"] for row in table_rows(engine, DRIFT_RUNS)] == [outcome.run.run_id]


def test_a_run_stored_with_a_future_window_end_does_not_hide_the_real_latest_run(engine: Engine, aws: Aws) -> None:
    # Such runs were accepted before: "latest" by window end then showed one run until year 9999.
    store_traffic(engine, draw_traffic(600, seed=17), start=WINDOW_START, end=WINDOW_END)
    earlier = run_job(engine, aws).run
    real = run_drift_job(
        DriftJobConfig(bucket=aws.bucket, topic_arn=None), TRAINING, engine=engine, s3_client=aws.s3, sns_client=None, window_end=WINDOW_END + WINDOW
    ).run
    future = replace(earlier, run_id=new_prediction_id(), window=TimeWindow.ending_at(datetime(9999, 12, 31, tzinfo=timezone.utc), WINDOW))
    save_drift_run(engine, future)

    assert [row["run_id"] for row in drift_history(engine, MODEL_NAME)] == [real.run_id, earlier.run_id, future.run_id]
    latest = latest_quality(engine, MODEL_NAME)
    assert latest is not None and latest[0]["run_id"] == real.run_id


def test_data_quality_violations_are_stored_reported_and_alerted(engine: Engine, aws: Aws) -> None:
    traffic = draw_traffic(3_000, seed=15, shift="null_spike")
    traffic.columns["steady"][:150] = [1_000.0] * 150  # 5% far outside the training range
    traffic.columns["colour"][:60] = ["purple"] * 60  # 2% a colour training never saw
    store_traffic(engine, traffic, start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    violated = {(check.feature, check.check) for check in outcome.run.data_quality if check.violated}
    assert violated == {("steady", "out_of_range"), ("colour", "unseen_category"), ("nullable", "missing_excess")}
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert stored is not None and stored.run["data_quality_status"] == "VIOLATIONS"
    steady = next(row for row in stored.data_quality if (row["feature_name"], row["check_name"]) == ("steady", "out_of_range"))
    assert (steady["violation_count"], steady["n_values"], bool(steady["violated"])) == (150, 3_000, True)
    [envelope] = received(aws, aws.all_queue_url)
    assert envelope["MessageAttributes"]["data_quality_status"]["Value"] == "VIOLATIONS"
    body = json.loads(envelope["Message"])
    assert {(entry["feature"], entry["check"]) for entry in body["data_quality_violations"]} == violated


def test_values_predict_refused_in_the_window_are_a_data_quality_check_per_feature(engine: Engine, aws: Aws, tmp_path: Path) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=16), start=WINDOW_START, end=WINDOW_END)
    store_refusals(engine, {"steady": {"out_of_range": 1}}, at=WINDOW_START, times=40)  # 40 / 3,040 = 1.3% > 1%
    store_refusals(engine, {"colour": {"unknown_category": 1}, "_request": {"invalid_json": 1}}, at=WINDOW_END - timedelta(microseconds=1), times=20)
    store_refusals(engine, {"spread": {"not_finite": 1}}, at=WINDOW_END, times=500)  # the next window's
    store_refusals(engine, {"spread": {"not_finite": 1}}, at=WINDOW_START, times=500, model_name="another-model")
    store_refusals(engine, {"_request": {"body_too_large": 1}}, at=WINDOW_START, times=3)

    outcome = run_job(engine, aws, report_dir=tmp_path)

    refused = {check.feature: check for check in outcome.run.data_quality if check.check == "refused"}
    assert set(refused) == {spec.name for spec in TRAINING.features}
    assert (refused["steady"].count, refused["steady"].n, refused["steady"].violated) == (40, 3_040, True)
    assert (refused["colour"].count, refused["colour"].n, refused["colour"].violated) == (20, 3_020, False)
    assert refused["spread"].count == 0 and refused["spread"].value == 0.0
    assert outcome.run.data_quality_status == "VIOLATIONS"
    assert outcome.run.refused_requests == {"invalid_json": 20, "body_too_large": 3}
    assert outcome.summary()["requests_refused"] == 23
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert stored is not None
    row = next(row for row in stored.data_quality if (row["feature_name"], row["check_name"]) == ("steady", "refused"))
    assert (row["violation_count"], row["n_values"], bool(row["violated"])) == (40, 3_040, True)
    assert "_request" not in {row["feature_name"] for row in stored.data_quality}
    report = outcome.report_path.read_text()
    assert "Requests refused for a problem that names no feature: 23 (invalid_json 20, body_too_large 3)." in report
    [envelope] = received(aws, aws.all_queue_url)
    assert {(entry["feature"], entry["check"]) for entry in json.loads(envelope["Message"])["data_quality_violations"]} == {("steady", "refused")}


def test_stored_run_records_every_test_with_its_numbers(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=11, shift="category_mix"), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert stored is not None
    assert stored.run["status"] == "DRIFT" and stored.run["model_version"] == MODEL_VERSION
    assert (stored.run["n_reference"], stored.run["n_current"]) == (10_000, 3_000)
    assert (stored.run["features_tested"], stored.run["features_drifted"]) == (len(FEATURES), 1)
    assert stored.run["report_uri"] == outcome.run.report_uri
    assert json.loads(stored.run["parameters"])["fdr"] == 0.05
    colour = next(row for row in stored.features if (row["feature_name"], row["test"]) == ("colour", "chi2"))
    expected = next(result for result in outcome.run.results if (result.feature, result.test) == ("colour", "chi2"))
    assert colour["verdict"] == "DRIFT"
    assert colour["statistic"] == pytest.approx(expected.statistic)
    assert colour["p_adjusted"] == pytest.approx(expected.p_adjusted, rel=1e-9, abs=1e-300)
    assert (colour["n_reference"], colour["n_current"]) == (10_000, 3_000)


def test_alert_reaches_subscribers_with_filterable_attributes(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=12, shift="mean"), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    [envelope] = received(aws, aws.all_queue_url)
    assert envelope["Subject"] == f"[DRIFT] {MODEL_NAME} {MODEL_VERSION}: 1 of {len(FEATURES)} features drifted"
    attributes = {name: value["Value"] for name, value in envelope["MessageAttributes"].items()}
    assert attributes == {
        "status": "DRIFT", "model_name": MODEL_NAME, "model_version": MODEL_VERSION, "quality_status": "INSUFFICIENT_DATA", "data_quality_status": "OK",
    }
    body = json.loads(envelope["Message"])
    assert body["run_id"] == outcome.run.run_id
    assert body["window"] == {"start": "2025-03-03T06:00:00Z", "end": "2025-03-10T06:00:00Z"}
    assert [entry["feature"] for entry in body["drifted"]] == ["mean_shift"]
    assert body["report"]["uri"] == outcome.run.report_uri
    assert [message["MessageAttributes"]["status"]["Value"] for message in received(aws, aws.drift_only_queue_url)] == ["DRIFT"]


def test_no_drift_alert_is_published_but_filtered_out_of_drift_only_subscriptions(engine: Engine, aws: Aws) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=13), start=WINDOW_START, end=WINDOW_END)

    run_job(engine, aws)

    [envelope] = received(aws, aws.all_queue_url)
    assert envelope["MessageAttributes"]["status"]["Value"] == "NO_DRIFT"
    assert received(aws, aws.drift_only_queue_url) == []


def test_report_is_stored_in_s3_and_on_disk_with_a_chart_per_feature(engine: Engine, aws: Aws, tmp_path: Path) -> None:
    store_traffic(engine, draw_traffic(3_000, seed=14, shift="variance"), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws, report_dir=tmp_path)

    key = f"reports/{MODEL_NAME}/20250310T060000.000000Z-{outcome.run.run_id}.html"
    assert outcome.run.report_uri == f"s3://{aws.bucket}/{key}"
    stored = aws.s3.get_object(Bucket=aws.bucket, Key=key)
    assert stored["ContentType"].startswith("text/html")
    html_text = stored["Body"].read().decode("utf-8")
    assert outcome.report_path == tmp_path / MODEL_NAME / f"20250310T060000.000000Z-{outcome.run.run_id}.html"
    assert outcome.report_path.read_text(encoding="utf-8") == html_text
    for name in [spec.name for spec in FEATURES] + [LABEL_COLUMN]:
        assert f"<h3>{name} " in html_text
    # A distribution chart and a trend chart (one run so far) per feature and the label.
    assert html_text.count("<svg ") == 2 * (len(FEATURES) + 1)
    assert html_text.index("<h3>spread ") < min(html_text.index(f"<h3>{spec.name} ") for spec in FEATURES if spec.name != "spread")
    assert key in outcome.run.report_url and "Signature" in outcome.run.report_url


def test_a_window_of_one_constant_value_is_stored_reported_and_alerted(engine: Engine, aws: Aws) -> None:
    # The chart code crashed on such windows, and the run was neither stored nor alerted.
    traffic = draw_traffic(500, seed=15)
    traffic.columns["steady"] = [5.0] * traffic.rows
    traffic.columns["spread"] = [1e308 if index % 2 else -1e308 for index in range(traffic.rows)]
    store_traffic(engine, traffic, start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws)

    assert load_drift_run(engine, MODEL_NAME, WINDOW_END) is not None
    assert {("steady", "ks"), ("spread", "ks")} <= drifted_tests(outcome)
    [envelope] = received(aws, aws.all_queue_url)
    assert envelope["MessageAttributes"]["status"]["Value"] == "DRIFT"
    html_text = aws.s3.get_object(Bucket=aws.bucket, Key=outcome.run.report_uri.removeprefix(f"s3://{aws.bucket}/"))["Body"].read().decode()
    assert "current n=500 (every value is 5)" in html_text and "could not be drawn" not in html_text


def test_report_charts_each_features_trend_across_the_stored_runs(engine: Engine, aws: Aws, tmp_path: Path) -> None:
    for week, shift in ((2, None), (1, None), (0, "mean")):
        end = WINDOW_END - week * WINDOW
        store_traffic(engine, draw_traffic(3_000, seed=20 + week, shift=shift), start=end - WINDOW, end=end)
        outcome = run_drift_job(
            DriftJobConfig(bucket=aws.bucket, topic_arn=None), TRAINING, engine=engine, s3_client=aws.s3, sns_client=None,
            window_end=end, report_dir=tmp_path,
        )

    html_text = outcome.report_path.read_text(encoding="utf-8")
    trend = html_text[html_text.index("<title>trend of mean_shift</title>"):]
    trend = trend[: trend.index("</svg>")]
    dots = [circle.split("<title>")[1].split("</title>")[0] for circle in trend.split("<circle")[1:]]
    assert dots == ["NO_DRIFT", "NO_DRIFT", "DRIFT"]
    assert ">02-24<" in trend and ">03-10<" in trend and "stroke-dasharray" in trend


def test_a_champions_drift_config_tightens_a_floor_and_the_run_says_where_each_floor_came_from(
    engine: Engine, aws: Aws, tmp_path: Path
) -> None:
    # 0.1 sd on one feature: under the default floor (about 0.25 sd), with data enough to rule a
    # 0.25 sd shift out, so NO_DRIFT; a model that says 0.05 sd matters for it gets DRIFT.
    traffic = draw_traffic(20_000, seed=21)
    traffic.columns["mean_shift"] = [value + 0.1 for value in traffic.columns["mean_shift"]]
    store_traffic(engine, traffic, start=WINDOW_START, end=WINDOW_END)
    default = run_job(engine, aws)
    by_test = {(result.feature, result.test): result for result in default.run.results}
    assert by_test["mean_shift", "ks"].verdict is DriftVerdict.NO_DRIFT
    assert by_test["mean_shift", "ks"].detail["floor_source"] == "default"

    config = {"source": "drift.toml", "features": {"mean_shift": {"floor": "0.05sd"}}, "data_quality": {"max_missing_excess": 0.001}}
    tightened = run_job(engine, aws, manifest=replace(TRAINING, drift_config=config), report_dir=tmp_path, min_cramers_v=0.12)

    assert drifted_tests(tightened) == {("mean_shift", "ks")}
    assert tightened.run.status is DriftVerdict.DRIFT
    floors = json.loads(load_drift_run(engine, MODEL_NAME, WINDOW_END).run["parameters"])["effective_floors"]
    assert floors["mean_shift/ks"] == {"floor": pytest.approx(0.01994, abs=1e-5), "given": "0.05sd", "source": "model", "setting": "features.mean_shift.floor"}
    assert floors["colour/chi2"] == {"floor": 0.12, "given": 0.12, "source": "deployment", "setting": "SML_DRIFT_MIN_CRAMERS_V"}
    assert floors["steady/ks"]["source"] == floors["nullable/missing_rate"]["source"] == "default"
    nullable = next(check for check in tightened.run.data_quality if (check.feature, check.check) == ("nullable", "missing_excess"))
    assert nullable.threshold == 0.001
    report = tightened.report_path.read_text()
    text = report.replace("<wbr>", "")  # the report lets long setting names wrap at their joints
    assert "model: features.mean_shift.floor = 0.05sd" in text and "deployment: SML_DRIFT_MIN_CRAMERS_V = 0.12" in text
    assert "drift.toml" in report


def regression_traffic(rows: int, *, seed: int, offset: float = 0.0) -> Traffic:
    """Traffic whose predictions are a regression model's numbers (a function of the features plus noise)."""
    traffic = draw_traffic(rows, seed=seed)
    noise = np.random.default_rng(seed + 1).normal(0.0, 0.5, rows)
    numbers = [round(2.0 * shift + steady + offset + error, 6) for shift, steady, error in zip(traffic.columns["mean_shift"], traffic.columns["steady"], noise.tolist())]
    return Traffic(columns=traffic.columns, labels=numbers)  # type: ignore[arg-type]


def regression_manifest(training: Traffic) -> ModelManifest:
    base = build_manifest(Traffic(columns=training.columns, labels=["x"] * training.rows))
    predictions = NumericReference(sorted_values=tuple(sorted(float(value) for value in training.labels)))
    reference = replace(base.reference, label_counts={}, predictions=predictions)
    return replace(base, classes=(), task="regression", estimator="LinearRegression", metrics={"mae": 0.4}, reference=reference)


@pytest.mark.parametrize(("offset", "expected"), [(0.0, DriftVerdict.NO_DRIFT), (1.5, DriftVerdict.DRIFT)])
def test_a_regression_models_predictions_are_tested_as_numbers(engine: Engine, aws: Aws, tmp_path: Path, offset: float, expected: DriftVerdict) -> None:
    # Chi-square on the predicted numbers saw each value as a category of its own: DRIFT on traffic drawn from training.
    manifest = regression_manifest(regression_traffic(5_000, seed=11))
    store_traffic(engine, regression_traffic(3_000, seed=12, offset=offset), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws, manifest=manifest, quality=None, report_dir=tmp_path)

    # A regression model's output is a number: its test is named for the prediction, not a label.
    (prediction,) = [result for result in outcome.run.results if result.kind == "label"]
    assert (prediction.feature, prediction.test, prediction.verdict) == (REGRESSION_PREDICTION_COLUMN, "ks", expected)
    assert outcome.run.label_drifted is (expected is DriftVerdict.DRIFT)
    report = outcome.report_path.read_text()
    assert "predicted label" not in report and "<dt>prediction</dt>" in report
    [envelope] = received(aws, aws.all_queue_url)
    if expected is DriftVerdict.NO_DRIFT:
        assert outcome.run.status is DriftVerdict.NO_DRIFT
    else:
        features = outcome.run.features_tested
        assert envelope["Subject"] == f"[DRIFT] {MODEL_NAME} {MODEL_VERSION}: the prediction drifted, none of {features} features did"
        assert json.loads(envelope["Message"])["summary"].endswith("; prediction DRIFT")


def test_a_regression_models_prediction_history_goes_on_across_its_renaming(engine: Engine, aws: Aws, tmp_path: Path) -> None:
    # Runs stored before a regression model's prediction was named "(prediction)" hold its tests as
    # "(predicted label)"; either name finds the tests of both, and its trend chart goes on.
    manifest = regression_manifest(regression_traffic(5_000, seed=11))
    store_traffic(engine, regression_traffic(3_000, seed=12), start=WINDOW_START, end=WINDOW_END)
    store_traffic(engine, regression_traffic(3_000, seed=13), start=WINDOW_END, end=WINDOW_END + WINDOW)
    config = DriftJobConfig(bucket=aws.bucket, topic_arn=None, quality=None)
    old = run_job(engine, aws, manifest=manifest, quality=None).run
    renamed = [replace(result, feature=LABEL_COLUMN) if result.kind == "label" else result for result in old.results]
    save_drift_run(engine, replace(old, results=renamed))
    new = run_drift_job(
        config, manifest, engine=engine, s3_client=aws.s3, sns_client=None, window_end=WINDOW_END + WINDOW, report_dir=tmp_path
    ).run

    for name in (REGRESSION_PREDICTION_COLUMN, LABEL_COLUMN):
        rows = drift_history(engine, MODEL_NAME, feature=name)
        assert [(row["run_id"], row["test"]) for row in rows] == [(new.run_id, "ks"), (old.run_id, "ks")], name
    trend = feature_trends(engine, MODEL_NAME, before=WINDOW_END + WINDOW + WINDOW)[REGRESSION_PREDICTION_COLUMN]
    assert [point.effect_size for point in trend] == pytest.approx([result.effect_size for run in (old, new) for result in run.results if result.kind == "label"])
    # An input feature's history is its own: the prediction's tests are not among them.
    assert {row["test"] for row in drift_history(engine, MODEL_NAME, feature="mean_shift")} == {"ks", "missing_rate"}



def test_a_regression_model_with_a_feature_named_prediction_is_still_checked(engine: Engine, aws: Aws, tmp_path: Path) -> None:
    # Feature names come from the training data's columns, and nothing refuses "(prediction)": a
    # regression model with such a feature was checked before its prediction took that name.
    def renamed(traffic: Traffic) -> Traffic:
        return Traffic(columns={REGRESSION_PREDICTION_COLUMN if name == "steady" else name: values for name, values in traffic.columns.items()}, labels=traffic.labels)

    features = tuple(replace(spec, name=REGRESSION_PREDICTION_COLUMN) if spec.name == "steady" else spec for spec in FEATURES)
    training = renamed(regression_traffic(5_000, seed=11))
    base = build_manifest(Traffic(columns=training.columns, labels=["x"] * training.rows), features=features)
    predictions = NumericReference(sorted_values=tuple(sorted(float(value) for value in training.labels)))
    manifest = replace(
        base, classes=(), task="regression", estimator="LinearRegression", metrics={"mae": 0.4},
        reference=replace(base.reference, label_counts={}, predictions=predictions),
    )
    store_traffic(engine, renamed(regression_traffic(3_000, seed=12)), start=WINDOW_START, end=WINDOW_END)

    outcome = run_job(engine, aws, manifest=manifest, quality=None, report_dir=tmp_path)

    tested = {(result.feature, result.kind, result.test) for result in outcome.run.results}
    assert (REGRESSION_PREDICTION_COLUMN, "numeric", "ks") in tested
    (prediction,) = [result for result in outcome.run.results if result.kind == "label"]
    assert prediction.test == "ks" and prediction.feature != REGRESSION_PREDICTION_COLUMN
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert stored is not None and len(stored.features) == len(outcome.run.results)
    # The feature's trend and history are its own, the prediction's under the prediction's name.
    feature = next(result for result in outcome.run.results if (result.feature, result.test) == (REGRESSION_PREDICTION_COLUMN, "ks"))
    trends = feature_trends(engine, MODEL_NAME, before=WINDOW_END + WINDOW)
    assert [point.effect_size for point in trends[REGRESSION_PREDICTION_COLUMN]] == [feature.effect_size]
    assert [point.effect_size for point in trends[LABEL_COLUMN]] == [prediction.effect_size]
    history = drift_history(engine, MODEL_NAME, feature=REGRESSION_PREDICTION_COLUMN)
    assert sorted(row["test"] for row in history) == ["ks", "missing_rate"]
    assert [row["test"] for row in drift_history(engine, MODEL_NAME, feature=LABEL_COLUMN)] == ["ks"]


def test_against_the_previous_window_a_feature_named_prediction_is_compared_with_its_own_values(engine: Engine, aws: Aws) -> None:
    # The previous window's counts were keyed by column name with the prediction under "(prediction)":
    # a feature of that name had its values replaced by the predictions.
    def renamed(traffic: Traffic) -> Traffic:
        return Traffic(columns={REGRESSION_PREDICTION_COLUMN if name == "steady" else name: values for name, values in traffic.columns.items()}, labels=traffic.labels)

    features = tuple(replace(spec, name=REGRESSION_PREDICTION_COLUMN) if spec.name == "steady" else spec for spec in FEATURES)
    weeks = [draw_traffic(2_000, seed=8), draw_traffic(3_000, seed=9)]
    for traffic, start in zip(weeks, (WINDOW_START - WINDOW, WINDOW_START)):
        store_traffic(engine, traffic, start=start, end=start + WINDOW)
    plain = run_job(engine, aws, reference_kind="previous")
    other = "drift-test-renamed"
    for traffic, start in zip(weeks, (WINDOW_START - WINDOW, WINDOW_START)):
        store_traffic(engine, renamed(traffic), start=start, end=start + WINDOW, model_name=other)
    manifest = replace(build_manifest(renamed(weeks[0]), features=features), model_name=other)

    named = run_job(engine, aws, manifest=manifest, reference_kind="previous")

    def effect(run: DriftJobResult, feature: str) -> float | None:
        return next(result.effect_size for result in run.run.results if (result.feature, result.test) == (feature, "ks"))

    # KLL sketches compact at random: the same values give D within the sketch's rank error.
    assert effect(named, REGRESSION_PREDICTION_COLUMN) == pytest.approx(effect(plain, "steady"), abs=0.01)
    assert named.run.status is plain.run.status


def test_a_store_that_read_the_run_another_store_is_replacing_replaces_that_ones_run(engine: Engine, aws: Aws) -> None:
    # The interleaving that failed in CI on MariaDB, forced: store A has deleted the stored run and
    # not yet inserted its own; store B read the old run (a plain read does not wait for A), then
    # waited on A's locks to delete it, found nothing, and its insert met A's run on the unique key.
    import threading

    store_traffic(engine, draw_traffic(600, seed=10), start=WINDOW_START, end=WINDOW_END)
    run = run_job(engine, aws).run
    a_before_insert, b_at_delete = threading.Event(), threading.Event()

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        name, text = threading.current_thread().name, statement.lstrip().upper()
        if name == "store-a" and text.startswith("INSERT INTO DRIFT_RUNS"):
            a_before_insert.set()
            b_at_delete.wait(2)  # B never gets there once it waits for A's run instead of reading around it
        if name == "store-b" and text.startswith("DELETE"):
            b_at_delete.set()

    errors: list[BaseException] = []

    def store(name: str) -> None:
        if name == "store-b":
            assert a_before_insert.wait(30)
        try:
            save_drift_run(engine, replace(run, run_id=new_prediction_id()))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        threads = [threading.Thread(target=store, args=(name,), name=name) for name in ("store-a", "store-b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold)
    assert errors == []
    assert len(table_rows(engine, DRIFT_RUNS)) == 1


def test_two_runs_of_one_window_stored_at_once_leave_one_run(engine: Engine, aws: Aws) -> None:
    # A rerun replaces the stored run; two at once (the scheduled run and `sml drift`) each read the
    # stored run before the other replaced it, and the second insert failed on the unique key.
    import threading

    store_traffic(engine, draw_traffic(1_000, seed=10), start=WINDOW_START, end=WINDOW_END)
    run = run_job(engine, aws).run
    errors: list[BaseException] = []
    together = threading.Barrier(2)

    def store(rounds: int) -> None:
        for _ in range(rounds):
            try:
                together.wait(timeout=60)
                save_drift_run(engine, replace(run, run_id=new_prediction_id()))
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=store, args=(10,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(table_rows(engine, DRIFT_RUNS)) == 1
