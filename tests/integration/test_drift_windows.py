"""Reading production windows from ``predictions`` on SQLite and MariaDB, and window arithmetic."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from sml.core.db import create_db_engine, to_db_timestamp
from sml.monitoring import windows
from sml.monitoring.summaries import CategoricalGrid, NumericGrid, SummaryReference, summarise
from sml.monitoring.windows import TimeWindow, parse_window_length, read_window, read_window_summaries
from sml.core.errors import SmlError
from sml.core.events import new_prediction_id
from sml.lifecycle.manifest import FeatureSpec
from sml.writer.batch import insert_prediction_rows

MODEL = "window-model"
START = datetime(2025, 3, 3, tzinfo=timezone.utc)
END = datetime(2025, 3, 10, tzinfo=timezone.utc)
WINDOW = TimeWindow(START, END)
# Names that are not Python identifiers, and names equal to the decoder's internal field names.
SCHEMA = [
    FeatureSpec("mean radius", "numeric"),
    FeatureSpec("n1", "numeric"),
    FeatureSpec("c0", "categorical"),
    FeatureSpec("farbe ß", "categorical"),
]


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def store_rows(engine: Engine, rows: list[tuple[datetime, dict[str, Any], Any]], model: str = MODEL) -> None:
    """Store ``(predicted_at, features, label)`` rows in the writer's format, bypassing event validation."""
    store_texts(
        engine,
        [(at, json.dumps(features, ensure_ascii=False, separators=(",", ":")), json.dumps(label)) for at, features, label in rows],
        model,
    )


def store_texts(engine: Engine, rows: list[tuple[datetime, str, str]], model: str = MODEL) -> None:
    """Store ``(predicted_at, features text, prediction text)`` rows verbatim."""
    stored = [
        {
            "prediction_id": new_prediction_id(),
            "schema_version": 1,
            "model_name": model,
            "model_version": "v1",
            "predicted_at": to_db_timestamp(predicted_at),
            "prediction": prediction,
            "probabilities": None,
            "features": features,
            "stored_at": to_db_timestamp(END),
        }
        for predicted_at, features, prediction in rows
    ]
    with engine.begin() as connection:
        insert_prediction_rows(connection, stored)


def test_values_become_columns_with_missing_and_non_numbers_as_nan(engine: Engine) -> None:
    at = START + timedelta(hours=1)
    store_rows(
        engine,
        [
            (at, {"mean radius": 1.5, "n1": 2, "c0": "a", 'farbe ß': "rot", "ignored": [1, 2]}, "benign"),
            (at, {"mean radius": None, "n1": "not a number", "c0": 3, 'farbe ß': None}, 1),
            (at, {"n1": True, "c0": None}, "benign"),
        ],
    )

    sample = read_window(engine, MODEL, WINDOW, SCHEMA)

    assert sample.n_rows == 3
    order = np.argsort(sample.numeric["mean radius"])  # row order is not guaranteed without ORDER BY
    assert sample.numeric["mean radius"][order][0] == 1.5 and np.isnan(sample.numeric["mean radius"]).sum() == 2
    assert sorted(np.nan_to_num(sample.numeric["n1"], nan=-1).tolist()) == [-1.0, -1.0, 2.0]
    assert sorted(map(str, sample.categorical["c0"])) == ["3", "None", "a"]
    assert sorted(map(str, sample.categorical['farbe ß'])) == ["None", "None", "rot"]
    assert sorted(map(str, sample.labels)) == ["1", "benign", "benign"]
    assert set(sample.columns()) == {spec.name for spec in SCHEMA}


def test_clean_batches_and_feature_names_that_no_struct_can_key_read_the_same(engine: Engine) -> None:
    quoted = [FeatureSpec('say "hi"', "numeric"), FeatureSpec("back\\slash", "categorical")]
    at = START + timedelta(hours=1)
    store_rows(engine, [(at, {"mean radius": 2.5, "n1": 1, "c0": "a", "farbe ß": "grün", 'say "hi"': 4.0, "back\\slash": "x"}, "benign")])

    typed = read_window(engine, MODEL, WINDOW, SCHEMA)
    by_dicts = read_window(engine, MODEL, WINDOW, quoted)

    assert typed.numeric["mean radius"].tolist() == [2.5] and typed.numeric["n1"].tolist() == [1.0]
    assert typed.categorical == {"c0": ["a"], "farbe ß": ["grün"]}
    assert by_dicts.numeric['say "hi"'].tolist() == [4.0] and by_dicts.categorical == {"back\\slash": ["x"]}


