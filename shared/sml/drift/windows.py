"""Production windows: the predictions of one model in a time range, read as columns for drift.

:func:`read_window` streams only the ``features`` and ``prediction`` texts of the window's rows
(the ``(model_name, predicted_at)`` index finds them) and turns them into one numpy array per
numeric feature and one list of values per categorical feature, without pandas. Parsing the
JSON is the cost that matters at a million rows: a msgspec decoder typed for the model's feature
schema decodes only the keys drift needs, four to five times faster than ``json.loads``.

Example::

    window = TimeWindow.ending_at(datetime.now(timezone.utc), timedelta(days=7))
    sample = read_window(engine, "breast-cancer", window, manifest.features)
    sample.numeric["mean radius"]  # float64 array, NaN where the value was missing
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import msgspec.structs
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.db import PREDICTIONS, to_db_timestamp
from sml.errors import SmlError
from sml.manifest import FeatureSpec

DEFAULT_BATCH_ROWS = 10_000
_LENGTH_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_LENGTH_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_STRUCT_KEY = re.compile(r'^[^"\\\x00-\x1f]*$')


@dataclass(frozen=True)
class TimeWindow:
    """The half-open time range ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"window {name} must carry a UTC offset, got {value.isoformat()}")
            object.__setattr__(self, name, value.astimezone(timezone.utc))
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")

    @classmethod
    def ending_at(cls, end: datetime, length: timedelta) -> TimeWindow:
        """The window of ``length`` that ends (exclusively) at ``end``."""
        return cls(start=end - length, end=end)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> TimeWindow:
        """The window of the same length that ends where this one starts."""
        return TimeWindow(start=self.start - self.length, end=self.start)


@dataclass(frozen=True)
class WindowSample:
    """The values of one window, column by column, in row order.

    ``numeric`` holds a float array per numeric feature (NaN = missing or not a number);
    ``categorical`` a list per categorical feature (None = missing); ``labels`` the predicted
    labels as they were stored (a string or a number).
    """

    window: TimeWindow
    n_rows: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[Any]]
    labels: list[Any]

    def columns(self) -> dict[str, np.ndarray | list[Any]]:
        """Every feature's column by name (numeric and categorical together)."""
        return {**self.numeric, **self.categorical}


def parse_window_length(text: str, *, option: str = "--window") -> timedelta:
    """Parse a window length such as ``7d``, ``12h``, ``90m`` or ``2w``.

    :param option: the option or variable the text came from, named in the error.
    :raises SmlError: the text is not a positive number followed by m, h, d or w.
    """
    match = _LENGTH_PATTERN.match(text)
    if not match or float(match[1]) <= 0:
        raise SmlError(f"{option}: {text!r} is not a window length such as 7d, 12h, 90m or 2w")
    return float(match[1]) * _LENGTH_UNITS[match[2]]


def read_window(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> WindowSample:
    """Read the predictions of ``model_name`` made in ``window`` as columns of ``features``.

    Rows are streamed from the server in batches of ``batch_rows``, so memory holds the columns,
    never the whole result set. A feature absent from a row, or a numeric feature holding
    something other than a number, counts as missing.

    :param engine: the database holding ``predictions``.
    :param features: the model's feature schema (from its manifest); other keys are ignored.
    :returns: a :class:`WindowSample`; ``n_rows`` is 0 when the window has no predictions.
    :raises SmlError: a stored ``features`` text is not a JSON object.
    """
    decoder = _FeatureDecoder(features)
    statement = sa.select(PREDICTIONS.c.features, PREDICTIONS.c.prediction).where(
        PREDICTIONS.c.model_name == model_name,
        PREDICTIONS.c.predicted_at >= to_db_timestamp(window.start),
        PREDICTIONS.c.predicted_at < to_db_timestamp(window.end),
    )
    numeric_batches: list[np.ndarray] = []
    categorical: dict[str, list[Any]] = {name: [] for name in decoder.categorical}
    labels: list[Any] = []
    label_by_text: dict[str, Any] = {}
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=batch_rows).execute(statement)
        for batch in result.partitions():
            numeric_values, categorical_values = decoder.decode([row[0] for row in batch])
            # Feature-major, so that each feature's column ends up a contiguous row of one array.
            numeric_batches.append(np.ascontiguousarray(numeric_values.T))
            for name, values in zip(categorical, categorical_values):
                categorical[name].extend(values)
            labels.extend(_label(text, label_by_text) for _, text in batch)
    by_feature = np.concatenate(numeric_batches, axis=1) if numeric_batches else np.empty((len(decoder.numeric), 0))
    numeric = dict(zip(decoder.numeric, by_feature))
    return WindowSample(window=window, n_rows=len(labels), numeric=numeric, categorical=categorical, labels=labels)


