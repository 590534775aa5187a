"""The event contract (schema version 1): prediction events (type 1), ground-truth events (type 2)
and refusal events (type 3).

A prediction event is created by predict, carried as the JSON body of an SQS message and stored
by the writer as one row of ``predictions``. A ground-truth event (a label for a prediction,
from ``POST /feedback`` or ``sml feedback``) travels the same queue and is stored as one row of
``ground_truth``. A refusal event counts the values of one request predict refused with a 4xx
(per field and reason code); it travels the same queue and is stored as rows of
``predict_refusals``, which data quality reads. Nothing downstream depends on the SQS message id.

They are told apart by the ``event_type`` key: ground-truth bodies carry
``"event_type": "ground_truth"`` and refusal bodies ``"event_type": "predict_refusal"`` (first
key); prediction bodies carry none, exactly as before ground truth existed, so messages already
in queues and DLQs still parse as type 1 and a writer of the previous release still reads them.
:func:`parse_event` parses any of them.

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

import functools
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar, Union

import msgspec
import uuid6

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 128
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
# bool for boolean features (JSON true/false), stored as such (as a category: str(), see the manifest).
FeatureValue = Union[bool, int, float, str, None]
Label = Union[int, float, str]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class EventValidationError(ValueError):
    """An event that does not fit the contract; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _normalise_to_utc(event: msgspec.Struct, field: str) -> None:
    """Store the event's aware timestamp ``field`` in UTC (every event type's ``__post_init__``).

    :raises ValueError: the instant has no UTC date (e.g. ``0001-01-01T00:30+01:00``); msgspec
        reports a ValueError raised in ``__post_init__`` as a ValidationError of the struct, so it
        reaches callers as :class:`EventValidationError` naming the field.
    """
    moment = getattr(event, field)
    if moment.utcoffset():
        try:
            utc = moment.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError(f"out of range once converted to UTC (field `{field}`)") from None
        msgspec.structs.force_setattr(event, field, utc)


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
        _normalise_to_utc(self, "predicted_at")


_DECODER = msgspec.json.Decoder(PredictionEvent)
_ENCODER = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIELD_IN_MESSAGE = re.compile(r"field `(?P<field>[^`]+)`")
_IN_REFUSED = re.compile(r"`\$\.refused(`|\[)")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Timestamps msgspec would read otherwise than parse_utc_timestamp: more than six fractional digits
# (it rounds) or a leap second (it refuses). The hint ("mm:ss.fffffff" or "hh:mm:60") never matches
# a JSON number, so ordinary bodies keep the one-pass decoder. It is looked for in the string value
# after each timestamp key ("predicted_at": "..."), found with str.find: searching the whole body
# cost ~28 µs on a 30-feature event (every digit of every number starts a match attempt), a third
# of the writer's parse. A body with any backslash (an escaped key or value) is searched whole.
_TIMESTAMP_RULE_HINT = re.compile(r"\d:\d{2}\.\d{7}|\d{2}:\d{2}:60")
_TIMESTAMP_RULE_HINT_BYTES = re.compile(rb"\d:\d{2}\.\d{7}|\d{2}:\d{2}:60")
_TIMESTAMP_VALUE_HINT = re.compile(r'\s*:\s*"[^"]*?(?:\d:\d{2}\.\d{7}|\d{2}:\d{2}:60)')
_TIMESTAMP_VALUE_HINT_BYTES = re.compile(rb'\s*:\s*"[^"]*?(?:\d:\d{2}\.\d{7}|\d{2}:\d{2}:60)')
_TIMESTAMP_KEYS = tuple((f'"{name}"', f'"{name}"'.encode()) for name in ("predicted_at", "labelled_at", "refused_at"))
_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|(?P<sign>[+-])(?P<zone_hours>\d{2}):(?P<zone_minutes>\d{2}))?"
)
EARLIEST_UTC = datetime(1, 1, 1, tzinfo=timezone.utc)
LATEST_UTC = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)


class TimestampError(ValueError):
    """A text that :func:`parse_utc_timestamp` does not take, with the reason; ``too_early`` when
    the instant lies before year 1 in UTC (a caller with a later floor can say so instead)."""

    def __init__(self, problem: str, *, too_early: bool = False) -> None:
        super().__init__(problem)
        self.too_early = too_early