@pytest.mark.parametrize("slice_rows", [None, 1])
def test_window_is_half_open_and_limited_to_the_model(engine: Engine, slice_rows: int | None) -> None:
    features = {"mean radius": 1.0, "n1": 1.0, "c0": "a", 'farbe ß': "rot"}
    store_rows(
        engine,
        [
            (START - timedelta(microseconds=1), features, "outside"),
            (START, features, "first"),
            (END - timedelta(microseconds=1), features, "last"),
            (END, features, "outside"),
        ],
    )
    store_rows(engine, [(START + timedelta(days=1), features, "other model")], model="other-model")

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=slice_rows)

    assert sorted(sample.labels) == ["first", "last"]


def test_rows_arrive_in_slices_and_all_are_read(engine: Engine) -> None:
    rows = [(START + timedelta(minutes=index), {"mean radius": float(index), "c0": f"k{index % 3}"}, "x") for index in range(53)]
    store_rows(engine, rows)

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=7)

    assert sorted(sample.numeric["mean radius"].tolist()) == [float(index) for index in range(53)]
    assert np.isnan(sample.numeric["n1"]).all() and sample.numeric["n1"].flags["C_CONTIGUOUS"]
    assert sorted(set(sample.categorical["c0"])) == ["k0", "k1", "k2"]


def test_rows_sharing_one_timestamp_are_read_once_whatever_the_slicing(engine: Engine) -> None:
    crowded = START + timedelta(days=3)
    rows = [(crowded, {"mean radius": float(index)}, "x") for index in range(40)]
    rows += [(START + timedelta(hours=index), {"mean radius": float(100 + index)}, "y") for index in range(20)]
    store_rows(engine, rows)

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=3)

    assert sample.n_rows == 60
    assert sorted(sample.numeric["mean radius"].tolist()) == [float(index) for index in range(40)] + [float(100 + index) for index in range(20)]
    assert sorted(sample.labels) == ["x"] * 40 + ["y"] * 20


def test_a_slice_with_a_value_the_schema_rejects_is_read_again_row_by_row(engine: Engine) -> None:
    rows = [(START + timedelta(hours=index), {"mean radius": float(index), "n1": 1.0, "c0": f"k{index % 2}"}, index % 3) for index in range(30)]
    rows[17] = (rows[17][0], {"mean radius": 17.0, "n1": "not a number", "c0": "k1"}, 2)
    store_rows(engine, rows)

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=4)

    assert sample.n_rows == 30
    by_radius = sorted(zip(sample.numeric["mean radius"].tolist(), sample.numeric["n1"].tolist(), sample.categorical["c0"], sample.labels))
    assert [radius for radius, *_ in by_radius] == [float(index) for index in range(30)]
    assert [index for index, (_, n1, _, _) in enumerate(by_radius) if math.isnan(n1)] == [17]
    assert [(category, label) for _, _, category, label in by_radius] == [(f"k{index % 2}", index % 3) for index in range(30)]


def _grids(prediction: NumericGrid | CategoricalGrid) -> SummaryReference:
    return SummaryReference(
        features={
            "mean radius": NumericGrid.from_sorted([1.0, 5.0, 5.0, 20.0]), "n1": NumericGrid.from_sorted([1.0]),
            "c0": CategoricalGrid.from_counts({"k0": 3, "k1": 1}), "farbe ß": CategoricalGrid.from_counts({"rot": 1}),
        },
        prediction=prediction,
    )


