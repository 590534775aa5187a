"""`sml.register` against moto: a user's DataFrame pipeline registered in one call, promoted, and loaded as predict loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

import sml
from sml.core.errors import SmlError
from sml.lifecycle.modeling import model_input
from sml.lifecycle.registration import frame_rows
from sml.lifecycle.registry import ModelRegistry, load_champion
from tests.unit.test_registration import churn, churn_data, churn_pipeline


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A registry bucket in moto, named by the settings as the CLI and ``sml.register`` read them."""
    monkeypatch.chdir(tmp_path)
    bucket, app = f"sml-test-{uuid.uuid4().hex[:12]}", f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SML_BUCKET", bucket)
    monkeypatch.setenv("SML_APP_NAME", app)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        yield bucket, app


def registry(bucket: str, app: str, model_name: str) -> ModelRegistry:
    return ModelRegistry(boto3.client("s3"), boto3.client("ssm"), bucket=bucket, app_name=app, model_name=model_name)


def test_register_promote_and_load_a_dataframe_pipeline(aws: tuple[str, str], tmp_path: Path) -> None:
    model, train, y_train, test, y_test = churn()
    lines: list[str] = []
    manifest = sml.register(model, train, y_train, X_test=test, y_test=y_test, model_name="churn", on_step=lines.append)

    assert manifest.sha256 and manifest.artifact_key == f"models/churn/{manifest.version}/model.joblib"
    assert any(line.startswith(f"registering churn {manifest.version} in s3://") for line in lines)
    store = registry(*aws, "churn")
    assert [stored.version for stored in store.list_versions()] == [manifest.version]
    store.promote(manifest.version)
    loaded = load_champion(boto3.client("s3"), boto3.client("ssm"), bucket=aws[0], app_name=aws[1], model_name="churn", cache_dir=tmp_path / "cache")
    assert loaded.manifest == manifest
    rows = frame_rows(test, loaded.manifest.features)
    np.testing.assert_allclose(loaded.model.predict_proba(model_input(rows, loaded.manifest.features, loaded.manifest.input_format)), model.predict_proba(test))


def test_strict_refuses_a_version_that_differs_from_the_champion_and_registers_nothing(aws: tuple[str, str]) -> None:
    model, train, y_train, _, _ = churn()
    first = sml.register(model, train, y_train, model_name="churn", on_step=lambda line: None)
    store = registry(*aws, "churn")
    store.promote(first.version)
    narrower = churn_pipeline().fit(train.drop(columns=["Paperless Billing"]).assign(**{"Paperless Billing": 0}), y_train)
    frame = train.assign(**{"Paperless Billing": 0})
    lines: list[str] = []
    with pytest.raises(SmlError, match=r"differs from champion .* in 1 way\(s\) and --strict is set$"):
        sml.register(narrower, frame, y_train, model_name="churn", strict=True, on_step=lines.append)
    assert lines[-1] == f"differs from champion {first.version}: retyped feature 'Paperless Billing': boolean -> integer"
    assert [stored.version for stored in store.list_versions()] == [first.version]

    second = sml.register(narrower, frame, y_train, model_name="churn", on_step=lines.append)
    assert [stored.version for stored in store.list_versions()] == [first.version, second.version]


def test_the_model_name_defaults_to_the_settings(aws: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_MODEL_NAME", "churn-eu")
    frame, labels = churn_data(200)
    model = churn_pipeline().fit(frame, labels)
    manifest = sml.register(model, frame, labels, on_step=lambda line: None)
    assert manifest.model_name == "churn-eu" and registry(*aws, "churn-eu").manifest(manifest.version) == manifest


def test_importing_sml_and_building_an_array_input_imports_neither_pandas_nor_registration() -> None:
    script = (
        "import json, sys, sml; from sml.lifecycle.manifest import FeatureSpec; from sml.lifecycle.modeling import model_input; "
        "model_input([{'a': 1.0}], [FeatureSpec(name='a', kind='numeric')], 'array'); print(json.dumps(sorted(sys.modules)))"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=environment).stdout))
    assert not {"pandas", "sklearn", "sml.lifecycle.registration"} & loaded


def test_versions_registered_within_one_second_are_listed_in_registration_order(aws: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    import sml.lifecycle.registration as registration

    moments = iter([dt.datetime(2026, 12, 7, 8, 0, 0, 100, tzinfo=dt.timezone.utc), dt.datetime(2026, 12, 7, 8, 0, 0, 900, tzinfo=dt.timezone.utc)])

    class SameSecond(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return next(moments)

    suffixes = iter(["ffffff", "000000"])  # the later version's random suffix sorts first
    monkeypatch.setattr(registration, "datetime", SameSecond)
    monkeypatch.setattr(registration.secrets, "token_hex", lambda n: next(suffixes))
    model, train, y_train, _, _ = churn()
    first = sml.register(model, train, y_train, model_name="churn", on_step=lambda line: None)
    second = sml.register(model, train, y_train, model_name="churn", on_step=lambda line: None)

    assert [stored.version for stored in registry(*aws, "churn").list_versions()] == [first.version, second.version]