def parse_utc_timestamp(text: str, *, naive_as_utc: bool = False) -> datetime:
    """The one rule for the timestamps the system reads (event times, label times, ``--end``):
    an RFC 3339 date-time, returned as an aware UTC datetime.

    - Fractional seconds beyond microseconds are truncated, never rounded (as MySQL's
      ``DATETIME(6)`` and :meth:`datetime.fromisoformat` do): ``23:59:59.9999995Z`` stays in its day.
    - A leap second (``23:59:60Z``, valid RFC 3339, §5.6-5.7) is taken as the last microsecond
      before the next minute, ``23:59:59.999999Z``, which keeps the order and the day of events;
      second 60 anywhere but 23:59:60 UTC is refused, since leap seconds occur only there (§5.7).
    - A zone (``Z`` or ``±hh:mm``) is required unless ``naive_as_utc``.

    :raises TimestampError: naming what is wrong: the syntax, no zone, a field out of range (e.g.
        month 13), or an instant outside years 1 to 9999 once converted to UTC.
    """
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise TimestampError(f"{text[:40]!r} is not an RFC 3339 date-time such as 2026-11-27T07:01:02Z")
    if match["zone"] is None and not naive_as_utc:
        raise TimestampError(f"{text[:40]!r} has no zone; end it with Z or an offset such as +01:00")
    zone = timezone.utc
    if match["sign"]:
        hours, minutes = int(match["zone_hours"]), int(match["zone_minutes"])
        if hours > 23 or minutes > 59:
            raise TimestampError(f"{text[:40]!r} has the offset {match['zone']}, beyond ±23:59")
        zone = timezone((-1 if match["sign"] == "-" else 1) * timedelta(hours=hours, minutes=minutes))
    second = int(match["second"])
    microsecond = int((match["fraction"] or "")[:6].ljust(6, "0"))
    try:
        moment = datetime(int(match["year"]), int(match["month"]), int(match["day"]), int(match["hour"]), int(match["minute"]),
                          59 if second == 60 else second, microsecond, tzinfo=zone)
    except ValueError as exc:
        raise TimestampError(f"{text[:40]!r} is not a valid date-time ({exc})") from None
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError:
        early = moment.utcoffset() > timedelta(0)  # the shift only leaves the calendar at its ends
        bound = "before 0001-01-01T00:00:00Z" if early else "after 9999-12-31T23:59:59Z"
        raise TimestampError(f"{text[:40]!r} is {bound} once converted to UTC", too_early=early) from None
    if second == 60:
        if (utc.hour, utc.minute) != (23, 59):
            raise TimestampError(f"{text[:40]!r} has second 60, a leap second, which RFC 3339 allows only at 23:59:60 UTC")
        utc = utc.replace(microsecond=999_999)
    return utc


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
    event = prediction_event_of(raw)
    _refuse_lone_surrogates(event)
    return event


def prediction_event_of(fields: dict[str, Any]) -> PredictionEvent:
    """The prediction event of ``fields`` (every field by name, as values rather than JSON text),
    validated as a parsed body is; raises ``EventValidationError`` naming the bad field.

    Nothing is filled in: a missing ``prediction_id`` or ``predicted_at`` is an error, not a new
    one. Text is taken to be valid Unicode, as text decoded from bytes (JSON, MessagePack) always
    is; :func:`build_prediction_event` also refuses the lone surrogates a ``str`` may hold (that
    check costs three times the rest).
    """
    try:
        event = msgspec.convert(fields, PredictionEvent, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, fields) from None
    for name, value in event.features.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise EventValidationError(f"features.{name}", "must be a finite number")
    if isinstance(event.prediction, float) and not math.isfinite(event.prediction):
        raise EventValidationError("prediction", "must be a finite number")
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


_Parsed = TypeVar("_Parsed")


