"""Compaction of a day whose objects of one model version were typed differently by the writer, and compaction run twice at once."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from archive_support import archived_rows, new_archive, s3  # noqa: F401 - fixture

from sml.archive.layout import Partition
from sml.archive.parquet import read_parquet_bytes
from sml.archive.query import download_days, duckdb_connection
from sml.archive.sources import window_sql
from sml.archive.store import CompactionFailed, archive_rows, compact_days, compact_partition, list_partition
from sml.cli.main import main
from sml.core.events import build_prediction_event, serialise_event
from sml.monitoring.windows import TimeWindow
from sml.writer.batch import parse_records

DAY = datetime(2026, 7, 14, 9, 30, tzinfo=timezone.utc)
PARTITION = Partition("predictions", DAY.date(), "churn")


def archive_batch(s3: Any, location: Any, features: list[dict[str, Any]], seconds: int) -> list[dict[str, Any]]:
    bodies = [
        serialise_event(build_prediction_event(model_name="churn", model_version="v1", features=values, prediction="stay", predicted_at=DAY))
        for values in features
    ]
    rows = parse_records([(str(index), body) for index, body in enumerate(bodies)], DAY + timedelta(seconds=seconds)).rows
    archive_rows(s3, location, predictions=rows)
    return rows


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # A nullable boolean feature: a batch where every value is null holds a column of no type (a double),
        # a batch with booleans holds JSON text.
        ([{"premium": None, "tenure": 3.0}] * 2, [{"premium": True, "tenure": 4.0}, {"premium": None, "tenure": 5.0}]),
        # An integer feature: a value a double cannot hold exactly makes that batch's column JSON text.
        ([{"account": 2**60 + 1, "tenure": 3.0}], [{"account": 17, "tenure": 4.0}]),
    ],
    ids=["nullable-boolean", "large-integer"],
)
def test_a_version_whose_batches_typed_a_feature_differently_is_compacted_and_reads_back_the_same(
    s3: Any, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    location = new_archive(s3)
    rows = archive_batch(s3, location, first, 0) + archive_batch(s3, location, second, 1)
    before = sorted((row["prediction_id"], msgspec.json.decode(row["features"])) for row in archived_rows(s3, location, "predictions"))

    outcome = compact_partition(s3, location, PARTITION)

    assert outcome.rows == len(rows)
    assert [item.compacted for item in list_partition(s3, location, PARTITION)] == [True]
    after = sorted((row["prediction_id"], msgspec.json.decode(row["features"])) for row in archived_rows(s3, location, "predictions"))
    assert after == before
    assert [sorted((key, type(value).__name__) for key, value in values.items()) for _, values in after] == [
        sorted((key, type(value).__name__) for key, value in values.items()) for _, values in before
    ]


class SecondRunBeforeFirstUploads:
    """An S3 client whose first upload waits for an event the writer archives late and a second
    compaction of the same day that runs to its end: two runs at once (EventBridge delivers at
    least once; an operator's `sml compact` beside the daily one)."""

    def __init__(self, s3: Any, meanwhile: Any) -> None:
        self._s3, self._meanwhile = s3, meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        self._s3.upload_file(*args, **kwargs)


def test_two_compactions_at_once_leave_copies_that_reads_drop_and_the_next_compaction_removes(s3: Any) -> None:
    location = new_archive(s3)
    early = archive_batch(s3, location, [{"tenure": 1.0}, {"tenure": 2.0}], 0) + archive_batch(s3, location, [{"tenure": 3.0}], 1)

    def late_event_and_second_run() -> None:
        archive_batch(s3, location, [{"tenure": 4.0}], 2)
        compact_partition(s3, location, PARTITION)

    compact_partition(SecondRunBeforeFirstUploads(s3, late_event_and_second_run), location, PARTITION)
    left = list_partition(s3, location, PARTITION)
    assert len(left) == 2 and all(item.compacted for item in left)  # each run's object: the first's events are in both

    window = TimeWindow(DAY - timedelta(hours=1), DAY + timedelta(hours=1))
    with tempfile.TemporaryDirectory() as work:
        paths = download_days(s3, location, Path(work), DAY.date(), DAY.date(), tables=["predictions"]).files["predictions"]
        connection = duckdb_connection(Path(work))
        try:
            counted = connection.sql(window_sql(connection, paths, "churn", window, [])).fetchall()
        finally:
            connection.close()
    assert len(counted) == len(early) + 1

    again = compact_partition(s3, location, PARTITION)
    assert again.rows == len(early) + 1
    assert [item.compacted for item in list_partition(s3, location, PARTITION)] == [True]
    assert len(archived_rows(s3, location, "predictions")) == len(early) + 1


def test_an_unreadable_object_is_named_and_the_other_partitions_are_still_compacted(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = new_archive(s3)
    archive_batch(s3, location, [{"tenure": 1.0}], 0)
    archive_batch(s3, location, [{"tenure": 2.0}], 1)
    other = Partition("predictions", DAY.date(), "upsell")
    bodies = [serialise_event(build_prediction_event(model_name="upsell", model_version="v1", features={"a": 1.0}, prediction="no", predicted_at=DAY))]
    for seconds in (0, 1):
        archive_rows(s3, location, predictions=parse_records([("0", bodies[0])], DAY + timedelta(seconds=seconds)).rows)
    broken = f"{PARTITION.folder(location.prefix)}batch,v1,20260714T093000000000Z,0123456789abcdef.parquet"
    s3.put_object(Bucket=location.bucket, Key=broken, Body=b"not parquet")

    with pytest.raises(CompactionFailed, match=re.escape(location.uri(broken))) as failed:
        compact_days(s3, location, DAY.date(), DAY.date(), ["predictions"])
    assert [partition for partition, _ in failed.value.compacted] == [other]
    assert [item.compacted for item in list_partition(s3, location, other)] == [True]
    assert len(list_partition(s3, location, PARTITION)) == 3  # left as it was

    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    assert main(["compact", "--since", DAY.date().isoformat(), "--tables", "predictions"]) == 2
    out, err = capsys.readouterr()
    assert broken in err and "Traceback" not in err
    assert out.splitlines()[-1] == f"{DAY.date().isoformat()}: 2 partitions archived, 0 compacted now, 1 already compacted, 1 not compacted"
    monkeypatch.setenv("SML_DATABASE_URL", f"sqlite:///{tmp_path / 'rebuilt.db'}")
    assert main(["rebuild", "--since", DAY.date().isoformat(), "--until", DAY.date().isoformat()]) == 2
    err = capsys.readouterr().err
    assert broken in err and "Traceback" not in err


def test_a_model_of_thousands_of_features_is_compacted_within_the_memory_limit(s3: Any) -> None:
    # DuckDB's Parquet writer holds buffers per column and thread: with one thread per core, 4,000 feature columns
    # ran out of 256 MB on a machine of two cores with only 40 rows.
    location = new_archive(s3)
    features = {f"signal {index}": float(index) for index in range(4000)}
    rows = archive_batch(s3, location, [features] * 20, 0) + archive_batch(s3, location, [features] * 20, 1)
    assert compact_partition(s3, location, PARTITION).rows == len(rows)


def test_a_feature_null_in_a_whole_batch_has_no_column_of_a_guessed_type_and_reads_back_null(s3: Any) -> None:
    # A batch where a nullable text or boolean feature is null in every row held it as a double column. Athena reads
    # Parquet columns by the Glue table's declared type (string for that feature), and a file whose column is a double
    # fails the whole query (HIVE_BAD_DATA: type DOUBLE in parquet is incompatible with type varchar); so did the
    # weekly run reading through Athena. Without the column Athena reads NULL, as DuckDB does.
    location = new_archive(s3)
    nulls = archive_batch(s3, location, [{"segment": None, "premium": None, "tenure": 1.0}] * 2, 0)
    [object_key] = [item.key for item in list_partition(s3, location, PARTITION)]
    table = read_parquet_bytes(s3.get_object(Bucket=location.bucket, Key=object_key)["Body"].read())
    assert [name for name in table.column_names if name.startswith("f_")] == ["f_tenure"]
    assert [msgspec.json.decode(row["features"]) for row in archived_rows(s3, location, "predictions")] == [
        {"tenure": 1.0, "segment": None, "premium": None}
    ] * 2

    compact_partition(s3, location, PARTITION)  # only null batches: still no column, still null when read
    [compacted] = list_partition(s3, location, PARTITION)
    table = read_parquet_bytes(s3.get_object(Bucket=location.bucket, Key=compacted.key)["Body"].read())
    assert [name for name in table.column_names if name.startswith("f_")] == ["f_tenure"]
    assert sorted(json.dumps(msgspec.json.decode(row["features"]), sort_keys=True) for row in archived_rows(s3, location, "predictions")) == [
        json.dumps({"tenure": 1.0, "segment": None, "premium": None}, sort_keys=True)
    ] * 2

    [filled] = archive_batch(s3, location, [{"segment": "smb", "premium": True, "tenure": 2.0}], 1)
    compact_partition(s3, location, PARTITION)
    [compacted] = list_partition(s3, location, PARTITION)
    table = read_parquet_bytes(s3.get_object(Bucket=location.bucket, Key=compacted.key)["Body"].read())
    assert {name: str(table.schema.field(name).type) for name in table.column_names if name.startswith("f_")} == {
        "f_tenure": "double", "f_segment": "string", "f_premium": "string",
    }
    by_id = {row["prediction_id"]: msgspec.json.decode(row["features"]) for row in archived_rows(s3, location, "predictions")}
    assert [by_id[row["prediction_id"]] for row in nulls] == [{"tenure": 1.0, "segment": None, "premium": None}] * 2
    assert by_id[filled["prediction_id"]] == {"segment": "smb", "premium": True, "tenure": 2.0}
