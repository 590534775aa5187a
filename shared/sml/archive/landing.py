"""The archive's landing area: the writer's stored events, one object per batch, turned into Parquet by the conversion step.

**Why two steps.** Building a batch's Parquet objects (Arrow columns from the parsed events, one
per feature, then Parquet encoding) costs about as much CPU again as the rest of the archive
step and a third of what storing the batch costs the writer. On the writer's path it held the
writer to ~0.75x of its throughput without the archive (``bench/archive_bench.py``). So the
writer only lands the events it acknowledged, as it parsed them, in one PutObject
(:func:`land_acknowledged`); the conversion step (:func:`convert_landing`, run by the archive
function every few minutes and before each compaction, and by ``sml compact``) builds the rows
of each landing object again with the writer's own code (:func:`sml.writer.batch.rows_of_events`,
at the batch's ``stored_at``), so it gets the rows the writer stored, and puts them as the
archive's Parquet objects (:func:`sml.archive.store.archive_rows`: the keys, columns and bytes
the writer would have put itself), then deletes the landing object. This is the shape of Amazon
Data Firehose's record format conversion (records land, are converted to Parquet in the
background) without its per-record billing or a service the local stack cannot run.

**Nothing lost.** A record is acknowledged only after its batch's landing object was written
(:class:`ArchiveNotWritten` fails the whole batch otherwise, so SQS delivers it again). A landing
object is deleted only after every Parquet object made from it was put; a conversion that fails
or stops midway leaves it to the next run, whose puts go to the same keys with the same content
(keys are made from the rows, see :mod:`sml.archive.store`), so a repeat does no harm, and an
object another run converted and deleted meanwhile counts as converted.
Readers of the archive (the weekly run's DuckDB and Athena sources, ``sml query``,
``sml rebuild``) read the Parquet objects only: an event is there once the conversion after
its batch has run (minutes on AWS), as a Firehose delivery stream's buffer would delay it.

**Format.** ``<prefix>landing/<stored_at>,<digest>.msgpack``: ``stored_at`` as
``YYYYMMDDTHHMMSSffffffZ`` (keys sort as the batches were stored), the digest a hash of the
message ids; the body is MessagePack ``{"format": 1, "stored_at": timestamp, "schemas": [[feature
names], ...], "items": [...]}``, one item per acknowledged event in the batch's order (stored now
or before): a prediction as ``[message_id, prediction_id, schema_version, model_name,
model_version, schema index, [feature values], prediction, predicted_at, probabilities]``, any
other event as ``[message_id, its JSON text]`` (:func:`landing_body`). MessagePack keeps every
value's type (an integer stays one, a float keeps its 64 bits) and is ~30 % of the events' JSON,
which is what the put costs. A record the writer reported failed (unparseable, rejected by the
database) is not landed, as it is not stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec
from botocore.exceptions import ClientError

from sml.archive.layout import ArchiveLocation, ArchiveNotWritten
from sml.core.events import Event, PredictionEvent, parse_event, prediction_event_of, serialise_event

logger = logging.getLogger(__name__)

LANDING_FOLDER = "landing/"
LANDING_FORMAT = 1
LANDING_SUFFIX = ".msgpack"
_STORED_FORMAT = "%Y%m%dT%H%M%S%fZ"
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()
_MSGPACK_INTEGERS = range(-(2**63), 2**64)  # what MessagePack holds; JSON (and so an event) may hold more
# The fields of a prediction's item, in order (see the module docstring).
_PREDICTION_ITEM = (
    "message_id", "prediction_id", "schema_version", "model_name", "model_version", "schema", "values", "prediction", "predicted_at", "probabilities",
)


class LandingObjectInvalid(ValueError):
    """A landing object that is not one :func:`put_landing` writes: the message names the key, ``reason`` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


def landing_prefix(location: ArchiveLocation) -> str:
    """The folder of the landing objects: ``<prefix>landing/`` (outside every table's folder, so no reader of the archive lists it)."""
    return location.prefix + LANDING_FOLDER


