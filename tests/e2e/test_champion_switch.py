"""Promotion under load on the local stack: predict's container re-reads the champion pointer every
SML_CHAMPION_TTL_SECONDS and switches once the new version is loaded; no request fails on the
switch, and once a container answers with the new version it never answers with the old one."""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import pytest
import requests

from sml.lifecycle.registry import ModelRegistry
from sml.local.stack import LocalStack
from tests.e2e.test_local_stack import collect_bodies, config
from tests.predict_support import APP_NAME, MODEL_NAME, register_champion, valid_row

pytestmark = pytest.mark.e2e


def test_a_promotion_under_load_switches_every_answer_to_the_new_version_without_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_CHAMPION_TTL_SECONDS", "1")
    options = {"app_name": APP_NAME, "predict_handler": "functions.predict.app:handler", "writer_handler": collect_bodies, "predict_concurrency": 1}
    with LocalStack(config(tmp_path, **options)) as stack:
        endpoints = stack.endpoints
        s3 = boto3.client("s3", endpoint_url=endpoints.aws_endpoint_url, region_name=endpoints.region)
        ssm = boto3.client("ssm", endpoint_url=endpoints.service_endpoint_urls.get("ssm", endpoints.aws_endpoint_url), region_name=endpoints.region)
        register_champion(s3, ssm, bucket=endpoints.bucket, work_dir=tmp_path, version="v1")
        url = f"{endpoints.function_url}predict"
        answers: list[tuple[int, str | None]] = []
        promoted_at: list[int] = []
        stop = threading.Event()

        def send() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    response = session.post(url, json={"features": valid_row()}, timeout=60)
                    answers.append((response.status_code, response.json().get("model_version")))
                    if promoted_at and answers[-1][1] == "v2" and len(answers) >= promoted_at[0] + 20 and all(
                        version == "v2" for _, version in answers[-20:]
                    ):
                        stop.set()

        sender = threading.Thread(target=send)
        sender.start()
        try:
            while len(answers) < 20:
                sender.join(0.05)
            # Counted before the promotion: an answer from v2 can come in before register_champion returns.
            promoted_at.append(len(answers))
            register_champion(s3, ssm, bucket=endpoints.bucket, work_dir=tmp_path, version="v2")
            sender.join(300)
        finally:
            stop.set()
            sender.join(60)
        health = requests.get(f"{endpoints.function_url}health", timeout=60).json()
        registry = ModelRegistry(s3, ssm, bucket=endpoints.bucket, app_name=APP_NAME, model_name=MODEL_NAME)
        assert registry.champion_version() == "v2"

    assert {status for status, _ in answers} == {200}
    versions = [version for _, version in answers]
    first_new = versions.index("v2")
    assert set(versions[:first_new]) == {"v1"} and set(versions[first_new:]) == {"v2"}
    assert first_new >= promoted_at[0]
    assert health["model_version"] == "v2"
