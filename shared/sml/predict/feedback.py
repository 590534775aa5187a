"""Labels for past predictions (``POST /feedback``, ``sml feedback``) into validated ground-truth events.

Pure: no I/O, no model. A :class:`FeedbackSchema` is built once per loaded champion from its
task and classes. Request body: one label object, or ``{"labels": [label, ...]}`` (at most
``max_items``). A label object::

    {"prediction_id": "01a2...", "label": "malignant", "labelled_at": "2026-11-27T07:01:02Z", "source": "biopsy"}

* ``prediction_id``: the id ``POST /predict`` answered with (a UUID, any letter case; stored
  lower-case). Whether the prediction is stored is not checked here: predict never reads the
  database, and a label may arrive before its prediction row. Labels of unknown predictions are
  stored and counted as unmatched by monitoring.
* ``label``: for a classifier, one of the champion's classes, as JSON carries it
  (``"malignant"``, or ``1`` for an integer class; the text ``"1"`` is read as class ``1`` when no
  class is the text ``"1"``, which is what a CSV file holds). For a regression model, the true
  value: a finite JSON number (``151.5``, ``42``), or a text that is one (``"151.5"``, as a CSV
  file holds it), kept exactly (an integer stays an integer). Never a boolean.
* ``labelled_at`` (optional): when the label became known, RFC 3339 with a zone; now by default.
  Not later than :data:`MAX_CLOCK_SKEW` from now (a label from the future would win against every
  correction, since the latest ``labelled_at`` wins).
* ``source`` (optional): where the label came from, 1 to 128 characters.

Errors are :class:`~sml.predict.errors.ApiError` (422, field named as ``labels[3].label``), the
same shape and codes as ``POST /predict``'s.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

import msgspec

from sml.core.events import (
    MAX_NAME_LENGTH,
    EventValidationError,
    GroundTruthEvent,
    TimestampError,
    build_ground_truth_event,
    format_timestamp,
    parse_utc_timestamp,
    utc_now,
)
from sml.lifecycle.manifest import Task, task_from_classes
from sml.predict.errors import ApiError
from sml.predict.validation import _NOT_SQS_SAFE, _json_type

MAX_CLOCK_SKEW = timedelta(minutes=5)
LABEL_KEYS = ("prediction_id", "label", "labelled_at", "source")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FeedbackRequest:
    """Validated labels in request order; ``batch`` is true for ``{"labels": [...]}``."""

    events: list[GroundTruthEvent]
    batch: bool


class FeedbackSchema:
    """Validator of labels for one model's task and classes.

    :param classes: the champion manifest's classes; ``None`` accepts any label the event
        contract accepts (a bulk load with no champion to check against).
    :param task: the champion manifest's task; by default the one its classes imply (none:
        regression). A regression model's labels are finite numbers.
    :param max_items: the most labels one ``{"labels": [...]}`` request may carry.
    :param now: the current time (UTC), for defaults and the future check.
    """

    def __init__(
        self, classes: Sequence[str | int] | None, *, task: Task | None = None, max_items: int, now: Callable[[], datetime] = utc_now
    ) -> None:
        self.classes = None if classes is None else tuple(classes)
        self.task = task if task is not None or self.classes is None else task_from_classes(self.classes)
        if self.task == "regression":
            self.classes = None
        self.max_items = max_items
        self.now = now
        self._by_value: dict[tuple[type, str | int], str | int] | None = None
        if self.classes is not None:
            self._by_value = {(type(label), label): label for label in self.classes}
            for label in self.classes:
                if not isinstance(label, str):
                    self._by_value.setdefault((str, str(label)), label)
            self._shown = ", ".join(repr(label) for label in self.classes)

    def parse_request(self, payload: Any) -> FeedbackRequest:
        """Validate a parsed body: one label object or ``{"labels": [...]}``; raises 422 naming the field."""
        if type(payload) is not dict:
            raise _unprocessable("invalid_type", "body", f"must be a JSON object (one label) or {{\"labels\": [...]}}, got {_json_type(payload)}")
        if "labels" not in payload:
            return FeedbackRequest([self.validate_label(payload, None)], batch=False)
        unknown = sorted(set(payload) - {"labels"})
        if unknown:
            raise _unprocessable("invalid_request", unknown[0][:64], "send either one label object or {\"labels\": [...]}, not both")
        items = payload["labels"]
        if type(items) is not list:
            raise _unprocessable("invalid_type", "labels", f"must be a JSON array of label objects, got {_json_type(items)}")
        if not items:
            raise _unprocessable("empty_labels", "labels", "must hold at least one label")
        if len(items) > self.max_items:
            raise _unprocessable("too_many_labels", "labels", f"holds {len(items)} labels; the limit is {self.max_items} per request")
        now = self.now()
        return FeedbackRequest([self.validate_label(item, f"labels[{index}]", now=now) for index, item in enumerate(items)], batch=True)

    def validate_label(self, item: Any, field: str | None, *, now: datetime | None = None) -> GroundTruthEvent:
        """One label object into a ground-truth event; ``field`` prefixes error paths (None: top level)."""
        where = (lambda key: f"{field}.{key}") if field else (lambda key: key)
        if type(item) is not dict:
            raise _unprocessable("invalid_type", field or "body", f"must be a JSON object with prediction_id and label, got {_json_type(item)}")
        for key in item:
            if key not in LABEL_KEYS:
                raise _unprocessable("unknown_key", where(str(key)[:64]), f"unknown key; a label takes {', '.join(LABEL_KEYS)}")
        for key in ("prediction_id", "label"):
            if key not in item:
                raise _unprocessable("missing_field", where(key), "required")
        prediction_id = item["prediction_id"]
        if type(prediction_id) is not str or not _UUID.match(prediction_id):
            raise _unprocessable("invalid_prediction_id", where("prediction_id"), "must be the prediction_id POST /predict answered with (a UUID)")
        label = self.class_of(item["label"], where("label"))
        labelled_at = self._labelled_at(item.get("labelled_at"), where("labelled_at"), now or self.now())
        source = item.get("source")
        if source is not None and (type(source) is not str or not 1 <= len(source) <= MAX_NAME_LENGTH):
            raise _unprocessable("invalid_type", where("source"), f"must be a string of 1 to {MAX_NAME_LENGTH} characters or null")
        if source is not None and _NOT_SQS_SAFE.search(source):
            raise _unprocessable("invalid_characters", where("source"), "must not contain control characters or unpaired surrogates")
        try:
            return build_ground_truth_event(prediction_id=prediction_id.lower(), label=label, labelled_at=labelled_at, source=source)
        except EventValidationError as exc:
            raise _unprocessable("invalid_value", where(exc.field), exc.problem) from None

    def class_of(self, value: Any, field: str) -> str | int | float:
        """The class ``value`` names, or a regression model's number (see the module docstring); raises 422 naming ``field``."""
        if self.task == "regression":
            return _true_value(value, field)
        if type(value) not in (str, int):
            raise _unprocessable("invalid_type", field, f"must be a class (a string or an integer), got {_json_type(value)}")
        if self._by_value is None:
            if type(value) is str and (not 1 <= len(value) <= MAX_NAME_LENGTH or _NOT_SQS_SAFE.search(value)):
                raise _unprocessable("invalid_value", field, f"must be 1 to {MAX_NAME_LENGTH} characters, without control characters")
            return value
        found = self._by_value.get((type(value), value))
        if found is None:
            raise _unprocessable("unknown_class", field, f"{str(value)[:40]!r} is not a class of the model; expected one of {self._shown}")
        return found

    def _labelled_at(self, value: Any, field: str, now: datetime) -> datetime:
        if value is None:
            return now
        if type(value) is not str:
            raise _unprocessable("invalid_timestamp", field, f"must be an RFC 3339 date-time with a zone, got {_json_type(value)}")
        try:
            # The writer's rule too: beyond microseconds truncated, a leap second the last microsecond of its minute.
            moment = parse_utc_timestamp(value)
        except TimestampError as exc:
            if not exc.too_early:
                raise _unprocessable("invalid_timestamp", field, str(exc)) from None
            moment = _EARLIEST - timedelta(microseconds=1)
        if moment < _EARLIEST:
            raise _unprocessable("invalid_timestamp", field, f"{value[:40]!r} is before 1970-01-01T00:00:00Z; labels are of predictions made since")
        if moment > now + MAX_CLOCK_SKEW:
            raise _unprocessable("labelled_in_future", field, f"is later than now ({now:%Y-%m-%dT%H:%M:%SZ}); a label cannot be known before it is given")
        return moment


