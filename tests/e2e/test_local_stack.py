"""The local stack from this process: AWS endpoint, resources, function containers, lifecycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from sml.core.errors import SmlError
from sml.local.aws_endpoint import start_aws_server
from sml.local.stack import LocalStack, LocalStackConfig, lock_state_dir, running_stack_pid, stack_lock_holder

pytestmark = pytest.mark.e2e

STACK_KEYS = {"function_url", "aws_endpoint_url", "aws_endpoint_url_ssm", "region", "queue_url", "dlq_url", "topic_arn", "bucket", "database_url", "archive_prefix", "pid"}


def publish_body(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A stand-in for predict: puts the request body on the events queue the stack configured."""
    sqs = boto3.client("sqs", endpoint_url=os.environ["SML_AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    sqs.send_message(QueueUrl=os.environ["SML_QUEUE_URL"], MessageBody=event["body"])
    return {"queued": event["body"]}


def collect_bodies(event: dict[str, Any], context: Any) -> None:
    """A stand-in for the writer: appends each record's body to ``<state dir>/written.jsonl``."""
    with open(Path(os.environ["SML_STATE_DIR"]) / "written.jsonl", "a", encoding="utf-8") as out:
        out.writelines(record["body"] + "\n" for record in event["Records"])


def process_facts(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """What a container sees of itself: its pid, parent, temporary folder and function name."""
    global INVOCATIONS_SEEN
    INVOCATIONS_SEEN += 1
    if "sleep" in (event.get("body") or ""):
        time.sleep(json.loads(event["body"])["sleep"])
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "tmp": tempfile.gettempdir(),
        "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        "invocations_seen": INVOCATIONS_SEEN,
    }


INVOCATIONS_SEEN = 0


def written_bodies(state_dir: Path) -> list[str]:
    path = state_dir / "written.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def config(tmp_path: Path, **overrides: Any) -> LocalStackConfig:
    name = f"t{uuid.uuid4().hex[:10]}"
    options: dict[str, Any] = {
        "state_dir": tmp_path / ".sml",
        "app_name": name,
        "bucket": f"{name}-models",
        "predict_handler": publish_body,
        "writer_handler": collect_bodies,
        "visibility_timeout_s": 5,
        "batching_window_s": 0,
    }
    return LocalStackConfig(**{**options, **overrides})


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]


def port_is_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname, parts.port)) != 0


