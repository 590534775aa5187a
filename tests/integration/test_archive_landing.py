"""The archive's landing area: what the writer lands is converted into exactly the Parquet objects of its stored rows, and nothing is lost or doubled on the way."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from archive_support import archived_rows, engine, event_keys, new_archive, s3  # noqa: F401 - fixtures
from sqlalchemy.engine import Engine
from writer_support import REJECTED_LABEL, REJECTED_MODEL, add_label_rejecting_trigger, add_rejecting_trigger, label_body, prediction_id_of, stored_rows

from functions.drift import compact
from sml.archive.landing import (
    ConversionFailed,
    LandingObjectInvalid,
    convert_landing,
    count_landing,
    land_acknowledged,
    landing_body,
    landing_prefix,
    list_landing,
    put_landing,
    read_landing,
)
from sml.archive.layout import ArchiveNotWritten, Partition
from sml.archive.store import ArchiveLocation, archive_rows, compact_days, compact_partition, list_partition
from sml.cli.main import main
from sml.core.events import build_prediction_event, build_refusal_event, parse_event, serialise_event
from sml.local.lambda_context import new_lambda_context
from sml.writer.batch import parse_records, write_batch

STORED_AT = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
DAY = datetime(2026, 5, 6, 6, 0, tzinfo=timezone.utc)


def events_of(records: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """The ``(message_id, event)`` pairs the writer parses from ``records`` (what it lands)."""
    return parse_records(records, STORED_AT).events


def batch(count: int = 5, *, version: str = "v1", start: int = 0) -> list[tuple[str, str]]:
    records = []
    for index in range(start, start + count):
        body = serialise_event(build_prediction_event(
            model_name="breast-cancer", model_version=version, features={"mean radius": 10.0 + index, "grade": "b", "flag": index % 2 == 0},
            prediction="benign", probabilities={"benign": 0.6, "malignant": 0.4}, predicted_at=DAY + timedelta(minutes=index),
        ))
        records.append((f"m{index}", body))
    return records


def test_converting_a_landed_batch_puts_the_objects_the_writer_would_have_built_byte_for_byte(s3: Any) -> None:
    location = new_archive(s3)
    refusal = build_refusal_event(model_name="breast-cancer", model_version="v1", refused={"mean radius": {"out_of_range": 2}})
    records = batch(6) + batch(3, version="v2", start=6) + [("l", label_body(prediction_id_of(batch(1)[0][1]), labelled_at=DAY)), ("r", serialise_event(refusal))]
    parsed = parse_records(records, STORED_AT)
    direct = new_archive(s3)
    expected_keys = archive_rows(
        s3, direct, predictions=parsed.rows, ground_truth=parsed.label_events,
        refusals=[row for item in parsed.refusals for row in item["rows"]], prediction_values=parsed.prediction_values,
    )

    key = put_landing(s3, location, events_of(records), STORED_AT)
    outcome = convert_landing(s3, location)

    assert outcome.converted == [key] and outcome.failures == [] and outcome.events == len(records)
    assert sorted(outcome.written) == sorted(expected_keys) and len(expected_keys) == 4  # two versions, labels, refusals
    for written in outcome.written:
        assert s3.get_object(Bucket=location.bucket, Key=written)["Body"].read() == s3.get_object(Bucket=direct.bucket, Key=written)["Body"].read()
    assert list(list_landing(s3, location)) == []
    rows = archived_rows(s3, location, "predictions")
    assert {row["stored_at"] for row in rows} == {STORED_AT.replace(tzinfo=None)}


def test_landing_keys_sort_as_batches_were_stored_and_an_empty_batch_lands_nothing(s3: Any) -> None:
    location = new_archive(s3)
    later = put_landing(s3, location, events_of(batch(2)), STORED_AT + timedelta(microseconds=1))
    earlier = put_landing(s3, location, events_of(batch(2, start=2)), STORED_AT)
    assert put_landing(s3, location, [], STORED_AT) is None
    assert list(list_landing(s3, location)) == [earlier, later]
    assert earlier is not None and earlier.startswith(landing_prefix(location) + "20260506T070809123456Z,")


def test_a_landing_put_that_fails_raises_archive_not_written_naming_the_object(s3: Any) -> None:
    location = ArchiveLocation("sml-no-such-bucket", "archive/")
    with pytest.raises(ArchiveNotWritten, match=r"s3://sml-no-such-bucket/archive/landing/20260506T070809123456Z,[0-9a-f]{16}\.msgpack: .*NoSuchBucket"):
        put_landing(s3, location, events_of(batch(1)), STORED_AT)


def test_an_unreadable_landing_object_is_named_and_left_and_the_others_are_converted(s3: Any) -> None:
    location = new_archive(s3)
    first = put_landing(s3, location, events_of(batch(3)), STORED_AT)
    bad = f"{landing_prefix(location)}20260506T070809200000Z,0000000000000000.msgpack"
    s3.put_object(Bucket=location.bucket, Key=bad, Body=landing_body(events_of(batch(2)), STORED_AT)[:-40])  # cut short
    last = put_landing(s3, location, events_of(batch(2, start=3)), STORED_AT + timedelta(seconds=1))

    outcome = convert_landing(s3, location)

    assert outcome.converted == [first, last]
    assert len(outcome.failures) == 1 and outcome.failures[0].startswith(f"s3://{location.bucket}/{bad}: ")
    assert list(list_landing(s3, location)) == [bad]  # left for the next run, not lost
    assert len(archived_rows(s3, location, "predictions")) == 5


def test_a_conversion_stopped_before_its_delete_is_redone_by_the_next_run_without_a_copy(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    location = new_archive(s3)
    put_landing(s3, location, events_of(batch(4)), STORED_AT)
    delete = s3.delete_object

    def crash(**_: Any) -> Any:
        raise ConnectionError("stand-in for a function that timed out after its puts")

    monkeypatch.setattr(s3, "delete_object", crash)
    stopped = convert_landing(s3, location)
    assert stopped.converted == [] and len(stopped.failures) == 1
    written = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=location.bucket, Prefix="archive/predictions/")["Contents"])

    monkeypatch.setattr(s3, "delete_object", delete)
    redone = convert_landing(s3, location)

    assert len(redone.converted) == 1 and sorted(redone.written) == written  # the same keys: nothing doubled
    assert sorted(item["Key"] for item in s3.list_objects_v2(Bucket=location.bucket, Prefix="archive/predictions/")["Contents"]) == written
    assert len(archived_rows(s3, location, "predictions")) == 4


def test_a_limit_converts_the_earliest_objects_and_leaves_the_rest(s3: Any) -> None:
    location = new_archive(s3)
    keys = [put_landing(s3, location, events_of(batch(1, start=index)), STORED_AT + timedelta(seconds=index)) for index in range(3)]
    limited = convert_landing(s3, location, limit=2)
    assert (limited.converted, limited.remaining) == (keys[:2], True)
    assert list(list_landing(s3, location)) == keys[2:]
    past = convert_landing(s3, location, deadline=time.monotonic() - 1)
    assert (past.converted, past.remaining) == ([], True)
    assert convert_landing(s3, location).remaining is False


def packed(**content: Any) -> bytes:
    return msgspec.msgpack.encode({"format": 1, "stored_at": STORED_AT, "schemas": [], "items": [], **content})


def test_counting_the_landing_area_is_one_list_call_that_says_when_there_are_more(s3: Any) -> None:
    location = new_archive(s3)
    assert count_landing(s3, location) == (0, False)
    for index in range(3):
        put_landing(s3, location, events_of(batch(1, start=index)), STORED_AT + timedelta(seconds=index))
    s3.put_object(Bucket=location.bucket, Key=f"{landing_prefix(location)}notes.txt", Body=b"not a batch")

    assert count_landing(s3, location) == (3, False)
    assert count_landing(s3, location, most=2) == (2, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1", "not a landing object"),
        (msgspec.msgpack.encode([1, 2]), "not a landing object: expected the keys format, stored_at, schemas and items"),
        (packed(format=2), "format 2 \\(this version reads 1\\)"),
        (packed(stored_at="2026-05-06T07:08:09+00:00"), "stored_at '2026-05-06T07:08:09\\+00:00' is not a UTC timestamp"),
        (packed(items=[["m", "{not json"]]), "item 0: .*not valid JSON"),
        (packed(items=[["m", "p", 1, "m", "v1", 0, [1.0], "a", STORED_AT, None]]), "item 0: schema 0 is not one of the 0 feature schemas"),
        (packed(schemas=[["a", "b"]], items=[["m", "p", 1, "m", "v1", 0, [1.0], "a", STORED_AT, None]]), "item 0: 1 feature values for 2 names"),
        (packed(items=[["m", "p", 1]]), "item 0: "),
    ],
)
def test_a_body_that_is_not_a_landing_object_is_refused_by_name(body: bytes, message: str) -> None:
    with pytest.raises(LandingObjectInvalid, match=f"s3://b/archive/landing/x.msgpack: {message}"):
        read_landing(body, "s3://b/archive/landing/x.msgpack")


PREDICTION_ID = "0190a1b2-0000-7000-8000-000000000001"
ITEM_FIELDS = ("message_id", "prediction_id", "schema_version", "model_name", "model_version", "schema", "values", "prediction", "predicted_at", "probabilities")


def prediction_item(**changed: Any) -> list[Any]:
    """A landing object's item of a valid prediction (feature schema 0, ``["a"]``), with ``changed`` fields."""
    item = {"message_id": "m", "prediction_id": PREDICTION_ID, "schema_version": 1, "model_name": "m", "model_version": "v1", "schema": 0,
            "values": [1.0], "prediction": "a", "predicted_at": STORED_AT, "probabilities": None, **changed}
    return [item[name] for name in ITEM_FIELDS]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (packed(format=True)[:-1] + b"\xa3\xed\xa0\x80", "not a landing object: 'utf-8' codec can't decode byte 0xed"),
        (packed(format=True), "format True \\(this version reads 1\\)"),
        (packed(items=5), "items: expected an array of items, got int"),
        (packed(schemas={"0": ["a"]}, items=[prediction_item()]), "schemas: expected an array of arrays of feature names"),
        (packed(schemas=["a"], items=[prediction_item()]), "schemas: expected an array of arrays of feature names"),
        (packed(items=[{"a": 1, "b": 2}]), "item 0: expected an array, got dict"),
        (packed(items=[[5, "{}"]]), "item 0: message_id: expected text, got int"),
        (packed(schemas=[["a"]], items=[prediction_item(schema=-1)]), "item 0: schema -1 is not one of the 1 feature schemas"),
        (packed(schemas=[["b"], ["a"]], items=[prediction_item(schema=True)]), "item 0: schema True is not one of the 2 feature schemas"),
        (packed(schemas=[["a"]], items=[prediction_item(values={"a": 1})]), "item 0: feature values: expected an array, got dict"),
        (packed(schemas=[["a", "a"]], items=[prediction_item(values=[1, 2])]), "item 0: feature names repeat in schema 0"),
        (packed(schemas=[[1]], items=[prediction_item()]), "item 0: .*Expected `str`, got `int` - at `key` in `\\$.features`"),
        (packed(schemas=[["a"]], items=[prediction_item(prediction_id=5)]), "item 0: prediction_id: "),
        (packed(schemas=[["a"]], items=[prediction_item(prediction_id="p")]), "item 0: prediction_id: "),
        (packed(schemas=[["a"]], items=[prediction_item(schema_version=2)]), "item 0: schema_version: "),
        (packed(schemas=[["a"]], items=[prediction_item(model_name="")]), "item 0: model_name: "),
        (packed(schemas=[["a"]], items=[prediction_item(values=[[1]])]), "item 0: features.a: "),
        (packed(schemas=[["a"]], items=[prediction_item(values=[float("nan")])]), "item 0: features.a: must be a finite number"),
        (packed(schemas=[["a"]], items=[prediction_item(prediction=True)]), "item 0: prediction: "),
        (packed(schemas=[["a"]], items=[prediction_item(prediction=None)]), "item 0: prediction: "),
        (packed(schemas=[["a"]], items=[prediction_item(predicted_at="2026-05-06")]), "item 0: predicted_at: "),
        (packed(schemas=[["a"]], items=[prediction_item(probabilities={"a": 2.0})]), "item 0: probabilities.a: "),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_an_item_that_is_not_a_valid_event_is_refused_by_name_not_archived(body: bytes, message: str) -> None:
    # The conversion puts what read_landing returns into the immutable archive: it must hold what the writer's
    # parser accepts, or nothing (a corrupt or foreign object stays in the landing area, named).
    with pytest.raises(LandingObjectInvalid, match=f"s3://b/archive/landing/x.msgpack: {message}"):
        read_landing(body, "s3://b/archive/landing/x.msgpack")
    assert read_landing(packed(schemas=[["a"]], items=[prediction_item()]))[1][0][1].features == {"a": 1.0}


