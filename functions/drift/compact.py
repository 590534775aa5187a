"""The archive's compaction Lambda, a second entry point of the drift image (which has DuckDB).

A daily EventBridge rule sends ``{"time": ...}`` (the scheduled event's time) and the function
compacts the day before it (UTC), every table and model: what ``sml compact`` runs
(:func:`sml.archive.store.compact_days`). Compaction is idempotent (a day compacted already is
left alone, objects that arrive meanwhile are untouched), so a retried delivery does no harm.
Its own function rather than a step of the writer or the drift function: it needs to delete under
``archive/``, which neither of them should be allowed to do, and no database or VPC.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.drift.app import scheduled_time
from sml.archive.layout import TABLES
from sml.archive.store import ArchiveLocation, compact_days
from sml.core.aws import aws_client
from sml.core.settings import CompactionSettings, SettingsError, load_settings

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
    """Compact the UTC day before the event's ``time``; returns the partitions merged and the objects merged and written.

    :raises ValueError: the event has no ISO 8601 ``time``.
    """
    day = (scheduled_time(event) - timedelta(days=1)).date()
    location = archive_location()
    compacted = compact_days(s3_client(), location, day, day, TABLES)
    merged = sum(len(outcome.merged) for _, outcome in compacted)
    metrics.add_metric(name="archive_objects_merged", unit=MetricUnit.Count, value=merged)
    result = {
        "day": day.isoformat(),
        "partitions": [partition.folder(location.prefix) for partition, outcome in compacted if outcome.merged],
        "objects_merged": merged,
        "objects_written": sum(len(outcome.written) for _, outcome in compacted),
        "rows": sum(outcome.rows for _, outcome in compacted),
    }
    logger.info("archive compaction of %s: %d objects merged", result["day"], merged, extra={"compaction": result})
    return result