def landing_key(location: ArchiveLocation, events: Sequence[tuple[str, Event]], stored_at: datetime) -> str:
    """The key of the landing object of ``events`` (``(message_id, event)``) stored at ``stored_at`` (aware or naive UTC)."""
    digest = hashlib.sha256("\x1e".join(message_id for message_id, _ in events).encode()).hexdigest()[:16]
    return f"{landing_prefix(location)}{_utc(stored_at).strftime(_STORED_FORMAT)},{digest}{LANDING_SUFFIX}"


def landing_body(events: Sequence[tuple[str, Event]], stored_at: datetime) -> bytes:
    """The body of a landing object (MessagePack, see the module docstring).

    A prediction is an array of its fields with its feature values alone, their names kept once
    per distinct list of names (``schemas``): ~30 % of the event's JSON, and no text to escape.
    A label, a refusal, or a prediction holding an integer MessagePack cannot (beyond 64 bits) is
    kept as its event's JSON text (:func:`sml.core.events.serialise_event`), which the writer's
    parser reads back exactly.
    """
    try:
        return _landing_body(events, stored_at, lambda event: True)
    except OverflowError:  # an integer beyond 64 bits: found only then, so the usual batch is not searched
        return _landing_body(events, stored_at, _fits)


def _landing_body(events: Sequence[tuple[str, Event]], stored_at: datetime, packable: Callable[[PredictionEvent], bool]) -> bytes:
    schemas: dict[tuple[str, ...], int] = {}
    items: list[tuple[Any, ...]] = []
    for message_id, event in events:
        if type(event) is PredictionEvent and packable(event):
            items.append((
                message_id, event.prediction_id, event.schema_version, event.model_name, event.model_version,
                schemas.setdefault(tuple(event.features), len(schemas)), list(event.features.values()), event.prediction, event.predicted_at,
                event.probabilities,
            ))
        else:
            items.append((message_id, serialise_event(event)))
    return _ENCODER.encode({"format": LANDING_FORMAT, "stored_at": _utc(stored_at), "schemas": list(schemas), "items": items})


def _fits(event: PredictionEvent) -> bool:
    """Every integer of ``event`` fits MessagePack."""
    return all(value in _MSGPACK_INTEGERS for value in (*event.features.values(), event.prediction) if type(value) is int)


def put_landing(s3: Any, location: ArchiveLocation, events: Sequence[tuple[str, Event]], stored_at: datetime) -> str | None:
    """Land the ``(message_id, event)`` pairs of a batch the writer stored at ``stored_at``; returns the key, or None for none.

    :param s3: a boto3 S3 client.
    :param events: the batch's acknowledged events as parsed, in its order; ``stored_at`` must be
        the one the writer gave their rows (:func:`sml.writer.batch.write_batch`), so the
        archive's rows carry it too.
    :raises ArchiveNotWritten: the put failed (the message names the object); the batch must not be acknowledged.
    """
    if not events:
        return None
    key = landing_key(location, events, stored_at)
    try:
        s3.put_object(Bucket=location.bucket, Key=key, Body=landing_body(events, stored_at), ContentType="application/vnd.msgpack")
    except Exception as exc:  # any failure: the batch is retried, never acknowledged
        raise ArchiveNotWritten(f"{location.uri(key)}: {exc}") from exc
    return key


def land_acknowledged(
    s3: Any, location: ArchiveLocation, events: Sequence[tuple[str, Event]], failed_message_ids: Iterable[str], stored_at: datetime
) -> tuple[str | None, int]:
    """Land the events of a stored batch that the writer acknowledges: every one but those of
    ``failed_message_ids`` (the batch item failures, which SQS delivers again). Returns the key
    (None when nothing is landed) and the events landed.

    :param events: :attr:`sml.writer.batch.BatchOutcome.events`.
    :raises ArchiveNotWritten: as :func:`put_landing`.
    """
    failed = set(failed_message_ids)
    landed = [item for item in events if item[0] not in failed] if failed else list(events)
    return put_landing(s3, location, landed, stored_at), len(landed)


