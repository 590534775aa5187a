"""The archive function: the landing area's conversion into Parquet, and the daily compaction (an entry point of the drift image, which has DuckDB).

An EventBridge rule every few minutes sends ``{"sml_action": "convert"}``: the landing objects
the writer put are turned into the archive's Parquet objects
(:func:`sml.archive.landing.convert_landing`). A daily rule sends ``{"time": ...}`` (the
scheduled event's time) and the function converts what has landed, then compacts the day before
it (UTC), every table and model: what ``sml compact`` runs
(:func:`sml.archive.store.compact_days`). A landing object that fails to convert stays for the
next run; the invocation then fails (after converting the others and, daily, compacting), so the
error alarm sees it. Compaction is idempotent (a day compacted already is
left alone, objects that arrive meanwhile are untouched), so a retried delivery does no harm.
Its own function rather than a step of the writer or the drift function: it needs to delete under
``archive/``, which neither of them should be allowed to do, and no database or VPC.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sml.archive.landing import ConversionFailed, ConversionOutcome, convert_landing
from sml.archive.layout import TABLES
from sml.archive.store import ArchiveLocation, compact_days
from sml.core.aws import aws_client
from sml.core.eventbridge import scheduled_time
from sml.core.settings import CompactionSettings, SettingsError, load_settings

CONVERT_ACTION = "convert"

logger = Logger(service="compact")
metrics = Metrics(service="compact", namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "sml")


@cache
def archive_location() -> ArchiveLocation:
    settings = load_settings(CompactionSettings)
    if settings.archive_prefix is None:
        raise SettingsError("SML_ARCHIVE_PREFIX", "required: the archive to compact")
    return ArchiveLocation(settings.bucket, settings.archive_prefix)


@cache
def s3_client() -> Any:
    return aws_client("s3", load_settings(CompactionSettings))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """``{"sml_action": "convert"}``: convert the landing area; otherwise convert it, then compact
    the UTC day before the event's ``time``. Returns what was converted, merged and written.

    :raises ValueError: a compaction event has no ISO 8601 ``time``, or the action is unknown.
    :raises ConversionFailed: a landing object was not converted (after the rest of the work).
    """
    action = event.get("sml_action")
    if action is not None and action != CONVERT_ACTION:
        raise ValueError(f"sml_action: unknown action {action!r} (expected {CONVERT_ACTION!r}, or none to compact)")
    day = None if action == CONVERT_ACTION else (scheduled_time(event) - timedelta(days=1)).date()
    location = archive_location()
    # Leave a minute (or a quarter of a short timeout) for the compaction and the log; the rest waits for the next run.
    remaining_s = context.get_remaining_time_in_millis() / 1000
    converted = convert(location, deadline=time.monotonic() + remaining_s - min(60.0, remaining_s / 4))
    if day is None:
        result: dict[str, Any] = converted.summary()
    else:
        compacted = compact_days(s3_client(), location, day, day, TABLES)
        merged = sum(len(outcome.merged) for _, outcome in compacted)
        metrics.add_metric(name="archive_objects_merged", unit=MetricUnit.Count, value=merged)
        result = {
            "day": day.isoformat(),
            "partitions": [partition.folder(location.prefix) for partition, outcome in compacted if outcome.merged],
            "objects_merged": merged,
            "objects_written": sum(len(outcome.written) for _, outcome in compacted),
            "rows": sum(outcome.rows for _, outcome in compacted),
            "conversion": converted.summary(),
        }
        logger.info("archive compaction of %s: %d objects merged", result["day"], merged, extra={"compaction": result})
    if converted.failures:
        raise ConversionFailed(converted)
    return result


def convert(location: Any, deadline: float) -> ConversionOutcome:
    """Convert the landing area until ``deadline`` (:func:`time.monotonic`), with its metrics and log line."""
    converted = convert_landing(s3_client(), location, deadline=deadline)
    metrics.add_metric(name="archive_landing_converted", unit=MetricUnit.Count, value=len(converted.converted))
    metrics.add_metric(name="archive_landing_failures", unit=MetricUnit.Count, value=len(converted.failures))
    if converted.converted or converted.failures:
        logger.info("archive landing: %d objects converted (%d events), %d left", len(converted.converted), converted.events, len(converted.failures),
                    extra={"conversion": converted.summary()})
    return converted
