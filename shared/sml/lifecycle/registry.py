"""The model registry: versions in S3, the champion pointer in SSM, and the verified loader.

Layout: ``s3://<bucket>/models/<name>/<version>/model.joblib`` and ``manifest.json`` beside it.
The manifest is uploaded last, so a version exists exactly when its manifest does. The champion
is the plain version string in the SSM parameter ``/<app>/<name>/champion``; the previous
champions, most recent last, are a JSON list in ``/<app>/<name>/champion-history``. Promotion
and rollback move the pointer and never touch S3.

joblib files are pickles, so :func:`load_champion` verifies the artifact's sha256 against the
manifest before ``joblib.load``, every time it loads from disk. Clients are passed in. This
module imports only what the predict image has (boto3, joblib, numpy via the pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from sml.core.errors import SmlError
from sml.lifecycle.manifest import ModelManifest

logger = logging.getLogger(__name__)

ARTIFACT_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
# 50 versions of ~25 characters stay far below SSM's 4 KB limit for a standard parameter.
MAX_CHAMPION_HISTORY = 50
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CHUNK_BYTES = 1024 * 1024


class ChampionNotSetError(SmlError):
    """No champion has been promoted for the model."""


class ArtifactIntegrityError(SmlError):
    """A model artifact's sha256 differs from its manifest; it is never unpickled."""


class LibraryVersionError(SmlError):
    """An installed library the pickle depends on differs from the one that saved it (policy ``refuse``)."""


class ArtifactLoadError(SmlError):
    """A verified artifact that cannot be unpickled here (a module or class missing, a corrupt pickle)."""


# The libraries whose code a joblib pickle of our pipelines references, as the manifest records them
# (sml.lifecycle.training.library_versions): a different numpy can lack modules a pickle names
# (numpy 2 pickles import numpy._core, which numpy 1 does not have).
PICKLE_LIBRARIES = ("scikit-learn", "numpy", "joblib")


def champion_parameter_name(app_name: str, model_name: str) -> str:
    """The SSM parameter holding the champion version (same as ``AwsSettings.champion_parameter``)."""
    return f"/{app_name}/{model_name}/champion"


def registry_for(settings: Any) -> ModelRegistry:
    """The registry of ``settings.model_name`` that :class:`~sml.core.settings.AwsSettings` name, with clients made from them."""
    from sml.core.aws import aws_client

    return ModelRegistry(
        aws_client("s3", settings),
        aws_client("ssm", settings),
        bucket=settings.bucket,
        app_name=settings.app_name,
        model_name=settings.model_name,
    )


