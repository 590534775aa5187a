"""The archive's landing area: the writer's stored records, one object per batch, turned into Parquet by the conversion step.

**Why two steps.** Building a batch's Parquet objects (Arrow columns from the parsed events, one
per feature, then Parquet encoding) costs about as much CPU again as the rest of the archive
step and a third of what storing the batch costs the writer. On the writer's path it held the
writer to ~0.75x of its throughput without the archive (``bench/archive_bench.py``). So the
writer only lands what it acknowledged, as it received it, in one PutObject
(:func:`put_landing`); the conversion step (:func:`convert_landing`, run by the archive function
every few minutes and before each compaction, and by ``sml compact``) parses each landing object
with the writer's own parser (:func:`sml.writer.batch.parse_records`, with the batch's
``stored_at``), so it gets the rows the writer stored, and puts them as the archive's Parquet
objects (:func:`sml.archive.store.archive_rows`: the keys, columns and bytes the writer would
have put itself), then deletes the landing object. This is the shape of Amazon Data Firehose's
record format conversion (records land, are converted to Parquet in the background) without its
per-record billing or a service the local stack cannot run.

**Nothing lost.** A record is acknowledged only after its batch's landing object was written
(:class:`ArchiveNotWritten` fails the whole batch otherwise, so SQS delivers it again). A landing
object is deleted only after every Parquet object made from it was put; a conversion that fails
or stops midway leaves it to the next run, whose puts go to the same keys with the same content
(keys are made from the rows, see :mod:`sml.archive.store`), so a repeat does no harm.
Readers of the archive (the weekly run's DuckDB and Athena sources, ``sml query``,
``sml rebuild``) read the Parquet objects only: an event is there once the conversion after
its batch has run (minutes on AWS), as a Firehose delivery stream's buffer would delay it.

**Format.** ``<prefix>landing/<stored_at>,<digest>.json``: ``stored_at`` as
``YYYYMMDDTHHMMSSffffffZ`` (keys sort as the batches were stored), the digest a hash of the
message ids; the body is JSON ``{"format": 1, "stored_at": ISO 8601, "records": [[message_id,
body], ...]}``, the records the writer acknowledged (stored now or before) in the batch's order.
A record the writer reported failed (unparseable, rejected by the database) is not landed, as
it is not stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

from sml.archive.layout import ArchiveLocation, ArchiveNotWritten

logger = logging.getLogger(__name__)

LANDING_FOLDER = "landing/"
LANDING_FORMAT = 1
_STORED_FORMAT = "%Y%m%dT%H%M%S%fZ"
_ENCODER = msgspec.json.Encoder()


class _Landing(msgspec.Struct, forbid_unknown_fields=True):
    format: int
    stored_at: str
    records: list[tuple[str, str]]


_DECODER = msgspec.json.Decoder(_Landing)


class LandingObjectInvalid(ValueError):
    """A landing object that is not one :func:`put_landing` writes (the message names the key)."""


def landing_prefix(location: ArchiveLocation) -> str:
    """The folder of the landing objects: ``<prefix>landing/`` (outside every table's folder, so no reader of the archive lists it)."""
    return location.prefix + LANDING_FOLDER


def landing_key(location: ArchiveLocation, records: Sequence[tuple[str, str]], stored_at: datetime) -> str:
    """The key of the landing object of ``records`` stored at ``stored_at`` (aware or naive UTC)."""
    digest = hashlib.sha256("\x1e".join(message_id for message_id, _ in records).encode()).hexdigest()[:16]
    return f"{landing_prefix(location)}{_utc(stored_at).strftime(_STORED_FORMAT)},{digest}.json"


def landing_body(records: Sequence[tuple[str, str]], stored_at: datetime) -> bytes:
    """The body of a landing object (see the module docstring)."""
    return _ENCODER.encode({"format": LANDING_FORMAT, "stored_at": _utc(stored_at).isoformat(), "records": records})


def put_landing(s3: Any, location: ArchiveLocation, records: Sequence[tuple[str, str]], stored_at: datetime) -> str | None:
    """Land the ``(message_id, body)`` records of a batch the writer stored at ``stored_at``; returns the key, or None for no records.

    :param s3: a boto3 S3 client.
    :param records: the batch's acknowledged records, in its order; ``stored_at`` must be the one
        the writer gave their rows (:func:`sml.writer.batch.write_batch`), so the archive's rows
        carry it too.
    :raises ArchiveNotWritten: the put failed (the message names the object); the batch must not be acknowledged.
    """
    if not records:
        return None
    key = landing_key(location, records, stored_at)
    try:
        s3.put_object(Bucket=location.bucket, Key=key, Body=landing_body(records, stored_at), ContentType="application/json")
    except Exception as exc:  # any failure: the batch is retried, never acknowledged
        raise ArchiveNotWritten(f"{location.uri(key)}: {exc}") from exc
    return key


def land_acknowledged(
    s3: Any, location: ArchiveLocation, records: Sequence[tuple[str, str]], failed_message_ids: Iterable[str], stored_at: datetime
) -> tuple[str | None, int]:
    """Land the records of a stored batch that the writer acknowledges: every one but ``failed_message_ids``
    (the batch item failures, which SQS delivers again). Returns the key (None when nothing is landed) and the records landed.

    :raises ArchiveNotWritten: as :func:`put_landing`.
    """
    failed = set(failed_message_ids)
    landed = [record for record in records if record[0] not in failed]
    return put_landing(s3, location, landed, stored_at), len(landed)


def read_landing(body: bytes, key: str = "") -> tuple[datetime, list[tuple[str, str]]]:
    """The ``stored_at`` (aware UTC) and records of a landing object's ``body``.

    :raises LandingObjectInvalid: the body is not a landing object of a known format.
    """
    try:
        landing = _DECODER.decode(body)
        stored_at = datetime.fromisoformat(landing.stored_at)
    except (msgspec.DecodeError, ValueError) as exc:
        raise LandingObjectInvalid(f"{key or 'landing object'}: not a landing object: {exc}") from None
    if landing.format != LANDING_FORMAT:
        raise LandingObjectInvalid(f"{key or 'landing object'}: format {landing.format} (this version reads {LANDING_FORMAT})")
    if stored_at.tzinfo is None:
        raise LandingObjectInvalid(f"{key or 'landing object'}: stored_at {landing.stored_at!r} has no UTC offset")
    return stored_at.astimezone(timezone.utc), list(landing.records)


def list_landing(s3: Any, location: ArchiveLocation) -> Iterator[str]:
    """The keys of the landing objects, earliest stored first (S3 lists keys in UTF-8 binary order)."""
    prefix = landing_prefix(location)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            key = item["Key"]
            if key.endswith(".json") and "/" not in key[len(prefix) :]:
                yield key


@dataclass
class ConversionOutcome:
    """What :func:`convert_landing` did: landing objects converted (and deleted), the archive keys
    put, the events they held, and one message per landing object left for the next run."""

    converted: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    events: int = 0
    failures: list[str] = field(default_factory=list)
    remaining: bool = False
    """Objects were left unread because the limit or the deadline came first."""

    def summary(self) -> dict[str, Any]:
        return {
            "landing_converted": len(self.converted), "objects_written": len(self.written), "events": self.events,
            "failures": self.failures, "remaining": self.remaining,
        }


class ConversionFailed(Exception):
    """Some landing objects were not converted (they stay for the next run); ``outcome`` says what was done."""

    def __init__(self, outcome: ConversionOutcome) -> None:
        self.outcome = outcome
        super().__init__(f"{len(outcome.failures)} landing objects not converted (left for the next run): " + "; ".join(outcome.failures[:5]))


def convert_landing(s3: Any, location: ArchiveLocation, *, limit: int | None = None, deadline: float | None = None) -> ConversionOutcome:
    """Turn landing objects into the archive's Parquet objects, earliest first, deleting each once converted.

    Each object is parsed with the writer's parser at its own ``stored_at``, its rows put by
    :func:`sml.archive.store.archive_rows` (the objects the writer would have put), and only
    then deleted. An object that cannot be read, parsed or put is named in ``failures`` and left
    in place; the others are converted. Memory holds one landing object at a time.

    :param s3: a boto3 S3 client that may get, put and delete under the archive's prefix.
    :param limit: convert at most this many objects (the rest wait for the next run).
    :param deadline: start no object after this :func:`time.monotonic` value (a Lambda stops
        before its timeout; the rest wait for the next run, ``remaining`` says so).
    :returns: a :class:`ConversionOutcome`; callers that must not go on past a failure raise
        :class:`ConversionFailed` when ``failures`` is not empty.
    """
    from sml.archive.store import archive_rows
    from sml.writer.batch import parse_records

    outcome = ConversionOutcome()
    for key in list_landing(s3, location):
        if (limit is not None and len(outcome.converted) + len(outcome.failures) >= limit) or (deadline is not None and time.monotonic() >= deadline):
            outcome.remaining = True
            break
        try:
            stored_at, records = read_landing(s3.get_object(Bucket=location.bucket, Key=key)["Body"].read(), location.uri(key))
            parsed = parse_records(records, stored_at)
            written = archive_rows(
                s3,
                location,
                predictions=parsed.rows,
                ground_truth=parsed.label_events,
                refusals=[row for refusal in parsed.refusals for row in refusal["rows"]],
                prediction_values=parsed.prediction_values,
            )
            s3.delete_object(Bucket=location.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - left for the next run, named; the other objects go on
            logger.exception("landing object %s not converted; left for the next run", location.uri(key))
            outcome.failures.append(f"{location.uri(key)}: {exc}")
            continue
        if parsed.failures:  # the writer lands only records it stored, which parse; say so if one did not
            logger.warning("landing object %s: %d records did not parse and are not archived", location.uri(key), len(parsed.failures))
        outcome.converted.append(key)
        outcome.written.extend(written)
        outcome.events += len(records) - len(parsed.failures)
    return outcome


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