def read_landing(body: bytes, key: str = "") -> tuple[datetime, list[tuple[str, Event]]]:
    """The ``stored_at`` (aware UTC) and ``(message_id, event)`` pairs of a landing object's ``body``.

    Every event is validated as the writer's parser validates a body, so a corrupt or foreign
    object never puts into the archive an event the writer would have refused.

    :raises LandingObjectInvalid: the body is not a landing object of a known format, or an item
        is not a valid event (the message names ``key``, the item and the field).
    """
    where = key or "landing object"
    try:
        landing = _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec reports text that is not UTF-8 as the latter
        raise LandingObjectInvalid(where, f"not a landing object: {exc}") from None
    if not isinstance(landing, dict) or set(landing) != {"format", "stored_at", "schemas", "items"}:
        raise LandingObjectInvalid(where, "not a landing object: expected the keys format, stored_at, schemas and items")
    if type(landing["format"]) is not int or landing["format"] != LANDING_FORMAT:
        raise LandingObjectInvalid(where, f"format {landing['format']!r} (this version reads {LANDING_FORMAT})")
    stored_at = landing["stored_at"]
    if not isinstance(stored_at, datetime) or stored_at.tzinfo is None:
        raise LandingObjectInvalid(where, f"stored_at {stored_at!r} is not a UTC timestamp")
    schemas, items = landing["schemas"], landing["items"]
    if type(schemas) is not list or not all(type(names) is list for names in schemas):
        raise LandingObjectInvalid(where, "schemas: expected an array of arrays of feature names")
    if type(items) is not list:
        raise LandingObjectInvalid(where, f"items: expected an array of items, got {type(items).__name__}")
    events: list[tuple[str, Event]] = []
    for number, item in enumerate(items):
        try:
            events.append(_landed_event(item, schemas))
        except (TypeError, ValueError) as exc:  # EventValidationError included: it names the event's field
            raise LandingObjectInvalid(where, f"item {number}: {exc}") from None
    return stored_at.astimezone(timezone.utc), events


def _landed_event(item: Any, schemas: list[list[Any]]) -> tuple[str, Event]:
    """The ``(message_id, event)`` of a landing object's ``item``, validated as the writer's parser validates a body."""
    if type(item) is not list:
        raise TypeError(f"expected an array, got {type(item).__name__}")
    if type(item[0] if item else None) is not str:
        raise TypeError(f"message_id: expected text, got {type(item[0] if item else None).__name__}")
    if len(item) == 2:
        return item[0], parse_event(item[1])
    if len(item) != len(_PREDICTION_ITEM):
        raise ValueError(f"expected {len(_PREDICTION_ITEM)} fields of a prediction or 2 of an event's JSON text, got {len(item)}")
    fields = dict(zip(_PREDICTION_ITEM, item))
    schema, values = fields.pop("schema"), fields.pop("values")
    if type(schema) is not int or not 0 <= schema < len(schemas):
        raise ValueError(f"schema {schema!r} is not one of the {len(schemas)} feature schemas")
    if type(values) is not list:
        raise TypeError(f"feature values: expected an array, got {type(values).__name__}")
    names = schemas[schema]
    if len(names) != len(values):
        raise ValueError(f"{len(values)} feature values for {len(names)} names")
    try:
        fields["features"] = dict(zip(names, values))
    except TypeError:  # a name that is not hashable (an array, a map)
        raise ValueError(f"features: names in schema {schema} are not text") from None
    if len(fields["features"]) != len(names):
        raise ValueError(f"feature names repeat in schema {schema}")
    return fields.pop("message_id"), prediction_event_of(fields)


def list_landing(s3: Any, location: ArchiveLocation) -> Iterator[str]:
    """The keys of the landing objects, earliest stored first (S3 lists keys in UTF-8 binary order)."""
    prefix = landing_prefix(location)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            if not _is_landing_key(item["Key"], prefix):
                # Not the writer's: never converted nor counted. Said at each listing so it is not lost.
                logger.warning("%s is not a landing object (the writer puts <prefix>landing/<stored_at>,<digest>%s): ignored, never "
                               "converted; move it out of the landing area", location.uri(item["Key"]), LANDING_SUFFIX)
        yield from _landing_keys(page, prefix)