def _true_value(value: Any, field: str) -> int | float:
    """A regression model's label: a finite JSON number, or a text that is one (CSV); 422 otherwise."""
    if type(value) is str:
        try:
            number = msgspec.json.decode(value.strip())
        except msgspec.DecodeError:
            number = None
        if type(number) not in (int, float):
            raise _unprocessable("invalid_type", field, f"must be a number (the model is a regression model), got the text {value[:40]!r}")
        value = number
    if type(value) not in (int, float):
        raise _unprocessable("invalid_type", field, f"must be a number (the model is a regression model), got {_json_type(value)}")
    if type(value) is float and not math.isfinite(value):
        raise _unprocessable("invalid_value", field, f"must be a finite number, got {value}")
    return value


def feedback_response(request: FeedbackRequest) -> dict[str, Any]:
    """The body of a 202: ``accepted`` and, per label in request order, its ``prediction_id`` and ``labelled_at``."""
    return {
        "accepted": len(request.events),
        "labels": [{"prediction_id": event.prediction_id, "labelled_at": format_timestamp(event.labelled_at)} for event in request.events],
    }


def _unprocessable(code: str, field: str, message: str) -> ApiError:
    return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, code, message, field=field)


# --------------------------------------------------------------------------------------------
# Label files (sml feedback --file)

