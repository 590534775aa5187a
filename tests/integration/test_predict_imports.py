"""Predict's image installs only the predict extra: serving a request must not import the others.

The handler runs in a fresh interpreter against moto's server, so the test process's own imports
(moto, pytest, training) cannot hide one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.predict_support import APP_NAME, MODEL_NAME, register_champion, valid_row

REPOSITORY = Path(__file__).resolve().parents[2]
# Modules of other extras (writer, drift, train, local) and of tests; none belongs in predict's image.
FOREIGN_MODULES = (
    "wandb", "sqlalchemy", "pymysql", "pandas", "matplotlib", "moto", "requests", "pytest", "hypothesis",
    "sml.lifecycle.training", "sml.lifecycle.tracking", "sml.core.db", "sml.local", "sml.monitoring",
)

SERVE_ONE_REQUEST = """
import json, sys, types
from functions.predict import app
context = types.SimpleNamespace(function_name="predict", memory_limit_in_mb=1024, aws_request_id="r-1",
                                invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:predict")
body = json.dumps({"features": json.loads(sys.argv[1])})
event = {"version": "2.0", "rawPath": "/predict", "headers": {"content-type": "application/json"}, "body": body,
         "isBase64Encoded": False, "requestContext": {"http": {"method": "POST", "path": "/predict"}, "stage": "$default"}}
response = app.handler(event, context)
print(json.dumps({"status": response["statusCode"], "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.fixture
def moto_server() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_serving_a_prediction_imports_nothing_from_the_other_extras(moto_server: str, tmp_path: Path) -> None:
    clients, bucket, queue_url = moto_account(moto_server)
    register_champion(clients["s3"], clients["ssm"], bucket=bucket, work_dir=tmp_path)

    report = serve_one_request(moto_server, bucket, queue_url, tmp_path)

    assert report["status"] == 200
    assert [module for module in report["modules"] if is_foreign(module)] == []
    queued = clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert queued["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_outside_lambda_no_tracer_is_built_so_the_xray_sdk_is_never_imported(moto_server: str, tmp_path: Path) -> None:
    clients, bucket, queue_url = moto_account(moto_server)
    register_champion(clients["s3"], clients["ssm"], bucket=bucket, work_dir=tmp_path)

    local = serve_one_request(moto_server, bucket, queue_url, tmp_path)
    in_lambda = serve_one_request(moto_server, bucket, queue_url, tmp_path, {"LAMBDA_TASK_ROOT": str(REPOSITORY)})

    assert local["status"] == in_lambda["status"] == 200
    assert "aws_xray_sdk" not in local["modules"]
    assert "aws_xray_sdk" in in_lambda["modules"]


def test_an_array_model_whose_pickle_holds_pandas_objects_is_loaded_with_pandas(moto_server: str, tmp_path: Path) -> None:
    import pandas as pd

    from sml.lifecycle.registry import ModelRegistry
    from sml.lifecycle.training import save_artifact
    from tests.predict_support import manifest_for, trained_model

    clients, bucket, _ = moto_account(moto_server)
    pipeline = copy.deepcopy(trained_model().pipeline)
    pipeline.training_summary_ = pd.Series([1.0, 2.0])  # a user's attribute: unpickling it needs pandas
    save_artifact(pipeline, tmp_path / "model.joblib")
    registry = ModelRegistry(clients["s3"], clients["ssm"], bucket=bucket, app_name=APP_NAME, model_name=MODEL_NAME)
    registry.register(tmp_path / "model.joblib", manifest_for("v1"))
    registry.promote("v1")

    report = serve_one_request(moto_server, bucket, None, tmp_path)

    assert report["status"] == 200
    assert "pandas" in report["modules"]


def moto_account(moto_server: str) -> tuple[dict[str, Any], str, str]:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    clients = {name: session.client(name, endpoint_url=moto_server) for name in ("s3", "ssm", "sqs")}
    bucket = f"sml-imports-{uuid.uuid4().hex[:12]}"
    clients["s3"].create_bucket(Bucket=bucket)
    queue_url = clients["sqs"].create_queue(QueueName=f"events-{uuid.uuid4().hex}")["QueueUrl"]
    return clients, bucket, queue_url


def serve_one_request(
    moto_server: str, bucket: str, queue_url: str | None, tmp_path: Path, extra_environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """One ``POST /predict`` of a valid row in a fresh interpreter: its status and every module it imported."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "shared")]),
        "SML_AWS_ENDPOINT_URL": moto_server,
        "SML_BUCKET": bucket,
        "SML_APP_NAME": APP_NAME,
        "SML_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_REGION": "us-east-1",
        **({"SML_QUEUE_URL": queue_url} if queue_url else {"SML_CAPTURE_SAMPLING_RATE": "0"}),
        **(extra_environment or {}),
    }

    completed = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_REQUEST, json.dumps(valid_row())],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stderr.strip().splitlines()[-1])


def is_foreign(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in FOREIGN_MODULES)
