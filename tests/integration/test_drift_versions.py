"""Monitoring per model version, on SQLite and MariaDB with moto: after a promotion that changes
the feature schema, the weekly run compares the new version's own rows with its own reference,
and counts the old version's rows in the window instead of reading them as missing values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from drift_support import CLASSES, MODEL_NAME, MODEL_VERSION, WINDOW, WINDOW_END, Traffic, build_manifest, draw_traffic, store_traffic
from sqlalchemy.engine import Engine
from test_drift_job import Aws, aws, engine, received, run_job  # noqa: F401 - fixtures

from sml.lifecycle.manifest import FeatureSpec
from sml.monitoring.drift.stats import DriftVerdict
from sml.monitoring.store import drift_history, feature_trends, load_drift_run
from sml.monitoring.windows import TimeWindow, read_window, window_versions

NEW_VERSION = "v20250305-000000-def456"
SHAPES = ("round", "flat")
# The new version drops colour, spread and nullable, moves mean_shift and adds size and shape.
NEW_FEATURES = (
    FeatureSpec("mean_shift", "numeric"),
    FeatureSpec("steady", "numeric"),
    FeatureSpec("size", "numeric"),
    FeatureSpec("shape", "categorical", categories=SHAPES),
)
WINDOW_START = WINDOW_END - WINDOW
PROMOTED_AT = WINDOW_START + timedelta(days=3)


def draw_new_traffic(rows: int, *, seed: int) -> Traffic:
    """Rows from the new version's training distributions (mean_shift is centred on 3, not 0)."""
    rng = np.random.default_rng(seed)
    columns = {
        "mean_shift": rng.normal(3.0, 1.0, rows).tolist(),
        "steady": rng.normal(5.0, 2.0, rows).tolist(),
        "size": rng.normal(100.0, 10.0, rows).tolist(),
        "shape": rng.choice(SHAPES, size=rows, p=(0.7, 0.3)).tolist(),
    }
    return Traffic(columns=columns, labels=rng.choice(CLASSES, size=rows, p=(0.6, 0.4)).tolist())


NEW = build_manifest(draw_new_traffic(10_000, seed=21), version=NEW_VERSION, features=NEW_FEATURES)
OLD = build_manifest(draw_traffic(10_000, seed=1))


@pytest.fixture
def promoted(engine: Engine) -> Iterator[Engine]:
    """A window served by the old version for three days, then by the new one for four."""
    store_traffic(engine, draw_traffic(1_500, seed=22), start=WINDOW_START, end=PROMOTED_AT)
    store_traffic(engine, draw_new_traffic(2_000, seed=23), start=PROMOTED_AT, end=WINDOW_END, version=NEW_VERSION)
    yield engine


def test_after_a_promotion_with_a_schema_change_the_new_version_is_compared_with_its_own_reference(promoted: Engine, aws: Aws) -> None:
    outcome = run_job(promoted, aws, manifest=NEW)

    run = outcome.run
    assert run.status is DriftVerdict.NO_DRIFT
    assert {result.verdict for result in run.results} == {DriftVerdict.NO_DRIFT}
    assert run.current_rows == 2_000
    assert run.other_versions == {MODEL_VERSION: 1_500}
    assert run.version_since == PROMOTED_AT
    assert outcome.summary()["other_versions_rows"] == {MODEL_VERSION: 1_500}
    assert {check.check for check in run.data_quality if check.violated} == set()


def test_the_old_versions_rows_are_counted_in_the_stored_run_the_alert_the_report_and_the_history(
    promoted: Engine, aws: Aws, tmp_path: Path
) -> None:
    outcome = run_job(promoted, aws, manifest=NEW, report_dir=tmp_path)

    [alert] = received(aws, aws.all_queue_url)
    body = json.loads(alert["Message"])
    assert body["other_versions_rows"] == {MODEL_VERSION: 1_500}
    assert body["version_since"] == PROMOTED_AT.isoformat().replace("+00:00", "Z")
    report = outcome.report_path.read_text() if outcome.report_path else ""
    assert f"{NEW_VERSION} since {PROMOTED_AT:%Y-%m-%dT%H:%M:%S}Z; rows of other versions in the window, not tested: {MODEL_VERSION} 1500" in report
    [row] = drift_history(promoted, MODEL_NAME)
    assert (row["model_version"], row["n_current"], row["other_versions_rows"]) == (NEW_VERSION, 2_000, {MODEL_VERSION: 1_500})
    assert row["version_since"] == PROMOTED_AT.isoformat()
    stored = load_drift_run(promoted, MODEL_NAME, WINDOW_END)
    assert stored is not None and json.loads(stored.run["parameters"])["window_versions"]["other_rows"] == {MODEL_VERSION: 1_500}


