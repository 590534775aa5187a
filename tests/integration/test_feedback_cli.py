"""`sml feedback --file` on moto: bad lines reported by file and line, good labels queued, checked against the champion."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sml.cli.commands.feedback import send_label_bodies
from sml.cli.main import main
from sml.core.events import GroundTruthEvent, new_prediction_id, parse_event
from tests.predict_support import APP_NAME, register_champion, trained_model


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    with mock_aws():
        monkeypatch.chdir(tmp_path)  # no .sml/stack.json here: settings come from the environment
        for name in ("SML_STATE_DIR", "SML_AWS_ENDPOINT_URL", "SML_QUEUE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queue_url(sqs: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex}")["QueueUrl"]
    monkeypatch.setenv("SML_QUEUE_URL", url)
    return url


@pytest.fixture
def champion(sqs: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str | int, ...]:
    s3, ssm = boto3.client("s3", region_name="us-east-1"), boto3.client("ssm", region_name="us-east-1")
    bucket = f"sml-feedback-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    register_champion(s3, ssm, bucket=bucket, work_dir=tmp_path)
    monkeypatch.setenv("SML_BUCKET", bucket)
    monkeypatch.setenv("SML_APP_NAME", APP_NAME)
    return trained_model().classes


def drain(sqs: Any, queue_url: str) -> list[GroundTruthEvent]:
    events = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        events += [parse_event(message["Body"]) for message in batch]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return events


def test_a_csv_file_is_checked_against_the_champion_and_its_good_lines_sent(
    sqs: Any, queue_url: str, champion: tuple[str | int, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [new_prediction_id() for _ in range(57)]
    rows = [f"{prediction_id},{champion[index % 2]},2026-11-{1 + index % 28:02d}T08:00:00Z" for index, prediction_id in enumerate(ids)]
    rows.insert(10, f"{new_prediction_id()},not-a-class,")
    labels = tmp_path / "labels.csv"
    labels.write_text("prediction_id,label,labelled_at\n" + "\n".join(rows) + "\n", encoding="utf-8")

    code = main(["feedback", "--file", str(labels), "--source", "backfill"])

    out = capsys.readouterr().out
    assert code == 1, "a bad line makes the exit code say so"
    assert f"skipped {labels}:12: label: 'not-a-class' is not a class of the model" in out
    assert f"sent 57 of 57 label(s) from {labels}" in out and "1 bad line(s)" in out
    events = drain(sqs, queue_url)
    assert sorted(event.prediction_id for event in events) == sorted(ids)
    assert {event.source for event in events} == {"backfill"}


def test_a_jsonl_file_with_any_label_and_a_dry_run(sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.jsonl"
    items = [{"prediction_id": new_prediction_id(), "label": f"class-{index}"} for index in range(12)]
    labels.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")

    assert main(["feedback", "--file", str(labels), "--any-label", "--dry-run"]) == 0
    assert "would send 12 label(s)" in capsys.readouterr().out
    assert drain(sqs, queue_url) == []

    assert main(["feedback", "--file", str(labels), "--any-label", "--workers", "3"]) == 0
    assert sorted(event.label for event in drain(sqs, queue_url)) == sorted(item["label"] for item in items)


def test_duplicate_lines_send_the_last_label_every_time_and_are_reported(sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [new_prediction_id() for _ in range(30)]
    rows = [f"{prediction_id},first" for prediction_id in ids] + [f"{prediction_id},second" for prediction_id in ids[:20]]
    labels = tmp_path / "labels.csv"
    labels.write_text("prediction_id,label\n" + "\n".join(rows) + "\n", encoding="utf-8")

    for _ in range(2):
        assert main(["feedback", "--file", str(labels), "--any-label", "--workers", "8"]) == 0
        out = capsys.readouterr().out
        events = drain(sqs, queue_url)
        assert sorted((event.prediction_id, event.label) for event in events) == sorted([(pid, "second") for pid in ids[:20]] + [(pid, "first") for pid in ids[20:]])
        assert f"superseded {labels}:2: prediction_id {ids[0]} is labelled again on line 32; the last line wins" in out
        assert out.count("superseded ") == 20
    with pytest.raises(SystemExit):
        main(["feedback", "--help"])
    assert "the last line wins" in " ".join(capsys.readouterr().out.split())


def test_without_a_champion_the_check_cannot_run_and_the_error_says_how_to_skip_it(
    sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = f"sml-empty-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("SML_BUCKET", bucket)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"prediction_id,label\n{new_prediction_id()},benign\n", encoding="utf-8")

    assert main(["feedback", "--file", str(labels)]) == 2
    assert "pass --any-label to skip the check" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("labels.txt", [], "unknown kind of file; name it .csv, .jsonl or .ndjson"),
        ("missing.csv", [], "cannot read it"),
        ("labels.csv", ["--source", ""], "--source: must be 1 to 128 characters"),
    ],
)
def test_file_and_option_errors_name_the_option(
    sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, args: list[str], message: str
) -> None:
    if name != "missing.csv":
        (tmp_path / name).write_text("prediction_id,label\n", encoding="utf-8")

    assert main(["feedback", "--file", str(tmp_path / name), "--any-label", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.csv", "", "no labels to send: it is empty; a CSV starts with a header such as prediction_id,label"),
        ("labels.jsonl", "", "no labels to send: it is empty"),
        ("labels.csv", "prediction_id,label\n", "no labels to send: it has a header and no rows"),
        ("labels.jsonl", "\n \n", "no labels to send: it is empty"),
    ],
)
def test_a_file_without_labels_is_one_error_whatever_its_kind(
    sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")

    assert main(["feedback", "--file", str(tmp_path / name), "--any-label"]) == 2
    assert f"--file {tmp_path / name}: {message}" in capsys.readouterr().err


def test_a_byte_that_is_not_utf8_deep_in_a_large_file_is_named_with_its_offset_and_line(
    sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The text reader decodes in chunks and said "byte 1234" of some chunk, with no line.
    lines = [f"{new_prediction_id()},benign\n".encode() for _ in range(20_000)]
    before = b"prediction_id,label\n" + b"".join(lines[:15_000])
    labels = tmp_path / "labels.csv"
    labels.write_bytes(before + b"\xff" + b"".join(lines[15_000:]))

    assert main(["feedback", "--file", str(labels), "--any-label"]) == 2
    assert f"--file {labels}: not UTF-8 text: byte 0xff at offset {len(before)} (line 15002: invalid start byte)" in capsys.readouterr().err


def test_labels_the_queue_never_accepts_are_written_for_a_rerun(sqs: Any, queue_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.jsonl"
    items = [{"prediction_id": new_prediction_id(), "label": "benign", "source": "crm"} for _ in range(3)]
    labels.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")
    gone = queue_url.replace("events-", "gone-")

    assert main(["feedback", "--file", str(labels), "--any-label", "--queue-url", gone]) == 1

    leftover = tmp_path / "labels.jsonl.unsent.jsonl"
    assert f"written to {leftover}" in capsys.readouterr().out
    resent = [json.loads(line) for line in leftover.read_text(encoding="utf-8").splitlines()]
    assert [(item["prediction_id"], item["label"], item["source"]) for item in resent] == [(item["prediction_id"], "benign", "crm") for item in items]
    assert main(["feedback", "--file", str(leftover), "--any-label"]) == 0
    assert len(drain(sqs, queue_url)) == 3


class RefusingFirstTries:
    """An SQS client that accepts SendMessageBatch entries only from the second time each is offered."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            fresh = [entry for entry in Entries if entry["MessageBody"] not in self._seen]
            self._seen.update(entry["MessageBody"] for entry in Entries)
        accepted = [entry for entry in Entries if entry not in fresh[:1]]
        response = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=accepted) if accepted else {"Successful": []}
        failed = [{"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"} for entry in fresh[:1]]
        return {**response, "Failed": failed}


