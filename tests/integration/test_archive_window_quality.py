"""The weekly run's model quality, refusals and versions from the archive (DuckDB) equal the database's.

The same events go through the writer into the tables and the archive: predictions of two
versions in and around the window, labels that arrive late, twice (a later label wins, an older
one arriving after it does not, a tie keeps the label stored first), redelivered, dated before
their prediction, outside the classes or for no prediction, and refusals. The database path is
the oracle: the stored run (drift, data quality with refusals, versions, quality with its
intervals and verdict) must be the same from the archive, for a binary, a multiclass and a
regression model; and once retention has dropped the window's predictions from the database, the
archive recomputes the same run.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from archive_support import engine, new_archive, s3, write_and_archive  # noqa: F401 - fixtures
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy.engine import Engine

from sml.archive.sources import ArchiveWindowSource
from sml.archive.store import ArchiveLocation
from sml.core.events import (
    REQUEST_FIELD,
    build_ground_truth_event,
    build_prediction_event,
    build_refusal_event,
    serialise_event,
)
from sml.core.retention import apply_retention
from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.registration import prepare_version
from sml.monitoring.job import DriftJobConfig, read_drift_window, run_drift_job
from sml.monitoring.model_quality.store import load_quality
from sml.monitoring.sources import DatabaseWindowSource
from sml.monitoring.store import load_drift_run
from sml.monitoring.windows import TimeWindow

WINDOW_END = datetime(2026, 11, 30, tzinfo=timezone.utc)
WINDOW = timedelta(days=7)
WINDOW_START = WINDOW_END - WINDOW
N_PREDICTIONS = 240
# What differs between two stored runs of one window by construction: the run's identity and its report's link.
RUN_IDENTITY = {"run_id", "created_at", "report_uri", "report_url"}


@dataclass(frozen=True)
class Model:
    """A fitted model of ``task`` with its manifest (metrics, calibrator: CBPE or DLE), and its data set's rows and true targets."""

    task: str
    estimator: Any
    manifest: ModelManifest
    rows: list[dict[str, Any]]
    truth: list[Any]