class ModelRegistry:
    """Registered versions of one model in S3 and its champion pointer in SSM."""

    def __init__(self, s3_client: Any, ssm_client: Any, *, bucket: str, app_name: str, model_name: str) -> None:
        self._s3 = s3_client
        self._ssm = ssm_client
        self.bucket = bucket
        self.model_name = model_name
        self.prefix = f"models/{model_name}/"
        self.champion_parameter = champion_parameter_name(app_name, model_name)
        self.history_parameter = f"{self.champion_parameter}-history"

    def artifact_key(self, version: str) -> str:
        return f"{self.prefix}{_checked_version(version)}/{ARTIFACT_FILE}"

    def manifest_key(self, version: str) -> str:
        return f"{self.prefix}{_checked_version(version)}/{MANIFEST_FILE}"

    def check_bucket(self) -> None:
        """Fail early, with the bucket's name, when the registry bucket is missing or unreachable."""
        with self._aws(f"checking bucket {self.bucket!r}"):
            try:
                self._s3.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchBucket"):
                    raise SmlError(_missing_bucket_message(self.bucket)) from None
                raise

    def register(self, artifact_path: Path, manifest: ModelManifest) -> ModelManifest:
        """Upload a new version: ``model.joblib`` first, then ``manifest.json`` as the commit point.

        The sha256 is computed from ``artifact_path``; a non-empty ``manifest.sha256`` must match
        it. Returns the manifest as stored (with ``sha256`` and ``artifact_key`` filled in).

        Raises:
            SmlError: the manifest is for another model, the version exists already, or the
                artifact does not match the manifest's sha256.
        """
        if manifest.model_name != self.model_name:
            raise SmlError(f"manifest is for model {manifest.model_name!r}, this registry holds {self.model_name!r}")
        digest = file_sha256(artifact_path)
        if manifest.sha256 and manifest.sha256 != digest:
            raise ArtifactIntegrityError(
                f"version {manifest.version}: {artifact_path} has sha256 {digest}, the manifest says {manifest.sha256}"
            )
        stored = replace(manifest, sha256=digest, artifact_key=self.artifact_key(manifest.version))
        if self._exists(self.manifest_key(manifest.version)):
            raise SmlError(f"version {manifest.version} of model {self.model_name!r} is already registered; versions are immutable")
        with self._aws(f"uploading version {manifest.version}"):
            with artifact_path.open("rb") as artifact:
                self._s3.put_object(Bucket=self.bucket, Key=stored.artifact_key, Body=artifact)
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self.manifest_key(manifest.version),
                Body=stored.to_json().encode("utf-8"),
                ContentType="application/json",
            )
        return stored

    def list_versions(self) -> list[ModelManifest]:
        """Every registered version's manifest, oldest first."""
        keys: list[str] = []
        with self._aws(f"listing s3://{self.bucket}/{self.prefix}"):
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(f"/{MANIFEST_FILE}"))
        manifests = [self.manifest(key[len(self.prefix) : -len(MANIFEST_FILE) - 1]) for key in keys]
        return sorted(manifests, key=lambda manifest: (manifest.created_at, manifest.version))

    def manifest(self, version: str) -> ModelManifest:
        """The manifest of ``version``.

        Raises:
            SmlError: the version is not registered, or its manifest is malformed (names the key).
        """
        key = self.manifest_key(version)
        with self._aws(f"reading s3://{self.bucket}/{key}"):
            try:
                body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
                    raise SmlError(
                        f"version {version} of model {self.model_name!r} is not registered (no s3://{self.bucket}/{key})"
                    ) from None
                raise
        manifest = ModelManifest.from_json(body, source=f"s3://{self.bucket}/{key}")
        if manifest.version != version or manifest.model_name != self.model_name:
            raise SmlError(f"s3://{self.bucket}/{key} describes {manifest.model_name} {manifest.version}, not {self.model_name} {version}")
        return manifest

    def champion_version(self) -> str:
        """The version the champion pointer names.

        Raises:
            ChampionNotSetError: nothing has been promoted yet.
        """
        version = self.find_champion_version()
        if version is None:
            raise ChampionNotSetError(
                f"model {self.model_name!r} has no champion: SSM parameter {self.champion_parameter} is not set; "
                "promote a registered version with `sml promote VERSION` or `sml promote --best-by f1`"
            )
        return version

    def find_champion_version(self) -> str | None:
        """The champion version, or ``None`` when nothing has been promoted yet."""
        return self._get_parameter(self.champion_parameter)

    def champion_history(self) -> list[str]:
        """Previous champions, oldest first; :meth:`rollback` returns to the last one."""
        raw = self._get_parameter(self.history_parameter)
        if raw is None:
            return []
        try:
            history = json.loads(raw)
        except ValueError:
            history = None
        if not isinstance(history, list) or not all(isinstance(item, str) for item in history):
            raise SmlError(f"SSM parameter {self.history_parameter} is not a JSON list of versions; delete it to start a new history")
        return history

    def promote(self, version: str) -> None:
        """Make ``version`` the champion; the current champion is remembered for :meth:`rollback`.

        Raises:
            SmlError: ``version`` is not registered (names it).
        """
        self.manifest(version)
        current = self.find_champion_version()
        if current == version:
            return
        if current is not None:
            # History first: if the pointer write then fails, rollback skips the duplicate entry.
            self._put_parameter(self.history_parameter, json.dumps([*self.champion_history(), current][-MAX_CHAMPION_HISTORY:]))
        self._put_parameter(self.champion_parameter, version)

    def promote_best(self, metric: str) -> str:
        """Promote the registered version best by ``metric``; returns that version.

        Raises the errors of :meth:`best_version`.
        """
        version = self.best_version(metric)
        self.promote(version)
        return version

    def best_version(self, metric: str) -> str:
        """The registered version best by ``metric``: the highest score, or the lowest loss (``rmse``,
        ``mae``, ``log_loss``, ``brier``, ``ece``; :data:`sml.lifecycle.quality_metrics.QUALITY_METRICS`
        holds each metric's direction); ties go to the newest version. Versions without the metric are not candidates.

        Raises:
            SmlError: nothing is registered, or no version has ``metric`` (lists the metrics there are).
        """
        from sml.lifecycle.quality_metrics import ranking_key

        manifests = self.list_versions()
        if not manifests:
            raise SmlError(
                f"no versions of model {self.model_name!r} are registered in s3://{self.bucket}/{self.prefix}; run `sml train` first"
            )
        candidates = [manifest for manifest in manifests if metric in manifest.metrics]
        if not candidates:
            available = sorted({name for manifest in manifests for name in manifest.metrics})
            raise SmlError(f"no registered version has metric {metric!r}; available: {', '.join(available)}")
        try:
            ranking_key(metric, 0.0)
        except ValueError as exc:
            raise SmlError(f"cannot rank versions by {metric!r}: {exc}") from None
        best = max(candidates, key=lambda manifest: (ranking_key(metric, manifest.metrics[metric]), manifest.created_at, manifest.version))
        return best.version

    def rollback(self) -> str:
        """Make the previous champion the champion again; returns it.

        Raises:
            SmlError: there is no previous champion.
        """
        current = self.find_champion_version()
        history = self.champion_history()
        while history and history[-1] == current:
            history.pop()
        if not history:
            raise SmlError(f"model {self.model_name!r} has no previous champion to roll back to (current: {current or 'none'})")
        previous = history.pop()
        self.manifest(previous)
        self._put_parameter(self.history_parameter, json.dumps(history))
        self._put_parameter(self.champion_parameter, previous)
        return previous

    def fetch_artifact(self, manifest: ModelManifest, cache_dir: Path) -> Path:
        """The artifact of ``manifest`` in ``cache_dir`` (named by sha256), downloaded only when absent.

        The file is not verified here: :func:`load_version` verifies it right before unpickling.
        """
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{manifest.sha256}.joblib"
        if path.exists():
            return path
        descriptor, partial_name = tempfile.mkstemp(dir=cache_dir, prefix=".download-")
        partial = Path(partial_name)
        try:
            with os.fdopen(descriptor, "wb") as target, self._aws(f"downloading s3://{self.bucket}/{manifest.artifact_key}"):
                body = self._s3.get_object(Bucket=self.bucket, Key=manifest.artifact_key)["Body"]
                for chunk in body.iter_chunks(_CHUNK_BYTES):
                    target.write(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def _exists(self, key: str) -> bool:
        with self._aws(f"checking s3://{self.bucket}/{key}"):
            try:
                self._s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey"):
                    return False
                raise
        return True

    def _get_parameter(self, name: str) -> str | None:
        with self._aws(f"reading SSM parameter {name}"):
            try:
                return self._ssm.get_parameter(Name=name)["Parameter"]["Value"]
            except ClientError as exc:
                if _error_code(exc) == "ParameterNotFound":
                    return None
                raise

    def _put_parameter(self, name: str, value: str) -> None:
        with self._aws(f"writing SSM parameter {name}"):
            self._ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    @contextmanager
    def _aws(self, action: str) -> Iterator[None]:
        """Turn AWS failures into one-line :class:`SmlError` messages that say what was being done."""
        try:
            yield
        except ClientError as exc:
            if _error_code(exc) == "NoSuchBucket":
                raise SmlError(_missing_bucket_message(self.bucket)) from None
            error = exc.response.get("Error", {})
            raise SmlError(f"{action}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise SmlError(f"{action}: {exc}; start the local stack with `sml up` or configure AWS credentials and region") from None


@dataclass(frozen=True)
class LoadedModel:
    """A verified, unpickled model with the manifest it was registered with."""

    model: Any
    manifest: ModelManifest
    version: str
    load_seconds: float


def load_champion(
    s3_client: Any,
    ssm_client: Any,
    *,
    bucket: str,
    app_name: str,
    model_name: str,
    cache_dir: Path,
    sklearn_version_policy: Literal["warn", "refuse"] = "warn",
    before_unpickle: Callable[[ModelManifest], None] | None = None,
) -> LoadedModel:
    """Load the champion: read the pointer, fetch (or reuse) the artifact, verify, unpickle.

    Args:
        s3_client, ssm_client: boto3 clients (moto in tests and local mode).
        bucket, app_name, model_name: where the registry and the pointer live.
        cache_dir: folder for artifacts, named by sha256 (``/tmp`` on Lambda), so a warm
            container reuses the file; it is re-verified before every load.
        sklearn_version_policy: ``warn`` logs a warning when an installed library of
            :data:`PICKLE_LIBRARIES` differs from the manifest's; ``refuse`` raises
            :class:`LibraryVersionError` instead.
        before_unpickle: called with the manifest right before the verified artifact is
            unpickled (predict prepares the imports the model's input format needs).

    Raises:
        ChampionNotSetError: no champion promoted.
        ArtifactIntegrityError: the artifact's sha256 differs from the manifest (names the version).
        LibraryVersionError: a library differs and the policy is ``refuse`` (names each one).
        ArtifactLoadError: the artifact cannot be unpickled here (names the error and any
            library that differs from the manifest's).
        SmlError: the champion's version is not registered, or AWS is unreachable.
    """
    started = time.perf_counter()
    registry = ModelRegistry(s3_client, ssm_client, bucket=bucket, app_name=app_name, model_name=model_name)
    loaded = load_version(
        registry, registry.champion_version(), cache_dir=cache_dir, sklearn_version_policy=sklearn_version_policy, before_unpickle=before_unpickle
    )
    return replace(loaded, load_seconds=time.perf_counter() - started)


def load_version(
    registry: ModelRegistry,
    version: str,
    *,
    cache_dir: Path,
    sklearn_version_policy: Literal["warn", "refuse"] = "warn",
    before_unpickle: Callable[[ModelManifest], None] | None = None,
) -> LoadedModel:
    """Load one registered version the way :func:`load_champion` loads the champion.

    Raises the errors :func:`load_champion` documents, except :class:`ChampionNotSetError`.
    """
    started = time.perf_counter()
    manifest = registry.manifest(version)
    mismatches = check_library_versions(manifest, sklearn_version_policy)
    path = registry.fetch_artifact(manifest, cache_dir)
    source = f"s3://{registry.bucket}/{manifest.artifact_key}"
    if before_unpickle is not None:
        before_unpickle(manifest)
    model = _verified_load(path, manifest, source=source, mismatches=mismatches)
    return LoadedModel(model=model, manifest=manifest, version=version, load_seconds=time.perf_counter() - started)


def library_mismatches(manifest: ModelManifest) -> list[str]:
    """Each library of :data:`PICKLE_LIBRARIES` whose installed version differs from the manifest's,
    as ``"numpy 2.1.0, this is 1.26.4"``; a library the manifest does not record is not compared."""
    mismatches = []
    for name in PICKLE_LIBRARIES:
        trained_with = manifest.library_versions.get(name)
        if trained_with is None:
            continue
        installed = installed_version(name)
        if trained_with != installed:
            mismatches.append(f"{name} {trained_with}, this is {installed}")
    return mismatches


def check_library_versions(manifest: ModelManifest, policy: Literal["warn", "refuse"]) -> list[str]:
    """Compare scikit-learn, numpy and joblib with the versions in ``manifest``; warn or refuse.

    :returns: the mismatches (see :func:`library_mismatches`), after logging a warning (``warn``).
    :raises LibraryVersionError: any mismatch under ``refuse``, naming each library.
    """
    mismatches = library_mismatches(manifest)
    if not mismatches:
        return mismatches
    message = f"model {manifest.model_name!r} version {manifest.version} was trained with {'; '.join(mismatches)}"
    if policy == "refuse":
        raise LibraryVersionError(f"{message}; refusing to load it (SML_SKLEARN_VERSION_POLICY=refuse)")
    logger.warning("%s; predictions may differ", message)
    return mismatches


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_load(path: Path, manifest: ModelManifest, *, source: str, mismatches: list[str]) -> Any:
    import joblib

    digest = file_sha256(path)
    if digest != manifest.sha256:
        # The cache is named by the expected sha256, so a bad file must not stay there.
        path.unlink(missing_ok=True)
        raise ArtifactIntegrityError(
            f"model {manifest.model_name!r} version {manifest.version}: artifact {source} has sha256 {digest}, "
            f"but its manifest says {manifest.sha256}; refusing to load it"
        )
    try:
        return joblib.load(path)
    except Exception as exc:
        # The bytes are the registered ones (sha256 above), so whatever unpickling raises (a module,
        # class or attribute missing here, a format this numpy or joblib cannot read: ImportError,
        # AttributeError, UnpicklingError, struct.error, ...) means this image cannot load them.
        cause = f"trained with {'; '.join(mismatches)}" if mismatches else "the libraries match the manifest's"
        raise ArtifactLoadError(
            f"model {manifest.model_name!r} version {manifest.version}: artifact {source} cannot be unpickled here "
            f"({type(exc).__name__}: {exc}); {cause}"
        ) from exc


def _checked_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise SmlError(f"version {version!r} is not a valid version name (letters, digits, '.', '_', '-'; at most 64)")
    return version


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing_bucket_message(bucket: str) -> str:
    return f"S3 bucket {bucket!r} does not exist; start the local stack with `sml up` or set SML_BUCKET"
