"""The drift job: compare a production window with the reference, store, report and alert.

One run (:func:`run_drift_job`), in this order:

1. resolve the configuration: the deployment's, with the model's own drift config in its
   manifest on top for the keys it sets (:mod:`sml.monitoring.config`): the columns to test
   (every feature and the model's prediction), each column's methods and each test's floor with
   its source (:meth:`DriftJobConfig.plan`);
2. read the window (the ``window_length`` before ``window_end``) from ``predictions`` into
   summaries (:func:`sml.monitoring.windows.read_window_summaries`; against the training
   reference, the days the daily step stored are merged instead of read again,
   :mod:`sml.monitoring.daily`): the rows of the manifest's version only (another version has its
   own features and reference; its rows in the window are counted per version,
   :func:`sml.monitoring.windows.window_versions`, and the run says when the version took over
   inside the window), against the training
   reference in the manifest (``training``), or the window of the same length just before the
   current one (``previous``, whose values are read to serve as the reference);
3. run each column's registered methods on the summaries (:mod:`sml.monitoring.drift.methods`)
   and decide every test's verdict with the Benjamini–Hochberg correction and the floors
   (:func:`sml.monitoring.drift.run.run_drift_methods`);
4. data quality against the training profile, with the values predict refused in the window
   (:mod:`sml.monitoring.data_quality.checks`); model quality (:mod:`sml.monitoring.model_quality.metrics`): realized performance of the window's labelled
   predictions against the manifest's held-out metrics, and the CBPE estimate for all of them;
5. the HTML report goes to ``s3://<bucket>/<report_prefix><model>/<window end>-<run id>.html``
   (and to ``report_dir`` when given): one object per run, so an earlier run's link and alert keep
   showing that run;
6. the run (with its quality) replaces any stored run of the same model, version and window end;
7. the alert goes to the SNS topic, whatever the verdict.

Entry points (the drift Lambda, ``sml drift``) build the clients and the engine and call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import Engine

from sml.monitoring.alerts import publish_drift_alert
from sml.monitoring.daily import read_window_from_days
from sml.monitoring.config import DEPLOYMENT_VARIABLES, DeploymentFloors, EffectiveFloor, ModelDriftConfig, resolve_floors
from sml.monitoring.model_quality.metrics import QualityConfig
from sml.monitoring.model_quality.store import QualitySample, RegressionSample, assess_window_quality, read_window_summaries_with_quality
from sml.monitoring.data_quality.checks import DataQualityThresholds, RefusedCounts, read_refused_counts, run_data_quality_checks
from sml.monitoring.drift.power import CertifiableShift, certifiable_shifts
from sml.monitoring.drift.run import DriftColumn, drift_columns, run_drift_methods
from sml.monitoring.report import render_drift_report
from sml.monitoring.drift.stats import FeatureTestResult, overall_verdict
from sml.monitoring.store import DriftRun, feature_trends, save_drift_run
from sml.monitoring.previous_reference import sketch_method, sketched_window_reference
from sml.monitoring.summaries import SummaryReference, WindowSummary
from sml.monitoring.sources import WindowSource
from sml.monitoring.windows import TimeWindow, VersionRows, check_window_end, read_window_summaries, window_versions
from sml.core.errors import SmlError
from sml.core.events import new_prediction_id
from sml.lifecycle.manifest import ModelManifest
from sml.core.settings import DriftSettings

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
        Cohen's h of the missing rate): see :func:`sml.monitoring.drift.stats.decide_all` for the
        verdict rule and what the defaults mean in standard deviations and shares.
    :param floors: per feature, a floor for its main test replacing ``min_ks_d``/``min_cramers_v``.
    :param method_floors: per floor key of a registered method without a floor of its own here
        (``psi``, ``wasserstein``, ...: ``SML_DRIFT_FLOORS``), the deployment's floor of that method.
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
    method_floors: Mapping[str, float | str] = field(default_factory=dict)
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
            "method_floors": settings.method_floors,
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
            **({"method_floors": dict(sorted(self.method_floors.items()))} if self.method_floors else {}),
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
            method_floors=self.method_floors,
            set_by_deployment=set_by_deployment,
        )

    def plan(self, manifest: ModelManifest) -> DriftPlan:
        """What a run of ``manifest``'s model does: this configuration with the model's drift config
        (if its manifest has one) on top, the columns to test with their methods, and the floor of
        every test with its source (:func:`sml.monitoring.config.resolve_floors`).

        :raises SmlError: the manifest's drift config or a deployment floor does not fit the model.
        """
        model = model_drift_config(manifest)
        methods = {}
        if model is not None:
            methods = {spec.name: model.method_for(spec.name, spec.kind).name for spec in manifest.features}
            for column in drift_columns(manifest):
                if column.prediction:
                    methods[column.name] = model.method_for(None, column.kind).name
        columns = tuple(drift_columns(manifest, methods))
        if self.reference_kind == "previous":
            for column in columns:
                method = column.main_method()
                if column.kind == "numeric" and not method.sketched_reference:
                    raise SmlError(
                        f"{column.name}: the {method.name} method cannot test against the previous window, which is read into a "
                        "sketch; choose ks for it in the model's drift config, or the training reference"
                    )
        floors = resolve_floors(columns, self.deployment_floors(), model)
        config = self
        if model is not None:
            quality = self.quality
            if quality is not None and model.quality:
                quality = replace(quality, **dict(model.quality))
            config = replace(self, data_quality=model.data_quality_thresholds(self.data_quality), quality=quality)
        return DriftPlan(config=config, columns=columns, floors=floors)


@dataclass(frozen=True)
class DriftPlan:
    """A run resolved for one model: the effective configuration, the columns with their methods,
    and per (column, method) its floor with where it came from."""

    config: DriftJobConfig
    columns: tuple[DriftColumn, ...]
    floors: Mapping[tuple[str, str], EffectiveFloor]

    def floor_values(self) -> dict[tuple[str, str], float]:
        return {key: floor.value for key, floor in self.floors.items()}


@dataclass(frozen=True)
class ObservedWindow:
    """The window as summaries: ``current`` against the drift ``reference``, ``training_current``
    against the training reference (data quality is judged against what the model saw, whatever
    the drift reference), with the rows behind the reference, the quality sample and refusals;
    ``unmatched_labels`` when the source counted them (``None``: counted in the database)."""

    window: TimeWindow
    reference: SummaryReference
    reference_rows: int
    reference_window: TimeWindow | None
    current: WindowSummary
    training: SummaryReference
    training_current: WindowSummary
    quality_sample: QualitySample | RegressionSample | None
    refused: RefusedCounts
    versions: tuple[VersionRows, ...] = ()
    unmatched_labels: int | None = None


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
            "other_versions_rows": dict(run.other_versions),
            "version_since": None if run.version_since is None else run.version_since.isoformat(),
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
    window_source: WindowSource | None = None,
) -> DriftJobResult:
    """Run the drift job for the model of ``manifest`` (usually the champion's) once.

    :param engine: the database with ``predictions`` and the drift tables.
    :param s3_client: stores the report in ``config.bucket`` and presigns its link.
    :param sns_client: publishes the alert when ``config.topic_arn`` is set.
    :param window_end: the end of the current window (aware UTC); the run's key with the model.
        At most :data:`~sml.monitoring.windows.MAX_CLOCK_SKEW` after now.
    :param report_dir: also write the report there, as ``<model>/<window end>-<run id>.html``.
    :param window_source: where the window is read from (:mod:`sml.monitoring.sources`): the database by
        default; the archive (``duckdb``) gives the drift summaries, quality, refusals and versions alike, so a
        window the database's retention dropped is recomputed whole.
    :returns: a :class:`DriftJobResult`.
    :raises SmlError: S3 or SNS refused the report or the alert (names the bucket or topic), or the
        window ends in the future.
    """
    check_window_end(window_end)
    window = TimeWindow.ending_at(window_end, config.window_length)
    plan = config.plan(manifest)
    observed = read_drift_window(engine, manifest, window, plan.config, window_source)
    results = run_drift_methods(
        observed.reference, observed.current, plan.columns, plan.floor_values(), fdr=plan.config.fdr, min_samples=plan.config.min_samples
    )
    run = _decided_run(manifest, plan, observed, [_with_floor_source(result, plan.floors[result.feature, result.test]) for result in results], engine)
    trends = feature_trends(engine, manifest.model_name, before=window.end, limit=TREND_RUNS - 1, version=manifest.version)
    report = render_drift_report(run, observed.reference, observed.current, trends=trends).encode("utf-8")
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


def read_drift_window(
    engine: Engine, manifest: ModelManifest, window: TimeWindow, config: DriftJobConfig, window_source: WindowSource | None = None
) -> ObservedWindow:
    """Read ``window`` once into summaries against the drift reference and the training reference
    (one and the same for ``training``), with the quality sample in the same pass when quality is
    assessed, and the window's refusals. Only the predictions of ``manifest.version`` are read
    (labels too: quality is that version's); every version's rows are counted. A ``window_source``
    other than the database gives what it reads (:class:`~sml.monitoring.sources.SourceWindow`);
    the rest comes from the database.

    For the ``previous`` reference, the previous window is read first, a day at a time, into KLL
    sketches and counts (:mod:`sml.monitoring.previous_reference`), so its memory is a day's rows.
    """
    training = SummaryReference.from_manifest(manifest)
    reference, reference_rows, reference_window = training, manifest.reference.n_rows, None
    if config.reference_kind == "previous":
        reference_window = window.previous()
        # A day at a time into KLL sketches and counts; the verdicts allow for the sketches' rank error.
        reference, reference_rows = sketched_window_reference(engine, manifest, reference_window)
    version = manifest.version
    references = [reference] if reference is training else [reference, training]
    quality_sample = None
    read = None
    if window_source is not None and window_source.name != "database":
        # Drift, and what else the source reads (the archive: all of it), from the source; labels (and, for a classifier,
        # probabilities) from the database where it does not read them, a pass of their own, counted into the quality
        # aggregate as it is read (with the manifest), so it keeps no row of the window.
        read = window_source.read_window(manifest, window, references, quality=bool(config.quality))
        summaries, quality_sample = read.summaries, read.quality_sample
        if config.quality and quality_sample is None:
            _, quality_sample = read_window_summaries_with_quality(
                engine, manifest.model_name, window, manifest.features, manifest.classes, [], task=manifest.task, manifest=manifest,
                version=version,
            )
    elif config.reference_kind == "training" and (days := read_window_from_days(engine, manifest, window)) is not None:
        # Stored days (their counts unchanged) merged with the rest read live; quality needs the labels, a pass of its own.
        summaries = [days.summary]
        if config.quality:
            _, quality_sample = read_window_summaries_with_quality(
                engine, manifest.model_name, window, manifest.features, manifest.classes, [], task=manifest.task, manifest=manifest,
                version=version,
            )
    elif config.quality:
        # One pass over the window for drift and quality (a second read cost as much as the first).
        summaries, quality_sample = read_window_summaries_with_quality(
            engine, manifest.model_name, window, manifest.features, manifest.classes, references, task=manifest.task, manifest=manifest,
            version=version,
        )
    else:
        summaries = read_window_summaries(engine, manifest.model_name, window, manifest.features, references, version=version)
    return ObservedWindow(
        window=window, reference=reference, reference_rows=reference_rows, reference_window=reference_window, current=summaries[0],
        training=training, training_current=summaries[-1], quality_sample=quality_sample,
        refused=read.refused if read is not None and read.refused is not None else read_refused_counts(engine, manifest.model_name, window.start, window.end),
        versions=read.versions if read is not None and read.versions is not None else tuple(window_versions(engine, manifest.model_name, window)),
        unmatched_labels=read.unmatched_labels if read is not None else None,
    )


def _decided_run(manifest: ModelManifest, plan: DriftPlan, observed: ObservedWindow, results: list[FeatureTestResult], engine: Engine) -> DriftRun:
    config = plan.config
    return DriftRun(
        run_id=new_prediction_id(),
        model_name=manifest.model_name,
        model_version=manifest.version,
        window=observed.window,
        reference_kind=config.reference_kind,
        reference_rows=observed.reference_rows,
        current_rows=observed.current.n_rows,
        status=overall_verdict(results),
        results=tuple(results),
        parameters=_run_parameters(config, plan.floors, manifest),
        created_at=datetime.now(timezone.utc),
        reference_window=observed.reference_window,
        quality=(
            assess_window_quality(engine, manifest, observed.window, config.quality, observed.quality_sample, unmatched_labels=observed.unmatched_labels)
            if config.quality else None
        ),
        data_quality=tuple(
            run_data_quality_checks(observed.training, observed.training_current, manifest.features, config.data_quality, observed.refused)
        ),
        refused_requests=dict(observed.refused.requests),
        other_versions={entry.version: entry.rows for entry in observed.versions if entry.version != manifest.version},
        version_since=version_since(observed.versions, manifest.version),
    )


def version_since(versions: Sequence[VersionRows], version: str) -> datetime | None:
    """When ``version`` took over inside the window: its first prediction there, if another
    version predicted before it in the window; ``None`` when it served the whole window (or
    made no prediction in it)."""
    own = next((entry for entry in versions if entry.version == version), None)
    if own is None or not any(entry.first < own.first for entry in versions if entry.version != version):
        return None
    return own.first


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
        "labels_before_prediction": quality.delay.before_prediction if quality.delay else 0,
    }


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
    plan = config.plan(manifest)
    shifts = certifiable_shifts(
        SummaryReference.from_manifest(manifest), plan.columns, plan.floor_values(), window_rows=window_rows, min_samples=config.min_samples
    )
    return [replace(shift, floor_setting=plan.floors[shift.feature, shift.test].setting) for shift in shifts]


def _with_floor_source(result: FeatureTestResult, floor: EffectiveFloor) -> FeatureTestResult:
    return replace(result, detail={**result.detail, "floor_source": floor.source, "floor_setting": floor.setting, "floor_given": floor.given})


def _run_parameters(config: DriftJobConfig, floors: Mapping[tuple[str, str], EffectiveFloor], manifest: ModelManifest) -> dict[str, Any]:
    """What the verdicts depend on: the effective configuration, and per test its floor and where that came from."""
    effective = {
        f"{feature}/{test}": {"floor": floor.value, "given": floor.given, "source": floor.source, "setting": floor.setting}
        for (feature, test), floor in floors.items()
    }
    model = {"model_drift_config": manifest.drift_config} if manifest.drift_config is not None else {}
    method = {"reference_method": sketch_method()} if config.reference_kind == "previous" else {}
    return {**config.parameters(), "effective_floors": effective, **model, **method}


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