def test_a_landing_body_reads_back_every_event_exactly_including_hostile_values() -> None:
    hostile = build_prediction_event(
        model_name="modèle ✓", model_version="v 2", prediction=7,
        features={"a\nb": "line\nbreak \u2028 \"quoted\"", "é": None, "big": 2**70, "neg": -(2**63), "top": 2**64 - 1, "t": True, "f": 1e308, "tiny": 5e-324},
        predicted_at=datetime(1, 1, 1, tzinfo=timezone.utc),
    )
    other_keys = build_prediction_event(model_name="m", model_version="v1", prediction="x", features={"z": 1.5, "y": 0}, predicted_at=DAY, probabilities={"x": 1.0})
    refusal = build_refusal_event(model_name="m", model_version=None, refused={"_request": {"not_json": 1}})
    events = [("1", hostile), ("2", other_keys), ("3", parse_event(label_body(prediction_id_of(batch(1)[0][1]), labelled_at=DAY))), ("4", refusal), *events_of(batch(3))]
    assert read_landing(landing_body(events, STORED_AT)) == (STORED_AT, events)
    assert read_landing(landing_body(events, STORED_AT.replace(tzinfo=None)))[0] == STORED_AT
    body = landing_body(events_of(batch(50)), STORED_AT)
    assert len(body) < 0.5 * sum(len(text) for _, text in batch(50))  # feature names once, numbers as 9 bytes


