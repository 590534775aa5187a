"""DLQ inspect and replay: on moto (receive → send → delete) and, stubbed, AWS's message move tasks."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from writer_support import create_queue_with_dlq, event_body, queue_bodies, send_bodies

from sml.cli.main import main
from sml.core.errors import SmlError
from sml.writer.replay import PARSES_FINE, MoveTasksUnsupported, cancel_move_task, inspect_dlq, list_move_tasks, replay_dlq

DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:sml-dlq"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:sml-events"
DLQ_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/sml-dlq"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/sml-events"


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queues(sqs: Any) -> tuple[str, str]:
    return create_queue_with_dlq(sqs)


def visible_count(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def test_inspect_counts_ages_and_explains_each_sample_without_hiding_it(sqs: Any, queues: tuple[str, str]) -> None:
    _, dlq_url = queues
    sent_after = datetime.now(timezone.utc).replace(microsecond=0)
    bodies = ["{broken", json.dumps({"schema_version": 7}), event_body()]
    send_bodies(sqs, dlq_url, bodies)
    sent_before = datetime.now(timezone.utc) + timedelta(seconds=1)
    now = sent_before + timedelta(hours=2)

    summary = inspect_dlq(sqs, dlq_url, sample=5, now=now)

    assert (summary.visible, summary.in_flight) == (3, 0)
    assert summary.oldest_age_s is not None
    assert (now - sent_before).total_seconds() <= summary.oldest_age_s <= (now - sent_after).total_seconds()
    reasons = {sample.body: sample.reason for sample in summary.samples}
    assert reasons["{broken"].startswith("unparseable event: body: not valid JSON")
    assert "schema_version: unsupported schema version 7" in reasons[bodies[1]]
    assert reasons[bodies[2]] == PARSES_FINE
    assert visible_count(sqs, dlq_url) == 3


def test_inspect_explains_bodies_of_any_depth_encoding_or_shape_one_by_one(sqs: Any, queues: tuple[str, str]) -> None:
    # A body nested ~1,000 deep made inspect crash (RecursionError) and call the events of its batch fine.
    _, dlq_url = queues
    deep = "[" * 100_000 + "]" * 100_000
    bodies = [deep, '{"features":' + deep + "}", "\u202e" + "{}" * 10, "12", event_body()]
    send_bodies(sqs, dlq_url, bodies)

    summary = inspect_dlq(sqs, dlq_url, sample=10)

    reasons = {sample.body: sample.reason for sample in summary.samples}
    assert reasons[bodies[0]] == reasons[bodies[1]] == "unparseable event: body: JSON nested too deeply to read (an event nests 3 levels at most)"
    assert reasons[bodies[2]].startswith("unparseable event: body: not valid JSON")
    assert reasons[bodies[3]] == "unparseable event: body: expected a JSON object, got int"
    assert reasons[bodies[4]] == PARSES_FINE


def test_inspect_with_sample_zero_only_counts(sqs: Any, queues: tuple[str, str]) -> None:
    _, dlq_url = queues
    send_bodies(sqs, dlq_url, ["a", "b"])

    summary = inspect_dlq(sqs, dlq_url, sample=0)

    assert (summary.visible, summary.samples, summary.oldest_age_s) == (2, [], None)


def test_replay_moves_every_message_back_with_its_body_unchanged(sqs: Any, queues: tuple[str, str]) -> None:
    queue_url, dlq_url = queues
    bodies = [event_body(radius=float(index)) for index in range(23)]
    send_bodies(sqs, dlq_url, bodies)
    progress: list[tuple[int, int | None]] = []

    outcome = replay_dlq(sqs, dlq_url, queue_url, progress=lambda moved, total: progress.append((moved, total)))

    assert (outcome.method, outcome.moved, outcome.send_failures) == ("receive-send-delete", 23, 0)
    assert visible_count(sqs, dlq_url) == 0
    assert sorted(queue_bodies(sqs, queue_url)) == sorted(bodies)
    assert progress[0] == (0, 23) and progress[-1] == (23, 23)


def test_replay_keeps_message_attributes(sqs: Any, queues: tuple[str, str]) -> None:
    queue_url, dlq_url = queues
    attributes = {"trace": {"DataType": "String", "StringValue": "abc"}, "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
    sqs.send_message(QueueUrl=dlq_url, MessageBody="with attributes", MessageAttributes=attributes)

    replay_dlq(sqs, dlq_url, queue_url)

    (moved,) = sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"])["Messages"]
    assert moved["Body"] == "with attributes"
    kept = {name: {key: value[key] for key in attributes[name]} for name, value in moved["MessageAttributes"].items()}
    assert kept == attributes


def test_replay_max_moves_only_that_many(sqs: Any, queues: tuple[str, str]) -> None:
    queue_url, dlq_url = queues
    send_bodies(sqs, dlq_url, [f"body {index}" for index in range(15)])

    outcome = replay_dlq(sqs, dlq_url, queue_url, max_messages=12)

    assert outcome.moved == 12
    assert (visible_count(sqs, dlq_url), visible_count(sqs, queue_url)) == (3, 12)


def test_dry_run_moves_nothing_and_says_how_many_would_move(sqs: Any, queues: tuple[str, str]) -> None:
    queue_url, dlq_url = queues
    send_bodies(sqs, dlq_url, ["a", "b", "c"])

    outcome = replay_dlq(sqs, dlq_url, queue_url, dry_run=True, max_messages=2)

    assert (outcome.method, outcome.moved) == ("dry-run", 2)
    assert (visible_count(sqs, dlq_url), visible_count(sqs, queue_url)) == (3, 0)


@pytest.mark.parametrize(("arguments", "option"), [({"rate": 0}, "--rate"), ({"rate": 501}, "--rate"), ({"max_messages": 0}, "--max")])
def test_out_of_range_options_are_refused_naming_the_option(
    sqs: Any, queues: tuple[str, str], arguments: dict[str, int], option: str
) -> None:
    queue_url, dlq_url = queues
    with pytest.raises(SmlError, match=f"^{option} must be"):
        replay_dlq(sqs, dlq_url, queue_url, **arguments)


@pytest.mark.parametrize("call", [list_move_tasks, cancel_move_task], ids=["status", "cancel"])
def test_move_task_status_and_cancel_say_moto_has_none(sqs: Any, queues: tuple[str, str], call: Any) -> None:
    with pytest.raises(MoveTasksUnsupported, match="moto does not implement them"):
        call(sqs, queues[1])


# --------------------------------------------------------------------------------------------
# AWS's message move tasks, through botocore's Stubber (moto has none)


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("sqs", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expect_attributes(stubber: Stubber, queue_url: str, names: list[str], attributes: dict[str, str]) -> None:
    stubber.add_response("get_queue_attributes", {"Attributes": attributes}, {"QueueUrl": queue_url, "AttributeNames": names})


def expect_counts(stubber: Stubber, visible: int) -> None:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    expect_attributes(stubber, DLQ_URL, names, {names[0]: str(visible), names[1]: "0"})


def expect_arns(stubber: Stubber, *urls_and_arns: tuple[str, str]) -> None:
    for url, arn in urls_and_arns:
        expect_attributes(stubber, url, ["QueueArn"], {"QueueArn": arn})


OLDER_START_MS = 1_714_560_000_000  # 2024-05-01T10:40:00Z
OWN_START_MS = 1_714_563_600_000  # an hour later
LISTING = {"SourceArn": DLQ_ARN, "MaxResults": 10}


def task(status: str, moved: int, handle: str = "handle-1", *, started_ms: int = OWN_START_MS, **extra: Any) -> dict[str, Any]:
    """A ListMessageMoveTasksResultEntry shaped as the SQS API reference documents it: TaskHandle
    only while RUNNING, FailureReason only when FAILED, the rate only when the start request set it."""
    entry: dict[str, Any] = {
        "Status": status,
        "SourceArn": DLQ_ARN,
        "DestinationArn": QUEUE_ARN,
        "ApproximateNumberOfMessagesMoved": moved,
        "ApproximateNumberOfMessagesToMove": 40,
        "StartedTimestamp": started_ms,
        **extra,
    }
    if status == "RUNNING":
        entry["TaskHandle"] = handle
    return entry


def older_task() -> dict[str, Any]:
    return task("COMPLETED", 3, started_ms=OLDER_START_MS)


def expect_start(stubber: Stubber, listed_before: list[dict[str, Any]], **rate: int) -> None:
    expect_counts(stubber, 40)
    expect_arns(stubber, (DLQ_URL, DLQ_ARN), (QUEUE_URL, QUEUE_ARN))
    stubber.add_response("list_message_move_tasks", {"Results": listed_before}, LISTING)
    stubber.add_response("start_message_move_task", {"TaskHandle": "handle-1"}, {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN, **rate})


def expect_listing(stubber: Stubber, *entries: dict[str, Any]) -> None:
    stubber.add_response("list_message_move_tasks", {"Results": list(entries)}, LISTING)


def test_on_aws_replay_starts_a_move_task_at_the_rate_and_follows_it_after_its_handle_is_gone(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()], MaxNumberOfMessagesPerSecond=25)
    expect_listing(stubber, task("RUNNING", 10, MaxNumberOfMessagesPerSecond=25), older_task())
    expect_listing(stubber, task("COMPLETED", 40, MaxNumberOfMessagesPerSecond=25), older_task())
    progress: list[tuple[int, int | None]] = []

    outcome = replay_dlq(client, DLQ_URL, QUEUE_URL, rate=25, poll_interval_s=0, progress=lambda m, t: progress.append((m, t)))

    assert (outcome.method, outcome.moved, outcome.task_handle, outcome.task_status) == ("message-move-task", 40, "handle-1", "COMPLETED")
    assert progress == [(10, 40), (40, 40)]


def test_on_aws_a_task_that_finished_before_the_first_poll_is_found_by_its_start_time(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()])
    expect_listing(stubber, task("COMPLETED", 40), older_task())

    outcome = replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0)

    assert (outcome.moved, outcome.task_status) == (40, "COMPLETED")


def test_on_aws_an_older_finished_task_is_never_taken_for_the_new_one(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()])
    expect_listing(stubber, older_task())  # the new task is not listed yet
    expect_listing(stubber, task("RUNNING", 5), older_task())
    expect_listing(stubber, task("COMPLETED", 40), older_task())

    outcome = replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0)

    assert (outcome.moved, outcome.task_status) == (40, "COMPLETED")


def test_on_aws_the_first_move_task_of_a_queue_is_followed_too(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [])
    expect_listing(stubber, task("COMPLETED", 40))

    assert replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0).moved == 40


def test_on_aws_a_failed_move_task_is_an_error_with_its_reason(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()])
    expect_listing(stubber, task("RUNNING", 2), older_task())
    expect_listing(stubber, task("FAILED", 7, FailureReason="AccessDenied on kms:Decrypt"), older_task())

    with pytest.raises(SmlError, match="failed after 7 message\\(s\\): AccessDenied on kms:Decrypt"):
        replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0)


def test_on_aws_a_cancelled_move_task_ends_the_replay_with_what_it_moved(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()])
    expect_listing(stubber, task("RUNNING", 12), older_task())
    expect_listing(stubber, task("CANCELLING", 13), older_task())
    expect_listing(stubber, task("CANCELLED", 13), older_task())

    outcome = replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0)

    assert (outcome.moved, outcome.task_status) == (13, "CANCELLED")


def test_on_aws_the_wait_is_bounded_and_says_how_to_follow_the_task(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_start(stubber, [older_task()])
    expect_listing(stubber, task("RUNNING", 12), older_task())

    with pytest.raises(SmlError, match=r"handle-1 is still RUNNING with 12 message\(s\) moved after 0 s .*--status.*--cancel"):
        replay_dlq(client, DLQ_URL, QUEUE_URL, poll_interval_s=0, max_wait_s=0)


def test_on_aws_an_error_other_than_a_missing_api_is_not_hidden_by_the_fallback(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_counts(stubber, 40)
    expect_arns(stubber, (DLQ_URL, DLQ_ARN), (QUEUE_URL, QUEUE_ARN))
    expect_listing(stubber)
    stubber.add_client_error("start_message_move_task", "AccessDenied", "not authorized", http_status_code=403)

    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        replay_dlq(client, DLQ_URL, QUEUE_URL)


def test_replay_without_move_task_goes_straight_to_receive_send_delete(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_counts(stubber, 0)
    stubber.add_response("receive_message", {"Messages": []})  # a start_message_move_task call would fail the stub

    outcome = replay_dlq(client, DLQ_URL, QUEUE_URL, use_move_task=False)

    assert (outcome.method, outcome.moved) == ("receive-send-delete", 0)


def test_on_aws_status_lists_tasks_and_cancel_stops_the_running_one(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expect_arns(stubber, (DLQ_URL, DLQ_ARN))
    stubber.add_response("list_message_move_tasks", {"Results": [task("RUNNING", 12, started_ms=OLDER_START_MS), older_task()]})
    expect_arns(stubber, (DLQ_URL, DLQ_ARN))
    stubber.add_response("list_message_move_tasks", {"Results": [task("RUNNING", 12)]})
    stubber.add_response("cancel_message_move_task", {"ApproximateNumberOfMessagesMoved": 13}, {"TaskHandle": "handle-1"})

    statuses = list_move_tasks(client, DLQ_URL)
    cancelled = cancel_move_task(client, DLQ_URL)

    assert [(status.status, status.moved, status.to_move) for status in statuses] == [("RUNNING", 12, 40), ("COMPLETED", 3, 40)]
    assert statuses[0].started_at == datetime(2024, 5, 1, 10, 40, tzinfo=timezone.utc)
    assert cancelled is not None and (cancelled.status, cancelled.moved) == ("CANCELLING", 13)


# --------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def cli_env(sqs: Any, queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str]:
    monkeypatch.chdir(tmp_path)  # no .sml/stack.json here: settings come from the environment
    monkeypatch.delenv("SML_STATE_DIR", raising=False)
    queue_url, dlq_url = queues
    monkeypatch.setenv("SML_QUEUE_URL", queue_url)
    monkeypatch.setenv("SML_DLQ_URL", dlq_url)
    return queues


def test_cli_inspect_then_replay_empties_the_dlq(sqs: Any, cli_env: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    queue_url, dlq_url = cli_env
    send_bodies(sqs, dlq_url, ["{broken", event_body()])

    assert main(["dlq", "inspect"]) == 0
    inspected = capsys.readouterr().out
    assert main(["dlq", "replay", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert main(["dlq", "replay"]) == 0
    replayed = capsys.readouterr().out

    assert "2 visible, 0 in flight" in inspected
    assert "why:  unparseable event: body: not valid JSON" in inspected and f"why:  {PARSES_FINE}" in inspected
    assert "dry run: 2 message(s) would move" in dry
    assert "moved 2 message(s)" in replayed
    assert (visible_count(sqs, dlq_url), visible_count(sqs, queue_url)) == (0, 2)


def test_cli_inspect_prints_a_deep_or_unprintable_body_escaped_and_cut(sqs: Any, cli_env: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, dlq_url = cli_env
    send_bodies(sqs, dlq_url, ["[" * 5_000 + "]" * 5_000, "\u202e\x7f{"])

    assert main(["dlq", "inspect"]) == 0

    output = capsys.readouterr().out
    assert "why:  unparseable event: body: JSON nested too deeply to read" in output
    assert "body: " + "[" * 240 + "…" in output
    assert "body: \\u202e\\x7f{" in output and "\u202e" not in output


def test_cli_status_on_moto_is_a_clear_error(cli_env: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "--status"]) == 2
    assert "moto does not implement them" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--status", "--cancel"])
def test_cli_move_task_options_against_the_local_stack_say_they_exist_only_on_aws(
    cli_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    monkeypatch.setenv("SML_AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted

    assert main(["dlq", "replay", option]) == 2
    assert f"{option}: message move tasks exist only on AWS" in capsys.readouterr().err


def test_cli_without_a_dlq_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SML_STATE_DIR", raising=False)
    monkeypatch.delenv("SML_DLQ_URL", raising=False)

    assert main(["dlq", "inspect"]) == 2
    assert "SML_DLQ_URL" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["inspect"], ["replay"], ["replay", "--dry-run"]])
def test_cli_against_an_endpoint_that_is_gone_is_one_line_naming_the_dlq(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    # What a stack.json left by a killed `sml up` leads to: an endpoint nothing listens on.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SML_STATE_DIR", raising=False)
    monkeypatch.setenv("SML_AWS_ENDPOINT_URL", gone)
    monkeypatch.setenv("SML_DLQ_URL", f"{gone}/000000000000/sml-events-dlq")
    monkeypatch.setenv("SML_QUEUE_URL", f"{gone}/000000000000/sml-events")

    assert main(["dlq", *arguments]) == 2

    error = capsys.readouterr().err
    assert f"sml dlq: error: {gone}/000000000000/sml-events-dlq: Could not connect" in error
    assert "start the local stack with `sml up`" in error