def test_the_old_version_is_monitored_on_its_own_rows_too(promoted: Engine, aws: Aws) -> None:
    outcome = run_job(promoted, aws, manifest=OLD)

    assert outcome.run.status is DriftVerdict.NO_DRIFT
    assert outcome.run.current_rows == 1_500
    assert outcome.run.other_versions == {NEW_VERSION: 2_000}
    # The old version served from the window's start: it did not take over inside it.
    assert outcome.run.version_since is None


def test_quality_counts_only_the_versions_own_predictions(promoted: Engine, aws: Aws) -> None:
    outcome = run_job(promoted, aws, manifest=NEW)

    assert outcome.run.quality is not None
    assert outcome.run.quality.n_predictions == 2_000


def test_window_versions_counts_each_versions_rows_with_its_first_and_last(promoted: Engine) -> None:
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    versions = window_versions(promoted, MODEL_NAME, window)

    assert [(entry.version, entry.rows, entry.first) for entry in versions] == [(MODEL_VERSION, 1_500, WINDOW_START), (NEW_VERSION, 2_000, PROMOTED_AT)]
    assert versions[0].last < PROMOTED_AT <= versions[1].last < WINDOW_END
    assert read_window(promoted, MODEL_NAME, window, NEW_FEATURES, version=NEW_VERSION).n_rows == 2_000


def test_history_and_trends_are_per_version(promoted: Engine, aws: Aws) -> None:
    earlier_end = WINDOW_START
    store_traffic(promoted, draw_traffic(800, seed=24), start=earlier_end - WINDOW, end=earlier_end)
    run_job_at(promoted, aws, earlier_end)
    run_job(promoted, aws, manifest=NEW)

    assert [row["model_version"] for row in drift_history(promoted, MODEL_NAME)] == [NEW_VERSION, MODEL_VERSION]
    assert [row["model_version"] for row in drift_history(promoted, MODEL_NAME, version=MODEL_VERSION)] == [MODEL_VERSION]
    later = WINDOW_END + timedelta(days=7)
    assert feature_trends(promoted, MODEL_NAME, before=later, version=NEW_VERSION).keys() >= {"size", "shape"}
    assert "colour" not in feature_trends(promoted, MODEL_NAME, before=later, version=NEW_VERSION)
    assert "colour" in feature_trends(promoted, MODEL_NAME, before=later)


def run_job_at(engine: Engine, aws: Aws, window_end: datetime) -> None:
    from sml.monitoring.job import DriftJobConfig, run_drift_job

    run_drift_job(DriftJobConfig(bucket=aws.bucket, topic_arn=None), OLD, engine=engine, s3_client=aws.s3, sns_client=None, window_end=window_end)


def test_stored_days_count_only_the_versions_own_rows_and_the_run_merges_them(promoted: Engine, aws: Aws) -> None:
    from sml.monitoring.daily import read_window_from_days, summarise_days

    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    whole_days = [(WINDOW_START + timedelta(days=offset)).date() for offset in range(1, 7)]
    computed = summarise_days(promoted, NEW, whole_days).computed
    days = read_window_from_days(promoted, NEW, window)

    # The promotion day holds six hours of the old version and eighteen of the new: only the new version's are counted.
    assert computed[PROMOTED_AT.date()] == 375
    assert days is not None and days.summary.n_rows == 2_000
    outcome = run_job(promoted, aws, manifest=NEW)
    assert (outcome.run.status, outcome.run.current_rows, outcome.run.other_versions) == (DriftVerdict.NO_DRIFT, 2_000, {MODEL_VERSION: 1_500})