@pytest.mark.parametrize("slice_rows", [4, None])
def test_summaries_of_the_window_equal_summaries_of_its_columns(engine: Engine, slice_rows: int | None) -> None:
    rows = [(START + timedelta(hours=index), {"mean radius": float(index), "n1": 1.0, "c0": f"k{index % 4}"}, index % 3) for index in range(30)]
    rows[17] = (rows[17][0], {"mean radius": 17.0, "n1": "not a number", "c0": None}, 2)  # read again row by row
    store_rows(engine, rows)
    classes, numbers = _grids(CategoricalGrid.from_counts({"0": 5, "1": 5}, categories=[2])), _grids(NumericGrid.from_sorted([0.0, 1.5]))

    by_class, by_number = read_window_summaries(engine, MODEL, WINDOW, SCHEMA, [classes, numbers], slice_rows=slice_rows)

    sample = read_window(engine, MODEL, WINDOW, SCHEMA)
    for summary, reference in ((by_class, classes), (by_number, numbers)):
        assert summary.to_json() == summarise(sample.columns(), reference, sample.labels).to_json()
    assert by_class.n_rows == 30 and by_class.features["c0"].unseen == 14 and by_class.features["c0"].missing == 1
    assert by_class.prediction.counts == {"0": 10, "1": 10, "2": 10}
    assert by_number.prediction.cells.tolist() == [0, 10, 10, 0, 10]
    assert by_number.features["mean radius"].cells.tolist() == [1, 1, 3, 1, 14, 1, 9]


def test_a_model_with_only_categorical_features_is_read(engine: Engine) -> None:
    # No numeric feature: the slice decoder's numeric getter has no field to get.
    only_categories = [FeatureSpec("c0", "categorical"), FeatureSpec("farbe ß", "categorical")]
    store_rows(engine, [(START + timedelta(hours=index), {"c0": f"k{index % 2}", "farbe ß": None}, "benign") for index in range(4)])
    reference = SummaryReference(
        features={"c0": CategoricalGrid.from_counts({"k0": 1}), "farbe ß": CategoricalGrid.from_counts({"rot": 1})},
        prediction=CategoricalGrid.from_counts({"benign": 1}),
    )

    (summary,) = read_window_summaries(engine, MODEL, WINDOW, only_categories, [reference])

    assert summary.n_rows == 4 and summary.features["c0"].counts == {"k0": 2} and summary.features["c0"].unseen_top == {"k1": 2}
    assert summary.features["farbe ß"].missing == 4 and summary.prediction.counts == {"benign": 4}
    assert sorted(read_window(engine, MODEL, WINDOW, only_categories).categorical["c0"]) == ["k0", "k0", "k1", "k1"]


def test_windows_read_in_turn_equal_each_window_read_alone_whatever_rows_are_expected(engine: Engine) -> None:
    rows = [(START + timedelta(hours=5 * index), {"mean radius": float(index), "n1": 1.0, "c0": f"k{index % 4}"}, index % 3) for index in range(30)]
    rows[17] = (rows[17][0], {"mean radius": 17.0, "n1": "not a number", "c0": None}, 2)  # read again row by row
    store_rows(engine, rows)
    days = [TimeWindow(START + timedelta(days=offset), START + timedelta(days=offset + 1)) for offset in range(7)]
    reference = _grids(CategoricalGrid.from_counts({"0": 5, "1": 5}, categories=[2]))

    # Expected rows only size the slices: far off, or absent, the counts are the same.
    read = list(windows.read_windows_summaries(engine, MODEL, days, SCHEMA, [reference], expected_rows=[1, None, 0, 1_000, 5, 5, 5]))

    assert [window for window, _ in read] == days
    for window, (summary,) in read:
        (alone,) = read_window_summaries(engine, MODEL, window, SCHEMA, [reference])
        assert summary.to_json() == alone.to_json()
    assert sum(summary.n_rows for _, (summary,) in read) == 30


def test_windows_read_in_turn_give_their_connections_back_when_one_fails(engine: Engine) -> None:
    store_rows(engine, [(START + timedelta(hours=1), {"mean radius": 1.0}, 0), (START + timedelta(days=1, hours=1), ["not", "an", "object"], 0)])  # type: ignore[list-item]
    days = [TimeWindow(START + timedelta(days=offset), START + timedelta(days=offset + 1)) for offset in range(3)]
    read = windows.read_windows_summaries(engine, MODEL, days, SCHEMA, [_grids(NumericGrid.from_sorted([1.0]))])

    assert next(read)[1][0].n_rows == 1
    with pytest.raises(SmlError, match="not a JSON object"):
        next(read)
    assert engine.pool.checkedout() == 0