LABEL_FILE_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class LabelFile:
    """The valid labels of a file with the line each came from, one message per bad line, and one
    per valid label a later line of the file replaced (same ``prediction_id``)."""

    events: list[GroundTruthEvent]
    lines: list[int]
    problems: list[str]
    superseded: list[str] = field(default_factory=list)


def read_label_lines(
    lines: Iterable[str], *, name: str, kind: str, schema: FeedbackSchema, source: str | None = None
) -> LabelFile:
    """Validate the labels of a CSV or JSON Lines file, line by line, as ``POST /feedback`` does.

    CSV: a header naming some of ``prediction_id, label, labelled_at, source`` (the first two
    required), then one label per row; an empty ``labelled_at`` or ``source`` cell means absent.
    JSON Lines: one label object per line, the same object ``POST /feedback`` takes; blank lines
    are skipped. A label without ``labelled_at`` gets the time of the load (one instant for the
    whole file); one without ``source`` gets ``source``. A ``prediction_id`` labelled on several
    lines keeps its last valid line, whatever the ``labelled_at`` of each (a file is read as
    written, so sending it again gives the same labels); the earlier lines are listed in
    ``superseded`` (``labels.csv:3: prediction_id ... is labelled again on line 9; the last line wins``).

    :param lines: the file's text lines (an open text file will do).
    :param name: the file's name, as problems show it (``labels.csv:17: label: ...``).
    :param kind: ``csv`` or ``jsonl``.
    :returns: a :class:`LabelFile`; a file whose CSV header is unusable has that as its only problem.
    """
    now = schema.now()
    events: list[GroundTruthEvent] = []
    numbers: list[int] = []
    problems: list[str] = []
    for number, item in (_csv_items(lines) if kind == "csv" else _jsonl_items(lines)):
        if isinstance(item, str):
            problems.append(f"{name}:{number}: {item}")
            continue
        if source is not None and item.get("source") is None:
            item["source"] = source
        try:
            events.append(schema.validate_label(item, None, now=now))
        except ApiError as error:
            problems.append(f"{name}:{number}: {error.field}: {error.message}")
            continue
        numbers.append(number)
    last_line = {event.prediction_id: number for event, number in zip(events, numbers)}
    superseded = [
        f"{name}:{number}: prediction_id {event.prediction_id} is labelled again on line {last_line[event.prediction_id]}; the last line wins"
        for event, number in zip(events, numbers)
        if last_line[event.prediction_id] != number
    ]
    kept = [(event, number) for event, number in zip(events, numbers) if last_line[event.prediction_id] == number]
    return LabelFile([event for event, _ in kept], [number for _, number in kept], problems, superseded)


def _jsonl_items(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            yield number, f"not valid JSON ({exc})"
            continue
        yield number, item if type(item) is dict else f"must be a JSON object with prediction_id and label, got {_json_type(item)}"


def _csv_items(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return  # an empty file holds no labels, as an empty JSON Lines file: the caller says so
    columns = [column.strip() for column in header]
    unknown = [column for column in columns if column not in LABEL_KEYS]
    missing = [key for key in ("prediction_id", "label") if key not in columns]
    if unknown or missing or len(set(columns)) != len(columns):
        problem = f"unknown column {unknown[0]!r}" if unknown else f"missing column {missing[0]!r}" if missing else "a column appears twice"
        yield 1, f"{problem}; the header names some of {', '.join(LABEL_KEYS)} (prediction_id and label required)"
        return
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            yield reader.line_num, f"has {len(row)} cells; the header has {len(columns)}"
            continue
        yield reader.line_num, {column: cell for column, cell in zip(columns, row) if cell != "" or column in ("prediction_id", "label")}