def test_refused_entries_are_sent_again_and_progress_counts_each_label_once(sqs: Any, queue_url: str) -> None:
    from sml.core.events import build_ground_truth_event, serialise_ground_truth_event

    events = [build_ground_truth_event(prediction_id=new_prediction_id(), label="benign") for _ in range(95)]
    bodies = [(event.prediction_id, serialise_ground_truth_event(event)) for event in events]
    client = RefusingFirstTries(sqs)
    counted: list[int] = []
    lock = threading.Lock()

    def progress(sent: int) -> None:
        with lock:
            counted.append(sent)

    unsent = send_label_bodies(client, queue_url, bodies, workers=4, progress=progress, pause_s=0)

    assert unsent == []
    assert sum(counted) == 95
    assert client.calls == 10 + 1, "the ten refused entries go again together, in one call"
    assert sorted(event.prediction_id for event in drain(sqs, queue_url)) == sorted(event.prediction_id for event in events)


def test_an_interrupt_stops_sending_chunks_not_yet_started(sqs: Any, queue_url: str) -> None:
    from sml.core.events import build_ground_truth_event, serialise_ground_truth_event

    bodies = [(event.prediction_id, serialise_ground_truth_event(event)) for event in (build_ground_truth_event(prediction_id=new_prediction_id(), label="benign") for _ in range(200))]
    accepted: list[int] = []

    def interrupt_after_the_first_call(sent: int) -> None:  # stands in for Ctrl-C
        accepted.append(sent)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        send_label_bodies(sqs, queue_url, bodies, workers=1, progress=interrupt_after_the_first_call)

    # The single worker may start a chunk or two more before the pool is shut down; not the other 18.
    assert 10 <= sum(accepted) <= 30
    assert len(drain(sqs, queue_url)) == sum(accepted)