@pytest.fixture
def function_archive(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArchiveLocation]:
    """A new archive that the archive function (functions/drift/compact.py) is set to, in a fresh container."""
    for cached in (compact.archive_location, compact.s3_client):
        cached.cache_clear()
    location = new_archive(s3)
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    yield location
    for cached in (compact.archive_location, compact.s3_client):
        cached.cache_clear()


def test_the_archive_function_converts_on_its_frequent_rule_and_before_compacting(s3: Any, function_archive: ArchiveLocation) -> None:
    location = function_archive
    context = new_lambda_context("compact", region="us-east-1", timeout_s=900)
    put_landing(s3, location, events_of(batch(3)), STORED_AT)

    assert compact.handler({"sml_action": "convert"}, context) == {"landing_converted": 1, "objects_written": 1, "events": 3, "failures": [], "remaining": False}

    put_landing(s3, location, events_of(batch(2, start=3)), STORED_AT + timedelta(minutes=5))
    daily = compact.handler({"time": (DAY + timedelta(days=1)).isoformat()}, context)
    assert daily["conversion"]["landing_converted"] == 1
    assert (daily["objects_merged"], daily["rows"]) == (2, 5)  # the batch just converted is compacted with the day

    s3.put_object(Bucket=location.bucket, Key=f"{landing_prefix(location)}20260506T090000000000Z,0000000000000000.msgpack", Body=b"{}")
    with pytest.raises(ConversionFailed, match="1 landing object not converted"):
        compact.handler({"sml_action": "convert"}, context)
    with pytest.raises(ValueError, match="sml_action: unknown action 'compress'"):
        compact.handler({"sml_action": "compress"}, context)


