"""The prediction event contract (schema version 1).

A prediction event is created by predict, carried as the JSON body of an SQS message and stored
by the writer as one row of ``predictions``. Nothing downstream depends on the SQS message id.

The schema is a ``msgspec`` struct: decoding and validating a body in one pass costs a few
microseconds, which matters on predict's request path and in the writer's batch loop.

Example::

    event = build_prediction_event(
        model_name="wine", model_version="v3", features={"alcohol": 13.2, "colour": "red"},
        prediction="class_0", probabilities={"class_0": 0.9, "class_1": 0.1},
    )
    body = serialise_prediction_event(event)
    assert parse_prediction_event(body) == event
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import msgspec
import uuid6

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 128
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
FeatureValue = Union[int, float, str, None]
Label = Union[int, float, str]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class EventValidationError(ValueError):
    """A prediction event that does not fit the contract; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PredictionEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prediction as it travels from predict to the database (immutable).

    Build it with :func:`build_prediction_event` or :func:`parse_prediction_event`, which
    validate; the constructor alone does not.
    """

    prediction_id: Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
    schema_version: Literal[1]
    model_name: Name
    model_version: Name
    features: Annotated[dict[Name, FeatureValue], msgspec.Meta(min_length=1)]
    prediction: Label
    predicted_at: Annotated[datetime, msgspec.Meta(tz=True)]
    probabilities: Union[dict[Name, Probability], None] = None

    def __post_init__(self) -> None:
        if self.predicted_at.utcoffset():
            msgspec.structs.force_setattr(self, "predicted_at", self.predicted_at.astimezone(timezone.utc))


_DECODER = msgspec.json.Decoder(PredictionEvent)
_ENCODER = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIELD_IN_MESSAGE = re.compile(r"field `(?P<field>[^`]+)`")
_SURROGATE = re.compile("[\ud800-\udfff]")


def new_prediction_id() -> str:
    """A time-ordered (UUIDv7) id, so inserts append to the primary-key index."""
    return str(uuid6.uuid7())


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_prediction_event(
    *,
    model_name: str,
    model_version: str,
    features: dict[str, Any],
    prediction: Any,
    probabilities: dict[str, float] | None = None,
    prediction_id: str | None = None,
    predicted_at: datetime | None = None,
) -> PredictionEvent:
    """Build and validate a new event; raises ``EventValidationError`` naming the bad field."""
    raw = {
        "prediction_id": prediction_id or new_prediction_id(),
        "schema_version": SCHEMA_VERSION,
        "model_name": model_name,
        "model_version": model_version,
        "features": features,
        "prediction": prediction,
        "probabilities": probabilities,
        "predicted_at": predicted_at or utc_now(),
    }
    try:
        event = msgspec.convert(raw, PredictionEvent, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, raw) from None
    for name, value in event.features.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise EventValidationError(f"features.{name}", "must be a finite number")
    _refuse_lone_surrogates(event)
    return event


def _refuse_lone_surrogates(event: PredictionEvent) -> None:
    # JSON parsing refuses them already; built events must be as encodable as parsed ones.
    texts: list[tuple[str, object]] = [("model_name", event.model_name), ("model_version", event.model_version), ("prediction", event.prediction)]
    texts += [(f"features.{name}", name) for name in event.features]
    texts += [(f"features.{name}", value) for name, value in event.features.items()]
    texts += [(f"probabilities.{label}", label) for label in event.probabilities or ()]
    for field, text in texts:
        if isinstance(text, str) and not text.isascii() and _SURROGATE.search(text):
            raise EventValidationError(field, "contains a lone surrogate (\\ud800-\\udfff), not valid Unicode")


def serialise_prediction_event(event: PredictionEvent) -> str:
    """The JSON body of the SQS message (compact UTF-8; timestamps RFC 3339 in UTC, microseconds kept)."""
    return _ENCODER.encode(event).decode("utf-8")


def format_timestamp(value: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z`` suffix."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_prediction_event(body: str | bytes) -> PredictionEvent:
    """Parse an SQS message body; any problem raises ``EventValidationError`` naming the field."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: catch it first
        raise _validation_error(exc, _loose_decode(body)) from None
    except msgspec.DecodeError as exc:
        raise EventValidationError("body", f"not valid JSON ({exc})") from None


def _loose_decode(body: str | bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


def _validation_error(exc: msgspec.ValidationError, raw: Any) -> EventValidationError:
    """Turn msgspec's message into a field path and a problem; only runs on the error path."""
    message = str(exc)
    if message.startswith("Expected `object`") and not isinstance(raw, dict):
        return EventValidationError("body", f"expected a JSON object, got {message.rsplit('got ', 1)[-1].strip('`')}")
    match = _PATH.search(message)
    if match is None:
        named = _FIELD_IN_MESSAGE.search(message)
        return EventValidationError(named["field"] if named else "body", message)
    path, problem = match["path"], message[: match.start()]
    if path.endswith("[...]") and isinstance(raw, dict):
        container = path.removesuffix("[...]")
        path = f"{container}.{_offending_key(container, raw.get(container))}"
    if path == "schema_version":
        problem = f"unsupported schema version {raw.get('schema_version')!r} (expected {SCHEMA_VERSION})" if isinstance(raw, dict) else problem
    return EventValidationError(path or "body", problem)


def _offending_key(container: str, mapping: Any) -> str:
    if not isinstance(mapping, dict):
        return "?"
    for key, value in mapping.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_NAME_LENGTH:
            return str(key)
        if container == "probabilities":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                return key
        elif isinstance(value, bool) or not isinstance(value, (int, float, str, type(None))):
            return key
    return "?"