def test_the_stack_creates_its_resources_and_writes_stack_json(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, visibility_timeout_s=7)) as stack:
        written = json.loads(stack.stack_file.read_text())
        assert set(written) == STACK_KEYS
        assert written["pid"] == os.getpid()
        assert written["function_url"] == stack.endpoints.function_url

        sqs = boto3.client("sqs", endpoint_url=written["aws_endpoint_url"], region_name=written["region"])
        queue = sqs.get_queue_attributes(QueueUrl=written["queue_url"], AttributeNames=["All"])["Attributes"]
        dlq = sqs.get_queue_attributes(QueueUrl=written["dlq_url"], AttributeNames=["All"])["Attributes"]
        assert json.loads(queue["RedrivePolicy"]) == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 5}
        assert int(dlq["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])
        assert queue["VisibilityTimeout"] == "7"
        sns = boto3.client("sns", endpoint_url=written["aws_endpoint_url"], region_name=written["region"])
        assert sns.get_topic_attributes(TopicArn=written["topic_arn"])["Attributes"]["TopicArn"] == written["topic_arn"]
        s3 = boto3.client("s3", endpoint_url=written["aws_endpoint_url"], region_name=written["region"])
        s3.head_bucket(Bucket=written["bucket"])
        ssm = boto3.client("ssm", endpoint_url=written["aws_endpoint_url_ssm"], region_name=written["region"])
        ssm.put_parameter(Name=f"/{stack.config.app_name}/check", Value="1", Type="String")
        assert written["aws_endpoint_url_ssm"] != written["aws_endpoint_url"]  # fauxqs has no SSM: ministack serves it
        assert written["database_url"] == f"sqlite:///{tmp_path / '.sml' / 'sml.db'}"
        assert (tmp_path / ".sml" / "sml.db").exists()


def test_handlers_see_the_stack_in_their_environment_and_it_is_restored_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("SML_QUEUE_URL", "https://sqs.example/real")
    monkeypatch.setenv("SML_AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9/elsewhere")

    with LocalStack(config(tmp_path)) as stack:
        assert os.environ["SML_QUEUE_URL"] == stack.endpoints.queue_url
        assert os.environ["SML_AWS_ENDPOINT_URL"] == stack.endpoints.aws_endpoint_url
        assert os.environ["SML_AWS_ENDPOINT_URL_SSM"] == stack.endpoints.service_endpoint_urls["ssm"]
        assert "SML_AWS_ENDPOINT_URL_SQS" not in os.environ  # the caller's would route the handlers' SQS past the stack's
        assert os.environ["SML_DATABASE_URL"] == stack.endpoints.database_url
        assert os.environ["AWS_ACCESS_KEY_ID"] == "local"
        assert "AWS_PROFILE" not in os.environ

    assert os.environ["SML_QUEUE_URL"] == "https://sqs.example/real"
    assert os.environ["AWS_PROFILE"] == "production"
    assert os.environ["SML_AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:9/elsewhere"


def test_a_request_flows_from_the_function_url_through_the_queue_to_the_writer(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path)) as stack:
        response = requests.post(stack.endpoints.function_url, json={"n": 1}, timeout=10)

        assert response.json() == {"queued": '{"n": 1}'}
        deadline = time.monotonic() + 30
        while not written_bodies(stack.config.state_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stack.poller.wait_until_drained(timeout_s=30)
    assert written_bodies(tmp_path / ".sml") == ['{"n": 1}']


def test_each_function_runs_in_its_own_container_process_with_its_own_globals_and_tmp(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, predict_handler=process_facts, predict_concurrency=1)) as stack:
        first = requests.get(stack.endpoints.function_url, timeout=30).json()
        second = requests.get(stack.endpoints.function_url, timeout=30).json()
        writer_pids = stack.writer.pids()

    assert first["ppid"] == os.getpid() != first["pid"]
    assert second["pid"] == first["pid"]  # one container, kept warm
    assert (first["invocations_seen"], second["invocations_seen"]) == (1, 2)
    assert INVOCATIONS_SEEN == 0  # the handler's globals changed only in the container
    assert first["function"] == f"{stack.config.app_name}-predict"
    assert first["pid"] not in writer_pids
    assert first["tmp"] != tempfile.gettempdir()
    assert not Path(first["tmp"]).exists()  # removed with its container


def test_concurrent_requests_get_their_own_containers_up_to_the_predict_concurrency(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, predict_handler=process_facts, predict_concurrency=2)) as stack:
        url = stack.endpoints.function_url
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: requests.post(url, json={"sleep": 1}, timeout=60).json(), range(3)))
        assert len(stack.predict.pids()) == 2

    assert len({answer["pid"] for answer in answers}) == 2


AFTER_RESPONSE_HANDLER = """
import os, threading
import boto3
from sml.core.events import build_prediction_event, serialise_prediction_event
from sml.predict.capture import CaptureResult
from sml.predict.capture_extension import PostResponseCapture

senders = []

def publish(events):
    senders.append(threading.current_thread().name)
    sqs = boto3.client("sqs", endpoint_url=os.environ["SML_AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    for event in events:
        sqs.send_message(QueueUrl=os.environ["SML_QUEUE_URL"], MessageBody=serialise_prediction_event(event))
    return CaptureResult(len(events), 0, ())

extension = PostResponseCapture.register(os.environ["AWS_LAMBDA_RUNTIME_API"], publish=publish, report=lambda result: None)

def handler(event, context):
    try:
        prediction = build_prediction_event(model_name="m", model_version="v1", features={"x": 1.0}, prediction="a")
        extension.defer(context.aws_request_id, [prediction])
        return {"prediction_id": prediction.prediction_id, "senders_before": list(senders), "pid": os.getpid()}
    finally:
        extension.end_invocation(context.aws_request_id)
"""


