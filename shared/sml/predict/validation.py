"""A Function URL request body into validated feature rows, checked against the model's schema.

Pure: no I/O, no model. :class:`FeatureSchema` is compiled once per loaded model so a request
costs a dictionary lookup and a type check per feature.

Status codes: 413 for a body over the limit; 400 for a body that is not a JSON document (empty,
bad base64, not UTF-8/16/32, malformed or nested too deeply); 422 for JSON that does not fit the
request schema. Rules for a row (``features``, or each item of ``instances``):

* it is an object with exactly the model's features, no more, no fewer;
* numeric features take finite JSON numbers (not booleans, not strings); ``integer`` ones only
  numbers without a fractional part (``3`` or ``3.0``, answered as the integer ``3``) within
  64 bits. The manifest's
  ``minimum``/``maximum`` are the range seen in training, not a domain: values outside it are
  served (and are what drift detection is for), up to :func:`served_range`: the training range
  widened on each side by its width divided by float32's machine epsilon (2**-23), the point
  where one float32 step is as wide as the whole training range. scikit-learn's tree ensembles
  compute in float32, so beyond it they cannot tell values apart, and far beyond it the
  pipeline's arithmetic overflows (a StandardScaler output past float32's or float64's largest
  value, a linear model's decision function to infinity). A value outside is refused as
  ``out_of_range`` naming the row and feature;
* ``string`` features take strings of at most ``MAX_CATEGORY_LENGTH`` characters; when the
  schema lists ``categories`` the set is closed and any other value is refused, when it lists
  none any string is accepted (the pipeline's encoder then decides);
* ``boolean`` features take JSON ``true``/``false`` only (not ``"true"``, not ``1``); when the
  schema lists ``categories`` (``"True"``/``"False"``, as ``str()`` writes them) a value training
  never saw is refused as for strings;
* ``null`` only where the schema marks the feature ``nullable``.

The first problem found is reported, unknown keys before missing ones so that a misspelt name
is reported as such. Once a request is refused, :meth:`FeatureSchema.refused_values` counts every
problem in it per feature and code, for data quality (issue 18).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np

from sml.core.events import REQUEST_FIELD
from sml.predict.errors import ApiError
from sml.lifecycle.manifest import FeatureSpec

MAX_CATEGORY_LENGTH = 256
MAX_SHOWN_KEY_LENGTH = 64
# Characters an SQS message body may not carry (control characters, unpaired surrogates): refused
# here so that a value the queue would reject never makes it past validation.
_NOT_SQS_SAFE = re.compile(r"[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")

FeatureValue = float | int | bool | str | None
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Check = Callable[[Any], FeatureValue]


class _InvalidValue(Exception):
    """A feature value that breaks its spec; the row's validator adds where it is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PredictRequest:
    """Validated rows in request order; ``batch`` is true for ``instances``, false for ``features``."""

    rows: list[dict[str, FeatureValue]]
    batch: bool


