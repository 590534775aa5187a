"""Labels for POST /feedback and sml feedback: the class check, every 422 naming its field, and the OpenAPI schema agreeing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sml.core.events import EventValidationError, build_ground_truth_event, new_prediction_id, parse_ground_truth_event, serialise_ground_truth_event
from sml.predict.errors import ApiError
from sml.predict.feedback import FeedbackSchema, feedback_response
from sml.predict.openapi import build_openapi_document
from tests.predict_support import manifest_for

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
MANIFEST = manifest_for("v3")
SCHEMA = FeedbackSchema(MANIFEST.classes, max_items=3, now=lambda: NOW)
DOCUMENT = build_openapi_document(MANIFEST, max_instances=3, max_body_bytes=2048)
REQUEST = Draft202012Validator(
    {**DOCUMENT["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"], "components": DOCUMENT["components"]}
)
PREDICTION_ID = new_prediction_id()
# Rules a JSON Schema cannot state (a date-time format is not enforced by validators, the clock,
# unpaired surrogates): the handler still refuses them, the document describes them in words.
BEYOND_JSON_SCHEMA = {"invalid_timestamp", "labelled_in_future"}


def label(**overrides: Any) -> dict[str, Any]:
    return {"prediction_id": PREDICTION_ID, "label": MANIFEST.classes[0], **overrides}


def refusal(payload: Any, schema: FeedbackSchema = SCHEMA) -> ApiError:
    with pytest.raises(ApiError) as caught:
        schema.parse_request(payload)
    assert caught.value.status == 422
    return caught.value


def test_one_label_with_defaults() -> None:
    request = SCHEMA.parse_request(label())

    [event] = request.events
    assert request.batch is False
    assert (event.prediction_id, event.label, event.labelled_at, event.source) == (PREDICTION_ID, MANIFEST.classes[0], NOW, None)
    assert REQUEST.is_valid(label())
    assert feedback_response(request) == {"accepted": 1, "labels": [{"prediction_id": PREDICTION_ID, "labelled_at": "2026-11-30T12:00:00.000000Z"}]}


def test_a_batch_keeps_order_and_converts_times_to_utc() -> None:
    items = [label(labelled_at="2026-11-01T10:00:00.250+02:00", source="biopsy"), label(prediction_id=PREDICTION_ID.upper(), label=MANIFEST.classes[1])]

    request = SCHEMA.parse_request({"labels": items})

    assert request.batch is True
    assert [event.labelled_at for event in request.events] == [datetime(2026, 11, 1, 8, 0, 0, 250000, tzinfo=timezone.utc), NOW]
    assert [event.prediction_id for event in request.events] == [PREDICTION_ID, PREDICTION_ID]
    assert request.events[0].source == "biopsy"


def test_integer_classes_take_integers_and_their_text_but_never_booleans() -> None:
    schema = FeedbackSchema((0, 1), max_items=3, now=lambda: NOW)

    assert schema.parse_request(label(label=1)).events[0].label == 1
    assert schema.parse_request(label(label="0")).events[0].label == 0
    assert refusal(label(label=True), schema).code == "invalid_type"
    assert refusal(label(label=2), schema).code == "unknown_class"


def test_without_classes_any_contract_label_is_accepted() -> None:
    schema = FeedbackSchema(None, max_items=3, now=lambda: NOW)

    assert schema.parse_request(label(label="anything")).events[0].label == "anything"
    assert refusal(label(label="x" * 129), schema).field == "label"


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ([label()], "invalid_type", "body"),
        (label(label="cancerous"), "unknown_class", "label"),
        (label(label=1.0), "invalid_type", "label"),
        ({"labels": [label(), label(label="unknown")]}, "unknown_class", "labels[1].label"),
        ({"prediction_id": PREDICTION_ID}, "missing_field", "label"),
        ({"label": "benign"}, "missing_field", "prediction_id"),
        ({"labels": [label(), {"label": "benign"}]}, "missing_field", "labels[1].prediction_id"),
        (label(prediction_id="42"), "invalid_prediction_id", "prediction_id"),
        (label(prediction_id=42), "invalid_prediction_id", "prediction_id"),
        (label(prediction_id="0190b8f0-0000-7000-8000-00000000000g"), "invalid_prediction_id", "prediction_id"),
        (label(confidence=0.9), "unknown_key", "confidence"),
        (label(labelled_at="2026-11-27T07:01:02"), "invalid_timestamp", "labelled_at"),
        (label(labelled_at="yesterday"), "invalid_timestamp", "labelled_at"),
        (label(labelled_at=1700000000), "invalid_timestamp", "labelled_at"),
        (label(labelled_at="0001-01-01T00:00:00+01:00"), "invalid_timestamp", "labelled_at"),
        (label(labelled_at="1969-12-31T23:59:59Z"), "invalid_timestamp", "labelled_at"),
        (label(labelled_at=(NOW + timedelta(minutes=6)).isoformat()), "labelled_in_future", "labelled_at"),
        (label(source=""), "invalid_type", "source"),
        (label(source="x" * 129), "invalid_type", "source"),
        (label(source="a\x00b"), "invalid_characters", "source"),
        ({"labels": label()}, "invalid_type", "labels"),
        ({"labels": []}, "empty_labels", "labels"),
        ({"labels": [label()] * 4}, "too_many_labels", "labels"),
        ({"labels": [label()], "label": "benign"}, "invalid_request", "label"),
        ({"labels": ["benign"]}, "invalid_type", "labels[0]"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(payload: Any, code: str, field: str) -> None:
    error = refusal(payload)

    assert (error.code, error.field) == (code, field)
    assert error.message
    if code not in BEYOND_JSON_SCHEMA:
        assert not REQUEST.is_valid(payload), "the OpenAPI schema must refuse what the handler refuses"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("2026-11-29T23:59:59.9999995Z", datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=timezone.utc)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)),
    ],
    ids=["seven fractional digits", "leap second"],
)
def test_label_times_follow_the_writers_rule(sent: str, kept: datetime) -> None:
    # /feedback rounded 7-digit fractions up into the next day, where the writer truncates; a leap
    # second, valid RFC 3339, was refused as "must be an RFC 3339 date-time".
    [event] = SCHEMA.parse_request(label(labelled_at=sent)).events
    assert event.labelled_at == kept


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z' is before 1970-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00+01:00", "'0001-01-01T00:00:00+01:00' is before 1970-01-01T00:00:00Z"),
        ("2016-06-30T12:00:60Z", "has second 60, a leap second, which RFC 3339 allows only at 23:59:60 UTC"),
        ("2026-11-27T07:01:02", "has no zone"),
    ],
)
def test_label_times_are_refused_with_the_reason(sent: str, message: str) -> None:
    assert message in refusal(label(labelled_at=sent)).message


@pytest.mark.parametrize(
    ("sent", "accepted"),
    [("1970-01-01T00:00:00Z", True), ("2026-11-30T11:00:00+01:00", True), ("1969-12-31T23:59:59Z", False), ("0001-01-01T00:00:00+01:00", False)],
)
def test_the_document_publishes_the_earliest_label_time_the_handler_takes(sent: str, accepted: bool) -> None:
    # The fuzzer accepted any 422 on /feedback: the document did not say which label times are refused.
    labelled_at = DOCUMENT["components"]["schemas"]["Label"]["properties"]["labelled_at"]
    assert REQUEST.is_valid(label(labelled_at=sent)) is accepted
    if accepted:
        SCHEMA.parse_request(label(labelled_at=sent))
    else:
        assert refusal(label(labelled_at=sent)).code == "invalid_timestamp"
    assert labelled_at["x-latest"] == "the server's clock plus 5 minutes"


def test_an_unpaired_surrogate_in_source_is_refused() -> None:
    # Not valid Unicode, so a JSON document cannot carry it; a Python caller can.
    assert (refusal(label(source="\ud800")).code, refusal(label(source="\ud800")).field) == ("invalid_characters", "source")


def test_a_label_a_little_ahead_of_the_clock_is_accepted() -> None:
    ahead = NOW + timedelta(minutes=4)
    assert SCHEMA.parse_request(label(labelled_at=ahead.isoformat())).events[0].labelled_at == ahead


@pytest.mark.parametrize("source", ["tab\tand\nnewline", "crm", "日本語 🍷"])
def test_sources_the_handler_accepts_the_schema_accepts(source: str) -> None:
    assert SCHEMA.parse_request(label(source=source)).events[0].source == source
    assert REQUEST.is_valid(label(source=source))


def test_a_noncharacter_in_source_is_refused_by_both() -> None:
    assert refusal(label(source="a\uffffb")).field == "source"
    assert not REQUEST.is_valid(label(source="a\uffffb"))


REGRESSION = replace(MANIFEST, classes=(), task="regression")
REGRESSION_SCHEMA = FeedbackSchema(REGRESSION.classes, task=REGRESSION.task, max_items=3, now=lambda: NOW)
REGRESSION_DOCUMENT = build_openapi_document(REGRESSION, max_instances=3, max_body_bytes=2048)
REGRESSION_REQUEST = Draft202012Validator(
    {**REGRESSION_DOCUMENT["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"], "components": REGRESSION_DOCUMENT["components"]}
)


@pytest.mark.parametrize(("value", "stored"), [(151.5, 151.5), (42, 42), (0.1 + 0.2, 0.30000000000000004), (-1e-300, -1e-300), ("151.25", 151.25), (" 7 ", 7)])
def test_a_regression_model_takes_finite_numbers_and_keeps_them_exactly(value: Any, stored: float) -> None:
    event = REGRESSION_SCHEMA.parse_request(label(label=value)).events[0]

    assert event.label == stored and type(event.label) is type(stored)
    assert serialise_ground_truth_event(event) == serialise_ground_truth_event(parse_ground_truth_event(serialise_ground_truth_event(event)))
    assert parse_ground_truth_event(serialise_ground_truth_event(event)).label == stored
    if not isinstance(value, str):
        assert REGRESSION_REQUEST.is_valid(label(label=value))


@pytest.mark.parametrize(
    ("value", "code"), [("malignant", "invalid_type"), ("NaN", "invalid_type"), (True, "invalid_type"), (None, "invalid_type"), ([1.0], "invalid_type"), (float("inf"), "invalid_value")]
)
def test_a_regression_model_refuses_labels_that_are_not_finite_numbers(value: Any, code: str) -> None:
    error = refusal(label(label=value), REGRESSION_SCHEMA)

    assert (error.code, error.field) == (code, "label")
    assert "number" in error.message
    if value is not None and not isinstance(value, float):
        assert not REGRESSION_REQUEST.is_valid(label(label=value))


def test_the_task_defaults_to_the_one_the_classes_imply() -> None:
    assert FeedbackSchema((), max_items=1).task == "regression"
    assert FeedbackSchema(("a", "b", "c"), max_items=1).task == "multiclass"
    assert refusal(label(label=1.5), FeedbackSchema(("a", "b", "c"), max_items=1, now=lambda: NOW)).code == "invalid_type"


def test_a_ground_truth_event_refuses_a_label_that_is_not_finite() -> None:
    with pytest.raises(EventValidationError) as caught:
        build_ground_truth_event(prediction_id=PREDICTION_ID, label=float("nan"))
    assert caught.value.field == "label"