def _explains_any_body(parse: Callable[[str | bytes], _Parsed]) -> Callable[[Any], _Parsed]:
    """Make ``parse`` fail with an :class:`EventValidationError` whatever it is given: a body that
    is not text, text that is not Unicode (lone surrogates, bytes that are not UTF-8), or JSON
    nested so deeply that reading it to explain what is wrong exhausts the recursion limit. The
    writer, ``sml dlq inspect`` and ``sml capture resend`` then report such a body alone, with a
    reason, instead of failing their whole batch or crashing."""

    @functools.wraps(parse)
    def parse_any(body: Any) -> _Parsed:
        if not isinstance(body, (str, bytes)):
            raise EventValidationError("body", f"expected JSON text (str or bytes), got {type(body).__name__}")
        try:
            return parse(body)
        except RecursionError:
            raise EventValidationError("body", f"JSON nested too deeply to read (an event nests {MAX_EVENT_DEPTH} levels at most)") from None
        except (UnicodeDecodeError, UnicodeEncodeError) as exc:
            raise EventValidationError("body", _unicode_problem(body, exc)) from None

    return parse_any


def _unicode_problem(body: str | bytes, error: UnicodeDecodeError | UnicodeEncodeError) -> str:
    # The decoder may have failed on a slice of the body; coding the whole body again finds the offset in it.
    try:
        body.decode("utf-8") if isinstance(body, bytes) else body.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as whole:
        error = whole
    unit = "byte" if isinstance(body, bytes) else "character"
    return f"not valid UTF-8 text at {unit} {error.start} ({error.reason})"


# Objects inside objects in the deepest event (a refusal: body, refused, field, reasons).
MAX_EVENT_DEPTH = 3


@_explains_any_body
def parse_prediction_event(body: str | bytes) -> PredictionEvent:
    """Parse an SQS message body; any problem raises ``EventValidationError`` naming the field.

    ``predicted_at`` follows :func:`parse_utc_timestamp`: further fractional digits are truncated
    (msgspec alone would round ``...T23:59:59.9999995Z`` up to midnight of the next day, into the
    next window) and a leap second is the last microsecond of its minute.
    """
    if _has_excess_fraction(body) and isinstance(raw := _loose_decode(body), dict):
        return _convert_truncating_fraction(raw, PredictionEvent)
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: catch it first
        raise _validation_error(exc, _loose_decode(body)) from None
    except msgspec.DecodeError as exc:
        raise EventValidationError("body", f"not valid JSON ({exc})") from None


def _has_excess_fraction(body: str | bytes) -> bool:
    """Whether a timestamp of ``body`` may need :func:`parse_utc_timestamp` (never false when one does)."""
    is_bytes = isinstance(body, bytes)
    if (b"\\" if is_bytes else "\\") in body:
        return (_TIMESTAMP_RULE_HINT_BYTES if is_bytes else _TIMESTAMP_RULE_HINT).search(body) is not None
    value_hint = _TIMESTAMP_VALUE_HINT_BYTES if is_bytes else _TIMESTAMP_VALUE_HINT
    for key_text, key_bytes in _TIMESTAMP_KEYS:
        key = key_bytes if is_bytes else key_text
        start = body.find(key)  # type: ignore[arg-type]
        while start != -1:
            if value_hint.match(body, start + len(key)):  # type: ignore[arg-type]
                return True
            start = body.find(key, start + 1)  # type: ignore[arg-type]
    return False


def _convert_truncating_fraction(raw: dict[str, Any], event_class: type[_Struct]) -> _Struct:
    """``raw`` as ``event_class`` with its timestamp read by :func:`parse_utc_timestamp` (the slow
    path, for bodies with more than microseconds or a leap second only)."""
    field = _TIMESTAMP_FIELD[event_class]
    if isinstance(raw.get(field), str):
        try:
            raw[field] = parse_utc_timestamp(raw[field])
        except TimestampError as exc:
            raise EventValidationError(field, str(exc)) from None
    try:
        return msgspec.convert(raw, event_class, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, raw) from None


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
    if _IN_REFUSED.search(message) and isinstance(raw, dict):
        return EventValidationError(_offending_refusal(raw.get("refused")), message.split(" - at ", 1)[0])
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


def _offending_refusal(refused: Any) -> str:
    """``refused.<field>`` or ``refused.<field>.<reason>`` of the first entry that breaks :class:`RefusalEvent`."""
    if not isinstance(refused, dict):
        return "refused"
    for field, reasons in refused.items():
        if not 1 <= len(field) <= MAX_NAME_LENGTH or not isinstance(reasons, dict) or not 1 <= len(reasons) <= MAX_REASONS_PER_FIELD:
            return f"refused.{field}"
        for reason, count in reasons.items():
            if not _REASON_CODE.match(reason) or type(count) is not int or not 1 <= count <= MAX_REFUSED_COUNT:
                return f"refused.{field}.{reason}"
    return "refused"