def test_predict_registers_its_extensions_at_import_in_its_container_and_sends_after_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"after_response_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(AFTER_RESPONSE_HANDLER)
    monkeypatch.syspath_prepend(str(tmp_path))

    with LocalStack(config(tmp_path, predict_handler=f"{module}:handler", predict_concurrency=1)) as stack:
        first = requests.post(stack.endpoints.function_url, json={}, timeout=10).json()
        assert stack.predict.wait_all_ready(timeout_s=30)  # its post-invoke phase (the send) is over
        second = requests.post(stack.endpoints.function_url, json={}, timeout=10).json()
        assert stack.predict.wait_all_ready(timeout_s=30)
        assert stack.poller.wait_until_drained(timeout_s=30)

    assert first["pid"] == second["pid"]
    assert first["senders_before"] == []  # the answer left before the extension sent its event
    assert second["senders_before"] == ["sml-capture-send"]  # sent by the extension (on its send thread), after answering
    stored = [json.loads(body)["prediction_id"] for body in written_bodies(tmp_path / ".sml")]
    assert sorted(stored) == sorted([first["prediction_id"], second["prediction_id"]])


def test_stop_closes_every_port_ends_every_container_and_removes_stack_json(tmp_path: Path) -> None:
    stack = LocalStack(config(tmp_path)).start()
    endpoints = stack.endpoints
    containers = stack.predict.pids() + stack.writer.pids()

    stack.stop()

    assert not stack.stack_file.exists()
    assert port_is_closed(endpoints.function_url)
    assert port_is_closed(endpoints.aws_endpoint_url)
    assert containers and not any(Path(f"/proc/{pid}").exists() for pid in containers)


def test_a_second_stack_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    refused = rf"a stack is already running in {tmp_path / '.sml'} \(pid {os.getpid()}\); stop it or use --state-dir"
    with LocalStack(config(tmp_path)), pytest.raises(SmlError, match=refused):
        LocalStack(config(tmp_path)).start()


def test_a_stack_still_starting_keeps_a_second_one_out_of_its_state_dir(tmp_path: Path) -> None:
    # stack.json is written last; the second start comes while the first is half way (migrating), before it.
    refusals: list[str] = []

    def start_a_second_stack(database_url: str) -> list[str]:
        assert not (tmp_path / ".sml" / "stack.json").exists()
        second = LocalStack(config(tmp_path, aws_emulator="moto"))
        try:
            second.start()
        except SmlError as exc:
            refusals.append(str(exc))
        else:
            second.stop()
        return []

    with LocalStack(config(tmp_path, aws_emulator="moto"), migrate=start_a_second_stack):
        assert refusals == [f"a stack is already running in {tmp_path / '.sml'} (pid {os.getpid()}); stop it or use --state-dir"]
        assert stack_lock_holder(tmp_path / ".sml") == f"pid {os.getpid()}"

    assert stack_lock_holder(tmp_path / ".sml") is None  # stop() let go of it


def test_the_state_dir_lock_goes_with_a_process_that_dies_holding_it(tmp_path: Path) -> None:
    state_dir = tmp_path / ".sml"
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys; from sml.local.stack import lock_state_dir;"
         " lock_state_dir(__import__('pathlib').Path(sys.argv[1])); os.kill(os.getpid(), signal.SIGKILL)", str(state_dir)],
        check=False,
    )
    assert killed.returncode == -9
    assert (state_dir / "stack.lock").read_text().strip().isdigit()

    assert stack_lock_holder(state_dir) is None
    os.close(lock_state_dir(state_dir))


