"""Decoding one slice of a window (``[[features, "prediction"], ...]``) and refusing a slice that is not whole.

A slice the database could not send whole (NULL past ``max_allowed_packet``, or cut at
``group_concat_max_len``) or whose rows do not have the expected shape must add nothing, so that
the reader reads those rows again one by one; these cases cannot be provoked through a small
test database, hence the direct tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from sml.monitoring.windows import TimeWindow, _WindowColumns
from sml.lifecycle.manifest import FeatureSpec

WINDOW = TimeWindow(datetime(2025, 3, 3, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC))
SCHEMA = [FeatureSpec("x", "numeric"), FeatureSpec("y", "numeric"), FeatureSpec("colour", "categorical")]
WHOLE = '[[{"x":1.5,"y":null,"colour":"red","other":[1]},"\\"a\\""],[{"x":2,"colour":3},"plain"]]'


def test_a_whole_slice_becomes_aligned_columns() -> None:
    columns = _WindowColumns(SCHEMA)

    assert columns.add_slice(WHOLE, 2)
    sample = columns.sample(WINDOW)

    assert sample.n_rows == 2
    assert sample.numeric["x"].tolist() == [1.5, 2.0]
    assert math.isnan(sample.numeric["y"][0]) and math.isnan(sample.numeric["y"][1])
    assert sample.categorical == {"colour": ["red", 3]} and sample.labels == ["a", "plain"]


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        (None, 2),  # longer than max_allowed_packet: the server sends NULL
        (WHOLE[:40] + "]", 2),  # cut at group_concat_max_len
        ('[[{"x":1.5},"a"]]', 2),  # cut exactly between two rows: fewer rows than counted
        ('[[{"x":1.5},"a","b"]]', 1),  # a row of three elements
        ('[[{"x":"1.5"},"a"]]', 1),  # a numeric feature holding a string
        ('[[["x"],"a"]]', 1),  # features that are not an object
    ],
)
def test_a_slice_that_is_not_whole_adds_nothing(text: str | None, rows: int) -> None:
    columns = _WindowColumns(SCHEMA)

    assert not columns.add_slice(text, rows)
    sample = columns.sample(WINDOW)

    assert sample.n_rows == 0 and sample.labels == [] and sample.numeric["x"].size == 0 and sample.categorical == {"colour": []}


def test_rows_and_slices_fill_the_same_columns_in_turn() -> None:
    columns = _WindowColumns(SCHEMA)
    columns.reserve(1)

    columns.add_rows([('{"x":true,"y":4,"colour":"blue"}', '"b"')])
    assert columns.add_slice(WHOLE, 2)
    sample = columns.sample(WINDOW)

    assert sample.n_rows == 3
    assert [value if not math.isnan(value) else None for value in sample.numeric["x"].tolist()] == [None, 1.5, 2.0]
    assert sample.categorical == {"colour": ["blue", "red", 3]} and sample.labels == ["b", "a", "plain"]
    assert all(column.flags["C_CONTIGUOUS"] for column in sample.numeric.values())
