"""Archive keys and column names: reversible, Athena-safe, and partitions that name what they hold."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sml.archive.layout import Partition, days, day_of, escape_name, feature_column, integral_floats, number_category, text_category, unescape_name


@given(st.text(min_size=1, max_size=40))
def test_any_feature_name_escapes_to_athena_safe_characters_and_back(name: str) -> None:
    escaped = escape_name(name)
    assert re.fullmatch(r"[a-z0-9_]+", escaped)
    assert unescape_name(escaped) == name


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_two_different_names_never_share_a_column(first: str, second: str) -> None:
    if first != second:
        assert feature_column(first) != feature_column(second)


def test_readable_names_stay_readable() -> None:
    assert feature_column("mean radius") == "f_mean_20_radius"
    assert feature_column("mean_radius") == "f_mean__radius"
    assert feature_column("Age") == "f__41_ge"


def test_a_name_the_archive_did_not_escape_is_refused() -> None:
    with pytest.raises(ValueError, match="not an escaped archive column name"):
        unescape_name("Mean")


def test_partition_folders_are_hive_style_and_labels_have_no_model_level() -> None:
    assert Partition("predictions", date(2026, 1, 2), "breast-cancer").folder("archive/") == "archive/predictions/model=breast-cancer/date=2026-01-02/"
    assert Partition("ground_truth", date(2026, 1, 2)).folder("a/") == "a/ground_truth/date=2026-01-02/"
    assert Partition("predictions", date(2026, 1, 2), "odd/name").folder("a/") == "a/predictions/model=odd%2Fname/date=2026-01-02/"
    with pytest.raises(ValueError, match="model partition is expected"):
        Partition("predictions", date(2026, 1, 2))
    with pytest.raises(ValueError, match="unknown archive table"):
        Partition("features", date(2026, 1, 2), "m")


def test_days_are_inclusive_and_a_reversed_range_names_both_options() -> None:
    assert days(date(2026, 1, 30), date(2026, 2, 1)) == [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1)]
    with pytest.raises(ValueError, match="--until 2026-01-01 is before --since 2026-01-02"):
        days(date(2026, 1, 2), date(2026, 1, 1))


def test_the_day_of_an_event_is_its_utc_day() -> None:
    assert day_of(datetime(2026, 1, 1, 23, 30)) == date(2026, 1, 1)
    assert day_of(datetime(2026, 1, 2, 0, 30, tzinfo=timezone.utc).astimezone(timezone.utc).replace(hour=0)) == date(2026, 1, 2)
    from datetime import timedelta

    assert day_of(datetime(2026, 1, 1, 20, 0, tzinfo=timezone(timedelta(hours=-5)))) == date(2026, 1, 2)


def test_feature_values_keep_their_kind_and_exotic_ones_read_back_exactly() -> None:
    from sml.archive.parquet import prediction_table, table_rows

    rows = [
        {
            "prediction_id": f"00000000-0000-4000-8000-00000000000{index}",
            "schema_version": 1,
            "model_name": "m",
            "model_version": "v1",
            "predicted_at": datetime(2026, 1, 1, 12),
            "prediction": '"yes"',
            "probabilities": None if index else '{"yes":0.5,"no":0.5}',
            "features": features,
            "stored_at": datetime(2026, 1, 1, 12, 0, 1),
        }
        for index, features in enumerate(
            ['{"x":1,"flag":true,"big":9007199254740993,"name":"a","mixed":1}', '{"x":2.5,"flag":false,"big":1,"name":null,"mixed":"b"}']
        )
    ]
    table = prediction_table(rows)
    assert {field.name: str(field.type) for field in table.schema if field.name.startswith(("f_", "p_"))} == {
        "p_yes": "double", "p_no": "double", "f_x": "double", "f_flag": "string", "f_big": "string", "f_name": "string", "f_mixed": "string",
    }
    import json

    back = table_rows("predictions", table)
    assert [json.loads(row["features"]) for row in back] == [
        {"x": 1.0, "flag": True, "big": 9007199254740993, "name": "a", "mixed": 1},
        {"x": 2.5, "flag": False, "big": 1, "name": None, "mixed": "b"},
    ]
    assert [row["probabilities"] for row in back] == ['{"yes":0.5,"no":0.5}', None]


def _writer_rows(bodies: list[str]) -> tuple[list[dict], dict]:
    from sml.writer.batch import parse_records

    parsed = parse_records([(str(index), body) for index, body in enumerate(bodies)], datetime(2026, 1, 1, 12, tzinfo=timezone.utc))
    assert not parsed.failures
    return parsed.rows, parsed.prediction_values


def _prediction_body(features: dict, probabilities: dict | None = None) -> str:
    from sml.core.events import build_prediction_event, serialise_prediction_event

    return serialise_prediction_event(
        build_prediction_event(model_name="m", model_version="v1", features=features, prediction="yes", probabilities=probabilities)
    )


@pytest.mark.parametrize(
    "features",
    [
        # the usual case: every row has the version's features in one order
        [{"a": 1.5, "b": 2, "c": "x"}, {"a": -0.25, "b": 3, "c": "y"}, {"a": 7.0, "b": 4, "c": None}],
        # keys in another order, a key missing, a key only in later rows, kinds mixed in a column
        [{"a": 1.5, "b": 2}, {"b": 3, "a": 2.5}, {"a": 1.0}, {"a": 0.5, "b": True, "d": "z"}, {"a": 9007199254740993, "d": 1}],
    ],
)
def test_the_table_from_the_values_the_writer_parsed_equals_the_table_decoded_from_the_rows_json(features: list[dict]) -> None:
    from sml.archive.parquet import prediction_table

    probabilities = [None if index == 1 else {"yes": 0.25 * index, "no": 1 - 0.25 * index} for index in range(len(features))]
    rows, values = _writer_rows([_prediction_body(item, chance) for item, chance in zip(features, probabilities)])

    from_values = prediction_table(rows, [values[row["prediction_id"]] for row in rows])

    assert from_values.equals(prediction_table(rows), check_metadata=True)
    assert from_values.num_rows == len(features)


def test_a_batch_object_reads_back_the_same_and_keeps_statistics_of_the_columns_readers_filter_on() -> None:
    import io

    import pyarrow.parquet as pq

    from sml.archive.parquet import prediction_table, read_parquet_bytes, to_parquet_bytes

    rows, _ = _writer_rows([_prediction_body({"a": 0.5 * index, "grade": "b"}, {"yes": 0.5, "no": 0.5}) for index in range(20)])
    table = prediction_table(rows)

    data = to_parquet_bytes(table)

    assert read_parquet_bytes(data).equals(table, check_metadata=True)
    row_group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    columns = {row_group.column(index).path_in_schema: row_group.column(index) for index in range(row_group.num_columns)}
    # DuckDB prunes row groups of a window by the event time's min/max; compaction rewrites the rest.
    assert columns["predicted_at"].is_stats_set and columns["stored_at"].is_stats_set
    assert not columns["f_a"].is_stats_set
    assert "RLE_DICTIONARY" not in columns["f_a"].encodings and "RLE_DICTIONARY" in columns["f_grade"].encodings


def test_a_number_category_is_written_as_the_reference_counted_integral_numbers() -> None:
    assert integral_floats(("1.0", "2.0", "2.5")) and not integral_floats(("1", "2.0")) and not integral_floats(("a", "b")) and not integral_floats(())
    assert [number_category(value, False) for value in (3.0, -0.0, 2.5, 1e16)] == ["3", "0", "2.5", "10000000000000000"]
    assert [number_category(value, True) for value in (3.0, -0.0, 2.5, 1e16)] == ["3.0", "-0.0", "2.5", "1e+16"]


def test_a_text_category_is_read_as_json_only_when_that_gives_a_known_category() -> None:
    known = {"True", "False", "a", "true", "1"}
    assert [text_category(text, known) for text in ("true", "false", '"a"', "a", '"b"', "null", "NaN", "[1]", "1", "1.0")] == [
        "true", "False", "a", "a", '"b"', "null", "NaN", "[1]", "1", "1.0"
    ]
