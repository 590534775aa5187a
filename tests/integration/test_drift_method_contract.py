"""The drift method contract: a method registered in one place, with no other edit, is chosen by a
model's drift config and flows through the run, its floor, the power check, the stored run, the
report and the alert."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import numpy as np
import pytest
from drift_support import MODEL_NAME, WINDOW, WINDOW_END, build_manifest, draw_traffic, store_traffic
from moto import mock_aws
from scipy import stats
from sqlalchemy.engine import Engine

from sml.core.db import create_db_engine
from sml.monitoring.drift.methods import DriftMethod, MethodOutcome, register_method, unregister_method
from sml.monitoring.drift.stats import DriftVerdict
from sml.monitoring.job import DriftJobConfig, certifiable_floors, run_drift_job
from sml.monitoring.store import feature_trends, load_drift_run

TOY = "toy_mean_gap"


class MeanGap(DriftMethod):
    """The gap between the means in reference standard deviations, from the summaries' sums (a z-test)."""

    name = TOY
    kinds = ("numeric",)
    effect_name = "mean gap (reference sd)"
    floor_key = TOY
    default_floor = 0.3
    floor_range = (0.0, math.inf)
    title = "mean-gap test"

    def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
        n, m = reference.n_present, current.n_present
        mean = float(np.average(reference.values, weights=reference.counts))
        spread = math.sqrt(float(np.average((reference.values - mean) ** 2, weights=reference.counts))) or 1.0
        gap = abs(current.total / m - mean) / spread
        error = math.sqrt(1 / n + 1 / m)
        return MethodOutcome(
            statistic=gap / error, p_value=float(2 * stats.norm.sf(gap / error)), effect=gap, n_reference=n, n_current=m,
            effect_upper=gap + 1.645 * error, min_detectable=lambda alpha: float(stats.norm.isf(alpha / 2) + 0.84) * error,
            corrected=True, detail={"method": "z"},
        )

    def certifiable(self, column: Any, reference: Any, n_current: int | None, alpha: float) -> float:
        return (0.674 + 1.645) * math.sqrt(1 / reference.n_present + (0 if n_current is None else 1 / n_current))

    def chart(self, feature: str, reference: Any, current: Any) -> str:
        return f'<svg xmlns="http://www.w3.org/2000/svg" class="toy-chart"><text>{current.total / current.n_present:.3f}</text></svg>'


@pytest.fixture
def toy_method() -> Iterator[None]:
    register_method(MeanGap)
    yield
    unregister_method(TOY)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def test_a_registered_method_flows_through_run_floors_power_store_report_and_alert(engine: Engine, toy_method: None) -> None:
    training = draw_traffic(4_000, seed=1)
    config = {"source": "drift.toml", "features": {"mean_shift": {"method": TOY}}, "floors": {TOY: 0.2}}
    manifest = replace(build_manifest(training), drift_config=config)
    store_traffic(engine, draw_traffic(2_000, seed=2, shift="mean"), start=WINDOW_END - WINDOW, end=WINDOW_END)

    with mock_aws():
        s3, sns, sqs = (boto3.client(name, region_name="us-east-1") for name in ("s3", "sns", "sqs"))
        bucket = f"sml-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        job_config = DriftJobConfig(bucket=bucket, topic_arn=topic, quality=None)
        outcome = run_drift_job(job_config, manifest, engine=engine, s3_client=s3, sns_client=sns, window_end=WINDOW_END)
        report = s3.get_object(Bucket=bucket, Key=outcome.run.report_uri.split(f"{bucket}/", 1)[1])["Body"].read().decode()
        alert = json.loads(json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])["Message"])

    # The run: the toy method replaced KS on its feature only, with the model's floor for it.
    toy = next(result for result in outcome.run.results if result.test == TOY)
    assert toy.feature == "mean_shift" and toy.verdict is DriftVerdict.DRIFT and toy.effect_size == pytest.approx(0.5, abs=0.08)
    assert (toy.effect_floor, toy.detail["floor_setting"], toy.detail["floor_source"]) == (0.2, f"floors.{TOY}", "model")
    assert {result.test for result in outcome.run.results if result.feature == "steady"} == {"ks", "missing_rate"}
    # The power check.
    shift = next(shift for shift in certifiable_floors(job_config, manifest, window_rows=1_000) if shift.test == TOY)
    assert (shift.floor, shift.unit, shift.certifiable) == (0.2, "mean gap (reference sd)", True)
    assert replace(shift, floor=0.01, min_window_rows=None).warning().startswith("mean_shift: the mean-gap test cannot certify NO_DRIFT below")
    # The stored run and the trends.
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    assert any(row["test"] == TOY and row["verdict"] == "DRIFT" for row in stored.features)
    assert feature_trends(engine, MODEL_NAME, before=WINDOW_END + WINDOW)["mean_shift"][-1].effect_size == pytest.approx(toy.effect_size)
    # The report: the method's row and its own chart.
    assert f">{TOY}<" in report and 'class="toy-chart"' in report
    # The alert.
    assert any(entry["feature"] == "mean_shift" and entry["test"] == TOY for entry in alert["drifted"])


def test_a_config_naming_an_unregistered_method_is_refused_naming_it(toy_method: None) -> None:
    from sml.core.errors import SmlError
    from sml.monitoring.config import ModelDriftConfig

    with pytest.raises(SmlError, match=r"drift\.toml: methods\.numeric: 'nope' is not a drift method for numeric; expected one of jensen_shannon, ks, psi, toy_mean_gap, wasserstein"):
        ModelDriftConfig.from_mapping({"methods": {"numeric": "nope"}}, source="drift.toml")
    with pytest.raises(SmlError, match=r"drift\.toml: features\.colour\.method: 'toy_mean_gap' is not a drift method for categorical"):
        ModelDriftConfig.from_mapping({"features": {"colour": {"method": TOY}}}, source="drift.toml").check_features(build_manifest(draw_traffic(50, seed=1)).features)


def test_a_method_without_its_power_check_is_refused_when_registered() -> None:
    class NoPowerCheck(DriftMethod):
        name, kinds, effect_name = "no_power_check", ("numeric",), "anything"
        floor_key, default_floor = "no_power_check", 0.1

        def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
            return MethodOutcome(0.0, 1.0, 0.0, 1, 1, effect_upper=None, min_detectable=None, corrected=False)

    with pytest.raises(TypeError, match="certifiable"):
        register_method(NoPowerCheck)
    unregister_method("no_power_check")


def test_the_deployment_sets_a_registered_methods_floor_by_its_floor_key(toy_method: None) -> None:
    from sml.core.settings import DriftSettings, load_settings

    config = DriftJobConfig.from_settings(load_settings(DriftSettings, {"SML_DRIFT_FLOORS": json.dumps({TOY: 0.35})}), quality=None)
    manifest = replace(build_manifest(draw_traffic(200, seed=1)), drift_config={"source": "drift.toml", "features": {"mean_shift": {"method": TOY}}})
    floor = config.plan(manifest).floors["mean_shift", TOY]
    assert (floor.value, floor.given, floor.source, floor.setting) == (0.35, 0.35, "deployment", "SML_DRIFT_FLOORS")
    assert config.parameters()["method_floors"] == {TOY: 0.35}
