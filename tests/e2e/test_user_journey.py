"""A user's path on the local stack with the real handlers, driven only by `sml` commands and HTTP.

`sml up` runs in its own process; every other step is a separate `sml` process run in the same
folder (so it finds `.sml/stack.json`), or a plain HTTP request to the Function URL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import requests
import sqlalchemy as sa

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("journey")]

STARTUP_LIMIT_S = 90  # a bound on waiting, not a speed claim
ROW = {
    "mean_radius": 14.2,
    "mean_texture": 19.1,
    "mean_perimeter": 92.0,
    "mean_area": 630.0,
    "mean_smoothness": 0.096,
    "mean_compactness": 0.10,
    "mean_concavity": 0.09,
    "mean_concave_points": 0.05,
    "mean_symmetry": 0.18,
    "mean_fractal_dimension": 0.063,
    "concavity_grade": "moderate",
}


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("SML_")}


def sml(workdir: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "sml.cli.main", *arguments], cwd=workdir, env=environment(), capture_output=True, text=True, timeout=300
    )
    if check:
        assert completed.returncode == 0, f"sml {' '.join(arguments)} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    with running_stack(tmp_path, environment()) as running:
        yield running


@contextmanager
def running_stack(tmp_path: Path, env: dict[str, str], *options: str) -> Iterator[dict[str, str]]:
    """`sml up` in ``tmp_path`` with ``env`` and ``options``, until the block ends (Ctrl-C); yields its stack.json."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sml.cli.main", "up", "--visibility-timeout", "1", "--batching-window", "0", *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stack_file = tmp_path / ".sml" / "stack.json"
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not stack_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sml up did not start: {process.stderr.read() if process.stderr else ''}")
        time.sleep(0.1)
    try:
        yield json.loads(stack_file.read_text())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def stored_ids(database_url: str, table: str = "predictions") -> list[str]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(f"SELECT prediction_id FROM {table}")).scalars())
    finally:
        engine.dispose()


def dlq_depth(stack: dict[str, str]) -> int:
    sqs = boto3.client("sqs", endpoint_url=stack["aws_endpoint_url"], region_name=stack["region"])
    attributes = sqs.get_queue_attributes(QueueUrl=stack["dlq_url"], AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def wait_until(condition, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_train_promote_predict_store_and_replay_through_the_cli(tmp_path: Path, stack: dict[str, str]) -> None:
    sml(tmp_path, "train")
    sml(tmp_path, "train", "--estimator", "random_forest", "--param", "n_estimators=50")
    promoted = sml(tmp_path, "promote", "--best-by", "f1")
    models = sml(tmp_path, "models").stdout
    assert "*" in models or "champion" in models.lower(), models
    assert promoted.stdout.strip()

    features = [f"--feature={name}={value}" for name, value in ROW.items()]
    answer = json.loads(sml(tmp_path, "predict", *features).stdout)
    assert answer["prediction"] in ("benign", "malignant")
    url = stack["function_url"].rstrip("/")
    batch = requests.post(f"{url}/predict", json={"instances": [ROW, {**ROW, "mean_symmetry": None}]}, timeout=30)
    assert batch.status_code == 200, batch.text
    served = [answer["prediction_id"]] + [item["prediction_id"] for item in batch.json()["predictions"]]
    wait_until(lambda: set(served) <= set(stored_ids(stack["database_url"])), "the writer to store the predictions")

    bad = requests.post(f"{url}/predict", json={"features": {**ROW, "mean_raduis": 1.0}}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["field"].endswith("mean_raduis")
    refused = sml(tmp_path, "predict", "--feature", "mean_radius=abc", check=False)
    assert refused.returncode != 0

    # A maintenance window: the writer cannot store, SQS gives up after 5 receives -> DLQ.
    engine = sa.create_engine(stack["database_url"])
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE predictions RENAME TO predictions_away"))
    late = requests.post(f"{url}/predict", json={"features": ROW}, timeout=30).json()["prediction_id"]
    wait_until(lambda: dlq_depth(stack) == 1, "the event to reach the DLQ", 90)
    inspected = sml(tmp_path, "dlq", "inspect").stdout
    assert "parses fine" in inspected, inspected
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE predictions_away RENAME TO predictions"))
    engine.dispose()

    sml(tmp_path, "dlq", "replay", "--dry-run")
    assert dlq_depth(stack) == 1
    sml(tmp_path, "dlq", "replay")
    assert dlq_depth(stack) == 0
    sml(tmp_path, "dlq", "replay")  # rerunning an empty replay is harmless
    wait_until(lambda: late in stored_ids(stack["database_url"]), "the replayed event to be stored")
    ids = stored_ids(stack["database_url"])
    assert len(ids) == len(set(ids)) == len(served) + 1
