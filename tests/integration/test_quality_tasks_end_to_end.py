"""A regression model (scikit-learn's diabetes) and a multiclass one (wine) through the real handlers:
registered with sml.register, predictions from the predict handler, the writer handler fed by an
SQS event source, labels from `sml feedback --file`, then `sml drift` and `sml quality`. Traffic drawn
from the training data with its true labels is OK; the same traffic with wrong labels is DEGRADED.
Moto in-process; SQLite and MariaDB.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sml
from functions.predict import app as predict_app
from functions.writer import app as writer_app
from sml.cli.main import main
from sml.lifecycle.calibration import DirectLossEstimator, label_free_estimator_from_json
from sml.lifecycle.registry import ModelRegistry
from sml.local.lambda_context import new_lambda_context
from sml.local.poller import SqsEventSourcePoller
from tests.predict_support import function_url_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
N_PREDICTIONS = 400


@dataclass
class Deployment:
    task: str
    model_name: str
    rows: Any
    truth: Any
    sqs: Any
    queue_url: str
    work_dir: Path
    manifest: Any


def _dataset(task: str) -> tuple[Any, Any, Any]:
    if task == "regression":
        X, y = load_diabetes(return_X_y=True, as_frame=True)
        return X, y, Ridge(alpha=0.1)
    X, y = load_wine(return_X_y=True, as_frame=True)
    return X, y.map(lambda index: f"cultivar_{index}"), make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _forget_containers() -> None:
    predict_app.load_runtime.cache_clear()
    if writer_app.database_engine.cache_info().currsize:
        writer_app.database_engine().dispose()
    writer_app.database_engine.cache_clear()


@pytest.fixture(params=["regression", "multiclass"])
def deployment(request: pytest.FixtureRequest, migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    task = request.param
    X, y, model = _dataset(task)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model.fit(X_train, y_train)
    model_name = "diabetes" if task == "regression" else "wine"
    with mock_aws():
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        s3, ssm, sqs = (boto3.client(service, region_name="us-east-1") for service in ("s3", "ssm", "sqs"))
        bucket = f"sml-tasks-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        registry = ModelRegistry(s3, ssm, bucket=bucket, app_name="sml", model_name=model_name)
        manifest = sml.register(model, X_train, y_train, X_test=X_test, y_test=y_test, registry=registry, on_step=lambda line: None)
        registry.promote(manifest.version)
        for name, value in {
            "SML_BUCKET": bucket,
            "SML_QUEUE_URL": queue_url,
            "SML_APP_NAME": "sml",
            "SML_MODEL_NAME": model_name,
            "SML_DATABASE_URL": migrated_db_url,
            "SML_MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "SML_STATE_DIR": str(tmp_path / "state"),
            "SML_CAPTURE_MODE": "inline",
        }.items():
            monkeypatch.setenv(name, value)
        _forget_containers()
        yield Deployment(task, model_name, X_train.reset_index(drop=True), y_train.reset_index(drop=True), sqs, queue_url, tmp_path, manifest)
        _forget_containers()


def _drain(deployment: Deployment) -> None:
    poller = SqsEventSourcePoller(deployment.sqs, deployment.queue_url, writer_app.handler, batch_size=10, batching_window_s=0, visibility_timeout_s=0, poll_wait_s=0)
    for _ in range(1000):
        if poller.poll_once() is None:
            return
    raise AssertionError("the events queue did not empty")


def _predict(deployment: Deployment, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    for start in range(0, len(rows), 100):
        event = function_url_event("POST", "/predict", json.dumps({"instances": rows[start : start + 100]}))
        response = predict_app.handler(event, new_lambda_context("predict", region="us-east-1", timeout_s=30))
        assert response["statusCode"] == 200, response["body"]
        answers.extend(json.loads(response["body"])["predictions"])
    return answers


def _send_labels(deployment: Deployment, name: str, pairs: list[tuple[str, Any]], labelled_at: datetime) -> None:
    path = deployment.work_dir / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prediction_id", "label", "labelled_at"])
        writer.writerows((prediction_id, label, labelled_at.isoformat()) for prediction_id, label in pairs)
    assert main(["feedback", "--file", str(path)]) == 0
    _drain(deployment)


def _quality_status(output: str) -> str:
    """The verdict of `sml quality`'s last line (not data quality's, nor `sml drift`'s)."""
    return re.findall(r"^quality: (OK|DEGRADED|INSUFFICIENT_DATA) \(", output, re.MULTILINE)[-1]


def test_training_traffic_with_true_labels_is_ok_and_with_wrong_labels_degraded(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    chosen = rng.integers(0, len(deployment.rows), N_PREDICTIONS)
    rows = [{name: value.item() if hasattr(value, "item") else value for name, value in deployment.rows.iloc[index].items()} for index in chosen]
    answers = _predict(deployment, rows)
    _drain(deployment)
    truth = [deployment.truth.iloc[index] for index in chosen]
    truth = [value.item() if hasattr(value, "item") else value for value in truth]
    ids = [answer["prediction_id"] for answer in answers]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _send_labels(deployment, "labels", list(zip(ids, truth)), now - timedelta(minutes=1))
    capsys.readouterr()

    assert main(["drift", "--end", (now + timedelta(minutes=1)).isoformat()]) == 0
    assert main(["quality"]) == 0
    output = capsys.readouterr().out
    assert _quality_status(output) == "OK", output
    assert f"labels: {N_PREDICTIONS} of {N_PREDICTIONS} predictions" in output
    verdict_metric = "rmse" if deployment.task == "regression" else "f1_macro"
    assert f"quality: OK ({verdict_metric} " in output
    assert ("estimated (DLE)" if deployment.task == "regression" else "estimated (CBPE)") in output

    if deployment.task == "regression":
        assert isinstance(label_free_estimator_from_json(deployment.manifest.extra["calibration"]), DirectLossEstimator)
        wrong = list(rng.permutation(np.asarray(truth, dtype=float)).tolist())
    else:
        classes = list(deployment.manifest.classes)
        wrong = [classes[(classes.index(label) + 1) % len(classes)] for label in truth]
    _send_labels(deployment, "wrong", list(zip(ids, wrong)), now + timedelta(minutes=1))
    capsys.readouterr()

    assert main(["drift", "--end", (now + timedelta(minutes=2)).isoformat()]) == 0
    assert main(["quality", "--fail-on-degraded"]) == 1
    output = capsys.readouterr().out
    assert _quality_status(output) == "DEGRADED", output
    assert f"quality: DEGRADED ({verdict_metric} " in output
