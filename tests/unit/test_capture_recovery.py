"""Reading missed events back from predict's logs: every accepted export format, and bad entries named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sml.predict.capture_recovery import missed_events_from_log
from sml.cli.main import main
from sml.core.events import build_prediction_event, serialise_prediction_event


def body(**overrides: object) -> str:
    fields = {"model_name": "breast-cancer", "model_version": "v1", "features": {"x": 1.0}, "prediction": "benign"}
    return serialise_prediction_event(build_prediction_event(**{**fields, **overrides}))  # type: ignore[arg-type]


def miss_line(message_body: str) -> str:
    return json.dumps({"level": "ERROR", "message": "prediction event not captured", "capture_miss": "timeout", "message_body": message_body})


def test_powertools_lines_with_or_without_a_timestamp_prefix_are_read_once_each() -> None:
    first, second = body(), body()
    text = "\n".join(
        [
            miss_line(first),
            "2026-11-27T10:00:00.000Z\t" + miss_line(second),
            miss_line(first),  # the same event logged twice is sent once
            json.dumps({"level": "INFO", "message": "served"}),
            "plain text that is not JSON",
        ]
    )
    found = missed_events_from_log(text, source="predict.log")
    assert [body_ for _, body_ in found.bodies] == [first, second]
    assert found.problems == []


def test_the_json_of_aws_logs_filter_log_events_is_read() -> None:
    event_body = body()
    document = {"events": [{"logStreamName": "s", "message": miss_line(event_body)}, {"message": "START RequestId: x"}]}
    found = missed_events_from_log(json.dumps(document), source="export.json")
    assert found.bodies == [(json.loads(event_body)["prediction_id"], event_body)]


def test_records_whose_body_breaks_the_contract_are_skipped_and_named() -> None:
    broken = json.loads(body())
    broken["schema_version"] = 9
    text = "\n".join([miss_line(json.dumps(broken)), json.dumps({"capture_miss": "x"}), miss_line(body())])
    found = missed_events_from_log(text, source="predict.log")
    assert len(found.bodies) == 1
    assert found.problems[0].startswith("predict.log:1: message_body is not a valid prediction or refusal event (schema_version")
    assert found.problems[1] == "predict.log:2: a capture_miss record without a message_body string"


def test_entries_of_any_depth_or_shape_are_read_or_named_one_by_one() -> None:
    # json.loads of a line nested ~1,000 deep raised RecursionError and `sml capture resend` crashed.
    deep = "[" * 50_000 + "]" * 50_000
    good = body()
    text = "\n".join([
        miss_line(deep),
        '{"capture_miss": "timeout", "message_body": ' + deep + "}",
        '{"level": "INFO", "nested": ' + deep + "}",
        miss_line(good),
    ])
    found = missed_events_from_log(text, source="predict.log")
    assert [body_ for _, body_ in found.bodies] == [good]
    assert found.problems == [
        "predict.log:1: message_body is not a valid prediction or refusal event (body: JSON nested too deeply to read (an event nests 3 levels at most))",
        "predict.log:2: a capture_miss record nested too deeply to read as JSON",
    ]
    document = {"events": [{"message": 5}, {"message": None}, "a string", {"message": miss_line(good)}]}
    assert missed_events_from_log(json.dumps(document), source="export.json").bodies == [(json.loads(good)["prediction_id"], good)]
    assert missed_events_from_log('{"events": ' + deep + "}", source="export.json").bodies == []


def test_a_missing_log_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "resend", "--log-file", str(tmp_path / "nope.log")]) == 2
    assert f"--log-file {tmp_path / 'nope.log'}: cannot read it" in capsys.readouterr().err


def test_dry_run_counts_without_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "predict.log"
    export.write_text(miss_line(body()) + "\n" + miss_line(body()) + "\n")
    assert main(["capture", "resend", "--log-file", str(export), "--dry-run"]) == 0
    assert "would send 2 event(s)" in capsys.readouterr().out
