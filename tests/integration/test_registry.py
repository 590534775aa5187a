"""The registry against moto: register, list, promote, roll back, and load only verified artifacts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from sml.core.errors import SmlError
from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.modeling import rows_to_matrix
from sml.lifecycle.registry import (
    ArtifactIntegrityError,
    ArtifactLoadError,
    ChampionNotSetError,
    LibraryVersionError,
    ModelRegistry,
    champion_parameter_name,
    load_champion,
)
from sml.core.settings import AwsSettings, load_settings
from sml.lifecycle.training import TrainedModel, TrainingConfig, build_manifest, save_artifact, train_model

MODEL = "breast-cancer"


@cache
def trained_model() -> TrainedModel:
    return train_model(TrainingConfig(model_name=MODEL))


@dataclass
class Aws:
    s3: Any
    ssm: Any
    bucket: str
    app_name: str

    def registry(self, bucket: str | None = None) -> ModelRegistry:
        return ModelRegistry(self.s3, self.ssm, bucket=bucket or self.bucket, app_name=self.app_name, model_name=MODEL)

    def load(self, cache_dir: Path, **options: Any) -> Any:
        return load_champion(
            self.s3, self.ssm, bucket=self.bucket, app_name=self.app_name, model_name=MODEL, cache_dir=cache_dir, **options
        )


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        bucket = f"sml-test-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        yield Aws(s3=s3, ssm=boto3.client("ssm", region_name="us-east-1"), bucket=bucket, app_name=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """The trained pipeline on disk and a manifest for it (version ``v1``)."""
    model = trained_model()
    path = tmp_path / "model.joblib"
    sha256 = save_artifact(model.pipeline, path)
    manifest = build_manifest(model, version="v1", sha256=sha256, wandb_run_path=None, created_at=datetime.now(timezone.utc))
    return path, manifest


def register_versions(registry: ModelRegistry, artifact: tuple[Path, ModelManifest], f1_by_version: dict[str, float]) -> None:
    path, manifest = artifact
    for version, f1 in f1_by_version.items():
        registry.register(path, replace(manifest, version=version, metrics={**manifest.metrics, "f1": f1}))


def test_register_list_promote_best_and_roll_back(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    register_versions(registry, artifact, {"v1": 0.90, "v2": 0.95, "v3": 0.92})

    listed = registry.list_versions()
    assert [(manifest.version, manifest.metrics["f1"]) for manifest in listed] == [("v1", 0.90), ("v2", 0.95), ("v3", 0.92)]
    assert registry.find_champion_version() is None

    registry.promote("v3")
    assert registry.promote_best("f1") == "v2"
    assert registry.champion_version() == "v2"
    assert registry.champion_history() == ["v3"]
    assert aws.ssm.get_parameter(Name=champion_parameter_name(aws.app_name, MODEL))["Parameter"]["Value"] == "v2"

    assert registry.rollback() == "v3"
    assert registry.champion_version() == "v3"
    with pytest.raises(SmlError, match=r"no previous champion to roll back to \(current: v3\)"):
        registry.rollback()


def test_rollback_walks_back_through_every_previous_champion(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    register_versions(registry, artifact, {"v1": 0.9, "v2": 0.9, "v3": 0.9})
    for version in ("v1", "v2", "v2", "v3"):
        registry.promote(version)
    assert registry.champion_history() == ["v1", "v2"]
    assert [registry.rollback(), registry.rollback()] == ["v2", "v1"]
    assert registry.champion_history() == []


def test_promotion_moves_only_the_pointer(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    register_versions(registry, artifact, {"v1": 0.9, "v2": 0.8})
    before = {item["Key"]: item["ETag"] for item in aws.s3.list_objects_v2(Bucket=aws.bucket)["Contents"]}
    registry.promote("v2")
    registry.promote_best("f1")
    registry.rollback()
    after = {item["Key"]: item["ETag"] for item in aws.s3.list_objects_v2(Bucket=aws.bucket)["Contents"]}
    assert after == before


def test_registered_manifest_is_the_source_of_truth(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    path, manifest = artifact
    stored = registry.register(path, replace(manifest, sha256=""))
    assert stored.sha256 == manifest.sha256
    assert stored.artifact_key == f"models/{MODEL}/v1/model.joblib"
    assert registry.manifest("v1") == stored
    assert aws.s3.get_object(Bucket=aws.bucket, Key=stored.artifact_key)["Body"].read() == path.read_bytes()


def test_versions_are_immutable(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    registry.register(*artifact)
    with pytest.raises(SmlError, match="version v1 of model 'breast-cancer' is already registered"):
        registry.register(*artifact)


def test_register_refuses_an_artifact_that_is_not_the_manifests(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    path, manifest = artifact
    with pytest.raises(ArtifactIntegrityError, match=r"version v1: .* has sha256 [0-9a-f]{64}, the manifest says 0{64}"):
        aws.registry().register(path, replace(manifest, sha256="0" * 64))
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=aws.bucket)


def test_unknown_version_and_metric_are_named(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    register_versions(registry, artifact, {"v1": 0.9})
    registry.promote("v1")
    with pytest.raises(
        SmlError, match=r"version v9 of model 'breast-cancer' is not registered \(no s3://.*/models/breast-cancer/v9/manifest.json\)"
    ):
        registry.promote("v9")
    with pytest.raises(SmlError, match="no registered version has metric 'f2'; available: accuracy, brier, ece, f1, f1_macro, f1_weighted, log_loss, precision, precision_macro"):
        registry.promote_best("f2")
    assert registry.champion_version() == "v1"


def test_promote_best_with_nothing_registered_says_to_train(aws: Aws) -> None:
    with pytest.raises(
        SmlError,
        match=r"no versions of model 'breast-cancer' are registered in s3://sml-test-\w+/models/breast-cancer/; run `sml train` first",
    ):
        aws.registry().promote_best("f1")


def test_missing_champion_gives_a_clear_error(aws: Aws, tmp_path: Path) -> None:
    parameter = champion_parameter_name(aws.app_name, MODEL)
    with pytest.raises(ChampionNotSetError) as caught:
        aws.load(tmp_path / "cache")
    assert str(caught.value) == (
        f"model 'breast-cancer' has no champion: SSM parameter {parameter} is not set; "
        "promote a registered version with `sml promote VERSION` or `sml promote --best-by f1`"
    )


def test_champion_that_is_not_registered_is_named(aws: Aws, tmp_path: Path) -> None:
    aws.ssm.put_parameter(Name=champion_parameter_name(aws.app_name, MODEL), Value="v7", Type="String")
    with pytest.raises(SmlError, match="version v7 of model 'breast-cancer' is not registered"):
        aws.load(tmp_path / "cache")


def test_loader_verifies_and_serves_the_champion_then_reuses_its_cache(
    aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path
) -> None:
    registry = aws.registry()
    register_versions(registry, artifact, {"v1": 0.9, "v2": 0.95})
    registry.promote_best("f1")
    cache_dir = tmp_path / "cache"

    loaded = aws.load(cache_dir)
    assert loaded.version == "v2" and loaded.manifest == registry.manifest("v2")
    assert [path.name for path in cache_dir.iterdir()] == [f"{loaded.manifest.sha256}.joblib"]
    row = {spec.name: spec.minimum if spec.kind == "numeric" else "low" for spec in loaded.manifest.features}
    assert loaded.model.predict(rows_to_matrix([row], loaded.manifest.features))[0] in loaded.manifest.classes

    aws.s3.delete_object(Bucket=aws.bucket, Key=loaded.manifest.artifact_key)
    assert aws.load(cache_dir).version == "v2"


def test_tampered_artifact_is_refused_naming_the_version(aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path) -> None:
    registry = aws.registry()
    stored = registry.register(*artifact)
    registry.promote("v1")
    aws.s3.put_object(Bucket=aws.bucket, Key=stored.artifact_key, Body=artifact[0].read_bytes() + b"\x00")
    cache_dir = tmp_path / "cache"
    with pytest.raises(
        ArtifactIntegrityError, match=r"model 'breast-cancer' version v1: artifact s3://.*/model.joblib has sha256 .*refusing to load it"
    ):
        aws.load(cache_dir)
    assert list(cache_dir.iterdir()) == []


def test_tampered_cache_file_is_refused_removed_and_fetched_again(aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path) -> None:
    registry = aws.registry()
    stored = registry.register(*artifact)
    registry.promote("v1")
    cache_dir = tmp_path / "cache"
    aws.load(cache_dir)
    cached = cache_dir / f"{stored.sha256}.joblib"
    cached.write_bytes(b"not the model")
    with pytest.raises(ArtifactIntegrityError, match="version v1"):
        aws.load(cache_dir)
    assert not cached.exists()
    assert aws.load(cache_dir).manifest.sha256 == stored.sha256


def test_scikit_learn_mismatch_warns_or_refuses(
    aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, manifest = artifact
    registry = aws.registry()
    registry.register(path, replace(manifest, library_versions={**manifest.library_versions, "scikit-learn": "0.1.0"}))
    registry.promote("v1")
    with caplog.at_level(logging.WARNING, logger="sml.lifecycle.registry"):
        assert aws.load(tmp_path / "cache").version == "v1"
    assert "trained with scikit-learn 0.1.0" in caplog.text
    with pytest.raises(LibraryVersionError, match=r"version v1 was trained with scikit-learn 0\.1\.0, this is [\d.]+; refusing to load it"):
        aws.load(tmp_path / "cache", sklearn_version_policy="refuse")


def test_missing_bucket_is_named_with_the_fix(aws: Aws) -> None:
    registry = aws.registry(bucket=f"sml-missing-{uuid.uuid4().hex[:8]}")
    expected = f"S3 bucket '{registry.bucket}' does not exist; start the local stack with `sml up` or set SML_BUCKET"
    for call in (registry.check_bucket, registry.list_versions):
        with pytest.raises(SmlError) as caught:
            call()
        assert str(caught.value) == expected


def test_unreachable_endpoint_is_one_clear_error(tmp_path: Path) -> None:
    endpoint = "http://127.0.0.1:9"
    no_retries = Config(retries={"max_attempts": 1}, connect_timeout=1)
    client = boto3.client("ssm", region_name="us-east-1", endpoint_url=endpoint, config=no_retries)
    registry = ModelRegistry(client, client, bucket="b-unreachable", app_name="sml", model_name=MODEL)
    with pytest.raises(
        SmlError, match=rf"reading SSM parameter /sml/{MODEL}/champion: Could not connect to the endpoint URL: \"{endpoint}/\""
    ):
        registry.champion_version()


def test_no_credentials_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    session = boto3.session.Session(region_name="us-east-1")
    registry = ModelRegistry(session.client("s3"), session.client("ssm"), bucket="b-nocreds", app_name="sml", model_name=MODEL)
    with pytest.raises(SmlError, match="Unable to locate credentials; start the local stack with `sml up` or configure AWS credentials"):
        registry.check_bucket()


def test_pointer_name_matches_the_settings_contract() -> None:
    settings = load_settings(AwsSettings, {"SML_APP_NAME": "shop", "SML_MODEL_NAME": "churn"})
    assert champion_parameter_name(settings.app_name, settings.model_name) == settings.champion_parameter


@pytest.mark.parametrize("library", ["numpy", "joblib"])
def test_numpy_and_joblib_mismatches_warn_or_refuse_naming_the_library(
    aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path, caplog: pytest.LogCaptureFixture, library: str
) -> None:
    path, manifest = artifact
    registry = aws.registry()
    registry.register(path, replace(manifest, library_versions={**manifest.library_versions, library: "0.0.1"}))
    registry.promote("v1")
    with caplog.at_level(logging.WARNING, logger="sml.lifecycle.registry"):
        assert aws.load(tmp_path / "cache").version == "v1"
    assert f"trained with {library} 0.0.1, this is" in caplog.text
    with pytest.raises(LibraryVersionError, match=rf"version v1 was trained with {library} 0\.0\.1, this is [\d.]+; refusing to load it"):
        aws.load(tmp_path / "cache", sklearn_version_policy="refuse")


@pytest.mark.parametrize(
    ("pickle_bytes", "error"),
    [
        (b"\x80\x04cnumpy._core_of_another_numpy\n_reconstruct\n.", "ModuleNotFoundError"),
        (b"\x80\x04cnumpy\nclass_this_numpy_lacks\n.", "AttributeError"),
        (b"\x80\x04\x95", "error"),  # truncated: the pure-Python unpickler joblib uses raises struct.error
    ],
)
def test_an_artifact_that_cannot_be_unpickled_is_an_sml_error_naming_the_cause(
    aws: Aws, artifact: tuple[Path, ModelManifest], tmp_path: Path, pickle_bytes: bytes, error: str
) -> None:
    _, manifest = artifact
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(pickle_bytes)
    registry = aws.registry()
    registry.register(broken, replace(manifest, sha256="", library_versions={**manifest.library_versions, "numpy": "0.9.0"}))
    registry.promote("v1")

    expected = rf"version v1: artifact s3://.* cannot be unpickled here \(({error}).*numpy 0\.9\.0, this is"
    with pytest.raises(ArtifactLoadError, match=expected):
        aws.load(tmp_path / "cache")


def test_promote_best_by_a_loss_picks_the_lowest(aws: Aws, artifact: tuple[Path, ModelManifest]) -> None:
    registry = aws.registry()
    path, manifest = artifact
    for version, (f1, log_loss) in {"v1": (0.9, 0.30), "v2": (0.8, 0.20), "v3": (0.95, 0.50)}.items():
        registry.register(path, replace(manifest, version=version, metrics={**manifest.metrics, "f1": f1, "log_loss": log_loss}))
    assert registry.best_version("log_loss") == "v2"
    assert registry.best_version("f1") == "v3"
