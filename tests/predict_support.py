"""Helpers for the predict tests: the trained test model, its registration, Function URL events,
and fixtures for the handler on moto (import them by name into a test module).

The model is the real training code's (scikit-learn's breast cancer data, logistic regression),
trained once per test process; registering goes through :class:`sml.lifecycle.registry.ModelRegistry`, so
the tests exercise the S3 layout predict really reads. The handler module is imported only by
the fixtures that need it, so unit tests that use the model do not load Powertools.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.registry import ModelRegistry
from sml.lifecycle.training import TrainedModel, TrainingConfig, build_manifest, save_artifact, train_model

SAMPLE_EVENT = Path(__file__).parent / "fixtures" / "function_url_event_sample.json"
MODEL_NAME = "breast-cancer"
APP_NAME = "sml"


@cache
def trained_model() -> TrainedModel:
    """The test model, fitted once per process."""
    return train_model(TrainingConfig(model_name=MODEL_NAME))


def manifest_for(version: str, model_name: str = MODEL_NAME) -> ModelManifest:
    """The trained model's manifest as ``version`` of ``model_name`` (the registry fills in the sha256)."""
    trained = trained_model()
    if model_name != MODEL_NAME:
        trained = replace(trained, config=replace(trained.config, model_name=model_name))
    return build_manifest(trained, version=version, sha256="", wandb_run_path=None, created_at=datetime.now(timezone.utc))


def register_champion(
    s3: Any, ssm: Any, *, bucket: str, work_dir: Path, version: str = "v1", model_name: str = MODEL_NAME
) -> ModelManifest:
    """Register the trained model as ``version`` of ``model_name`` in ``bucket`` and promote it; returns the stored manifest."""
    artifact = work_dir / f"{model_name}-{version}.joblib"
    save_artifact(trained_model().pipeline, artifact)
    registry = ModelRegistry(s3, ssm, bucket=bucket, app_name=APP_NAME, model_name=model_name)
    stored = registry.register(artifact, manifest_for(version, model_name))
    registry.promote(version)
    return stored


def valid_row() -> dict[str, Any]:
    """A row the test model accepts: each numeric feature mid-way through its training range, grade ``moderate``."""
    row: dict[str, Any] = {}
    for spec in trained_model().features:
        row[spec.name] = (spec.minimum + spec.maximum) / 2 if spec.kind == "numeric" else spec.categories[1]
    return row


def perturbed_row(row: dict[str, Any], name: str | None, value: Any, drop: bool) -> dict[str, Any]:
    """``row`` unchanged (``name`` None), without ``name`` (``drop``), or with ``name`` set to ``value``."""
    if name is None:
        return row
    if drop:
        return {key: item for key, item in row.items() if key != name}
    return {**row, name: value}


def function_url_event(method: str, path: str, body: str | bytes | None = None, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """AWS's sample Function URL event (payload 2.0) rewritten for one request.

    A ``str`` body travels as text, ``bytes`` base64-encoded with ``isBase64Encoded`` set, as a
    Function URL delivers a body whose content type is not text.
    """
    event = copy.deepcopy(json.loads(SAMPLE_EVENT.read_text(encoding="utf-8")))
    event["rawPath"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["headers"] = {"content-type": "application/json", **(headers or {})}
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    else:
        event["body"], event["isBase64Encoded"] = body, False
    return event


@dataclass
class PredictStack:
    """A moto account with the champion registered, a fresh events queue and predict's environment."""

    s3: Any
    ssm: Any
    sqs: Any
    bucket: str
    queue_url: str
    work_dir: Path
    monkeypatch: pytest.MonkeyPatch

    def configure(self, **variables: str) -> None:
        """Set predict's environment and start a new container (the next request reloads the model)."""
        from functions.predict import app

        for name, value in variables.items():
            self.monkeypatch.setenv(name, value)
        app.load_runtime.cache_clear()

    def queued(self) -> list[dict[str, Any]]:
        """Receive and delete every event in the queue; the parsed message bodies."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", []):
            messages.extend(batch)
            entries = [{"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(batch)]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture(scope="module")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, str, Path]]:
    """A moto account for the module with the trained model registered and promoted as ``v1``."""
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        s3, ssm = boto3.client("s3", region_name="us-east-1"), boto3.client("ssm", region_name="us-east-1")
        bucket = f"sml-predict-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        work_dir = tmp_path_factory.mktemp("predict")
        register_champion(s3, ssm, bucket=bucket, work_dir=work_dir)
        yield s3, ssm, bucket, work_dir


@pytest.fixture
def predict_stack(registered_model: tuple[Any, Any, str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[PredictStack]:
    """A fresh events queue and a fresh predict container for each test."""
    from functions.predict import app

    s3, ssm, bucket, work_dir = registered_model
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex}")["QueueUrl"]
    monkeypatch.delenv("SML_AWS_ENDPOINT_URL", raising=False)
    stack = PredictStack(s3, ssm, sqs, bucket, queue_url, work_dir, monkeypatch)
    stack.configure(SML_BUCKET=bucket, SML_QUEUE_URL=queue_url, SML_MODEL_CACHE_DIR=str(work_dir / "cache"), SML_APP_NAME=APP_NAME)
    yield stack
    app.load_runtime.cache_clear()


@pytest.fixture
def predict_log() -> Iterator[io.StringIO]:
    """What predict's Powertools logger writes (stdout on Lambda), one JSON record per line."""
    from functions.predict import app

    buffer = io.StringIO()
    previous = app.logger.registered_handler.setStream(buffer)
    yield buffer
    app.logger.registered_handler.setStream(previous)
