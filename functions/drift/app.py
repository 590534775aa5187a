"""The drift Lambda: the weekly EventBridge schedule runs the drift job once for the champion.

A deployment of several models has one weekly rule per model whose input names it
(``{"model_name": ..., "time": ...}``); without ``model_name`` the event checks ``SML_MODEL_NAME``.
An event may name ``model_version`` too: that version's predictions are compared with its
reference instead of the champion's (the window's rows of other versions are counted either way).
Each run stores, reports and alerts for its own model (``model_name`` in the SNS attributes).

A daily rule per model sends ``{"sml_action": "daily_summaries", "time": ...}``: the daily step
stores the summaries of the days before that time (:mod:`sml.monitoring.daily`), which the weekly
run then merges instead of reading those days again.

The current window ends at the scheduled event's ``time``, so a retried delivery of the same
event replaces its run instead of adding one. The job (:func:`sml.monitoring.job.run_drift_job`)
stores the run, puts the report in S3 and publishes the alert to ``SML_TOPIC_ARN``; the handler
returns the run's summary.
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.engine import Engine

from sml.core.aws import aws_client
from sml.core.db import database_engine_from_settings
from sml.core.eventbridge import scheduled_time
from sml.lifecycle.manifest import ModelManifest
from sml.monitoring.daily import days_before, summarise_days
from sml.monitoring.job import DriftJobConfig, run_drift_job
from sml.monitoring.sources import window_source_from_settings
from sml.monitoring.sizing import RunTooLarge, busiest_held_rows, check_run_fits, count_rows
from sml.lifecycle.registry import VERSION_PATTERN, ModelRegistry
from sml.core.settings import DriftSettings, SettingsError, load_settings

DAILY_SUMMARIES_ACTION = "daily_summaries"
WEEKLY_RUNS_METRIC = "weekly_runs"
logger = Logger(service="drift")
tracer = Tracer(service="drift")
# The CDK app sets POWERTOOLS_METRICS_NAMESPACE to the deployed app name; locally "sml".
metrics = Metrics(service="drift", namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "sml")


@cache
def drift_settings() -> DriftSettings:
    """The function's settings, validated once per container; the alerts topic is required."""
    settings = load_settings(DriftSettings)
    if not settings.topic_arn:
        raise SettingsError("SML_TOPIC_ARN", "required: every drift run publishes its alert to this SNS topic")
    return settings


@cache
def client(service: str) -> Any:
    """A boto3 client, built on first use and kept for the life of the container."""
    return aws_client(service, drift_settings())


@cache
def database_engine() -> Engine:
    """The database engine, built on first use and kept for the life of the container."""
    return database_engine_from_settings(drift_settings(), client)