def test_a_stale_stack_json_is_replaced(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    state_dir = tmp_path / ".sml"
    state_dir.mkdir()
    (state_dir / "stack.json").write_text(json.dumps({"pid": finished.pid}))
    assert running_stack_pid(state_dir) is None

    with LocalStack(config(tmp_path)) as stack:
        assert json.loads(stack.stack_file.read_text())["pid"] == os.getpid()


def test_a_handler_that_cannot_be_imported_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    stack = LocalStack(config(tmp_path, writer_handler="functions.no_such_function.app:handler"))

    with pytest.raises(SmlError, match=r"writer handler 'functions.no_such_function.app:handler': cannot import module"):
        stack.start()

    assert not stack.stack_file.exists()
    assert "SML_QUEUE_URL" not in os.environ


def test_an_unreachable_database_is_reported_and_nothing_is_left_running(tmp_path: Path) -> None:
    port = unused_port()
    stack = LocalStack(config(tmp_path, database_url=f"mysql+pymysql://root@127.0.0.1:{port}/sml"))

    with pytest.raises(SmlError, match=rf"database mysql\+pymysql://root@127.0.0.1:{port}/sml: cannot connect"):
        stack.start()

    assert not stack.stack_file.exists()


def test_an_aws_endpoint_url_that_does_not_answer_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    port = unused_port()
    stack = LocalStack(config(tmp_path, aws_endpoint_url=f"http://127.0.0.1:{port}"))

    with pytest.raises(SmlError, match=rf"--aws-endpoint-url http://127.0.0.1:{port}: cannot create the stack's .*Could not connect"):
        stack.start()

    assert not stack.stack_file.exists()
    assert "SML_AWS_ENDPOINT_URL" not in os.environ


def test_a_taken_port_is_reported_with_its_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(SmlError, match=rf"--port {port}: cannot listen"):
            LocalStack(config(tmp_path, function_url_port=port)).start()
        with pytest.raises(SmlError, match=rf"--aws-port {port}: cannot listen"):
            LocalStack(config(tmp_path, aws_port=port)).start()


def test_an_aws_endpoint_url_is_used_as_given_and_no_emulator_is_started(tmp_path: Path) -> None:
    other = start_aws_server("moto", host="127.0.0.1", port=0)  # stands in for another emulator the user runs
    try:
        with LocalStack(config(tmp_path, aws_endpoint_url=other.url)) as stack:
            assert stack.aws_server is None
            assert stack.endpoints.aws_endpoint_url == other.url
            assert os.environ["SML_AWS_ENDPOINT_URL"] == other.url
            sqs = boto3.client("sqs", endpoint_url=other.url, region_name=stack.endpoints.region)
            assert sqs.get_queue_url(QueueName=f"{stack.config.app_name}-events")["QueueUrl"] == stack.endpoints.queue_url
            response = requests.post(stack.endpoints.function_url, json={"n": 2}, timeout=30)
            assert response.json() == {"queued": '{"n": 2}'}
            assert stack.poller.wait_until_drained(timeout_s=30)
        assert written_bodies(tmp_path / ".sml") == ['{"n": 2}']
    finally:
        other.stop()


def test_ministack_alone_serves_every_service_at_one_url(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, aws_emulator="ministack")) as stack:
        written = json.loads(stack.stack_file.read_text())
        assert set(written) == STACK_KEYS - {"aws_endpoint_url_ssm"}
        assert "SML_AWS_ENDPOINT_URL_SSM" not in os.environ
        ssm = boto3.client("ssm", endpoint_url=written["aws_endpoint_url"], region_name=written["region"])
        ssm.put_parameter(Name=f"/{stack.config.app_name}/check", Value="1", Type="String")
        response = requests.post(stack.endpoints.function_url, json={"n": 3}, timeout=30)
        assert response.json() == {"queued": '{"n": 3}'}
        assert stack.poller.wait_until_drained(timeout_s=30)
    assert written_bodies(tmp_path / ".sml") == ['{"n": 3}']


def test_the_retention_step_runs_in_a_writer_container_when_the_stack_starts(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, writer_handler="functions.writer.app:handler")) as stack:
        deadline = time.monotonic() + 60
        while stack.retention.invocations == 0 or (stack.retention.last_result is None and stack.retention.last_error is None):
            assert time.monotonic() < deadline, "the retention step did not run"
            time.sleep(0.1)
        assert stack.retention.last_error is None
        assert set(stack.retention.last_result) == {"cutoff", "created", "dropped", "deleted_rows"}


def test_a_retention_under_its_minimum_stops_the_stack_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.core.settings import SettingsError

    monkeypatch.setenv("SML_RETENTION_DAYS", "3")
    with pytest.raises(SettingsError, match="SML_RETENTION_DAYS: .*minimum of 22"):
        LocalStack(config(tmp_path)).start()
    assert not (tmp_path / ".sml" / "stack.json").exists()


def prediction_bodies(count: int) -> list[str]:
    from sml.core.events import build_prediction_event, serialise_event

    return [
        serialise_event(build_prediction_event(
            model_name="breast-cancer", model_version="v1", features={"mean_radius": float(index)}, prediction="benign",
            probabilities={"benign": 0.7, "malignant": 0.3},
        ))
        for index in range(count)
    ]