class _FeatureDecoder:
    """Decodes ``features`` texts into a numeric matrix and categorical columns for one schema.

    The fast path is a msgspec struct typed for the schema. A batch holding a row it rejects (a
    numeric feature that is not a number) is decoded again row by row into plain dicts, as is
    every batch when a feature name cannot be a struct key (it contains ``"``, ``\\`` or a
    control character).
    """

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        self.numeric = [spec.name for spec in features if spec.kind == "numeric"]
        self.categorical = [spec.name for spec in features if spec.kind != "numeric"]
        self._decoder: msgspec.json.Decoder | None = None
        if all(_STRUCT_KEY.match(name) for name in self.numeric + self.categorical):
            # Struct fields need identifiers; ``rename`` maps them to the JSON keys.
            numeric_fields = [f"n{index}" for index in range(len(self.numeric))]
            categorical_fields = [f"c{index}" for index in range(len(self.categorical))]
            row_type = msgspec.defstruct(
                "FeatureRow",
                [(field, float | None, None) for field in numeric_fields] + [(field, Any, None) for field in categorical_fields],
                rename=dict(zip(numeric_fields + categorical_fields, self.numeric + self.categorical)),
                gc=False,
            )
            self._decoder = msgspec.json.Decoder(row_type)

    def decode(self, texts: Sequence[str]) -> tuple[np.ndarray, list[list[Any]]]:
        """The batch's numeric values (rows × numeric features) and its categorical columns."""
        if self._decoder is None:
            numeric_rows, categorical_rows = self._decode_as_dicts(texts)
        else:
            try:
                # Fields are numeric first, then categorical; astuple is the fastest way out of a struct.
                rows = list(map(msgspec.structs.astuple, map(self._decoder.decode, texts)))
            except msgspec.DecodeError:
                numeric_rows, categorical_rows = self._decode_as_dicts(texts)
            else:
                split = len(self.numeric)
                numeric_rows = [row[:split] for row in rows] if self.categorical else rows
                categorical_rows = [row[split:] for row in rows] if self.categorical else []
        numeric = np.array(numeric_rows, dtype=float).reshape(len(texts), len(self.numeric))
        interned: dict[Any, Any] = {}
        columns = zip(*categorical_rows) if categorical_rows else ([] for _ in self.categorical)
        return numeric, [[interned.setdefault(value, value) for value in column] for column in columns]

    def _decode_as_dicts(self, texts: Sequence[str]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        numeric_rows, categorical_rows = [], []
        for text in texts:
            try:
                values = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise SmlError(f"predictions.features holds a row that is not valid JSON ({exc})") from None
            if not isinstance(values, dict):
                raise SmlError(f"predictions.features holds a row that is not a JSON object: {text[:80]!r}")
            numeric_rows.append(tuple(_as_float(values.get(name)) for name in self.numeric))
            categorical_rows.append(tuple(values.get(name) for name in self.categorical))
        return numeric_rows, categorical_rows


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _label(text: str, cache: dict[str, Any]) -> Any:
    # Labels repeat a handful of texts; decoding each once also shares one object per label.
    if text not in cache:
        try:
            cache[text] = msgspec.json.decode(text)
        except msgspec.DecodeError:
            cache[text] = text
    return cache[text]
