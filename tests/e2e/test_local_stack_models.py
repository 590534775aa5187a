"""Several models on the local stack (`sml up --model a --model b`): a Function URL and predict
containers per model, one queue and writer, and a weekly drift run for each model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from sml.local.stack import LocalStack, stack_function_urls
from tests.e2e.test_local_stack import collect_bodies, config, written_bodies

pytestmark = pytest.mark.e2e

MODELS = ("model-a", "model-b")


def answer_with_the_model(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A stand-in for predict: queues an event naming the model this container serves, and answers with it."""
    model = os.environ["SML_MODEL_NAME"]
    sqs = boto3.client("sqs", endpoint_url=os.environ["SML_AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    sqs.send_message(QueueUrl=os.environ["SML_QUEUE_URL"], MessageBody=json.dumps({"model_name": model}))
    return {"model_name": model, "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"]}


def record_drift_event(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A stand-in for the drift function: appends the scheduled event to ``<state dir>/drift.jsonl``."""
    with open(Path(os.environ["SML_STATE_DIR"]) / "drift.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")
    return {"model_name": event.get("model_name", os.environ.get("SML_MODEL_NAME", ""))}


def test_each_model_is_served_on_its_own_function_url_and_their_events_share_the_writer(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, models=MODELS, predict_handler=answer_with_the_model, writer_handler=collect_bodies)) as stack:
        urls = stack.endpoints.function_urls
        assert set(urls) == set(MODELS) and len(set(urls.values())) == 2
        assert stack.endpoints.function_url == urls["model-a"]
        assert stack_function_urls(stack.config.state_dir) == dict(urls)
        answers = {model: requests.post(url, json={}, timeout=30).json() for model, url in urls.items()}
        deadline = time.monotonic() + 30
        while len(written_bodies(stack.config.state_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

    assert {model: answer["model_name"] for model, answer in answers.items()} == {model: model for model in MODELS}
    assert answers["model-b"]["function"].endswith("-predict-model-b")
    assert sorted(json.loads(body)["model_name"] for body in written_bodies(tmp_path / ".sml")) == list(MODELS)
    assert stack_function_urls(tmp_path / ".sml") == {}  # stack.json goes with the stack


def test_the_weekly_drift_run_covers_each_model_in_a_drift_container(tmp_path: Path) -> None:
    options = {"models": MODELS, "drift_handler": record_drift_event, "drift_interval_s": 0.2}
    with LocalStack(config(tmp_path, **options)) as stack:
        deadline = time.monotonic() + 60
        while not all(run.last_result for run in stack.drift_runs.values()):
            assert time.monotonic() < deadline, "the drift run did not go for each model"
            time.sleep(0.1)
    events = [json.loads(line) for line in (tmp_path / ".sml" / "drift.jsonl").read_text().splitlines()]
    assert {event["model_name"] for event in events} == set(MODELS)
    assert all(event["time"].endswith("Z") for event in events)


def test_the_daily_summaries_step_covers_each_model_in_a_drift_container(tmp_path: Path) -> None:
    options = {"models": MODELS, "drift_handler": record_drift_event, "daily_interval_s": 0.2}
    with LocalStack(config(tmp_path, **options)) as stack:
        deadline = time.monotonic() + 60
        while not all(run.last_result for run in stack.daily_summaries.values()):
            assert time.monotonic() < deadline, "the daily step did not go for each model"
            time.sleep(0.1)
    events = [json.loads(line) for line in (tmp_path / ".sml" / "drift.jsonl").read_text().splitlines()]
    assert {(event["sml_action"], event["model_name"]) for event in events} == {("daily_summaries", model) for model in MODELS}


def test_one_model_keeps_one_function_url_and_the_weekly_run_waits_a_week(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, drift_handler=record_drift_event)) as stack:
        written = json.loads(stack.stack_file.read_text())
        assert "function_urls" not in written and stack.endpoints.function_urls == {}
        assert list(stack.drift_runs) == [""] and stack.drift_runs[""].event_input == {}
        assert stack.drift_runs[""].invocations == 0  # first after drift_interval_s (a week), not at start
    assert not (tmp_path / ".sml" / "drift.jsonl").exists()


def test_two_real_models_are_served_side_by_side_and_both_are_stored(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from sml.core.db import PREDICTIONS, create_db_engine
    from tests.predict_support import APP_NAME, register_champion, valid_row

    options = {
        "models": ("bc-first", "bc-second"),
        "app_name": APP_NAME,
        "predict_handler": "functions.predict.app:handler",
        "writer_handler": "functions.writer.app:handler",
    }
    with LocalStack(config(tmp_path, **options)) as stack:
        endpoints = stack.endpoints
        s3 = boto3.client("s3", endpoint_url=endpoints.aws_endpoint_url, region_name=endpoints.region)
        ssm = boto3.client("ssm", endpoint_url=endpoints.service_endpoint_urls.get("ssm", endpoints.aws_endpoint_url), region_name=endpoints.region)
        for model in options["models"]:
            register_champion(s3, ssm, bucket=endpoints.bucket, work_dir=tmp_path, model_name=model)
        served = {}
        for model, url in endpoints.function_urls.items():
            health = requests.get(f"{url}health", timeout=60).json()
            response = requests.post(f"{url}predict", json={"instances": [valid_row()] * 3}, timeout=60)
            assert response.status_code == 200, response.text
            served[model] = (health["model_name"], len(response.json()["predictions"]))
        for predict in stack.predicts.values():
            assert predict.wait_all_ready(timeout_s=30)  # the events went out after the answers
        assert stack.poller.wait_until_drained(timeout_s=60)
        engine = create_db_engine(endpoints.database_url)
        with engine.connect() as connection:
            stored = dict(
                connection.execute(sa.select(PREDICTIONS.c.model_name, sa.func.count()).group_by(PREDICTIONS.c.model_name)).all()
            )
        engine.dispose()

    assert served == {"bc-first": ("bc-first", 3), "bc-second": ("bc-second", 3)}
    assert stored == {"bc-first": 3, "bc-second": 3}
