"""The prediction event contract: round trip, time order, and one typed error naming the field."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sml.core.events import (
    EventValidationError,
    TimestampError,
    build_ground_truth_event,
    build_refusal_event,
    event_id,
    build_prediction_event,
    new_prediction_id,
    parse_event,
    parse_ground_truth_event,
    parse_prediction_event,
    parse_refusal_event,
    parse_utc_timestamp,
    serialise_event,
    serialise_ground_truth_event,
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
        (lambda raw: raw["features"].update(flag=[True]), "features.flag"),
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


# --------------------------------------------------------------------------------------------
# Ground truth (event type 2)


def make_label(**overrides):
    fields = dict(prediction_id=new_prediction_id(), label="malignant", labelled_at=datetime(2026, 11, 27, 7, 1, 2, 345678, tzinfo=timezone.utc), source="biopsy")
    fields.update(overrides)
    return build_ground_truth_event(**fields)


def test_ground_truth_round_trip_keeps_every_field_and_microseconds() -> None:
    event = make_label()
    body = serialise_ground_truth_event(event)
    assert body.startswith('{"event_type":"ground_truth",')
    assert json.loads(body)["labelled_at"] == "2026-11-27T07:01:02.345678Z"
    assert parse_event(body) == event
    assert parse_event(body.encode()) == event
    assert parse_ground_truth_event(body) == event
    assert serialise_event(event) == body


def test_prediction_bodies_stay_untagged_and_parse_as_type_one() -> None:
    event = make_event()
    body = serialise_prediction_event(event)
    assert "event_type" not in json.loads(body)
    assert parse_event(body) == event
    tagged = json.dumps({"event_type": "prediction", **json.loads(body)})
    assert parse_event(tagged) == event


def test_a_tag_that_is_not_the_first_key_is_still_recognised() -> None:
    event = make_label(label=3, source=None)
    raw = json.loads(serialise_ground_truth_event(event))
    moved = {key: value for key, value in raw.items() if key != "event_type"} | {"event_type": "ground_truth"}
    assert parse_event(json.dumps(moved)) == event
    assert parse_event(json.dumps(moved, indent=2)) == event


def test_labelled_at_is_normalised_to_utc_and_must_carry_a_zone() -> None:
    event = make_label(labelled_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert event.labelled_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(EventValidationError) as caught:
        make_label(labelled_at=datetime(2026, 1, 1, 12))
    assert caught.value.field == "labelled_at"


def test_labelled_at_defaults_to_now() -> None:
    before = datetime.now(timezone.utc)
    event = build_ground_truth_event(prediction_id=new_prediction_id(), label="benign")
    assert before <= event.labelled_at <= datetime.now(timezone.utc)
    assert event.source is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda raw: raw.pop("prediction_id"), "prediction_id"),
        (lambda raw: raw.update(prediction_id="01a22e25-1edd-7f0b-ae0b-23761ce1decB"), "prediction_id"),
        (lambda raw: raw.update(schema_version=2), "schema_version"),
        (lambda raw: raw.pop("label"), "label"),
        (lambda raw: raw.update(label=""), "label"),
        (lambda raw: raw.update(label="x" * 129), "label"),
        (lambda raw: raw.update(label=True), "label"),
        (lambda raw: raw.update(label={"value": 1.5}), "label"),
        (lambda raw: raw.update(label=None), "label"),
        (lambda raw: raw.update(label=["a"]), "label"),
        (lambda raw: raw.pop("labelled_at"), "labelled_at"),
        (lambda raw: raw.update(labelled_at="2026-11-27T07:01:02"), "labelled_at"),
        (lambda raw: raw.update(labelled_at="last week"), "labelled_at"),
        (lambda raw: raw.update(source=""), "source"),
        (lambda raw: raw.update(source=7), "source"),
        (lambda raw: raw.update(model_name="wine"), "model_name"),
        (lambda raw: raw.update(event_type="label"), "event_type"),
    ],
)
def test_malformed_ground_truth_names_the_field(mutate, field: str) -> None:
    raw = json.loads(serialise_ground_truth_event(make_label()))
    mutate(raw)
    with pytest.raises(EventValidationError) as caught:
        parse_event(json.dumps(raw))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_regression_label_is_a_finite_number_kept_exactly() -> None:
    body = serialise_ground_truth_event(make_label()).replace('"label":"malignant"', '"label":0.30000000000000004')
    assert parse_event(body).label == 0.1 + 0.2
    assert serialise_ground_truth_event(parse_event(body)) == body
    with pytest.raises(EventValidationError) as caught:
        parse_event(body.replace("0.30000000000000004", "1e999"))
    assert caught.value.field == "label"


@pytest.mark.parametrize(("overrides", "field"), [({"label": "x\ud800"}, "label"), ({"source": "\udfffcrm"}, "source"), ({"label": False}, "label"), ({"prediction_id": "abc"}, "prediction_id")])
def test_building_a_bad_ground_truth_event_names_the_field(overrides, field: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        make_label(**overrides)
    assert caught.value.field == field


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bodies_never_make_parse_event_raise_anything_but_the_typed_error(body) -> None:
    for candidate in (body, ('{"event_type":"ground_truth",' + body) if isinstance(body, str) else b'{"event_type":"ground_truth",' + body):
        try:
            parse_event(candidate)
        except EventValidationError:
            pass


def test_a_labelled_at_that_overflows_when_converted_to_utc_names_the_field() -> None:
    raw = json.loads(serialise_ground_truth_event(make_label()))
    raw["labelled_at"] = "0001-01-01T00:00:00+01:00"
    with pytest.raises(EventValidationError) as caught:
        parse_event(json.dumps(raw))
    assert caught.value.field == "labelled_at"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-11-29T23:59:59.9999995Z", datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)),
        ("2026-12-31T23:59:59.999999999Z", datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
        ("2026-11-29T10:00:00.1234567+02:00", datetime(2026, 11, 29, 8, 0, 0, 123456, tzinfo=timezone.utc)),
        ("2026-11-29T10:00:00.0000009Z", datetime(2026, 11, 29, 10, 0, 0, 0, tzinfo=timezone.utc)),
        ("2026-11-29T10:00:00.123456Z", datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    ],
)
@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    ("serialise", "field", "parsers", "tag"),
    [
        (lambda: serialise_prediction_event(make_event()), "predicted_at", [parse_prediction_event, parse_event], None),
        (lambda: serialise_prediction_event(make_event()), "predicted_at", [parse_event], "prediction"),
        (lambda: serialise_ground_truth_event(make_label()), "labelled_at", [parse_ground_truth_event, parse_event], "ground_truth"),
        (lambda: serialise_ground_truth_event(make_label()), "labelled_at", [parse_ground_truth_event], None),
    ],
    ids=["prediction", "tagged prediction", "ground truth", "untagged ground truth"],
)
def test_fractional_seconds_beyond_microseconds_are_truncated_as_mysql_does(
    sent: str, stored: datetime, as_bytes: bool, serialise: Any, field: str, parsers: list[Any], tag: str | None
) -> None:
    raw = {key: value for key, value in json.loads(serialise()).items() if key != "event_type"}
    raw[field] = sent
    if tag is not None:
        raw["event_type"] = tag  # last, so parse_event cannot tell the type from the body's start
    body = json.dumps(raw)

    for parse in parsers:
        event = parse(body.encode() if as_bytes else body)

        assert getattr(event, field) == stored, parse.__name__
        assert event == parse_event(serialise_event(event))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)),
        ("2016-12-31T15:59:60.25-08:00", datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)),
        ("2026-11-29T23:59:59.9999995Z", datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=timezone.utc)),
        ("1969-07-20T20:17:40Z", datetime(1969, 7, 20, 20, 17, 40, tzinfo=timezone.utc)),
        ("2026-01-01t01:00:00.5+01:00", datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=timezone.utc)),
    ],
)
def test_one_timestamp_rule_truncates_fractions_and_takes_a_leap_second_as_its_last_microsecond(text: str, expected: datetime) -> None:
    assert parse_utc_timestamp(text) == expected
    for field, serialised, parse in (("predicted_at", serialise_prediction_event(make_event()), parse_prediction_event),
                                     ("labelled_at", serialise_ground_truth_event(make_label()), parse_event)):
        raw = json.loads(serialised)
        raw[field] = text
        assert getattr(parse(json.dumps(raw)), field) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2016-12-31T12:00:60Z", "has second 60, a leap second, which RFC 3339 allows only at 23:59:60 UTC"),
        ("2016-12-31T23:59:60+01:00", "has second 60, a leap second, which RFC 3339 allows only at 23:59:60 UTC"),
        ("2026-11-29T10:00:00", "has no zone; end it with Z or an offset such as +01:00"),
        ("2026-13-01T00:00:00Z", "is not a valid date-time (month must be in 1..12)"),
        ("0001-01-01T00:30:00+01:00", "is before 0001-01-01T00:00:00Z once converted to UTC"),
        ("9999-12-31T23:59:59-01:00", "is after 9999-12-31T23:59:59Z once converted to UTC"),
        ("2026-11-29T10:00:00+24:00", "has the offset +24:00, beyond ±23:59"),
        ("yesterday", "is not an RFC 3339 date-time such as 2026-11-27T07:01:02Z"),
    ],
)
def test_the_timestamp_rule_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(TimestampError, match=re.escape(problem)):
        parse_utc_timestamp(text)
    raw = json.loads(serialise_prediction_event(make_event()))
    raw["predicted_at"] = text
    with pytest.raises(EventValidationError) as caught:
        parse_event(json.dumps(raw))
    assert caught.value.field == "predicted_at"


def test_a_feature_that_looks_like_a_long_timestamp_is_kept_verbatim() -> None:
    raw = json.loads(serialise_prediction_event(make_event(features={"seen": "10:00:00.123456789", "x": 0.123456789})))

    event = parse_prediction_event(json.dumps(raw))

    assert event.features == {"seen": "10:00:00.123456789", "x": 0.123456789}


@pytest.mark.parametrize("sent", ["2026-11-29T23:59:59.9999995", "2026-11-29 23:59:59.9999995Z x", "2026-11-29T25:59:59.9999995Z"])
def test_a_long_fraction_does_not_open_a_door_to_malformed_timestamps(sent: str) -> None:
    raw = json.loads(serialise_prediction_event(make_event()))
    raw["predicted_at"] = sent

    with pytest.raises(EventValidationError) as caught:
        parse_prediction_event(json.dumps(raw))

    assert caught.value.field == "predicted_at"


def make_refusal(**overrides):
    fields = dict(
        model_name="breast-cancer",
        model_version="v1",
        refused={"mean radius": {"out_of_range": 2, "not_finite": 1}, "_request": {"invalid_json": 1}},
        refused_at=datetime(2026, 11, 27, 7, 1, 2, 345678, tzinfo=timezone.utc),
    )
    fields.update(overrides)
    return build_refusal_event(**fields)


def test_refusal_round_trip_keeps_every_field_and_is_dispatched_by_its_tag() -> None:
    event = make_refusal()
    body = serialise_event(event)
    assert body.startswith('{"event_type":"predict_refusal",')
    assert json.loads(body)["refused_at"] == "2026-11-27T07:01:02.345678Z"
    assert parse_event(body) == event
    assert parse_event(body.encode()) == event
    assert parse_refusal_event(body) == event
    prediction = make_event()
    assert (event_id(event), event_id(prediction)) == (event.refusal_id, prediction.prediction_id)
    moved = {key: value for key, value in json.loads(body).items() if key != "event_type"} | {"event_type": "predict_refusal"}
    assert parse_event(json.dumps(moved)) == event


def test_a_refusal_without_a_champion_has_no_model_version() -> None:
    event = make_refusal(model_version=None)
    assert parse_event(serialise_event(event)).model_version is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda raw: raw.pop("refusal_id"), "refusal_id"),
        (lambda raw: raw.update(refusal_id="not-a-uuid"), "refusal_id"),
        (lambda raw: raw.update(schema_version=2), "schema_version"),
        (lambda raw: raw.pop("model_name"), "model_name"),
        (lambda raw: raw.update(model_version=""), "model_version"),
        (lambda raw: raw.update(refused_at="2026-11-27T07:01:02"), "refused_at"),
        (lambda raw: raw.update(refused={}), "refused"),
        (lambda raw: raw.update(refused=[["a", 1]]), "refused"),
        (lambda raw: raw.update(refused={"a": {}}), "refused.a"),
        (lambda raw: raw.update(refused={"a": 3}), "refused.a"),
        (lambda raw: raw.update(refused={"a": {"out_of_range": 0}}), "refused.a.out_of_range"),
        (lambda raw: raw.update(refused={"a": {"out_of_range": 1.5}}), "refused.a.out_of_range"),
        (lambda raw: raw.update(refused={"a": {"out_of_range": True}}), "refused.a.out_of_range"),
        (lambda raw: raw.update(refused={"a": {"Out Of Range": 1}}), "refused.a.Out Of Range"),
        (lambda raw: raw.update(refused={"a": {f"r{index}": 1 for index in range(17)}}), "refused.a"),
        (lambda raw: raw.update(refused={f"f{index}": {"x": 1} for index in range(257)}), "refused"),
        (lambda raw: raw.update(prediction="benign"), "prediction"),
    ],
)
def test_malformed_refusals_name_the_field(mutate, field: str) -> None:
    raw = json.loads(serialise_event(make_refusal()))
    mutate(raw)
    with pytest.raises(EventValidationError) as caught:
        parse_event(json.dumps(raw))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("overrides", "field"), [({"refused": {"a\ud800": {"x": 1}}}, "refused.a\ud800"), ({"model_name": ""}, "model_name"), ({"refused": {"a": {"x": -1}}}, "refused.a.x")])
def test_building_a_bad_refusal_names_the_field(overrides, field: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        make_refusal(**overrides)
    assert caught.value.field == field


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bodies_after_the_refusal_tag_raise_only_the_typed_error(body) -> None:
    prefix = '{"event_type":"predict_refusal",'
    try:
        parse_event(prefix + body if isinstance(body, str) else prefix.encode() + body)
    except EventValidationError:
        pass


def test_a_predicted_at_that_leaves_the_calendar_in_utc_is_an_event_error_naming_the_field() -> None:
    # 0001-01-01T00:30+01:00 is 0000-12-31 in UTC: astimezone raised OverflowError, which is not
    # an EventValidationError, so a queue record like this escaped the poison-record path.
    raw = json.loads(serialise_prediction_event(make_event()))
    raw["predicted_at"] = "0001-01-01T00:30:00+01:00"
    with pytest.raises(EventValidationError, match="predicted_at"):
        parse_event(json.dumps(raw))


def test_boolean_features_and_numeric_predictions_round_trip_exactly() -> None:
    event = build_prediction_event(
        model_name="churn", model_version="v1", features={"Has Partner": True, "Paperless": False, "Tenure": 12, "x": None}, prediction=0.1 + 0.2
    )

    body = serialise_prediction_event(event)

    assert '"Has Partner":true' in body and '"Paperless":false' in body
    parsed = parse_prediction_event(body)
    assert parsed == event and parsed.features["Has Partner"] is True and parsed.prediction == 0.1 + 0.2


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_prediction_that_is_not_finite_is_refused(value: float) -> None:
    with pytest.raises(EventValidationError) as caught:
        build_prediction_event(model_name="m", model_version="v1", features={"x": 1.0}, prediction=value)
    assert caught.value.field == "prediction"


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    "layout",
    [
        '{{"predicted_at":"{ts}",{rest}',
        '{{"predicted_at" :\t"{ts}", {rest}',
        '{{\n  "predicted_at"\n  :\n  "{ts}",\n {rest}',
        '{{"predicted\\u005fat": "{ts}", {rest}',  # an escaped key decodes to the same field
        '{{"predicted_at": "{ts}", "features": {{"predicted_at": "x"}}, {rest}',
    ],
    ids=["compact", "tab", "newlines", "escaped key", "a feature of the same name"],
)
def test_a_long_fraction_is_truncated_however_the_body_spaces_or_escapes_its_key(layout: str, as_bytes: bool) -> None:
    # The slow path is chosen by looking after each timestamp key rather than over the whole body
    # (a third of the writer's parse); it must still be chosen whatever JSON allows around the key.
    raw = json.loads(serialise_prediction_event(make_event()))
    raw.pop("predicted_at")
    if "features" in layout:
        raw.pop("features")
    rest = json.dumps(raw)[1:]
    body = layout.format(ts="2026-11-29T23:59:59.9999995Z", rest=rest)

    event = parse_prediction_event(body.encode() if as_bytes else body)

    assert event.predicted_at == datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=timezone.utc)
