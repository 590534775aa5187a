"""A project folder with a registry bucket in moto, and the registry of one model as the CLI finds it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sml.core.aws import aws_client
from sml.core.settings import LocalSettings, load_settings
from sml.lifecycle.registry import ModelRegistry


@contextmanager
def moto_project(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``folder`` as the working directory, ``SML_BUCKET``/``SML_APP_NAME`` unique, the bucket created in moto."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SML_BUCKET", f"sml-test-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("SML_APP_NAME", f"t{uuid.uuid4().hex[:8]}")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=os.environ["SML_BUCKET"])
        yield folder


def cli_registry(model_name: str) -> ModelRegistry:
    """The registry of ``model_name`` that the settings name (as ``--model`` reaches it)."""
    settings = load_settings(LocalSettings)
    return ModelRegistry(aws_client("s3", settings), aws_client("ssm", settings), bucket=settings.bucket, app_name=settings.app_name, model_name=model_name)
