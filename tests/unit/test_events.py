"""The prediction event contract: round trip, time order, and one typed error naming the field."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sml.core.events import (
    EventValidationError,
    build_prediction_event,
    new_prediction_id,
    parse_prediction_event,
    serialise_prediction_event,
)


def make_event(**overrides):
    fields = dict(
        model_name="breast-cancer",
        model_version="v1",
        features={"mean radius": 14.2, "size_band": "large", "texture": None, "count": 3},
        prediction="malignant",
        probabilities={"benign": 0.25, "malignant": 0.75},
    )
    fields.update(overrides)
    return build_prediction_event(**fields)


def test_round_trip_keeps_every_field_and_microseconds() -> None:
    moment = datetime(2026, 11, 27, 7, 1, 2, 345678, tzinfo=timezone.utc)
    event = make_event(predicted_at=moment)
    body = serialise_prediction_event(event)
    assert json.loads(body)["predicted_at"] == "2026-11-27T07:01:02.345678Z"
    assert parse_prediction_event(body) == event
    assert parse_prediction_event(body.encode()) == event


def test_non_utc_timestamps_are_normalised_to_utc() -> None:
    event = make_event(predicted_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert event.predicted_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)


def test_prediction_ids_are_time_ordered_uuid7() -> None:
    ids = [new_prediction_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(identifier[14] == "7" for identifier in ids)


def test_text_with_quotes_backslashes_and_non_ascii_survives() -> None:
    tricky = "O'Brien \"x\" \\ ; DROP TABLE predictions; -- 日本語 🍷"
    event = make_event(model_version=tricky[:100], features={"note": tricky, "x": 1.0})
    assert parse_prediction_event(serialise_prediction_event(event)).features["note"] == tricky


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda raw: raw.pop("prediction_id"), "prediction_id"),
        (lambda raw: raw.update(prediction_id="not-a-uuid-but-36-characters-long!!!"), "prediction_id"),
        (lambda raw: raw.update(schema_version=2), "schema_version"),
        (lambda raw: raw.update(model_name=""), "model_name"),
        (lambda raw: raw.update(model_version=7), "model_version"),
        (lambda raw: raw.update(features={}), "features"),
        (lambda raw: raw.update(features=[1, 2]), "features"),
        (lambda raw: raw["features"].update(flag=True), "features.flag"),
        (lambda raw: raw["features"].update(nested={"a": 1}), "features.nested"),
        (lambda raw: raw.update(prediction=None), "prediction"),
        (lambda raw: raw.update(probabilities={"benign": 1.5}), "probabilities.benign"),
        (lambda raw: raw.update(predicted_at="yesterday"), "predicted_at"),
        (lambda raw: raw.update(predicted_at="2026-11-27T07:01:02"), "predicted_at"),
        (lambda raw: raw.update(predicted_at=12345), "predicted_at"),
        (lambda raw: raw.update(extra="field"), "extra"),
    ],
)
def test_malformed_event_names_the_field(mutate, field: str) -> None:
    raw = json.loads(serialise_prediction_event(make_event()))
    mutate(raw)
    with pytest.raises(EventValidationError) as caught:
        parse_prediction_event(json.dumps(raw))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize("body", ["", "{", "[1]", '"text"', "null", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_a_body_error(body) -> None:
    with pytest.raises(EventValidationError) as caught:
        parse_prediction_event(body)
    assert caught.value.field == "body"


def test_non_finite_features_are_refused() -> None:
    with pytest.raises(EventValidationError, match="features"):
        make_event(features={"x": float("nan")})
    body = serialise_prediction_event(make_event()).replace("14.2", "Infinity")
    with pytest.raises(EventValidationError, match="^body: not valid JSON"):
        parse_prediction_event(body)


@pytest.mark.parametrize("field", ["model_version", "prediction", "features.note"])
def test_lone_surrogates_are_refused_when_building(field: str) -> None:
    overrides = {"model_version": {"model_version": "v\ud800"}, "prediction": {"prediction": "\udfff"}}
    with pytest.raises(EventValidationError) as caught:
        make_event(**overrides.get(field, {"features": {"note": "x\ud83d"}}))
    assert caught.value.field == field


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bodies_never_raise_anything_but_the_typed_error(body) -> None:
    try:
        parse_prediction_event(body)
    except EventValidationError:
        pass