def test_the_writer_lands_without_importing_pyarrow() -> None:
    pid = prediction_id_of(batch(1)[0][1])
    big = json.dumps({**json.loads(batch(1)[0][1]), "prediction": 2**70})  # landed as JSON text
    records = [*batch(2), ("big", big), ("label", label_body(pid)), ("failed", batch(1)[0][1])]
    script = (
        "import json, sys\n"
        "from datetime import datetime, timezone\n"
        "import functions.writer.app\n"
        "from sml.archive.landing import land_acknowledged\n"
        "from sml.archive.layout import ArchiveLocation\n"
        "from sml.writer.batch import parse_records\n"
        "class S3:\n"
        "    def put_object(self, **_):\n"
        "        pass\n"
        f"events = parse_records({records!r}, datetime.now(timezone.utc)).events\n"
        "assert land_acknowledged(S3(), ArchiveLocation('b', 'archive/'), events, ['failed'], datetime.now(timezone.utc))[1] == 4\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in ('pyarrow', 'duckdb', 'pandas'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_a_redelivered_batch_lands_again_and_compaction_keeps_the_first_stored_copy(s3: Any) -> None:
    location = new_archive(s3)
    records = batch(3)
    put_landing(s3, location, events_of(records), STORED_AT)
    put_landing(s3, location, events_of(records), STORED_AT + timedelta(seconds=30))  # a redelivered batch, landed again
    assert convert_landing(s3, location).events == 6
    assert event_keys("predictions", archived_rows(s3, location, "predictions")) == sorted([(prediction_id_of(body),) for _, body in records] * 2)
    compacted = compact_partition(s3, location, Partition("predictions", DAY.date(), "breast-cancer"))
    assert compacted.rows == 3
    assert {row["stored_at"] for row in archived_rows(s3, location, "predictions")} == {STORED_AT.replace(tzinfo=None)}


def test_an_object_another_run_converted_after_this_one_listed_it_is_skipped_not_failed(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    location = new_archive(s3)
    taken = put_landing(s3, location, events_of(batch(2)), STORED_AT)
    kept = put_landing(s3, location, events_of(batch(2, start=2)), STORED_AT + timedelta(seconds=1))
    get = s3.get_object

    def other_run_got_there_first(**kwargs: Any) -> Any:
        if kwargs["Key"] == taken:
            s3.delete_object(Bucket=location.bucket, Key=taken)
        return get(**kwargs)

    monkeypatch.setattr(s3, "get_object", other_run_got_there_first)
    outcome = convert_landing(s3, location)
    assert (outcome.converted, outcome.failures) == ([kept], [])


def use_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, location: ArchiveLocation) -> None:
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)