@functools.cache
def fitted(task: str) -> Model:
    """``task`` a model task, or ``regression-categorical``: a regression model with a text category DLE reads too."""
    if task == "regression-categorical":
        rng = np.random.default_rng(5)
        colour = rng.choice(["red", "green", "blue"], 600)
        X = pd.DataFrame({"x": rng.normal(0, 1, 600), "colour": colour})
        # The error depends on the colour, so DLE's loss models use it.
        y = pd.Series(3 * X["x"] + np.where(colour == "red", 5.0, 0.0) + rng.normal(0, 1, 600) * np.where(colour == "blue", 4.0, 0.5))
        estimator: Any = make_pipeline(ColumnTransformer([("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"), Ridge())
    elif task == "regression":
        X, y = load_diabetes(return_X_y=True, as_frame=True)
        estimator = Ridge(alpha=0.1)
    elif task == "multiclass":
        X, y = load_wine(return_X_y=True, as_frame=True)
        y = y.map(lambda index: f"cultivar_{index}")
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:
        X, y = load_breast_cancer(return_X_y=True, as_frame=True)
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    estimator.fit(X_train, y_train)
    manifest = prepare_version(estimator, X_train, y_train, X_test=X_test, y_test=y_test, model_name=f"archive-{task}").manifest
    rows = [{name: value if isinstance(value, str) else float(value) for name, value in row.items()} for row in X.to_dict(orient="records")]
    return Model(task, estimator, manifest, rows, [value.item() if hasattr(value, "item") else value for value in y])


class Traffic:
    """Events sent through the writer into the tables and the archive, a batch at a time (``stored_at`` rising)."""

    def __init__(self, engine: Engine, s3: Any, location: ArchiveLocation) -> None:
        self.engine = engine
        self.s3 = s3
        self.location = location
        self.stored_at = WINDOW_END + timedelta(hours=1)

    def send(self, events: list[Any]) -> None:
        self.stored_at += timedelta(seconds=1)
        records = [(str(uuid.uuid4()), serialise_event(event)) for event in events]
        outcome = write_and_archive(self.engine, self.s3, self.location, records, stored_at=self.stored_at)
        assert outcome.failures == []


def send_window_events(engine: Engine, s3: Any, location: ArchiveLocation, model: Model, *, seed: int) -> dict[str, Any]:
    """Predictions, labels and refusals for ``model`` in and around the window (see the module docstring);
    the version ``v-before`` predicts in the window's first hour, then the manifest's version takes over."""
    rng = np.random.default_rng(seed)
    manifest = model.manifest
    traffic = Traffic(engine, s3, location)
    predictions = []
    moments = (
        [WINDOW_START + timedelta(hours=1) + (WINDOW - timedelta(hours=1)) * float(share) for share in np.sort(rng.random(N_PREDICTIONS))]
        + [WINDOW_START - timedelta(hours=float(hours)) for hours in rng.uniform(0, 48, 15)]  # before the window
        + [WINDOW_END + timedelta(hours=float(hours)) for hours in rng.uniform(0, 20, 15)]  # from its end on
    )
    moments[N_PREDICTIONS] = WINDOW_START - timedelta(microseconds=1)  # next to the bounds: out
    moments[N_PREDICTIONS + 15] = WINDOW_END
    chosen = rng.integers(0, len(model.rows), len(moments))
    features = [model.rows[index] for index in chosen]
    frame = pd.DataFrame(features, columns=[spec.name for spec in manifest.features])
    predicted = model.estimator.predict(frame)
    probabilities = model.estimator.predict_proba(frame) if manifest.task != "regression" else None
    for index, moment in enumerate(moments):
        answer = predicted[index].item() if hasattr(predicted[index], "item") else predicted[index]
        probability = None if probabilities is None else {str(label): float(p) for label, p in zip(manifest.classes, probabilities[index])}
        if probability is not None and index % 17 == 0:
            probability.pop(str(manifest.classes[0]))  # a class missing from a row's probabilities
        predictions.append(
            build_prediction_event(
                model_name=manifest.model_name, model_version=manifest.version, features=features[index], prediction=answer,
                probabilities=probability, predicted_at=moment,
            )
        )
    other = [
        build_prediction_event(
            model_name=manifest.model_name, model_version="v-before", features=model.rows[index], prediction=predictions[0].prediction,
            predicted_at=WINDOW_START + timedelta(minutes=3 * number),  # the first on the window's start: in
        )
        for number, index in enumerate(rng.integers(0, len(model.rows), 12))
    ]
    for start in range(0, len(predictions), 70):
        traffic.send(predictions[start : start + 70])
    traffic.send(other)
    traffic.send(predictions[:25])  # redelivered

    def truth_of(index: int, *, wrong: bool = False) -> Any:
        value = model.truth[chosen[index]]
        if manifest.task == "regression":
            return float(value) + (40.0 if wrong else float(rng.normal(0, 5)))
        if wrong:
            others = [label for label in manifest.classes if label != value]
            return others[int(rng.integers(0, len(others)))]
        return value

    def label_of(prediction: Any, label: Any, labelled_at: datetime) -> Any:
        return build_ground_truth_event(prediction_id=prediction.prediction_id, label=label, labelled_at=labelled_at)

    labelled = [index for index in range(len(predictions)) if rng.random() < 0.7]
    first = [  # 1 to 72 hours late, 15% wrong
        label_of(predictions[index], truth_of(index, wrong=rng.random() < 0.15), predictions[index].predicted_at + timedelta(hours=float(rng.uniform(1, 72))))
        for index in labelled
    ]
    before = [  # dated before their prediction (a wrong clock): scored, counted apart
        label_of(predictions[index], truth_of(index), predictions[index].predicted_at - timedelta(minutes=30))
        for index in range(1, N_PREDICTIONS, 41) if index not in labelled
    ]
    traffic.send(first[: len(first) // 2])
    traffic.send(first[len(first) // 2 :] + before)
    again = labelled[:40]
    later = [  # a later label replaces the first
        label_of(predictions[index], truth_of(index, wrong=True), event.labelled_at + timedelta(days=2))
        for index, event in zip(again[:20], first[:20])
    ]
    older = [  # an older label arriving after the first changes nothing
        label_of(predictions[index], truth_of(index, wrong=True), event.labelled_at - timedelta(hours=5))
        for index, event in zip(again[20:30], first[20:30])
    ]
    tie = [  # the same labelled_at as the stored label: the label stored first stays
        label_of(predictions[index], truth_of(index, wrong=True), event.labelled_at)
        for index, event in zip(again[30:40], first[30:40])
    ]
    in_one_batch = [  # two labels of one prediction at one instant in one batch: the first of the batch
        label_of(predictions[index], truth_of(index, wrong=wrong), WINDOW_END - timedelta(hours=1))
        for index in (N_PREDICTIONS - 3, N_PREDICTIONS - 2) if index not in labelled for wrong in (False, True)
    ]
    unmatched = [
        build_ground_truth_event(prediction_id=str(uuid.uuid4()), label=truth_of(0), labelled_at=WINDOW_START + timedelta(days=float(days)))
        for days in (0.5, 3, 6.5)
    ]
    outside = []
    if manifest.task != "regression":
        outside = [
            label_of(predictions[index], "no-such-class", predictions[index].predicted_at + timedelta(hours=2))
            for index in range(5, N_PREDICTIONS, 53) if index not in labelled
        ]
    traffic.send(later + older + unmatched + outside)
    traffic.send(tie + in_one_batch)
    traffic.send(first[:15] + later[:5])  # redelivered

    feature = manifest.features[0].name
    def refusal(refused: dict[str, dict[str, int]], at: datetime, model_name: str = manifest.model_name) -> Any:
        return build_refusal_event(model_name=model_name, model_version=manifest.version, refused=refused, refused_at=at)

    refusals = [
        refusal({feature: {"out_of_range": 2}}, WINDOW_START + timedelta(days=1)),
        refusal({feature: {"not_finite": 1}, REQUEST_FIELD: {"not_json": 1}}, WINDOW_START + timedelta(days=2)),
        refusal({REQUEST_FIELD: {"not_json": 3}}, WINDOW_END),  # after the window
        refusal({feature: {"out_of_range": 9}}, WINDOW_START + timedelta(days=1), "another-model"),
    ]
    traffic.send(refusals)
    traffic.send(refusals[:2])  # redelivered
    without = 0 if manifest.task == "regression" else len(range(0, N_PREDICTIONS, 17))  # CBPE estimates rows with every probability
    return {"labels_before_prediction": len(before), "unmatched": len(unmatched), "without_probabilities": without}


def stored_run(engine: Engine, manifest: ModelManifest) -> dict[str, Any]:
    """The stored run of the window (drift, data quality, versions, refusals, quality), without its identity."""
    run = load_drift_run(engine, manifest.model_name, WINDOW_END)
    assert run is not None
    quality = load_quality(engine, run.run["run_id"])
    assert quality is not None

    def plain(row: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in row.items() if key not in RUN_IDENTITY}

    return {
        "run": plain(run.run),
        "features": [plain(row) for row in run.features],
        "data_quality": [plain(row) for row in run.data_quality],
        "quality": plain(quality.run),
        "quality_metrics": [plain(row) for row in quality.metrics],
    }


def differences(archive: Any, database: Any, path: str = "") -> list[str]:
    """Where two stored runs differ (JSON texts compared as what they hold). Counts, verdicts and texts must be equal; a float may differ in
    the last bits (sums added in another order), and a label delay by the microseconds SQLite's
    date arithmetic (``julianday``) loses."""
    if isinstance(archive, dict) and isinstance(database, dict):
        return [found for key in sorted(set(archive) | set(database)) for found in differences(archive.get(key), database.get(key), f"{path}.{key}")]
    if isinstance(archive, list) and isinstance(database, list) and len(archive) == len(database):
        return [found for index, pair in enumerate(zip(archive, database)) for found in differences(*pair, f"{path}[{index}]")]
    if isinstance(archive, str) and isinstance(database, str) and archive[:1] in "[{" and archive != database:
        try:
            return differences(json.loads(archive), json.loads(database), path)
        except ValueError:
            pass
    if isinstance(archive, float) and isinstance(database, float):
        tolerance = 1e-3 if "delay" in path else 1e-12
        return [] if math.isclose(archive, database, rel_tol=1e-9, abs_tol=tolerance) else [f"{path}: {archive!r} != {database!r}"]
    return [] if archive == database else [f"{path}: {archive!r} != {database!r}"[:400]]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "regression-categorical"])
def test_the_archive_gives_the_databases_quality_refusals_and_versions(engine: Engine, s3: Any, task: str) -> None:
    model = fitted(task)
    location = new_archive(s3)
    sent = send_window_events(engine, s3, location, model, seed=7)
    config = DriftJobConfig(bucket=location.bucket, topic_arn=None)
    window_source = ArchiveWindowSource(s3, location)
    runs = {}
    for source in (DatabaseWindowSource(engine), window_source):
        run = run_drift_job(config, model.manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END, window_source=source).run
        runs[source.name] = run, stored_run(engine, model.manifest)
    (database, database_stored), (archive, archive_stored) = runs["database"], runs["duckdb"]
    assert differences(archive_stored, database_stored) == []
    quality = database.quality
    assert quality is not None and archive.quality is not None
    # The run saw what was sent: the checks above compare something.
    assert quality.n_predictions == N_PREDICTIONS and quality.n_labelled > 100
    assert quality.delay is not None and quality.delay.before_prediction == sent["labels_before_prediction"] > 0
    assert quality.n_unmatched_labels == sent["unmatched"]
    assert quality.estimated is not None and quality.estimated.n_predictions == N_PREDICTIONS - sent["without_probabilities"]
    assert database.other_versions == archive.other_versions == {"v-before": 12}
    assert database.version_since is not None and archive.version_since == database.version_since
    assert database.refused_requests == archive.refused_requests == {"not_json": 1}
    refused = {check.feature: check.count for check in archive.data_quality if check.check == "refused"}
    assert refused[model.manifest.features[0].name] == 3


def test_a_window_whose_predictions_retention_dropped_is_recomputed_from_the_archive(engine: Engine, s3: Any) -> None:
    model = fitted("binary")
    location = new_archive(s3)
    send_window_events(engine, s3, location, model, seed=11)
    config = DriftJobConfig(bucket=location.bucket, topic_arn=None)
    run_drift_job(config, model.manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END)
    original = stored_run(engine, model.manifest)
    assert original["quality"]["status"] != "INSUFFICIENT_DATA" and original["quality"]["n_labelled"] > 100

    apply_retention(engine, today=WINDOW_END.date() + timedelta(days=30), retention_days=3)
    run_drift_job(config, model.manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END)
    from_database = stored_run(engine, model.manifest)
    assert from_database["run"]["n_current"] == 0 and from_database["quality"]["n_predictions"] == 0  # what the database alone gives now

    run_drift_job(config, model.manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END, window_source=ArchiveWindowSource(s3, location))
    assert differences(stored_run(engine, model.manifest), original) == []


def test_a_window_from_the_archive_without_quality_reads_no_labels(engine: Engine, s3: Any) -> None:
    model = fitted("binary")
    location = new_archive(s3)
    send_window_events(engine, s3, location, model, seed=3)
    config = DriftJobConfig(bucket=location.bucket, quality=None)
    observed = read_drift_window(engine, model.manifest, TimeWindow.ending_at(WINDOW_END, WINDOW), config, ArchiveWindowSource(s3, location))
    assert observed.quality_sample is None and observed.unmatched_labels is None
    assert observed.current.n_rows == N_PREDICTIONS
    assert {entry.version: entry.rows for entry in observed.versions} == {model.manifest.version: N_PREDICTIONS, "v-before": 12}