def _offending_key(container: str, mapping: Any) -> str:
    if not isinstance(mapping, dict):
        return "?"
    for key, value in mapping.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_NAME_LENGTH:
            return str(key)
        if container == "probabilities":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                return key
        elif not isinstance(value, (bool, int, float, str, type(None))):
            return key
    return "?"


# --------------------------------------------------------------------------------------------
# Ground truth (event type 2)

EVENT_TYPE_FIELD = "event_type"
GROUND_TRUTH_EVENT_TYPE = "ground_truth"
PREDICTION_EVENT_TYPE = "prediction"
# A class (a name or an integer) of a classifier, or the true value of a regression model's target.
TrueLabel = Union[int, float, Name]


class GroundTruthEvent(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field=EVENT_TYPE_FIELD, tag=GROUND_TRUTH_EVENT_TYPE
):
    """The true label of one prediction, known at ``labelled_at`` (immutable).

    ``label`` is a class as the model's manifest lists it (a string of 1 to 128 characters or an
    integer) for a classifier, or the true value (a finite number, integer or float) for a
    regression model; never a boolean. Floats keep their exact value: the event and the
    ``ground_truth`` table carry them as shortest round-trip JSON numbers. ``source`` says where the label came from (a system, a
    team, a file), at most 128 characters. ``labelled_at`` is when the label became known, in UTC
    with microseconds; for one ``prediction_id`` the label with the latest ``labelled_at`` wins.
    Build it with :func:`build_ground_truth_event` or :func:`parse_ground_truth_event`, which
    validate; the constructor alone does not.
    """

    prediction_id: Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
    schema_version: Literal[1]
    label: TrueLabel
    labelled_at: Annotated[datetime, msgspec.Meta(tz=True)]
    source: Union[Name, None] = None

    def __post_init__(self) -> None:
        _normalise_to_utc(self, "labelled_at")


_GROUND_TRUTH_DECODER = msgspec.json.Decoder(GroundTruthEvent)


def build_ground_truth_event(
    *, prediction_id: str, label: Any, labelled_at: datetime | None = None, source: str | None = None
) -> GroundTruthEvent:
    """Build and validate a ground-truth event; raises ``EventValidationError`` naming the bad field.

    :param prediction_id: the ``prediction_id`` predict answered with (lower-case UUID).
    :param label: the true class, or the true value (finite) of a regression model's target.
    :param labelled_at: when the label became known, timezone-aware (now, UTC, by default).
    :param source: where the label came from, or None.
    """
    raw = {
        "prediction_id": prediction_id,
        "schema_version": SCHEMA_VERSION,
        "label": label,
        "labelled_at": labelled_at or utc_now(),
        "source": source,
    }
    try:
        event = msgspec.convert(raw, GroundTruthEvent, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, raw) from None
    if isinstance(event.label, float) and not math.isfinite(event.label):
        raise EventValidationError("label", f"must be a finite number, got {event.label}")
    for field, text in (("label", event.label), ("source", event.source)):
        if isinstance(text, str) and not text.isascii() and _SURROGATE.search(text):
            raise EventValidationError(field, "contains a lone surrogate (\\ud800-\\udfff), not valid Unicode")
    return event


def serialise_ground_truth_event(event: GroundTruthEvent) -> str:
    """The JSON body of the SQS message: ``event_type`` first, then the fields (timestamps as for predictions)."""
    return _ENCODER.encode(event).decode("utf-8")


def serialise_event(event: Event) -> str:
    """The JSON body of either event type."""
    return _ENCODER.encode(event).decode("utf-8")


@_explains_any_body
def parse_ground_truth_event(body: str | bytes) -> GroundTruthEvent:
    """Parse a ground-truth body; any problem raises ``EventValidationError`` naming the field.

    The ``event_type`` key may be left out here (the caller already knows the type); when
    present it must be ``ground_truth``. ``labelled_at`` keeps at most microseconds, truncated as
    for ``predicted_at`` (:func:`parse_prediction_event`).
    """
    return _parse_typed(body, GroundTruthEvent)


