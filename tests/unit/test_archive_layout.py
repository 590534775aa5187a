"""Archive keys and column names: reversible, Athena-safe, and partitions that name what they hold."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sml.archive.layout import Partition, days, day_of, escape_name, feature_column, unescape_name


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