def test_a_regression_models_numeric_predictions_are_counted_as_numbers(engine: Engine) -> None:
    store_rows(engine, [(START + timedelta(hours=index), {"mean radius": 1.0}, 0.25 * index) for index in range(12)] + [(START, {}, "n/a")])

    (summary,) = read_window_summaries(engine, MODEL, WINDOW, SCHEMA, [_grids(NumericGrid.from_sorted([1.0, 2.0]))], slice_rows=5)

    assert summary.prediction.cells.tolist() == [4, 1, 3, 1, 3]
    assert summary.prediction.missing == 1 and summary.prediction.maximum == 2.75


def test_clean_slices_longer_than_the_servers_default_concat_limit_arrive_whole(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # MySQL cuts GROUP_CONCAT at 1 KiB and MariaDB at 1 MiB unless the session raises the limit;
    # a cut slice would still read correctly, but row by row.
    read_row_by_row = []
    monkeypatch.setattr(windows, "_read_rows", lambda *args: read_row_by_row.append(args))
    padding = "x" * 400
    rows = [(START + timedelta(seconds=index), {"mean radius": float(index), "c0": padding}, "x") for index in range(3000)]
    store_rows(engine, rows)

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=10_000)

    assert read_row_by_row == []
    assert sample.n_rows == 3000 and sorted(sample.numeric["mean radius"].tolist()) == [float(index) for index in range(3000)]


def test_predictions_stored_as_plain_text_and_pretty_printed_features_read_back(engine: Engine) -> None:
    at = START + timedelta(hours=1)
    store_texts(
        engine,
        [
            (at, '{\n  "mean radius": 1.5,\n  "c0": "a"\n}', 'say "hi" \\ ß'),
            (at + timedelta(hours=1), '{"mean radius": 2.5}', '"benign"'),
            (at + timedelta(hours=2), '{"mean radius": 3.5}', "7"),
        ],
    )

    sample = read_window(engine, MODEL, WINDOW, SCHEMA, slice_rows=1)

    assert sorted(zip(sample.numeric["mean radius"].tolist(), map(repr, sample.labels))) == [
        (1.5, repr('say "hi" \\ ß')),
        (2.5, repr("benign")),
        (3.5, repr(7)),
    ]


def test_empty_window_has_empty_columns(engine: Engine) -> None:
    sample = read_window(engine, MODEL, WINDOW, SCHEMA)

    assert sample.n_rows == 0
    assert {name: column.size for name, column in sample.numeric.items()} == {"mean radius": 0, "n1": 0}
    assert sample.categorical == {"c0": [], 'farbe ß': []} and sample.labels == []


def test_features_text_that_is_not_an_object_is_refused(engine: Engine) -> None:
    store_rows(engine, [(START, ["not", "an", "object"], "x")])  # type: ignore[list-item]

    with pytest.raises(SmlError, match="not a JSON object"):
        read_window(engine, MODEL, WINDOW, SCHEMA)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)), ("2w", timedelta(weeks=2)), ("1.5d", timedelta(hours=36))],
)
def test_window_lengths_parse(text: str, expected: timedelta) -> None:
    assert parse_window_length(text) == expected


@pytest.mark.parametrize("text", ["7", "0d", "-1d", "7 days", "d7", ""])
def test_bad_window_length_names_the_option(text: str) -> None:
    with pytest.raises(SmlError, match=r"^SML_DRIFT_WINDOW: .* is not a window length"):
        parse_window_length(text, option="SML_DRIFT_WINDOW")


def test_windows_are_utc_and_the_previous_one_adjoins() -> None:
    window = TimeWindow.ending_at(datetime(2025, 3, 10, 8, tzinfo=timezone(timedelta(hours=2))), timedelta(days=7))

    assert window.end == datetime(2025, 3, 10, 6, tzinfo=timezone.utc) and window.end.tzinfo is timezone.utc
    assert window.previous() == TimeWindow(datetime(2025, 2, 24, 6, tzinfo=timezone.utc), datetime(2025, 3, 3, 6, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="must carry a UTC offset"):
        TimeWindow(datetime(2025, 3, 3), END)
    with pytest.raises(ValueError, match="is not after its start"):
        TimeWindow(END, START)
    assert math.isclose(window.length.total_seconds(), 7 * 86400)
