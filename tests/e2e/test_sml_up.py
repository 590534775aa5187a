"""`sml up` as a user runs it: a separate process, reached over HTTP, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 60  # a bound on waiting, not a speed claim: the machine may be busy

HANDLERS = '''
import json, os, time, boto3

def predict(event, context):
    sqs = boto3.client("sqs", endpoint_url=os.environ["SML_AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    sqs.send_message(QueueUrl=os.environ["SML_QUEUE_URL"], MessageBody=event["body"])
    return {"queued": json.loads(event["body"])}

def writer(event, context):
    gate = os.path.join(os.environ["SML_STATE_DIR"], "closed")
    while os.path.exists(gate):  # a test holds the writer here
        time.sleep(0.05)
    with open(os.path.join(os.environ["SML_STATE_DIR"], "written.jsonl"), "a") as out:
        for record in event["Records"]:
            out.write(record["body"] + "\\n")
'''


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"sml up exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {STARTUP_LIMIT_S} s")
        time.sleep(0.1)


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def port_is_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname, parts.port)) != 0


@pytest.fixture
def sml_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    (tmp_path / "e2e_handlers.py").write_text(HANDLERS)
    state_dir = tmp_path / "state"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "shared"), str(REPO)])}
    for name in ("SML_DATABASE_URL", "SML_STATE_DIR", "SML_AWS_ENDPOINT_URL"):
        environment.pop(name, None)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "sml.cli.main", "up",
            "--state-dir", str(state_dir),
            "--predict-handler", "e2e_handlers:predict",
            "--writer-handler", "e2e_handlers:writer",
            "--batching-window", "0",
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, state_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sml_up_serves_writes_stack_json_and_stops_cleanly_on_sigint(sml_up: tuple[subprocess.Popen[str], Path]) -> None:
    process, state_dir = sml_up
    stack_file = state_dir / "stack.json"
    wait_for(stack_file, process)
    stack = json.loads(stack_file.read_text())
    assert stack["pid"] == process.pid
    assert set(stack) >= {"function_url", "aws_endpoint_url", "region", "queue_url", "dlq_url", "topic_arn", "bucket", "database_url"}

    response = requests.post(stack["function_url"], json={"n": 7}, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"queued": {"n": 7}}
    written = state_dir / "written.jsonl"
    deadline = time.monotonic() + STARTUP_LIMIT_S
    # Before: waited for the file to exist, which it does from the writer's open() on, before its line is written.
    while not (written.exists() and written.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert written.read_text() == '{"n": 7}\n'
    # A replaced writer gets SQS batches only: the stack's retention step is the stock writer's action.
    assert "KeyError" not in "".join(log.read_text() for log in (state_dir / "logs").glob("writer*"))

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=5) == 0  # the bound for a clean stop

    assert not stack_file.exists()
    assert children_of(process.pid) == []
    assert port_is_closed(stack["function_url"])
    assert port_is_closed(stack["aws_endpoint_url"])
    stdout = process.stdout.read() if process.stdout else ""
    assert stack["function_url"] in stdout
    assert "stopped" in stdout


def test_sml_up_stops_on_sigterm(sml_up: tuple[subprocess.Popen[str], Path]) -> None:
    process, state_dir = sml_up
    wait_for(state_dir / "stack.json", process)

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=5) == 0
    assert not (state_dir / "stack.json").exists()


def test_a_second_sml_up_on_the_same_state_dir_is_refused(sml_up: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    process, state_dir = sml_up
    wait_for(state_dir / "stack.json", process)

    second = subprocess.run(
        [sys.executable, "-m", "sml.cli.main", "up", "--state-dir", str(state_dir)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "shared"), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=STARTUP_LIMIT_S,
        check=False,
    )

    assert second.returncode == 2
    assert f"sml up: error: a stack is already running in {state_dir} (pid {process.pid}); stop it or use --state-dir\n" == second.stderr
    assert process.poll() is None
    assert json.loads((state_dir / "stack.json").read_text())["pid"] == process.pid


def test_sml_up_stops_with_an_error_when_its_aws_endpoint_dies(sml_up: tuple[subprocess.Popen[str], Path]) -> None:
    process, state_dir = sml_up
    wait_for(state_dir / "stack.json", process)
    fauxqs = [pid for pid in children_of(process.pid) if b"server.mjs" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(fauxqs) == 1

    os.kill(fauxqs[0], signal.SIGKILL)

    # Limping on would answer predictions whose events have nowhere to go, and what the emulator held is gone.
    assert process.wait(timeout=STARTUP_LIMIT_S) == 2  # an error the user can act on, as every SmlError
    stderr = process.stderr.read() if process.stderr else ""
    assert f"the local AWS endpoint for S3, SQS, SNS (fauxqs, pid {fauxqs[0]}) was killed by SIGKILL" in stderr
    assert "aws-fauxqs.log" in stderr
    assert not (state_dir / "stack.json").exists()
    assert children_of(process.pid) == []


def queue_bodies(stack: dict[str, str], count: int) -> list[str]:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=stack["aws_endpoint_url"], region_name=stack["region"])
    bodies = [json.dumps({"n": n}) for n in range(count)]
    for start in range(0, count, 10):
        entries = [{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies[start : start + 10])]
        assert not sqs.send_message_batch(QueueUrl=stack["queue_url"], Entries=entries).get("Failed")
    return bodies


def test_a_stopping_sml_up_stores_the_queued_events_before_its_emulator_takes_them_away(
    sml_up: tuple[subprocess.Popen[str], Path],
) -> None:
    process, state_dir = sml_up
    wait_for(state_dir / "stack.json", process)
    stack = json.loads((state_dir / "stack.json").read_text())
    gate = state_dir / "closed"
    gate.touch()  # the writer takes a batch or two and holds them, so most events are still queued at Ctrl-C
    bodies = queue_bodies(stack, 100)

    process.send_signal(signal.SIGINT)
    gate.unlink()

    assert process.wait(timeout=STARTUP_LIMIT_S) == 0
    assert sorted((state_dir / "written.jsonl").read_text().splitlines()) == sorted(bodies)
    assert "storing the" in (process.stdout.read() if process.stdout else "")


def test_a_second_ctrl_c_stops_at_once_and_says_what_the_emulator_took_with_it(sml_up: tuple[subprocess.Popen[str], Path]) -> None:
    process, state_dir = sml_up
    wait_for(state_dir / "stack.json", process)
    stack = json.loads((state_dir / "stack.json").read_text())
    gate = state_dir / "closed"
    gate.touch()
    queue_bodies(stack, 100)

    process.send_signal(signal.SIGINT)
    while not port_is_closed(stack["function_url"]):  # the first Ctrl-C has been taken: no more requests
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    gate.unlink()

    assert process.wait(timeout=STARTUP_LIMIT_S) == 0
    written = (state_dir / "written.jsonl").read_text().splitlines() if (state_dir / "written.jsonl").exists() else []
    stderr = process.stderr.read() if process.stderr else ""
    assert f"discarded {100 - len(written)} queued event(s) not stored" in stderr
