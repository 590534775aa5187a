"""The writer Lambda: SQS batches of prediction and ground-truth events into ``predictions`` and ``ground_truth``.

The whole batch is stored first (:func:`sml.writer.batch.write_batch`: parsed, inserted in multi-row
idempotent statements, data errors bisected); Powertools' batch processor then reports the
records that were not stored as batch item failures. When the database cannot take the batch the
handler raises before anything is reported, so SQS retries every record. With
``SML_ARCHIVE_PREFIX`` set, the records it stored are then landed in the event archive in one
object (:func:`sml.archive.landing.put_landing`; the archive function turns landing objects into
Parquet within minutes, off the writer's path); should the put fail, the handler raises too, so
a record is acknowledged only once it is in the tables and in the archive's landing area.

A direct invocation with ``{"sml_action": "migrate"}`` applies the schema migrations and returns
``{"applied": [names]}``; ``{"sml_action": "retention", "time": ISO 8601}`` runs the retention
step for that day (:func:`sml.core.retention.apply_retention`, ``SML_RETENTION_DAYS``). Both serve
local stacks (``sml up`` schedules the retention step); on AWS the deploy's migration function
(functions/writer/migrate.py) does both, since the writer's own database user may not alter tables.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.engine import Engine

from sml.archive.landing import land_acknowledged
from sml.archive.layout import ArchiveLocation, ArchiveNotWritten
from sml.core.aws import aws_client
from sml.core.db import apply_migrations, database_engine_from_settings
from sml.core.retention import run_retention_step
from sml.core.settings import WriterSettings, load_settings
from sml.writer.batch import BatchNotStored, write_batch

MIGRATE_ACTION = "migrate"
RETENTION_ACTION = "retention"

logger = Logger(service="writer")
tracer = Tracer(service="writer")
# The CDK app sets POWERTOOLS_METRICS_NAMESPACE to the deployed app name; locally "sml".
metrics = Metrics(service="writer", namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "sml")
# A record is reported failed, never raised for, even when every record of a batch failed:
# poison records are data, not a function error, and must not trip the error alarm.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class RecordNotStored(Exception):
    """Raised for a record whose row was not stored; Powertools reports it as a batch item failure."""


@cache
def database_engine() -> Engine:
    """The database engine, built on first use and kept for the life of the container."""
    settings = load_settings(WriterSettings)
    return database_engine_from_settings(settings, lambda service: aws_client(service, settings))


@cache
def archive_landing() -> tuple[Any, Any] | None:
    """``(s3 client, ArchiveLocation)`` of the archive's landing area, or ``None`` without ``SML_ARCHIVE_PREFIX``."""
    settings = load_settings(WriterSettings)
    if settings.archive_prefix is None:
        return None
    return aws_client("s3", settings), ArchiveLocation(settings.bucket, settings.archive_prefix)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse | dict[str, list[str]]:
    """Store an SQS batch, answering with the records to retry; or run a direct ``sml_action``."""
    if "sml_action" in event:
        return run_action(event["sml_action"], event)
    return store_sqs_batch(event, context)


def run_action(action: str, event: dict[str, Any]) -> dict[str, Any]:
    """A direct invocation: ``migrate`` applies the schema migrations and returns their names;
    ``retention`` applies the retention step for the day of the event's ``time`` (default now)."""
    if action == RETENTION_ACTION:
        outcome = run_retention_step(database_engine(), load_settings(WriterSettings), event, logger)
        metrics.add_metric(name="partitions_dropped", unit=MetricUnit.Count, value=len(outcome.dropped))
        return outcome.summary()
    if action != MIGRATE_ACTION:
        raise ValueError(f"sml_action: unknown action {action!r} (expected {MIGRATE_ACTION!r} or {RETENTION_ACTION!r})")
    applied = apply_migrations(database_engine())
    metrics.add_metric(name="migrations_applied", unit=MetricUnit.Count, value=len(applied))
    logger.info("migrations applied", extra={"applied": applied})
    return {"applied": applied}


def store_sqs_batch(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Store every record of ``event``; the response names the records that were not stored.

    :raises BatchNotStored: the database could not take the batch; nothing is acknowledged.
    """
    records = event["Records"]
    pairs = [(record["messageId"], record["body"]) for record in records]
    stored_at = datetime.now(timezone.utc)
    try:
        outcome = write_batch(database_engine(), pairs, stored_at=stored_at)
    except BatchNotStored:
        metrics.add_metric(name="records_failed", unit=MetricUnit.Count, value=len(records))
        logger.exception("database did not take the batch; failing all %d records so SQS retries them", len(records))
        raise
    landing = archive_landing()
    try:
        if landing is not None:
            key, landed = land_acknowledged(*landing, outcome.events, (failure.message_id for failure in outcome.failures), stored_at)
            if key is not None:
                metrics.add_metric(name="archive_records_landed", unit=MetricUnit.Count, value=landed)
    except ArchiveNotWritten:
        metrics.add_metric(name="records_failed", unit=MetricUnit.Count, value=len(records))
        logger.exception("the archive did not take the batch; failing all %d records so SQS retries them", len(records))
        raise
    metrics.add_metric(name="rows_inserted", unit=MetricUnit.Count, value=outcome.inserted)
    metrics.add_metric(name="duplicates_skipped", unit=MetricUnit.Count, value=outcome.duplicates)
    metrics.add_metric(name="records_failed", unit=MetricUnit.Count, value=len(outcome.failures))
    metrics.add_metric(name="labels_stored", unit=MetricUnit.Count, value=outcome.labels_stored)
    metrics.add_metric(name="labels_skipped", unit=MetricUnit.Count, value=outcome.labels_skipped)
    metrics.add_metric(name="refusals_stored", unit=MetricUnit.Count, value=outcome.refusals_stored)
    metrics.add_metric(name="conflicting_events", unit=MetricUnit.Count, value=len(outcome.conflicting_predictions))
    if outcome.conflicting_predictions:
        logger.warning(
            "%d prediction events reuse a stored prediction_id with other content; the stored events are kept",
            len(outcome.conflicting_predictions),
            extra={"conflicting_prediction_ids": list(outcome.conflicting_predictions)},
        )
    reasons = {failure.message_id: failure.reason for failure in outcome.failures}
    if reasons:
        logger.warning(
            "%d of %d records not stored; SQS retries them, then moves them to the DLQ",
            len(reasons),
            len(records),
            extra={"failures": [{"message_id": message_id, "reason": reason} for message_id, reason in reasons.items()]},
        )

    def report_unstored(record: SQSRecord) -> None:
        if record.message_id in reasons:
            raise RecordNotStored(reasons[record.message_id])

    return process_partial_response(event=event, record_handler=report_unstored, processor=processor, context=context)