def archived_prediction_ids(s3: Any, location: Any) -> list[str]:
    from sml.archive.parquet import read_parquet_bytes
    from sml.archive.store import list_table

    return sorted(
        prediction_id
        for item in list_table(s3, location, "predictions")
        for prediction_id in read_parquet_bytes(s3.get_object(Bucket=location.bucket, Key=item.key)["Body"].read()).column("prediction_id").to_pylist()
    )


def test_the_archive_function_converts_what_the_writer_landed_on_its_schedule_in_its_own_container(tmp_path: Path) -> None:
    from sml.archive.landing import list_landing
    from sml.archive.store import ArchiveLocation

    bodies = prediction_bodies(3)
    expected = sorted(json.loads(body)["prediction_id"] for body in bodies)
    with LocalStack(config(tmp_path, writer_handler="functions.writer.app:handler", archive_convert_interval_s=0.5)) as stack:
        for body in bodies:
            requests.post(stack.endpoints.function_url, data=body, headers={"content-type": "application/json"}, timeout=10).raise_for_status()
        s3 = boto3.client("s3", endpoint_url=stack.endpoints.aws_endpoint_url, region_name=stack.endpoints.region)
        location = ArchiveLocation(stack.endpoints.bucket, stack.endpoints.archive_prefix)
        deadline = time.monotonic() + 120
        while archived_prediction_ids(s3, location) != expected or list(list_landing(s3, location)):
            assert time.monotonic() < deadline, (archived_prediction_ids(s3, location), stack.archive_conversion.last_error)
            time.sleep(0.2)
        conversion = stack.archive_conversion
        assert conversion.last_error is None and conversion.invocations >= 1
        archive_pids = stack.archive.pids()
        others = {os.getpid(), *stack.writer.pids(), *stack.predict.pids(), *stack.drift.pids()}
    assert len(archive_pids) == 1 and not set(archive_pids) & others
    assert not Path(f"/proc/{archive_pids[0]}").exists()  # stopped with the stack
    converted = (tmp_path / ".sml" / "logs" / f"{stack.config.app_name}-archive.log").read_text()
    assert "archive landing: " in converted and "objects converted" in converted


def test_batches_wait_in_the_landing_area_until_a_conversion_and_convert_landing_runs_one_at_once(tmp_path: Path) -> None:
    from sml.archive.landing import list_landing
    from sml.archive.store import ArchiveLocation

    bodies = prediction_bodies(2)
    with LocalStack(config(tmp_path, writer_handler="functions.writer.app:handler", archive_convert_interval_s=3600)) as stack:
        for body in bodies:
            requests.post(stack.endpoints.function_url, data=body, headers={"content-type": "application/json"}, timeout=10).raise_for_status()
        assert stack.poller.wait_until_drained(timeout_s=60)
        s3 = boto3.client("s3", endpoint_url=stack.endpoints.aws_endpoint_url, region_name=stack.endpoints.region)
        location = ArchiveLocation(stack.endpoints.bucket, stack.endpoints.archive_prefix)
        landed = list(list_landing(s3, location))
        assert landed and archived_prediction_ids(s3, location) == []  # the schedule's first run is an hour away

        summary = stack.convert_landing()

        assert summary["landing_converted"] == len(landed) and summary["events"] == 2 and summary["failures"] == []
        assert archived_prediction_ids(s3, location) == sorted(json.loads(body)["prediction_id"] for body in bodies)
        assert list(list_landing(s3, location)) == []
        assert stack.archive_conversion.invocations == 0
    with pytest.raises(SmlError, match="this stack is not running: nothing to convert"):
        stack.convert_landing()


def test_without_an_archive_there_is_no_archive_function_and_the_writer_lands_nothing(tmp_path: Path) -> None:
    with LocalStack(config(tmp_path, archive_prefix=None)) as stack:
        assert stack.archive is None and stack.archive_conversion is None
        assert os.environ["SML_ARCHIVE_PREFIX"] == ""  # counts as unset for every function
        assert json.loads(stack.stack_file.read_text())["archive_prefix"] is None
        with pytest.raises(SmlError, match=r"this stack has no event archive \(archive_prefix is None\): nothing to convert"):
            stack.convert_landing()