@cache
def window_source() -> Any:
    """Where the window's drift summaries come from (``SML_WINDOW_SOURCE``): ``None`` for the database."""
    return window_source_from_settings(drift_settings(), client)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run the drift job for the window ending at the scheduled time; return the run's summary.
    With ``{"sml_action": "daily_summaries"}``, run the daily step instead (:func:`daily_summaries`)."""
    settings = drift_settings()
    action = event.get("sml_action")
    if action is not None and action != DAILY_SUMMARIES_ACTION:
        raise ValueError(f"event field 'sml_action': {action!r} is not {DAILY_SUMMARIES_ACTION!r}")
    window_end = scheduled_time(event)
    model_name = event_model_name(event, settings.model_name)
    registry = ModelRegistry(client("s3"), client("ssm"), bucket=settings.bucket, app_name=settings.app_name, model_name=model_name)
    manifest = registry.manifest(event_model_version(event) or registry.champion_version())
    if action == DAILY_SUMMARIES_ACTION:
        return daily_summaries(manifest, window_end, settings)
    # Counted whatever follows (Powertools flushes on errors too): the DriftDidNotRun alarm watches
    # it, since the daily step invokes the function every day.
    metrics.add_metric(name=WEEKLY_RUNS_METRIC, unit=MetricUnit.Count, value=1)
    config = DriftJobConfig.from_settings(settings)
    refuse_a_run_that_would_not_fit(config, manifest.model_name, window_end, context)
    outcome = run_drift_job(
        config,
        manifest,
        engine=database_engine(),
        s3_client=client("s3"),
        sns_client=client("sns"),
        window_end=window_end,
        window_source=window_source(),
    )
    summary = outcome.summary()
    metrics.add_metric(name="features_drifted", unit=MetricUnit.Count, value=len(outcome.run.drifted_features))
    metrics.add_metric(name="window_rows", unit=MetricUnit.Count, value=outcome.run.current_rows)
    emit_feature_metrics(outcome.run)
    logger.info("drift run %s: %s", summary["run_id"], summary["status"], extra={"drift_run": summary})
    return summary


def daily_summaries(manifest: ModelManifest, now: datetime, settings: DriftSettings) -> dict[str, Any]:
    """The daily step: store the summaries of the champion's whole UTC days of the last window
    (one day more, so the day the window starts in is counted too), each day counted again only
    when its count changed (:func:`sml.monitoring.daily.summarise_days`); returns what it did."""
    days = days_before(now, math.ceil(settings.window_days) + 1)
    result = summarise_days(database_engine(), manifest, days).summary()
    metrics.add_metric(name="summary_days_computed", unit=MetricUnit.Count, value=len(result["days_computed"]))
    logger.info("daily summaries of %s: %d days computed", manifest.model_name, len(result["days_computed"]), extra={"daily_summaries": result})
    return result


def refuse_a_run_that_would_not_fit(config: DriftJobConfig, model_name: str, window_end: datetime, context: LambdaContext) -> None:
    """Count the rows the run will read and refuse it, alerting with the numbers, when its estimate
    passes the function's memory or time left (:mod:`sml.monitoring.sizing`): Lambda would kill it
    without a report or an alert.

    :raises RunTooLarge: after publishing its message to the alerts topic.
    """
    start = window_end - config.window_length * (2 if config.reference_kind == "previous" else 1)
    rows = count_rows(database_engine(), model_name, start, window_end)
    # The previous reference holds a day of the previous window as arrays at a time.
    held = busiest_held_rows(database_engine(), model_name, start, window_end - config.window_length) if config.reference_kind == "previous" else 0
    try:
        estimate = check_run_fits(
            rows=rows,
            memory_limit_mib=int(context.memory_limit_in_mb),
            seconds_left=context.get_remaining_time_in_millis() / 1000,
            source=drift_settings().window_source,
            held_rows=held,
        )
    except RunTooLarge as refusal:
        metrics.add_metric(name="runs_refused", unit=MetricUnit.Count, value=1)
        client("sns").publish(
            TopicArn=drift_settings().topic_arn,
            Subject=f"[{model_name}] weekly drift run refused: {rows:,} predictions do not fit"[:100],
            Message=str(refusal),
            MessageAttributes={"model_name": {"DataType": "String", "StringValue": model_name}, "status": {"DataType": "String", "StringValue": "REFUSED"}},
        )
        logger.error(str(refusal), extra={"window_rows_to_read": rows})
        raise
    logger.info("window of %d rows to read: estimated %.0f MiB, %.0f s", rows, estimate.memory_mib, estimate.seconds)


VERDICT_METRIC_VALUE = {"NO_DRIFT": 0, "INCONCLUSIVE": 1, "DRIFT": 2}


def emit_feature_metrics(run: Any) -> None:
    """Per feature and test, EMF metrics CloudWatch can chart across weekly runs.

    Dimensions ``service``, ``model_name``, ``feature``, ``test``; metrics ``effect_size``,
    ``effect_upper`` (when defined), ``effect_floor`` and ``verdict`` (0 NO_DRIFT, 1 INCONCLUSIVE,
    2 DRIFT). The prediction's ``feature`` is ``(predicted label)`` for a classifier and
    ``(prediction)`` for a regression model (whose runs before that name was given emitted
    ``(predicted label)``: a chart over both spans needs both series). Each test is its own EMF document from its own provider instance: one document
    carries one dimension set, and the ``Metrics`` class shares its state process-wide
    (FIELD-NOTES), so it would merge them.
    """
    for result in run.results:
        document = AmazonCloudWatchEMFProvider(namespace=metrics.namespace, service="drift")
        for name, value in (("model_name", run.model_name), ("feature", result.feature), ("test", result.test)):
            document.add_dimension(name=name, value=value)
        values = {"effect_size": result.effect_size, "effect_upper": result.effect_upper, "effect_floor": result.effect_floor,
                  "verdict": VERDICT_METRIC_VALUE[result.verdict.value]}
        for name, value in values.items():
            if value is not None:
                document.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)
        document.flush_metrics()


MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def event_model_name(event: dict[str, Any], default: str) -> str:
    """The model the event names (its rule's input ``model_name``), or ``default`` when it names none.

    :raises ValueError: ``model_name`` is not a model name (lower-case letters, digits, ``-``).
    """
    value = event.get("model_name")
    if value is None:
        return default
    if not isinstance(value, str) or not MODEL_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"event field 'model_name': {value!r} is not a model name (lower-case letters, digits and '-')")
    return value


def event_model_version(event: dict[str, Any]) -> str | None:
    """The model version the event names (``model_version``: monitor that version instead of the
    champion), or ``None``.

    :raises ValueError: ``model_version`` is not a version name.
    """
    value = event.get("model_version")
    if value is None:
        return None
    if not isinstance(value, str) or not VERSION_PATTERN.fullmatch(value):
        raise ValueError(f"event field 'model_version': {value!r} is not a version name (letters, digits, '.', '_', '-')")
    return value


