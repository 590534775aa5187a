"""Function containers: one process per execution environment, with Lambda's invocation semantics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sml.local.lambda_context import new_lambda_context
from sml.local.worker import FunctionContainers, FunctionError, FunctionSpec, FunctionTimeout, Throttled

HANDLERS = '''
import json, os, time

STATE = {"calls": 0}

def handler(event, context):
    STATE["calls"] += 1
    action = event.get("action")
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "hold":  # until the test creates the file
        while not os.path.exists(event["until"]):
            time.sleep(0.01)
    elif action == "raise":
        raise KeyError("missing")
    elif action == "exit":
        os._exit(7)
    elif action == "print":
        print(json.dumps({"line": event["n"]}))
    elif action == "unpicklable":
        return lambda: None
    return {"pid": os.getpid(), "calls": STATE["calls"], "remaining_ms": context.get_remaining_time_in_millis(),
            "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "tmp": os.environ["TMPDIR"]}
'''


@pytest.fixture
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"worker_handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:handler"


@pytest.fixture
def containers(handler_module: str, tmp_path: Path) -> Iterator[FunctionContainers]:
    spec = FunctionSpec(name="fn", handler=handler_module, timeout_s=3, log_path=tmp_path / "logs" / "fn.log")
    with FunctionContainers(spec, concurrency=2, max_wait_s=5) as started:
        yield started


def invoke(containers: FunctionContainers, **event: Any) -> Any:
    return containers.invoke(event, new_lambda_context(containers.spec.name, region="us-east-1", timeout_s=containers.spec.timeout_s))


def test_a_container_is_its_own_process_and_keeps_its_globals_between_invocations(containers: FunctionContainers) -> None:
    first, second = invoke(containers), invoke(containers)

    assert first["pid"] != os.getpid()
    assert first["pid"] == second["pid"]
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["function"] == "fn"
    assert 0 < first["remaining_ms"] <= 3000
    assert containers.stats.cold_starts == 1


def test_a_handler_exception_is_a_function_error_and_the_container_stays_warm(containers: FunctionContainers, tmp_path: Path) -> None:
    before = invoke(containers)["pid"]

    with pytest.raises(FunctionError) as raised:
        invoke(containers, action="raise")

    assert (raised.value.error_type, raised.value.message) == ("KeyError", "'missing'")
    assert invoke(containers)["pid"] == before
    assert "KeyError: 'missing'" in (tmp_path / "logs" / "fn.log").read_text()  # the traceback, as in CloudWatch


def test_a_timeout_kills_the_container_and_the_next_invocation_cold_starts(containers: FunctionContainers) -> None:
    before = invoke(containers)["pid"]

    with pytest.raises(FunctionTimeout) as raised:
        invoke(containers, action="sleep", seconds=30)

    assert raised.value.error_type == "Sandbox.Timedout"
    assert raised.value.message == "Task timed out after 3.00 seconds"
    assert not Path(f"/proc/{before}").exists() or _is_zombie(before)
    after = invoke(containers)
    assert after["pid"] != before and after["calls"] == 1
    assert containers.stats.timeouts == 1


def test_a_container_that_exits_is_a_runtime_exit_error_and_is_replaced(containers: FunctionContainers) -> None:
    with pytest.raises(FunctionError) as raised:
        invoke(containers, action="exit")

    assert raised.value.error_type == "Runtime.ExitError"
    assert raised.value.message == "Runtime exited with error: exit status 7"
    assert invoke(containers)["calls"] == 1


def test_a_container_killed_from_outside_between_invocations_is_replaced(containers: FunctionContainers) -> None:
    pid = invoke(containers)["pid"]
    os.kill(pid, signal.SIGKILL)
    # Dead to the pool (its waitpid) before the next invocation. Before: a 0.2 s sleep, then a wait for
    # /proc to show a zombie, which the main thread of a multi-threaded process is while its other
    # threads still exit and waitpid cannot reap it yet.
    deadline = time.monotonic() + 10  # a bound on waiting, not a speed claim
    while pid in containers.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid not in containers.pids()

    assert invoke(containers)["pid"] != pid


def test_a_result_that_cannot_be_returned_is_a_marshal_error(containers: FunctionContainers) -> None:
    with pytest.raises(FunctionError) as raised:
        invoke(containers, action="unpicklable")

    assert raised.value.error_type == "Runtime.MarshalError"
    assert invoke(containers)["calls"] == 2  # same container, still serving


def test_concurrent_invocations_use_at_most_concurrency_containers_and_wait_for_one(containers: FunctionContainers) -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoke(containers, action="sleep", seconds=0.5), range(4)))

    assert len({answer["pid"] for answer in answers}) == 2
    assert len({answer["tmp"] for answer in answers}) == 2  # each container has its own /tmp


def test_an_invocation_that_waits_longer_than_max_wait_is_throttled(handler_module: str, tmp_path: Path) -> None:
    spec = FunctionSpec(name="fn", handler=handler_module, timeout_s=30)
    released = tmp_path / "released"
    with FunctionContainers(spec, concurrency=1, max_wait_s=0.3) as one:
        with ThreadPoolExecutor(1) as pool:
            # Held until released (before: a 2 s sleep begun 0.5 s earlier, which load could shift either way).
            busy = pool.submit(invoke, one, action="hold", until=str(released))
            deadline = time.monotonic() + 10  # a bound on waiting, not a speed claim
            while not one.busy_pids() and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                with pytest.raises(Throttled) as raised:
                    invoke(one)
            finally:
                released.touch()
            busy.result()

    assert raised.value.error_type == "TooManyRequestsException"


def test_a_handler_that_cannot_be_imported_fails_the_init(tmp_path: Path) -> None:
    spec = FunctionSpec(name="fn", handler="no_such_module_here:handler", log_path=tmp_path / "fn.log")

    with pytest.raises(FunctionError) as raised:
        FunctionContainers(spec).start()

    assert raised.value.error_type == "Runtime.ImportModuleError"
    assert "No module named 'no_such_module_here'" in raised.value.message


def test_each_log_line_of_concurrent_containers_arrives_whole(containers: FunctionContainers, tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: invoke(containers, action="print", n=n), range(200)))

    lines = [line for line in (tmp_path / "logs" / "fn.log").read_text().splitlines() if line.startswith('{"line"')]
    assert sorted(lines) == sorted(f'{{"line": {n}}}' for n in range(200))


def test_a_lambda_or_method_is_refused_as_a_handler() -> None:
    with pytest.raises(ValueError, match="must be a module-level function"):
        _ = FunctionSpec(name="fn", handler=lambda event, context: None).handler_path


def test_containers_die_with_their_parent(handler_module: str, tmp_path: Path) -> None:
    module_dir = str(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {module_dir!r})
        from sml.local.worker import FunctionContainers, FunctionSpec
        containers = FunctionContainers(FunctionSpec(name="fn", handler={handler_module!r}), concurrency=1).start()
        print(containers.pids()[0], flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: the container must notice alone
        parent.wait()
        deadline = time.monotonic() + 10  # a bound on waiting, not a speed claim
        while Path(f"/proc/{child}").exists() and not _is_zombie(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists() or _is_zombie(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


POST_INVOKE = '''
import os, time

def hook():
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write("post-invoke start\\n")
        log.flush()
        while not os.path.exists(os.environ["HOOK_GATE"]):  # held until the test opens the gate
            time.sleep(0.01)
        time.sleep(0.5)  # still running for a while: an invocation that did not wait for it would show
        log.write("post-invoke end\\n")
'''


def test_the_answer_returns_before_the_post_invoke_phase_and_the_next_event_waits_for_it(handler_module: str, tmp_path: Path) -> None:
    (tmp_path / "post_invoke_hooks.py").write_text(POST_INVOKE)
    hook_log, gate = tmp_path / "hook.log", tmp_path / "gate"
    environment = {"HOOK_LOG": str(hook_log), "HOOK_GATE": str(gate)}
    spec = FunctionSpec(name="fn", handler=handler_module, timeout_s=30, post_invoke="post_invoke_hooks:hook", environment=environment)
    with FunctionContainers(spec, concurrency=1) as one:
        first = invoke(one)  # the hook cannot end before the gate opens, so an answer now came before its end
        deadline = time.monotonic() + 10  # a bound on waiting, not a speed claim
        # Before: waited for the file to exist (it does before its first line is written), then
        # assumed the hook's 1.5 s sleep had not run out by the time the file was read.
        while not (hook_log.exists() and hook_log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        log_when_answered = hook_log.read_text()
        gate.touch()
        second = invoke(one)
        log_when_second_answered = hook_log.read_text()

    assert first["pid"] == second["pid"]
    assert log_when_answered == "post-invoke start\n"  # answered while the post-invoke phase was still running
    assert log_when_second_answered.startswith("post-invoke start\npost-invoke end\n")  # the next event waited for it


def test_a_post_invoke_hook_that_cannot_be_imported_fails_the_init(handler_module: str) -> None:
    spec = FunctionSpec(name="fn", handler=handler_module, post_invoke="no_such_hooks:hook")

    with pytest.raises(FunctionError, match="no_such_hooks"):
        FunctionContainers(spec).start()
