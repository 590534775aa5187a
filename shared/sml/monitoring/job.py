"""The drift job: compare a production window with the reference, store, report and alert.

One run (:func:`run_drift_job`):

1. current window = the ``window_length`` before ``window_end``, read from ``predictions``;
2. reference = the training reference in the model's manifest (``training``), or the window of
   the same length just before the current one (``previous``);
3. every feature and the predicted label are tested (:mod:`sml.monitoring.drift.stats`), with the
   Benjamini–Hochberg correction and the effect-size floors of the configuration, over which the
   model's own drift config in its manifest takes precedence for the keys it sets
   (:mod:`sml.monitoring.config`); each test records its floor's source;
4. data quality against the training profile, with the values predict refused in the window
   (:mod:`sml.monitoring.data_quality.checks`); model quality (:mod:`sml.monitoring.model_quality.metrics`): realized performance of the window's labelled
   predictions against the manifest's held-out metrics, and the CBPE estimate for all of them;
5. the HTML report goes to ``s3://<bucket>/<report_prefix><model>/<window end>-<run id>.html``
   (and to ``report_dir`` when given): one object per run, so an earlier run's link and alert keep
   showing that run;
6. the run (with its quality) replaces any stored run of the same model and window end;
7. the alert goes to the SNS topic, whatever the verdict.

Entry points (the drift Lambda, ``sml drift``) build the clients and the engine and call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import Engine

from sml.monitoring.alerts import publish_drift_alert
from sml.monitoring.config import DEPLOYMENT_VARIABLES, DeploymentFloors, EffectiveFloor, ModelDriftConfig, resolve_floors
from sml.monitoring.model_quality.metrics import QualityConfig
from sml.monitoring.model_quality.store import assess_window_quality, read_window_with_quality
from sml.monitoring.data_quality.checks import DataQualityThresholds, read_refused_counts, run_data_quality_checks
from sml.monitoring.drift.power import CertifiableShift, certifiable_shifts
from sml.monitoring.report import render_drift_report
from sml.monitoring.drift.stats import (
    CategoricalReference,
    FeatureSpec,
    FeatureTestResult,
    overall_verdict,
    reference_from_columns,
    run_drift_tests,
)
from sml.monitoring.store import DriftRun, feature_trends, save_drift_run
from sml.monitoring.windows import TimeWindow, check_window_end, read_window
from sml.core.errors import SmlError
from sml.core.events import new_prediction_id
from sml.lifecycle.manifest import ModelManifest
from sml.core.settings import DriftSettings

# The predicted label is tested like a categorical column under this name, which no feature can
# clash with in a readable report (feature names come from the training data's columns).
LABEL_COLUMN = "(predicted label)"
TREND_RUNS = 12  # runs per trend chart in the report, this one included
PRESIGNED_URL_SECONDS = 7 * 24 * 3600  # the longest SigV4 allows
ReferenceKind = Literal["training", "previous"]
# DriftJobConfig's floors and the DriftSettings fields (SML_DRIFT_MIN_*) they are read from.
FLOOR_SETTINGS = {"min_ks_d": "min_effect_numeric", "min_cramers_v": "min_effect_categorical", "min_missing_rate_h": "min_missing_rate_h"}


@dataclass(frozen=True)
class DriftJobConfig:
    """How a run compares, and where its report and alert go.

    :param fdr: Benjamini–Hochberg false discovery rate across the run's tests.
    :param min_ks_d, min_cramers_v, min_missing_rate_h: effect-size floors (KS D, Cramér's V,
        Cohen's h of the missing rate): see :func:`sml.monitoring.drift.stats.run_drift_tests` for the
        verdict rule and what the defaults mean in standard deviations and shares.
    :param floors: per feature, a floor for its main test replacing ``min_ks_d``/``min_cramers_v``.
    :param min_samples: fewer values on either side make a test INCONCLUSIVE.
    :param topic_arn: the alerts topic; ``None`` publishes nothing (local runs without a stack).
    :param quality: how model quality is judged (:mod:`sml.monitoring.model_quality.metrics`); ``None`` skips it.
    :param set_by_deployment: which of ``min_ks_d``, ``min_cramers_v``, ``min_missing_rate_h`` the
        deployment set (:meth:`from_settings` fills it from the variables given); ``None`` counts
        those that differ from the defaults, so a value set equal to its default reads as a default.
    """

    bucket: str
    window_length: timedelta = timedelta(days=7)
    reference_kind: ReferenceKind = "training"
    fdr: float = 0.05
    min_ks_d: float = 0.1
    min_cramers_v: float = 0.1
    min_missing_rate_h: float = 0.2
    min_samples: int = 30
    floors: Mapping[str, float | str] = field(default_factory=dict)
    report_prefix: str = "reports/"
    topic_arn: str | None = None
    quality: QualityConfig | None = field(default_factory=QualityConfig)
    data_quality: DataQualityThresholds = field(default_factory=DataQualityThresholds)
    set_by_deployment: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: DriftSettings, **overrides: Any) -> DriftJobConfig:
        """The configuration ``SML_DRIFT_*`` describes, with ``overrides`` (e.g. from the CLI) on top."""
        values: dict[str, Any] = {
            "bucket": settings.bucket,
            "window_length": timedelta(days=settings.window_days),
            "reference_kind": settings.reference,
            "fdr": settings.fdr,
            **{key: getattr(settings, name) for key, name in FLOOR_SETTINGS.items()},
            "min_samples": settings.min_samples,
            "floors": settings.feature_floors,
            "report_prefix": settings.report_prefix,
            "topic_arn": settings.topic_arn,
            "quality": QualityConfig.from_settings(settings.quality_metric, settings.quality_tolerance, settings.quality_min_labels),
            "data_quality": DataQualityThresholds(
                max_out_of_range=settings.dq_max_out_of_range,
                max_unseen_category=settings.dq_max_unseen_category,
                max_missing_excess=settings.dq_max_missing_excess,
                max_refused_rate=settings.dq_max_refused_rate,
            ),
        }
        # Given is what counts, not a value other than the default: SML_DRIFT_MIN_KS_D=0.1 is the deployment's floor.
        given = {key for key, name in FLOOR_SETTINGS.items() if name in settings.model_fields_set} | (overrides.keys() & FLOOR_SETTINGS.keys())
        return cls(**{**values, "set_by_deployment": frozenset(given), **overrides})

    def parameters(self) -> dict[str, Any]:
        """What the verdicts depend on, as stored with the run."""
        return {
            "window_seconds": self.window_length.total_seconds(),
            "reference": self.reference_kind,
            "fdr": self.fdr,
            "min_ks_d": self.min_ks_d,
            "min_cramers_v": self.min_cramers_v,
            "min_missing_rate_h": self.min_missing_rate_h,
            "min_samples": self.min_samples,
            **({"floors": dict(sorted(self.floors.items()))} if self.floors else {}),
            "dq_max_out_of_range": self.data_quality.max_out_of_range,
            "dq_max_unseen_category": self.data_quality.max_unseen_category,
            "dq_max_missing_excess": self.data_quality.max_missing_excess,
            "dq_max_refused_rate": self.data_quality.max_refused_rate,
        }

    def deployment_floors(self) -> DeploymentFloors:
        """This configuration's floors, with which of them the deployment set (see ``set_by_deployment``)."""
        set_by_deployment = self.set_by_deployment
        if set_by_deployment is None:
            set_by_deployment = frozenset(name for name in DEPLOYMENT_VARIABLES if getattr(self, name) != getattr(DriftJobConfig, name))
        return DeploymentFloors(
            min_ks_d=self.min_ks_d,
            min_cramers_v=self.min_cramers_v,
            min_missing_rate_h=self.min_missing_rate_h,
            feature_floors=self.floors,
            set_by_deployment=set_by_deployment,
        )

    def for_model(self, manifest: ModelManifest) -> tuple[DriftJobConfig, dict[tuple[str, str], EffectiveFloor]]:
        """This configuration with the model's drift config (if its manifest has one) on top, and the
        floor of every test with its source (:func:`sml.monitoring.config.resolve_floors`).

        :raises SmlError: the manifest's drift config or a deployment floor does not fit the model.
        """
        model = model_drift_config(manifest)
        floors = resolve_floors(drift_schema(manifest), self.deployment_floors(), model)
        if model is None:
            return self, floors
        quality = self.quality
        if quality is not None and model.quality:
            quality = replace(quality, **dict(model.quality))
        return replace(self, data_quality=model.data_quality_thresholds(self.data_quality), quality=quality), floors


@dataclass(frozen=True)
class DriftJobResult:
    """The stored run, the report's path on disk (when asked for) and the SNS message id."""

    run: DriftRun
    report_path: Path | None
    message_id: str | None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest of the run, as the drift Lambda returns and logs it."""
        run = self.run
        return {
            "run_id": run.run_id,
            "status": run.status.value,
            "model_name": run.model_name,
            "model_version": run.model_version,
            "window_start": run.window.start.isoformat(),
            "window_end": run.window.end.isoformat(),
            "reference_kind": run.reference_kind,
            "reference_rows": run.reference_rows,
            "current_rows": run.current_rows,
            "features_tested": run.features_tested,
            "drifted_features": run.drifted_features,
            "label_drifted": run.label_drifted,
            "data_quality_status": run.data_quality_status,
            "requests_refused": sum(run.refused_requests.values()),
            "report_uri": run.report_uri,
            "message_id": self.message_id,
            **quality_summary(run),
        }


def run_drift_job(
    config: DriftJobConfig,
    manifest: ModelManifest,
    *,
    engine: Engine,
    s3_client: Any,
    sns_client: Any | None,
    window_end: datetime,
    report_dir: Path | None = None,
) -> DriftJobResult:
    """Run the drift job for the model of ``manifest`` (usually the champion's) once.

    :param engine: the database with ``predictions`` and the drift tables.
    :param s3_client: stores the report in ``config.bucket`` and presigns its link.
    :param sns_client: publishes the alert when ``config.topic_arn`` is set.
    :param window_end: the end of the current window (aware UTC); the run's key with the model.
        At most :data:`~sml.monitoring.windows.MAX_CLOCK_SKEW` after now.
    :param report_dir: also write the report there, as ``<model>/<window end>-<run id>.html``.
    :returns: a :class:`DriftJobResult`.
    :raises SmlError: S3 or SNS refused the report or the alert (names the bucket or topic), or the
        window ends in the future.
    """
    check_window_end(window_end)
    window = TimeWindow.ending_at(window_end, config.window_length)
    config, floors = config.for_model(manifest)
    schema = drift_schema(manifest)
    quality_sample = None
    if config.quality:
        # One pass over the window for drift and quality (a second read cost as much as the first).
        current, quality_sample = read_window_with_quality(engine, manifest.model_name, window, manifest.features, manifest.classes)
    else:
        current = read_window(engine, manifest.model_name, window, manifest.features)
    current_columns = {**current.columns(), LABEL_COLUMN: current.labels}
    reference_window = None
    if config.reference_kind == "training":
        reference = training_reference(manifest)
        reference_rows = manifest.reference.n_rows
    else:
        reference_window = window.previous()
        previous = read_window(engine, manifest.model_name, reference_window, manifest.features)
        reference = reference_from_columns({**previous.columns(), LABEL_COLUMN: previous.labels}, schema)
        reference_rows = previous.n_rows
    refused = read_refused_counts(engine, manifest.model_name, window.start, window.end)
    results = run_drift_tests(
        reference,
        current_columns,
        schema,
        fdr=config.fdr,
        min_ks_d=config.min_ks_d,
        min_cramers_v=config.min_cramers_v,
        min_missing_rate_h=config.min_missing_rate_h,
        min_samples=config.min_samples,
        floors={feature: floor.value for (feature, test), floor in floors.items() if test != "missing_rate"},
        missing_rate_floors={feature: floor.value for (feature, test), floor in floors.items() if test == "missing_rate"},
    )
    results = [_with_floor_source(result, floors[result.feature, result.test]) for result in results]
    run = DriftRun(
        run_id=new_prediction_id(),
        model_name=manifest.model_name,
        model_version=manifest.version,
        window=window,
        reference_kind=config.reference_kind,
        reference_rows=reference_rows,
        current_rows=current.n_rows,
        status=overall_verdict(results),
        results=tuple(results),
        parameters=_run_parameters(config, floors, manifest),
        created_at=datetime.now(timezone.utc),
        reference_window=reference_window,
        quality=assess_window_quality(engine, manifest, window, config.quality, quality_sample) if config.quality else None,
        # Against the training profile whatever the drift reference: range and categories are what the model saw.
        data_quality=tuple(run_data_quality_checks(training_reference(manifest), current_columns, schema, config.data_quality, refused)),
        refused_requests=dict(refused.requests),
    )
    trends = feature_trends(engine, manifest.model_name, before=window.end, limit=TREND_RUNS - 1)
    report = render_drift_report(run, reference, current_columns, trends=trends).encode("utf-8")
    key = report_key(config.report_prefix, run.model_name, window.end, run.run_id)
    run = replace(run, report_uri=f"s3://{config.bucket}/{key}", report_url=_upload_report(s3_client, config.bucket, key, report))
    report_path = None
    if report_dir is not None:
        report_path = report_dir / key.removeprefix(config.report_prefix)
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_bytes(report)
    save_drift_run(engine, run)
    message_id = None
    if config.topic_arn:
        message_id = _publish(sns_client, config.topic_arn, run)
    return DriftJobResult(run=run, report_path=report_path, message_id=message_id)


def quality_summary(run: DriftRun) -> dict[str, Any]:
    """The model quality part of :meth:`DriftJobResult.summary` (empty when quality was not assessed)."""
    quality = run.quality
    if quality is None:
        return {}
    realized = quality.realized.get(quality.config.metric) if quality.realized else None
    estimated = quality.estimated.get(quality.config.metric) if quality.estimated else None
    return {
        "quality_status": quality.status.value,
        "quality_reason": quality.reason,
        "quality_metric": quality.config.metric,
        "quality_realized": None if realized is None else realized.value,
        "quality_estimated": None if estimated is None else estimated.value,
        "quality_reference": quality.reference_value,
        "labelled": quality.n_labelled,
        "label_coverage": quality.coverage,
    }


def drift_schema(manifest: ModelManifest) -> list[Any]:
    """The columns a run tests: the manifest's features, then the predicted label."""
    label = FeatureSpec(LABEL_COLUMN, "label", categories=tuple(str(label) for label in manifest.classes))
    return [*manifest.features, label]


def model_drift_config(manifest: ModelManifest) -> ModelDriftConfig | None:
    """The drift config the model was registered with, or ``None`` (older manifests have none).

    :raises SmlError: naming the manifest when its drift config cannot be read.
    """
    if manifest.drift_config is None:
        return None
    where = f"{manifest.model_name} {manifest.version} manifest"
    return ModelDriftConfig.from_manifest(manifest.drift_config, manifest=where).check_features(manifest.features)


def certifiable_floors(config: DriftJobConfig, manifest: ModelManifest, *, window_rows: int) -> list[CertifiableShift]:
    """Per test of a run against the training reference, the smallest shift it can certify as
    absent (:func:`sml.monitoring.drift.power.certifiable_shifts`) against the floor the run would use (the
    deployment's settings with the model's drift config on top), for windows of ``window_rows``
    rows and unlimited ones. ``sml promote`` and ``sml train`` warn with it.
    """
    _, floors = config.for_model(manifest)
    shifts = certifiable_shifts(
        training_reference(manifest),
        drift_schema(manifest),
        {key: floor.value for key, floor in floors.items()},
        window_rows=window_rows,
        min_samples=config.min_samples,
    )
    return [replace(shift, floor_setting=floors[shift.feature, shift.test].setting) for shift in shifts]


def _with_floor_source(result: FeatureTestResult, floor: EffectiveFloor) -> FeatureTestResult:
    return replace(result, detail={**result.detail, "floor_source": floor.source, "floor_setting": floor.setting, "floor_given": floor.given})


def _run_parameters(config: DriftJobConfig, floors: Mapping[tuple[str, str], EffectiveFloor], manifest: ModelManifest) -> dict[str, Any]:
    """What the verdicts depend on: the effective configuration, and per test its floor and where that came from."""
    effective = {
        f"{feature}/{test}": {"floor": floor.value, "given": floor.given, "source": floor.source, "setting": floor.setting}
        for (feature, test), floor in floors.items()
    }
    model = {"model_drift_config": manifest.drift_config} if manifest.drift_config is not None else {}
    return {**config.parameters(), "effective_floors": effective, **model}


def training_reference(manifest: ModelManifest) -> dict[str, Any]:
    """The manifest's training reference per column of :func:`drift_schema`."""
    return {**manifest.reference.features, LABEL_COLUMN: CategoricalReference(counts=manifest.reference.label_counts)}


def report_key(prefix: str, model_name: str, window_end: datetime, run_id: str) -> str:
    """``<prefix><model>/<window end as YYYYmmddTHHMMSS.ffffffZ>-<run id>.html``: one object per run.

    The window end keeps its microseconds, as the run's key does, and the run id tells apart
    reruns of one window (a rerun replaces the stored run, not the report an earlier alert links to).
    """
    return f"{prefix}{model_name}/{window_end.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{run_id}.html"


def _upload_report(s3_client: Any, bucket: str, key: str, report: bytes) -> str:
    try:
        s3_client.put_object(Bucket=bucket, Key=key, Body=report, ContentType="text/html; charset=utf-8")
        # Signed with the caller's credentials: on Lambda the link lapses with the role's session.
        return str(s3_client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGNED_URL_SECONDS))
    except (ClientError, BotoCoreError) as exc:
        raise SmlError(f"storing the drift report in s3://{bucket}/{key}: {exc}") from exc


def _publish(sns_client: Any, topic_arn: str, run: DriftRun) -> str:
    try:
        return publish_drift_alert(sns_client, topic_arn, run)
    except (ClientError, BotoCoreError) as exc:
        raise SmlError(f"publishing the drift alert to {topic_arn} (SML_TOPIC_ARN): {exc}") from exc