@pytest.fixture
def cli_archive(s3: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> ArchiveLocation:
    """A new archive that the ``sml`` commands are set to."""
    location = new_archive(s3)
    use_archive(monkeypatch, tmp_path, location)
    return location


def test_sml_compact_converts_the_landing_area_first_naming_what_it_cannot_convert_then_compacts(s3: Any, cli_archive: ArchiveLocation, capsys: pytest.CaptureFixture[str]) -> None:
    location = cli_archive
    put_landing(s3, location, events_of(batch(3)), STORED_AT)
    bad = f"{landing_prefix(location)}20260506T070809200000Z,0000000000000000.msgpack"
    s3.put_object(Bucket=location.bucket, Key=bad, Body=b"{}")
    put_landing(s3, location, events_of(batch(2, start=3)), STORED_AT + timedelta(seconds=1))

    assert main(["compact", "--since", DAY.date().isoformat()]) == 2  # after converting and compacting the rest

    captured = capsys.readouterr()
    assert "archive/landing/: 2 batches converted, 5 events in 2 objects" in captured.out
    assert "model=breast-cancer/date=2026-05-06/: 2 objects merged into 1, 5 rows" in captured.out
    assert f"not converted (left for the next run): s3://{location.bucket}/{bad}: " in captured.err
    assert "1 landing object not converted (named above)" in captured.err and "Traceback" not in captured.err
    assert list(list_landing(s3, location)) == [bad]
    assert len(archived_rows(s3, location, "predictions")) == 5

    s3.delete_object(Bucket=location.bucket, Key=bad)
    put_landing(s3, location, events_of(batch(1, start=5)), STORED_AT + timedelta(seconds=2))
    assert main(["compact", "--since", DAY.date().isoformat()]) == 0
    out = capsys.readouterr().out
    assert "archive/landing/: 1 batch converted, 1 event in 1 object" in out and "1 object merged into" not in out
    assert main(["compact", "--since", DAY.date().isoformat()]) == 0
    assert "archive/landing/: 0 batches converted" in capsys.readouterr().out


def test_sml_compact_names_an_object_that_is_not_a_landing_object_once_per_line_without_a_traceback(s3: Any, cli_archive: ArchiveLocation, capsys: pytest.CaptureFixture[str]) -> None:
    location = cli_archive
    bad = f"{landing_prefix(location)}20260506T070809200000Z,0000000000000000.msgpack"
    s3.put_object(Bucket=location.bucket, Key=bad, Body=b"garbage")
    configured = logging.root.handlers[:]
    for handler in configured:  # as in a shell: nothing configures logging, so the library's warnings reach stderr
        logging.root.removeHandler(handler)
    try:
        assert main(["compact", "--since", DAY.date().isoformat()]) == 2
    finally:
        for handler in configured:
            logging.root.addHandler(handler)

    err = capsys.readouterr().err
    uri = f"s3://{location.bucket}/{bad}"
    assert "Traceback" not in err
    assert err.count(uri) == 1 and f"not converted (left for the next run): {uri}: not a landing object: " in err
    assert err.endswith(f"sml compact: error: 1 landing object not converted (named above); it stays under {location.uri(landing_prefix(location))} for the next run\n")


def test_an_object_that_is_not_a_landing_object_is_logged_by_name_and_reason_without_a_traceback(s3: Any, caplog: pytest.LogCaptureFixture) -> None:
    location = new_archive(s3)
    bad = f"{landing_prefix(location)}20260506T070809200000Z,0000000000000000.msgpack"
    s3.put_object(Bucket=location.bucket, Key=bad, Body=msgspec.msgpack.encode({}))

    with caplog.at_level(logging.ERROR, logger="sml.archive.landing"):
        outcome = convert_landing(s3, location)

    uri = location.uri(bad)
    assert outcome.failures == [f"{uri}: not a landing object: expected the keys format, stored_at, schemas and items"]
    [record] = caplog.records
    assert record.getMessage() == f"landing object {uri} not converted; left for the next run: not a landing object: expected the keys format, stored_at, schemas and items"
    assert record.exc_info is None  # the object is bad, not the code


def test_sml_compact_says_what_it_found_in_its_days_even_when_it_merged_nothing(s3: Any, cli_archive: ArchiveLocation, capsys: pytest.CaptureFixture[str]) -> None:
    location = cli_archive
    put_landing(s3, location, events_of(batch(3)), STORED_AT)
    day = DAY.date().isoformat()

    assert main(["compact", "--since", day]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{day}: 1 partitions archived, 1 compacted now, 0 already compacted, 0 not compacted"
    assert main(["compact", "--since", day]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{day}: 1 partitions archived, 0 compacted now, 1 already compacted, 0 not compacted"
    assert main(["compact", "--since", "2026-05-01", "--until", "2026-05-02"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2026-05-01 to 2026-05-02: nothing archived"


@pytest.mark.parametrize("command", [["compact"], ["query", "SELECT count(*) FROM predictions"], ["rebuild", "--since", "2026-05-06"]])
def test_an_archive_that_cannot_be_reached_is_one_line_naming_it_not_a_traceback(
    s3: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    use_archive(monkeypatch, tmp_path, ArchiveLocation("sml-no-such-bucket", "archive/"))
    monkeypatch.setenv("SML_DATABASE_URL", f"sqlite:///{tmp_path / 'rebuilt.db'}")

    assert main(command) == 2

    err = capsys.readouterr().err
    assert f"sml {command[0]}: error: s3://sml-no-such-bucket/archive/: NoSuchBucket" in err and "Traceback" not in err


def test_sml_compact_with_bad_options_converts_nothing(s3: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    location = new_archive(s3)
    use_archive(monkeypatch, tmp_path, location)
    landed = put_landing(s3, location, events_of(batch(1)), STORED_AT)

    assert main(["compact", "--since", "2026-05-06", "--until", "2026-05-05"]) == 2
    assert main(["compact", "--tables", "labels"]) == 2
    assert main(["compact", "--until", "2026-05-05"]) == 2

    err = capsys.readouterr().err
    assert "--until 2026-05-05 is before --since 2026-05-06\n" in err and "--tables: unknown table 'labels'" in err
    yesterday = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    assert f"--until 2026-05-05 is before --since {yesterday} (--since defaults to yesterday, UTC)" in err
    assert list(list_landing(s3, location)) == [landed]


def test_sml_query_and_rebuild_warn_about_batches_not_yet_converted_and_leave_them(
    s3: Any, cli_archive: ArchiveLocation, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = cli_archive
    monkeypatch.setenv("SML_DATABASE_URL", f"sqlite:///{tmp_path / 'rebuilt.db'}")
    put_landing(s3, location, events_of(batch(3)), STORED_AT)
    convert_landing(s3, location)
    waiting = [put_landing(s3, location, events_of(batch(1, start=index)), STORED_AT + timedelta(seconds=index)) for index in (3, 4)]
    warning = (
        "warning: 2 batches landed but not yet converted into the archive; they are not in {}:"
        " run `sml compact` (it converts what it can and names the rest) or wait for the conversion schedule\n"
    )

    assert main(["query", "SELECT count(*) AS n FROM predictions", "--csv", str(tmp_path / "n.csv")]) == 0
    assert capsys.readouterr().err == warning.format("this answer")
    assert (tmp_path / "n.csv").read_text().splitlines() == ['"n"', "3"]
    assert main(["rebuild", "--since", DAY.date().isoformat(), "--until", DAY.date().isoformat(), "--tables", "predictions"]) == 0
    captured = capsys.readouterr()
    assert captured.err == warning.format("this rebuild") and "predictions: 3 archived events" in captured.out
    assert list(list_landing(s3, location)) == waiting  # neither command converts

    convert_landing(s3, location)
    assert main(["query", "SELECT count(*) AS n FROM predictions"]) == 0
    assert capsys.readouterr().err == ""


def hostile_batch() -> list[tuple[str, str]]:
    """Records that try to make the landing object differ from the events parsed: every value
    MessagePack or the JSON fallback might change, mixed schemas, copies and conflicts, failures."""
    def body(features: Any, prediction: Any = "a", *, model: str = "modèle ✓", version: str = "v1", at: str = "2026-05-06T01:02:03.456789Z",
             prediction_id: str | None = None, probabilities: Any = None) -> str:
        return json.dumps({
            "prediction_id": prediction_id or prediction_id_of(batch(1)[0][1]), "schema_version": 1, "model_name": model, "model_version": version,
            "features": features, "prediction": prediction, "predicted_at": at, "probabilities": probabilities,
        }, ensure_ascii=False)

    reused, conflicted, rejected_first = (prediction_id_of(batch(1)[0][1]) for _ in range(3))
    return [
        ("bool", body({"x": True, "y": 1, "z": 1.0}, prediction=1)),
        ("int", body({"y": True, "z": 1, "x": 1.0}, prediction=1.0)),  # the same names in another order, types swapped
        ("zero", body({"x": -0.0, "y": 0, "z": False}, prediction=-0.0)),
        ("bounds", body({"x": 2**63, "y": -(2**63), "z": 2**64 - 1}, prediction=2**63 - 1)),
        ("beyond", body({"x": 2**64, "y": -(2**63) - 1, "z": 10**30}, prediction="1")),  # the JSON fallback, in the same batch
        ("floats", body({"x": 1.7976931348623157e308, "y": 5e-324, "z": 2.2250738585072014e-308}, probabilities={"a": 0.1, "b": 0.9})),
        ("texts", body({" ": None, "  ": "", "1": "1", "1.0": "NaN", "null": "null", "é\u2028\n\"": "✓\x00\uffff", "🙂": "true"}, prediction="0")),
        ("wide", body({f"f{index:04d}": index / 7 for index in range(300)}, version="v2")),
        ("year1", body({"x": 1}, at="0001-01-01T00:00:00Z", version="v3")),
        ("year9999", body({"x": 1}, at="9999-12-31T23:59:59.9999999Z", version="v3")),  # digits beyond microseconds truncated
        ("leap", body({"x": 1}, at="2016-12-31T23:59:60.5Z", version="v3")),
        ("offset", body({"x": 1}, at="2026-05-06T23:30:00.000001-05:00", version="v3")),  # the next UTC day
        ("dup1", body({"x": 1}, prediction_id=reused)),
        ("dup2", body({"x": 1}, prediction_id=reused)),
        ("conflict1", body({"x": 1}, prediction_id=conflicted)),
        ("conflict2", body({"x": 2}, prediction_id=conflicted, model=REJECTED_MODEL)),  # kept out: the first one counts
        ("rejected1", body({"x": 1}, prediction_id=rejected_first, model=REJECTED_MODEL)),
        ("rejected2", body({"x": 1}, prediction_id=rejected_first)),  # its id was rejected with the first: not stored either
        ("label", label_body(reused, label=2**70, labelled_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))),
        ("label-again", label_body(reused, label="benign", labelled_at=datetime(1, 1, 1, tzinfo=timezone.utc))),
        ("label-rejected", label_body(conflicted, label=REJECTED_LABEL)),
        ("label-other", label_body(conflicted, label=-0.0, labelled_at=datetime(2026, 5, 6, tzinfo=timezone.utc))),  # rejected with it
        ("refusal", serialise_event(build_refusal_event(model_name="m", model_version=None, refused={"🙂": {"not_a_number": 2}}))),
        ("nan", body({"x": float("nan")})),  # json.dumps writes NaN, which is not JSON: refused by the parser
        ("bool-prediction", body({"x": 1}, prediction=True)),
        ("junk", "{"),
    ]


def test_a_hostile_batch_is_archived_as_the_writer_built_it_byte_for_byte_with_the_stored_at_of_its_rows(s3: Any, engine: Engine) -> None:
    add_rejecting_trigger(engine)
    add_label_rejecting_trigger(engine)
    location, direct = new_archive(s3), new_archive(s3)
    records = hostile_batch()

    outcome = write_batch(engine, records, stored_at=STORED_AT)
    key, landed = land_acknowledged(s3, location, outcome.events, (failure.message_id for failure in outcome.failures), STORED_AT)
    converted = convert_landing(s3, location)

    failed = {failure.message_id for failure in outcome.failures}
    assert failed == {"rejected1", "rejected2", "label-rejected", "label-other", "nan", "bool-prediction", "junk"}
    assert (converted.converted, converted.failures, converted.events) == ([key], [], landed) and landed == len(records) - len(failed)
    # The oracle: what the writer archived itself, i.e. archive_rows of the parsed rows the database holds.
    parsed = parse_records(records, STORED_AT)
    stored = stored_rows(engine)
    rejected_labels = {prediction_id for prediction_id, message_ids in parsed.message_ids_by_label.items() if failed & set(message_ids)}
    expected = archive_rows(
        s3, direct, predictions=[row for row in parsed.rows if row["prediction_id"] in stored],
        ground_truth=[row for row in parsed.label_events if row["prediction_id"] not in rejected_labels],
        refusals=[row for item in parsed.refusals for row in item["rows"]], prediction_values=parsed.prediction_values,
    )
    assert sorted(converted.written) == sorted(expected)
    for written in expected:
        assert s3.get_object(Bucket=location.bucket, Key=written)["Body"].read() == s3.get_object(Bucket=direct.bucket, Key=written)["Body"].read(), written
    archived = archived_rows(s3, location, "predictions", since=date(1, 1, 1), until=date(9999, 12, 31))
    assert sorted(row["prediction_id"] for row in archived) == sorted(stored)  # every stored row once, nothing rejected
    assert {row["prediction_id"]: row["stored_at"] for row in archived} == {prediction_id: row.stored_at for prediction_id, row in stored.items()}
    labels = archived_rows(s3, location, "ground_truth", since=date(1, 1, 1), until=date(9999, 12, 31))
    assert sorted(row["label"] for row in labels) == sorted([str(2**70), '"benign"'])


def test_a_batch_whose_every_record_failed_lands_nothing(s3: Any, engine: Engine) -> None:
    add_rejecting_trigger(engine)
    location = new_archive(s3)
    records = [(name, body) for name, body in hostile_batch() if name in ("rejected1", "rejected2", "nan", "junk")]
    outcome = write_batch(engine, records, stored_at=STORED_AT)
    assert len(outcome.failures) == len(records)
    assert land_acknowledged(s3, location, outcome.events, (failure.message_id for failure in outcome.failures), STORED_AT) == (None, 0)
    assert list(list_landing(s3, location)) == [] and convert_landing(s3, location).converted == []


CONVERSION_CALLS = ("ListObjectsV2", "GetObject", "PutObject", "DeleteObject")


def failing_call(s3: Any, number: int, when: str) -> list[str]:
    """Make the ``number``-th S3 call of a conversion (1-based; list, get, put or delete) fail ``when``
    (``before-call``: S3 never saw it; ``after-call``: S3 did it, its answer was lost); returns the calls made."""
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        if model.name in CONVERSION_CALLS:
            calls.append(model.name)
            if len(calls) == number:
                raise ConnectionError(f"stand-in for S3 failing at call {number} ({model.name})")

    s3.meta.events.register(f"{when}.s3", count, unique_id="failing-call")
    return calls


def readers_see(s3: Any, location: ArchiveLocation) -> dict[str, list[tuple[Any, ...]]]:
    """What a reader of the archive (``sml query``'s DuckDB) sees of each table, copies removed, sorted."""
    from sml.archive.query import run_duckdb_query

    first = {"predictions": "prediction_id", "ground_truth": "prediction_id", "predict_refusals": "refusal_id"}
    return {
        table: sorted((row.pop(key), row.pop("stored_at"), *sorted(row.items())) for row in run_duckdb_query(s3, location, f"SELECT * FROM {table}").to_pylist())
        for table, key in first.items()
    }


@pytest.mark.parametrize("when", ["before-call", "after-call"])
@pytest.mark.parametrize("compacted_between", [False, True], ids=["retried", "compacted-then-retried"])
def test_a_fault_at_any_s3_call_of_a_conversion_loses_and_doubles_nothing_a_reader_sees(s3: Any, compacted_between: bool, when: str) -> None:
    refusal = build_refusal_event(model_name="breast-cancer", model_version="v1", refused={"mean radius": {"out_of_range": 2}}, refused_at=DAY)
    first = batch(3) + batch(2, version="v2", start=3) + [("l", label_body(prediction_id_of(batch(1)[0][1]), labelled_at=DAY)), ("r", serialise_event(refusal))]
    second = batch(2, start=5) + first[:2]  # a redelivery of two events of the first batch, stored later
    clean = new_archive(s3)
    for records, stored_at in ((first, STORED_AT), (second, STORED_AT + timedelta(minutes=5))):
        put_landing(s3, clean, events_of(records), stored_at)
    convert_landing(s3, clean)
    expected = readers_see(s3, clean)
    assert [len(rows) for rows in expected.values()] == [7, 1, 1]

    number = 0
    while True:
        number += 1
        location = new_archive(s3)
        for records, stored_at in ((first, STORED_AT), (second, STORED_AT + timedelta(minutes=5))):
            put_landing(s3, location, events_of(records), stored_at)
        calls = failing_call(s3, number, when)
        try:
            failed = convert_landing(s3, location).failures
        except ConnectionError:  # the listing failed: nothing was converted
            failed = ["listing"]
        finally:
            s3.meta.events.unregister(f"{when}.s3", unique_id="failing-call")
        if len(calls) < number:  # every call of a conversion has failed once
            break
        assert failed, f"call {number} ({calls[-1]}) failed unnoticed"
        if compacted_between:  # the daily compaction merges (and deletes) what the stopped run put
            compact_days(s3, location, DAY.date(), DAY.date(), ["predictions", "ground_truth", "predict_refusals"])
        assert convert_landing(s3, location).failures == []
        assert list(list_landing(s3, location)) == []
        assert readers_see(s3, location) == expected, f"after a fault at call {number} ({calls[-1]})"
    assert number > 8  # a listing, two gets, five puts and two deletes at least


def test_a_landing_object_converted_after_its_day_was_compacted_is_read_with_it_and_compacted_again(s3: Any) -> None:
    # The writer takes stored_at before its database write, so its landing put may arrive after the daily
    # compaction listed the day; a late delivery may hold events of a compacted day too.
    location = new_archive(s3)
    records = batch(5)
    put_landing(s3, location, events_of(records[:3]), STORED_AT + timedelta(minutes=1))
    convert_landing(s3, location)
    compact_days(s3, location, DAY.date(), DAY.date(), ["predictions"])
    late = records[3:] + records[:1]  # new events and a copy of one compacted, stored before the compaction's copy
    put_landing(s3, location, events_of(late), STORED_AT)
    convert_landing(s3, location)

    seen = readers_see(s3, location)["predictions"]
    assert sorted(row[0] for row in seen) == sorted(prediction_id_of(body) for _, body in records)
    assert {row[0]: row[1] for row in seen}[prediction_id_of(records[0][1])] == STORED_AT  # the first stored copy
    again = compact_days(s3, location, DAY.date(), DAY.date(), ["predictions"])
    assert sum(outcome.rows for _, outcome in again) == 5 and readers_see(s3, location)["predictions"] == seen


def test_a_listing_that_fails_is_a_named_failure_and_the_daily_run_still_compacts(
    s3: Any, function_archive: ArchiveLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = function_archive
    put_landing(s3, location, events_of(batch(3)), STORED_AT)
    convert_landing(s3, location)
    put_landing(s3, location, events_of(batch(2, start=3)), STORED_AT + timedelta(minutes=5))
    paginator = s3.get_paginator

    def listing_fails_for_landing(name: str) -> Any:
        real = paginator(name)

        class Failing:
            def paginate(self, **kwargs: Any) -> Any:
                if kwargs.get("Prefix") == landing_prefix(location):
                    raise ConnectionError("stand-in for S3 refusing the listing")
                return real.paginate(**kwargs)

        return Failing()

    monkeypatch.setattr(s3, "get_paginator", listing_fails_for_landing)
    monkeypatch.setattr(compact, "s3_client", functools.cache(lambda: s3))
    failed = convert_landing(s3, location)
    assert failed.converted == [] and failed.failures == [f"s3://{location.bucket}/archive/landing/: listing failed: stand-in for S3 refusing the listing"]
    with pytest.raises(ConversionFailed, match="listing failed"):
        compact.handler({"time": (DAY + timedelta(days=1)).isoformat()}, new_lambda_context("compact", region="us-east-1", timeout_s=900))
    assert [item.compacted for item in list_partition(s3, location, Partition("predictions", DAY.date(), "breast-cancer"))] == [True]


def test_a_key_in_the_landing_area_that_is_not_a_landing_object_is_named_at_each_conversion_and_left(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    location = new_archive(s3)
    stray = f"{landing_prefix(location)}notes.json"
    s3.put_object(Bucket=location.bucket, Key=stray, Body=b"{}")
    kept = put_landing(s3, location, events_of(batch(1)), STORED_AT)
    with caplog.at_level("WARNING", logger="sml.archive.landing"):
        outcome = convert_landing(s3, location)
    assert (outcome.converted, outcome.failures) == ([kept], [])
    assert f"s3://{location.bucket}/{stray} is not a landing object" in caplog.text
    assert s3.get_object(Bucket=location.bucket, Key=stray)["Body"].read() == b"{}"