def _parse_typed(body: str | bytes, event_class: type[_TaggedStruct]) -> _TaggedStruct:
    """``body`` as the tagged ``event_class``, whose ``event_type`` may be left out."""
    tag = _TAG[event_class]
    if _has_excess_fraction(body) and isinstance(raw := _loose_decode(body), dict):
        if raw.get(EVENT_TYPE_FIELD, tag) == tag:
            raw.pop(EVENT_TYPE_FIELD, None)
            return _convert_truncating_fraction(raw, event_class)
    try:
        return _TAGGED_DECODERS[event_class].decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, _loose_decode(body)) from None
    except msgspec.DecodeError as exc:
        raise EventValidationError("body", f"not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# Refusals (event type 3): what predict refused, counted per field and reason

REFUSAL_EVENT_TYPE = "predict_refusal"
REQUEST_FIELD = "_request"
"""The field of refusals that name no feature: a body that is not JSON, too large, or not shaped
as a request (no ``features``/``instances``, too many rows, unknown keys or feature names)."""
MAX_REFUSED_FIELDS = 256
MAX_REASONS_PER_FIELD = 16
MAX_REFUSED_COUNT = 2**31 - 1
_REASON_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_REASON_CODE = re.compile(_REASON_PATTERN)
ReasonCode = Annotated[str, msgspec.Meta(pattern=_REASON_PATTERN)]
RefusedCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_REFUSED_COUNT)]
RefusedByReason = Annotated[dict[ReasonCode, RefusedCount], msgspec.Meta(min_length=1, max_length=MAX_REASONS_PER_FIELD)]


class RefusalEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field=EVENT_TYPE_FIELD, tag=REFUSAL_EVENT_TYPE):
    """One request predict refused with a 4xx for its content, counted per field and reason (immutable).

    ``refused`` maps a field (a feature name of the model's schema, or :data:`REQUEST_FIELD`) to
    the error codes predict answered with (``out_of_range``, ``not_finite``, ...) and how many
    values of that field each refused, e.g. ``{"mean radius": {"out_of_range": 3}}``. At most
    :data:`MAX_REFUSED_FIELDS` fields and :data:`MAX_REASONS_PER_FIELD` reasons per field, so an
    event stays far below SQS's message size whatever a request held. ``model_version`` is the
    champion that was serving (None when none was loaded); ``refused_at`` is in UTC.
    Build it with :func:`build_refusal_event` or :func:`parse_event`, which validate.
    """

    refusal_id: Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
    schema_version: Literal[1]
    model_name: Name
    model_version: Union[Name, None]
    refused_at: Annotated[datetime, msgspec.Meta(tz=True)]
    refused: Annotated[dict[Name, RefusedByReason], msgspec.Meta(min_length=1, max_length=MAX_REFUSED_FIELDS)]

    def __post_init__(self) -> None:
        _normalise_to_utc(self, "refused_at")


_REFUSAL_DECODER = msgspec.json.Decoder(RefusalEvent)
Event = Union[PredictionEvent, GroundTruthEvent, RefusalEvent]


def build_refusal_event(
    *,
    model_name: str,
    model_version: str | None,
    refused: dict[str, dict[str, int]],
    refusal_id: str | None = None,
    refused_at: datetime | None = None,
) -> RefusalEvent:
    """Build and validate a refusal event; raises ``EventValidationError`` naming the bad field.

    :param refused: field -> reason code -> values refused (see :class:`RefusalEvent`).
    :param refusal_id: a new time-ordered id by default.
    :param refused_at: now (UTC) by default.
    """
    raw = {
        "refusal_id": refusal_id or new_prediction_id(),
        "schema_version": SCHEMA_VERSION,
        "model_name": model_name,
        "model_version": model_version,
        "refused_at": refused_at or utc_now(),
        "refused": refused,
    }
    try:
        event = msgspec.convert(raw, RefusalEvent, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, raw) from None
    texts = [("model_name", event.model_name), ("model_version", event.model_version), *((f"refused.{name}", name) for name in event.refused)]
    for field, text in texts:
        if isinstance(text, str) and not text.isascii() and _SURROGATE.search(text):
            raise EventValidationError(field, "contains a lone surrogate (\\ud800-\\udfff), not valid Unicode")
    return event