def count_landing(s3: Any, location: ArchiveLocation, *, most: int = 1000) -> tuple[int, bool]:
    """How many landing objects wait for the conversion, from one list call (for a warning, not a count of record).

    :param most: list at most this many keys (S3's most per call is 1,000).
    :returns: ``(count, more)``: ``more`` when there are more than ``count``.
    """
    prefix = landing_prefix(location)
    page = s3.list_objects_v2(Bucket=location.bucket, Prefix=prefix, MaxKeys=most)
    return sum(1 for _ in _landing_keys(page, prefix)), bool(page.get("IsTruncated"))


def _landing_keys(page: dict[str, Any], prefix: str) -> Iterator[str]:
    for item in page.get("Contents", ()):
        if _is_landing_key(item["Key"], prefix):
            yield item["Key"]


def _is_landing_key(key: str, prefix: str) -> bool:
    return key.endswith(LANDING_SUFFIX) and "/" not in key[len(prefix) :]


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
        count = len(outcome.failures)
        super().__init__(f"{count} landing {'object' if count == 1 else 'objects'} not converted (left for the next run): " + "; ".join(outcome.failures[:5]))


def convert_landing(s3: Any, location: ArchiveLocation, *, limit: int | None = None, deadline: float | None = None) -> ConversionOutcome:
    """Turn landing objects into the archive's Parquet objects, earliest first, deleting each once converted.

    Each object's events become rows with the writer's code at its own ``stored_at``, put by
    :func:`sml.archive.store.archive_rows` (the objects the writer would have put), and only
    then is it deleted. An object that cannot be read, decoded or put is named in ``failures``
    and left in place; the others are converted. An object listed but gone when read was
    converted and deleted by another run meanwhile (S3's ``NoSuchKey``) and is skipped. A
    listing that fails ends the run with a failure naming the landing area, so a caller (the
    daily run) still does its other work before it raises. Memory holds one landing object at a time.

    :param s3: a boto3 S3 client that may get, put and delete under the archive's prefix.
    :param limit: convert at most this many objects (the rest wait for the next run).
    :param deadline: start no object after this :func:`time.monotonic` value (a Lambda stops
        before its timeout; the rest wait for the next run, ``remaining`` says so).
    :returns: a :class:`ConversionOutcome`; callers that must not go on past a failure raise
        :class:`ConversionFailed` when ``failures`` is not empty.
    """
    from sml.archive.store import archive_rows
    from sml.writer.batch import rows_of_events

    outcome = ConversionOutcome()
    keys = list_landing(s3, location)
    while True:
        try:
            key = next(keys)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - the listing failed: what is left waits for the next run, said as a failure
            logger.exception("the landing area %s could not be listed; what is left waits for the next run", location.uri(landing_prefix(location)))
            outcome.failures.append(f"{location.uri(landing_prefix(location))}: listing failed: {exc}")
            break
        if (limit is not None and len(outcome.converted) + len(outcome.failures) >= limit) or (deadline is not None and time.monotonic() >= deadline):
            outcome.remaining = True
            break
        try:
            try:
                body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    continue  # another run converted and deleted it after this one listed it
                raise
            stored_at, events = read_landing(body, location.uri(key))
            parsed = rows_of_events(events, stored_at)
            written = archive_rows(
                s3,
                location,
                predictions=parsed.rows,
                ground_truth=parsed.label_events,
                refusals=[row for refusal in parsed.refusals for row in refusal["rows"]],
                prediction_values=parsed.prediction_values,
            )
            s3.delete_object(Bucket=location.bucket, Key=key)
        except LandingObjectInvalid as exc:  # the object is bad, not the code: its name and why, no traceback
            logger.error("landing object %s not converted; left for the next run: %s", location.uri(key), exc.reason)
            outcome.failures.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - left for the next run, named; the other objects go on
            logger.exception("landing object %s not converted; left for the next run", location.uri(key))
            outcome.failures.append(f"{location.uri(key)}: {exc}")
            continue
        outcome.converted.append(key)
        outcome.written.extend(written)
        outcome.events += len(events)
    return outcome


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
