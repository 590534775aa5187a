"""The prediction event contract (schema version 1).

A prediction event is created by predict, carried as the JSON body of an SQS message and stored
by the writer as one row of ``predictions``. Nothing downstream depends on the SQS message id.

Example::

    event = build_prediction_event(
        model_name="wine", model_version="v3", features={"alcohol": 13.2, "colour": "red"},
        prediction="class_0", probabilities={"class_0": 0.9, "class_1": 0.1},
    )
    body = serialise_prediction_event(event)
    assert parse_prediction_event(body) == event
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import uuid6
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 128

FeatureValue = Union[StrictInt, StrictFloat, StrictStr, None]
Label = Union[StrictInt, StrictStr, StrictFloat]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_LENGTH)]


class EventValidationError(ValueError):
    """A prediction event that does not fit the contract; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PredictionEvent(BaseModel):
    """One prediction as it travels from predict to the database (immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    prediction_id: Annotated[StrictStr, Field(min_length=36, max_length=36)]
    schema_version: Literal[1] = SCHEMA_VERSION
    model_name: Name
    model_version: Name
    features: dict[Name, FeatureValue] = Field(min_length=1)
    prediction: Label
    probabilities: dict[Name, StrictFloat | StrictInt] | None = None
    predicted_at: datetime

    @field_validator("prediction_id")
    @classmethod
    def _is_uuid(cls, value: str) -> str:
        try:
            parsed = uuid6.UUID(value)
        except ValueError as exc:
            raise ValueError("not a UUID") from exc
        if str(parsed) != value:
            raise ValueError("not a canonical lower-case UUID")
        return value

    @field_validator("features")
    @classmethod
    def _finite_features(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"feature {name!r} is not a finite number")
        return value

    @field_validator("probabilities")
    @classmethod
    def _valid_probabilities(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        for label, probability in value.items():
            if not (0.0 <= float(probability) <= 1.0):
                raise ValueError(f"probability of {label!r} is outside [0, 1]")
        return value

    @field_validator("predicted_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a UTC offset")
        return value.astimezone(timezone.utc)


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
    return _validate(raw)


def serialise_prediction_event(event: PredictionEvent) -> str:
    """The JSON body of the SQS message (compact, UTF-8, timestamps with microseconds)."""
    return json.dumps(_event_to_jsonable(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _event_to_jsonable(event: PredictionEvent) -> dict[str, Any]:
    data = event.model_dump()
    data["predicted_at"] = format_timestamp(event.predicted_at)
    return data


def format_timestamp(value: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z`` suffix."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_prediction_event(body: str | bytes) -> PredictionEvent:
    """Parse an SQS message body; any problem raises ``EventValidationError`` naming the field."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventValidationError("body", f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise EventValidationError("body", f"expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EventValidationError("schema_version", f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})")
    predicted_at = raw.get("predicted_at")
    if isinstance(predicted_at, str):
        raw = {**raw, "predicted_at": _parse_timestamp(predicted_at)}
    elif "predicted_at" in raw:
        raise EventValidationError("predicted_at", "expected an ISO-8601 string")
    return _validate(raw)


def _parse_timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventValidationError("predicted_at", f"not an ISO-8601 timestamp: {text[:40]!r}") from None
    if value.tzinfo is None:
        raise EventValidationError("predicted_at", "must carry a UTC offset")
    return value


def _validate(raw: dict[str, Any]) -> PredictionEvent:
    try:
        return PredictionEvent.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        problem = first["msg"]
        if loc[:1] == ["features"] and len(loc) > 2:
            loc, problem = loc[:2], "must be a number, a string or null"
        elif loc[:1] == ["prediction"] and len(loc) > 1:
            loc, problem = loc[:1], "must be a number or a string"
        raise EventValidationError(".".join(loc) or "body", problem) from None