@_explains_any_body
def parse_refusal_event(body: str | bytes) -> RefusalEvent:
    """Parse a refusal body (``event_type`` may be left out); problems raise ``EventValidationError`` naming the field."""
    return _parse_typed(body, RefusalEvent)


def event_id(event: Event) -> str:
    """The id an event is stored under: ``prediction_id``, or ``refusal_id`` for a refusal."""
    return event.refusal_id if type(event) is RefusalEvent else event.prediction_id


@_explains_any_body
def parse_event(body: str | bytes) -> Event:
    """Parse an SQS message body of any type; problems raise ``EventValidationError`` naming the field.

    A body without ``event_type`` is a prediction event (type 1, as every body before ground
    truth existed); ``"event_type": "prediction"`` is accepted too. Prediction bodies cost one
    decode, as with :func:`parse_prediction_event`; so do ground-truth and refusal bodies as
    :func:`serialise_event` writes them (recognised by their first key). A body with the tag
    elsewhere is read loosely for it first.
    """
    for prefix, prefix_bytes, event_class in _TAGGED_PREFIXES:
        if body.startswith(prefix if isinstance(body, str) else prefix_bytes):
            return _parse_typed(body, event_class)
    if _has_excess_fraction(body) and isinstance(raw := _loose_decode(body), dict):
        event_type = raw.get(EVENT_TYPE_FIELD)
        tagged = _TAGGED_CLASSES.get(event_type) if isinstance(event_type, str) else None
        if tagged is not None:
            return _parse_typed(body, tagged)
        if raw.get(EVENT_TYPE_FIELD, PREDICTION_EVENT_TYPE) == PREDICTION_EVENT_TYPE:
            raw.pop(EVENT_TYPE_FIELD, None)
            return _convert_truncating_fraction(raw, PredictionEvent)
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raw = _loose_decode(body)
        if isinstance(raw, dict) and EVENT_TYPE_FIELD in raw:
            return _parse_tagged(body, raw)
        raise _validation_error(exc, raw) from None
    except msgspec.DecodeError as exc:
        raise EventValidationError("body", f"not valid JSON ({exc})") from None


_Struct = TypeVar("_Struct", PredictionEvent, GroundTruthEvent, RefusalEvent)
_TaggedStruct = TypeVar("_TaggedStruct", GroundTruthEvent, RefusalEvent)
_TIMESTAMP_FIELD: dict[type, str] = {PredictionEvent: "predicted_at", GroundTruthEvent: "labelled_at", RefusalEvent: "refused_at"}
_TAGGED_CLASSES: dict[Any, type] = {GROUND_TRUTH_EVENT_TYPE: GroundTruthEvent, REFUSAL_EVENT_TYPE: RefusalEvent}
_TAG = {event_class: tag for tag, event_class in _TAGGED_CLASSES.items()}
_TAGGED_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {GroundTruthEvent: _GROUND_TRUTH_DECODER, RefusalEvent: _REFUSAL_DECODER}
_TAGGED_PREFIXES = tuple(
    (prefix, prefix.encode(), event_class)
    for tag, event_class in _TAGGED_CLASSES.items()
    for prefix in [f'{{"{EVENT_TYPE_FIELD}":"{tag}",']
)


def _parse_tagged(body: str | bytes, raw: dict[str, Any]) -> Event:
    event_type = raw[EVENT_TYPE_FIELD]
    tagged = _TAGGED_CLASSES.get(event_type) if isinstance(event_type, str) else None
    if tagged is not None:
        return _parse_typed(body, tagged)
    if event_type == PREDICTION_EVENT_TYPE:
        del raw[EVENT_TYPE_FIELD]
        return parse_prediction_event(_ENCODER.encode(raw))
    expected = f"expected {PREDICTION_EVENT_TYPE!r} (or no {EVENT_TYPE_FIELD}), {GROUND_TRUTH_EVENT_TYPE!r} or {REFUSAL_EVENT_TYPE!r}"
    raise EventValidationError(EVENT_TYPE_FIELD, f"unknown event type {event_type!r}; {expected}")