def decode_json_body(body: str | None, *, is_base64: bool, max_bytes: int) -> Any:
    """Decode a Function URL event's ``body`` and parse it as JSON.

    :param body: the event's ``body`` (absent when the request had none).
    :param is_base64: the event's ``isBase64Encoded``; Function URLs base64-encode bodies that are
        not declared as text.
    :param max_bytes: the largest body accepted, counted in bytes after base64 decoding.
    :returns: the parsed JSON value, whatever its type.
    :raises ApiError: 413 ``body_too_large``; 400 ``empty_body`` or ``invalid_json``.
    """
    if not body:
        raise ApiError(HTTPStatus.BAD_REQUEST, "empty_body", "send a JSON object with 'features' or 'instances'", field="body")
    raw: str | bytes
    if is_base64:
        if len(body) > 4 * (max_bytes // 3 + 1):
            raise _too_large(len(body) * 3 // 4, max_bytes)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            message = "isBase64Encoded is set but the body is not base64"
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_json", message, field="body") from None
        size = len(raw)
    else:
        raw = body
        size = len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _too_large(size, max_bytes)
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_json", "the JSON document is nested too deeply", field="body") from None
    except ValueError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_json", f"not a JSON document ({exc})", field="body") from None


def _too_large(size: int, max_bytes: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "body_too_large",
        f"the body is {size} bytes; the limit is {max_bytes} bytes (send fewer instances per request)",
        field="body",
    )


class FeatureSchema:
    """Validator of request rows for one model's features, compiled once from its manifest.

    :param features: the manifest's feature specs, in manifest order.
    :param max_instances: the most rows one ``instances`` request may carry.
    """

    def __init__(self, features: Sequence[FeatureSpec], *, max_instances: int) -> None:
        self.features = tuple(features)
        self.max_instances = max_instances
        self.names = tuple(spec.name for spec in self.features)
        self._name_set = frozenset(self.names)
        self._nullable = {spec.name: spec.nullable for spec in self.features}
        self._checks: tuple[tuple[str, Check], ...] = tuple((spec.name, _compile(spec)) for spec in self.features)

    def parse_request(self, payload: Any) -> PredictRequest:
        """Validate a parsed body: ``{"features": {...}}`` or ``{"instances": [{...}, ...]}``.

        :returns: the rows in the manifest's feature order: ``float`` features as ``float``,
            ``integer`` ones as ``int``, ``boolean`` ones as ``bool``, ``string`` ones as ``str``.
        :raises ApiError: 422 naming the first offending field.
        """
        if type(payload) is not dict:
            message = f"must be a JSON object with 'features' or 'instances', got {_json_type(payload)}"
            raise _unprocessable("invalid_type", "body", message)
        unknown = sorted(set(payload) - {"features", "instances"})
        if unknown:
            raise _unprocessable(
                "unknown_key", _shown_key(unknown[0]), "unknown key; the body takes 'features' (one row) or 'instances' (a list of rows)"
            )
        if not payload:
            raise _unprocessable("invalid_request", "body", "send 'features' (one row) or 'instances' (a list of rows); the body has neither")
        if len(payload) != 1:
            raise _unprocessable("invalid_request", "body", "send either 'features' (one row) or 'instances' (a list of rows), not both")
        if "features" in payload:
            return PredictRequest(rows=[self.validate_row(payload["features"], "features")], batch=False)
        instances = payload["instances"]
        if type(instances) is not list:
            raise _unprocessable("invalid_type", "instances", f"must be a JSON array of feature objects, got {_json_type(instances)}")
        if not instances:
            raise _unprocessable("empty_instances", "instances", "must hold at least one row")
        if len(instances) > self.max_instances:
            raise _unprocessable(
                "too_many_instances", "instances", f"holds {len(instances)} rows; the limit is {self.max_instances} per request"
            )
        return PredictRequest(rows=[self.validate_row(row, f"instances[{index}]") for index, row in enumerate(instances)], batch=True)

    def validate_row(self, row: Any, field: str) -> dict[str, FeatureValue]:
        """One row: an object with exactly the model's features; ``field`` prefixes error paths."""
        if type(row) is not dict:
            raise _unprocessable("invalid_type", field, f"must be a JSON object of feature name to value, got {_json_type(row)}")
        if len(row) != len(self.names) or not self._name_set.issuperset(row):
            self._raise_key_problem(row, field)
        clean: dict[str, FeatureValue] = {}
        for name, check in self._checks:
            try:
                clean[name] = check(row[name])
            except _InvalidValue as problem:
                raise _unprocessable(problem.code, f"{field}.{name}", problem.message) from None
        return clean

    def refused_values(self, payload: Any) -> dict[str, dict[str, int]]:
        """Every problem of a request's rows, counted per feature and error code.

        What the refusal of ``payload`` tells data quality: each value a rule refuses counts for
        its feature (``{"mean_radius": {"out_of_range": 2}}``), a missing feature as
        ``missing_feature``; what belongs to no feature counts once per request under
        :data:`REQUEST_FIELD` (rows that are not objects, unknown feature names: their text is the
        caller's, not a field of the schema, and 10,000 of them are still one refused request).
        Empty when the rows break no rule, or when ``payload`` is not shaped as a request (the
        caller then counts the request itself).
        """
        rows = self._rows_of(payload)
        counts: dict[str, dict[str, int]] = {}

        def count(field: str, code: str, n: int = 1) -> None:
            reasons = counts.setdefault(field, {})
            reasons[code] = reasons.get(code, 0) + n

        for row in rows:
            if type(row) is not dict:
                # REQUEST_FIELD counts refused requests by reason: once, however many rows or keys share it.
                counts.setdefault(REQUEST_FIELD, {})["invalid_type"] = 1
                continue
            if any(key not in self._name_set for key in row):
                counts.setdefault(REQUEST_FIELD, {})["unknown_feature"] = 1
            for name, check in self._checks:
                if name not in row:
                    count(name, "missing_feature")
                    continue
                try:
                    check(row[name])
                except _InvalidValue as problem:
                    count(name, problem.code)
        return counts

    def _rows_of(self, payload: Any) -> list[Any]:
        if type(payload) is not dict or len(payload) != 1:
            return []
        if "features" in payload:
            return [payload["features"]]
        instances = payload.get("instances")
        return instances if type(instances) is list and len(instances) <= self.max_instances else []

    def _raise_key_problem(self, row: dict[str, Any], field: str) -> None:
        for key in row:
            if key not in self._name_set:
                close = difflib.get_close_matches(key, self.names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the model's features are {', '.join(self.names)}"
                raise _unprocessable("unknown_feature", f"{field}.{_shown_key(key)}", f"unknown feature; {hint}")
        missing = next(name for name in self.names if name not in row)
        hint = " (send null for a missing value)" if self._nullable[missing] else ""
        raise _unprocessable("missing_feature", f"{field}.{missing}", f"required feature is missing{hint}")


def _compile(spec: FeatureSpec) -> Check:
    return {"float": _numeric_check, "integer": _integer_check, "boolean": _boolean_check, "string": _categorical_check}[spec.dtype](spec)


def served_range(spec: FeatureSpec) -> tuple[float, float] | None:
    """The values predict serves for a numeric feature: its training range ``[minimum, maximum]``
    widened on each side by ``width / eps32``, where ``eps32 = 2**-23`` is float32's machine
    epsilon; ``None`` when the manifest records no training range.

    The width is ``maximum - minimum``, or for a feature constant in training the magnitude of
    that constant (1 when it is 0), so that the range never collapses to one point.
    """
    if spec.kind != "numeric" or spec.minimum is None or spec.maximum is None:
        return None
    width = spec.maximum - spec.minimum or abs(spec.minimum) or 1.0
    margin = width / float(np.finfo(np.float32).eps)
    return spec.minimum - margin, spec.maximum + margin


def _numeric_check(spec: FeatureSpec) -> Check:
    nullable = spec.nullable
    served = served_range(spec)
    low, high = served if served is not None else (-sys.float_info.max, sys.float_info.max)
    out_of_range = (
        f"must be between {low:.17g} and {high:.17g} (the training range {spec.minimum:g} to {spec.maximum:g} widened by "
        "its width / float32 epsilon; beyond it the model cannot compute a meaningful prediction)"
        if served is not None
        else ""
    )

    def check(value: Any) -> float | None:
        kind = type(value)
        if kind is float:
            if not low <= value <= high:
                if not math.isfinite(value):
                    raise _InvalidValue("not_finite", f"must be a finite number, got {_json_number(value)}")
                raise _InvalidValue("out_of_range", f"{out_of_range}, got {value:.17g}")
            return value
        if kind is int:
            try:
                number = float(value)
            except OverflowError:
                raise _InvalidValue("not_finite", "the number is too large for a 64-bit float") from None
            if not low <= number <= high:
                raise _InvalidValue("out_of_range", f"{out_of_range}, got {value}")
            return number
        if value is None:
            if nullable:
                return None
            raise _InvalidValue("null_not_allowed", "must be a number; null is not allowed for this feature")
        raise _InvalidValue("invalid_type", f"must be a number, got {_json_type(value)}")

    return check


def _integer_check(spec: FeatureSpec) -> Check:
    as_number = _numeric_check(spec)

    def check(value: Any) -> int | None:
        number = as_number(value)
        if number is None:
            return None
        if not number.is_integer():
            raise _InvalidValue("invalid_type", f"must be an integer, got {number:.17g}")
        integer = value if type(value) is int else int(number)
        if not INT64_MIN <= integer <= INT64_MAX:
            raise _InvalidValue("out_of_range", f"must be a 64-bit integer ({INT64_MIN} to {INT64_MAX}), got {integer}")
        return integer

    return check


def _boolean_check(spec: FeatureSpec) -> Check:
    # The manifest lists a boolean's categories as str() gives them ("True", "False").
    allowed = frozenset(value for value in (True, False) if str(value) in spec.categories) if spec.categories is not None else None
    nullable = spec.nullable

    def check(value: Any) -> bool | None:
        if value is True or value is False:
            if allowed is not None and value not in allowed:
                raise _InvalidValue("unknown_category", f"{str(value).lower()} was never seen in training for this feature")
            return value
        if value is None:
            if nullable:
                return None
            raise _InvalidValue("null_not_allowed", "must be true or false; null is not allowed for this feature")
        raise _InvalidValue("invalid_type", f"must be true or false, got {_json_type(value)}")

    return check


def _categorical_check(spec: FeatureSpec) -> Check:
    allowed = frozenset(spec.categories) if spec.categories is not None else None
    shown = ", ".join(repr(category) for category in spec.categories or ())
    nullable = spec.nullable

    def check(value: Any) -> str | None:
        if type(value) is str:
            if allowed is not None:
                if value not in allowed:
                    raise _InvalidValue("unknown_category", f"unknown category {value[:40]!r}; expected one of {shown}")
            elif len(value) > MAX_CATEGORY_LENGTH:
                raise _InvalidValue("too_long", f"must be at most {MAX_CATEGORY_LENGTH} characters, got {len(value)}")
            elif _NOT_SQS_SAFE.search(value):
                raise _InvalidValue("invalid_characters", "must not contain control characters or unpaired surrogates")
            return value
        if value is None:
            if nullable:
                return None
            raise _InvalidValue("null_not_allowed", "must be a string; null is not allowed for this feature")
        raise _InvalidValue("invalid_type", f"must be a string, got {_json_type(value)}")

    return check


def _shown_key(key: str) -> str:
    if not key:
        return '""'
    return key if len(key) <= MAX_SHOWN_KEY_LENGTH else key[:MAX_SHOWN_KEY_LENGTH] + "..."


def _unprocessable(code: str, field: str, message: str) -> ApiError:
    return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, code, message, field=field)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
