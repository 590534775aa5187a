"""Request bodies against a feature schema: what is accepted, and the precise error for what is not."""

from __future__ import annotations

import base64
import json
import math
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sml.predict.errors import ApiError
from sml.predict.validation import MAX_CATEGORY_LENGTH, FeatureSchema, decode_json_body, served_range
from sml.lifecycle.manifest import FeatureSpec

FEATURES = (
    FeatureSpec("mean_radius", "numeric"),
    FeatureSpec("mean_texture", "numeric", nullable=True),
    FeatureSpec("grade", "categorical", categories=("low", "moderate", "high")),
    FeatureSpec("site", "categorical", nullable=True),
)
SCHEMA = FeatureSchema(FEATURES, max_instances=3)
ROW = {"mean_radius": 14, "mean_texture": 19.5, "grade": "low", "site": "left"}


def with_value(name: str, value: Any) -> dict[str, Any]:
    return {**ROW, name: value}


def error_of(payload: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        SCHEMA.parse_request(payload)
    return caught.value


def test_a_single_row_comes_back_in_schema_order_with_numbers_as_floats() -> None:
    request = SCHEMA.parse_request({"features": {"site": None, "grade": "high", "mean_texture": None, "mean_radius": 3}})

    assert request.batch is False
    assert request.rows == [{"mean_radius": 3.0, "mean_texture": None, "grade": "high", "site": None}]
    assert type(request.rows[0]["mean_radius"]) is float


def test_instances_keep_their_order() -> None:
    rows = [with_value("mean_radius", float(index)) for index in range(3)]

    request = SCHEMA.parse_request({"instances": rows})

    assert request.batch is True
    assert [row["mean_radius"] for row in request.rows] == [0.0, 1.0, 2.0]


def test_an_open_categorical_feature_takes_any_string() -> None:
    assert SCHEMA.parse_request({"features": with_value("site", "a site never seen")}).rows[0]["site"] == "a site never seen"


@pytest.mark.parametrize(
    ("payload", "code", "field", "message_part"),
    [
        ([ROW], "invalid_type", "body", "got array"),
        ({"features": ROW, "extra": 1}, "unknown_key", "extra", "unknown key"),
        ({"features": ROW, "instances": [ROW]}, "invalid_request", "body", "not both"),
        ({}, "invalid_request", "body", "the body has neither"),
        ({"features": [1, 2]}, "invalid_type", "features", "got array"),
        ({"features": {k: v for k, v in ROW.items() if k != "grade"}}, "missing_feature", "features.grade", "missing"),
        ({"features": {k: v for k, v in ROW.items() if k != "mean_texture"}}, "missing_feature", "features.mean_texture", "send null"),
        ({"features": {**ROW, "colour": "red"}}, "unknown_feature", "features.colour", "the model's features are mean_radius"),
        ({"features": {**{k: v for k, v in ROW.items() if k != "mean_radius"}, "mean_radios": 1}}, "unknown_feature",
         "features.mean_radios", "did you mean 'mean_radius'?"),
        ({"features": with_value("mean_radius", "14.1")}, "invalid_type", "features.mean_radius", "must be a number, got string"),
        ({"features": with_value("mean_radius", True)}, "invalid_type", "features.mean_radius", "got boolean"),
        ({"features": with_value("mean_radius", [1])}, "invalid_type", "features.mean_radius", "got array"),
        ({"features": with_value("mean_radius", None)}, "null_not_allowed", "features.mean_radius", "null is not allowed"),
        ({"features": with_value("mean_radius", float("nan"))}, "not_finite", "features.mean_radius", "got NaN"),
        ({"features": with_value("mean_texture", float("inf"))}, "not_finite", "features.mean_texture", "got Infinity"),
        ({"features": with_value("mean_texture", float("-inf"))}, "not_finite", "features.mean_texture", "got -Infinity"),
        ({"features": with_value("mean_radius", 10**400)}, "not_finite", "features.mean_radius", "too large"),
        ({"features": with_value("grade", "extreme")}, "unknown_category", "features.grade", "expected one of 'low', 'moderate', 'high'"),
        ({"features": with_value("grade", 1)}, "invalid_type", "features.grade", "must be a string, got number"),
        ({"features": with_value("grade", None)}, "null_not_allowed", "features.grade", "null is not allowed"),
        ({"features": with_value("site", "x" * (MAX_CATEGORY_LENGTH + 1))}, "too_long", "features.site", f"at most {MAX_CATEGORY_LENGTH}"),
        ({"features": with_value("site", "tab\tok but nul\x00 not")}, "invalid_characters", "features.site", "control characters"),
        ({"features": with_value("site", "\ud800")}, "invalid_characters", "features.site", "unpaired surrogates"),
        ({"instances": {}}, "invalid_type", "instances", "got object"),
        ({"instances": []}, "empty_instances", "instances", "at least one row"),
        ({"instances": [ROW] * 4}, "too_many_instances", "instances", "holds 4 rows; the limit is 3"),
        ({"instances": [ROW, "row"]}, "invalid_type", "instances[1]", "got string"),
        ({"instances": [ROW, ROW, with_value("grade", "none")]}, "unknown_category", "instances[2].grade", "unknown category 'none'"),
    ],
)
def test_each_problem_is_a_422_naming_the_field(payload: Any, code: str, field: str, message_part: str) -> None:
    error = error_of(payload)

    assert (error.status, error.code, error.field) == (HTTPStatus.UNPROCESSABLE_ENTITY, code, field)
    assert message_part in error.message


def test_an_empty_key_is_shown_quoted() -> None:
    assert error_of({"features": {**ROW, "": 1}}).field == 'features.""'


def test_a_huge_unknown_key_is_shortened_in_the_error() -> None:
    error = error_of({"features": {**ROW, "k" * 10_000: 1}})

    assert error.field is not None and len(error.field) < 100
    assert error.field.endswith("...")


@pytest.mark.parametrize(
    ("body", "is_base64", "status", "code", "message_part"),
    [
        (None, False, HTTPStatus.BAD_REQUEST, "empty_body", "send a JSON object"),
        ("", False, HTTPStatus.BAD_REQUEST, "empty_body", "send a JSON object"),
        ("{not json", False, HTTPStatus.BAD_REQUEST, "invalid_json", "line 1 column 2"),
        ("not base64!", True, HTTPStatus.BAD_REQUEST, "invalid_json", "not base64"),
        (base64.b64encode(b"\xff\xfe\xfa").decode(), True, HTTPStatus.BAD_REQUEST, "invalid_json", "not a JSON document"),
        ("[" * 100_000 + "]" * 100_000, False, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body_too_large", "limit is 150000 bytes"),
        ("[" * 50_000 + "]" * 50_000, False, HTTPStatus.BAD_REQUEST, "invalid_json", "nested too deeply"),
        (base64.b64encode(b" " * 150_001).decode(), True, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body_too_large", "150001 bytes"),
        ('"' + "é" * 75_001 + '"', False, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body_too_large", "150004 bytes"),
    ],
)
def test_bodies_that_are_not_json_or_too_large(body: str | None, is_base64: bool, status: HTTPStatus, code: str, message_part: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_json_body(body, is_base64=is_base64, max_bytes=150_000)

    assert (caught.value.status, caught.value.code, caught.value.field) == (status, code, "body")
    assert message_part in caught.value.message


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    body = json.dumps({"features": ROW})

    assert decode_json_body(body, is_base64=False, max_bytes=len(body)) == {"features": ROW}
    assert decode_json_body(base64.b64encode(body.encode()).decode(), is_base64=True, max_bytes=len(body)) == {"features": ROW}


def test_a_base64_body_may_be_utf16() -> None:
    assert decode_json_body(base64.b64encode('{"a": 1}'.encode("utf-16")).decode(), is_base64=True, max_bytes=1024) == {"a": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
valid_values = {
    "mean_radius": st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    "mean_texture": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    "grade": st.sampled_from(["low", "moderate", "high"]),
    "site": st.none() | st.text(max_size=20),
}
rows_near_valid = st.fixed_dictionaries({name: valid | json_values for name, valid in valid_values.items()}) | st.dictionaries(
    st.sampled_from([*ROW, "other"]), json_values
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"features": rows_near_valid}),
        st.fixed_dictionaries({"instances": st.lists(rows_near_valid, max_size=5)}),
    )
)
def test_any_json_value_is_accepted_or_refused_with_a_4xx(payload: Any) -> None:
    try:
        request = SCHEMA.parse_request(payload)
    except ApiError as error:
        assert 400 <= error.status < 500 and error.field
    else:
        assert all(list(row) == list(ROW) for row in request.rows)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_any_bytes_are_parsed_or_refused_with_a_4xx(raw: bytes, as_base64: bool) -> None:
    body = base64.b64encode(raw).decode() if as_base64 else raw.decode("latin-1")
    try:
        decode_json_body(body, is_base64=as_base64, max_bytes=1024)
    except ApiError as error:
        assert 400 <= error.status < 500


RANGED = FeatureSpec("mean_area", "numeric", minimum=143.5, maximum=2501.0)
RANGED_SCHEMA = FeatureSchema((RANGED,), max_instances=3)
SERVED = served_range(RANGED)


def test_the_served_range_is_the_training_range_widened_by_its_width_over_float32_epsilon() -> None:
    margin = (2501.0 - 143.5) * 2**23

    assert SERVED == (143.5 - margin, 2501.0 + margin)
    assert served_range(FeatureSpec("constant", "numeric", minimum=5.0, maximum=5.0)) == (5.0 - 5.0 * 2**23, 5.0 + 5.0 * 2**23)
    assert served_range(FeatureSpec("zero", "numeric", minimum=0.0, maximum=0.0)) == (-(2.0**23), 2.0**23)
    assert served_range(FeatureSpec("unknown", "numeric")) is None


@pytest.mark.parametrize("value", [1e300, -1e300, 1e307, -1.7976931348623157e308, SERVED[1] * (1 + 2**-52), 10**30])
def test_a_value_past_the_served_range_is_out_of_range_naming_the_row_and_feature(value: float) -> None:
    with pytest.raises(ApiError) as caught:
        RANGED_SCHEMA.parse_request({"instances": [{"mean_area": 500.0}, {"mean_area": value}]})

    error = caught.value
    assert (error.status, error.code, error.field) == (HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", "instances[1].mean_area")
    assert "training range 143.5 to 2501" in error.message


# Floats across the whole finite range (both signs, subnormals), and just past the training and served ranges.
_edges = [RANGED.minimum, RANGED.maximum, *SERVED]
finite_anywhere = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-307, max_value=1e-307)
    | st.sampled_from([math.nextafter(edge, direction) for edge in _edges for direction in (-math.inf, math.inf)] + _edges)
    | st.integers()
)


@settings(max_examples=300, deadline=None)
@given(finite_anywhere)
def test_any_finite_number_is_served_exactly_when_it_is_inside_the_served_range(value: float) -> None:
    too_large_for_a_float = isinstance(value, int) and abs(value) >= 2**1024
    inside = not too_large_for_a_float and SERVED[0] <= float(value) <= SERVED[1]  # a JSON number is read as a 64-bit float
    try:
        request = RANGED_SCHEMA.parse_request({"features": {"mean_area": value}})
    except ApiError as error:
        assert not inside
        assert error.code == ("not_finite" if too_large_for_a_float else "out_of_range")
    else:
        assert inside and request.rows == [{"mean_area": float(value)}]
