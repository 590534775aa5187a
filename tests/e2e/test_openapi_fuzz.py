"""An OpenAPI-driven fuzzer against the local stack: schemathesis reads the served /openapi.json
and checks every answer of predict with all its checks (no 5xx, status codes, content types and
bodies as documented, schema-valid data accepted, schema-invalid data refused).

`sml up` runs in its own process with the real handlers and a champion trained and promoted by
`sml train` / `sml promote`, as a user runs them. Examples are bounded and the seed fixed, so a
run is repeatable in CI. The fuzzer runs through its command line: its pytest integration
(``schemathesis.pytest.from_fixture``) fails under pytest 9 ("'Function' object has no attribute
'_nodeid'").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("openapi_fuzz")]

STARTUP_LIMIT_S = 90  # a bound on waiting, not a speed claim
RUN_LIMIT_S = 900  # a bound on the fuzzer's run (about 3 minutes here), not a speed claim
STOP_LIMIT_S = 60  # a bound on `sml up` draining the events the fuzzer's predictions queued, not a speed claim
MAX_EXAMPLES = 100  # per operation and phase
SEED = 13  # with one worker, the same cases every run


CONFIG = Path(__file__).with_name("schemathesis.toml")


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("SML_")}


def stack_environment() -> dict[str, str]:
    # Predictions are not captured: each would queue an event on moto's SQS, which slows with
    # queue depth (FIELD-NOTES) until requests of a long run time out; capture has its own tests.
    return {**environment(), "SML_CAPTURE_SAMPLING_RATE": "0"}


def sml(workdir: Path, *arguments: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sml.cli.main", *arguments], cwd=workdir, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, f"sml {' '.join(arguments)} failed:\n{completed.stdout}\n{completed.stderr}"


@pytest.fixture(scope="module")
def function_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Function URL of a local stack whose champion was trained and promoted through the CLI."""
    workdir = tmp_path_factory.mktemp("openapi-fuzz")
    # The stack logs every request: to a file, since an unread pipe fills up and then blocks it.
    log = workdir / "up.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sml.cli.main", "up", "--visibility-timeout", "1", "--batching-window", "0"],
            cwd=workdir,
            env=stack_environment(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    stack_file = workdir / ".sml" / "stack.json"
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not stack_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sml up did not start: {log.read_text()[-5_000:]}")
        time.sleep(0.1)
    try:
        sml(workdir, "train")
        sml(workdir, "promote", "--best-by", "f1")
        yield json.loads(stack_file.read_text())["function_url"].rstrip("/")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_schemathesis_finds_no_failure_with_all_its_checks(function_url: str, tmp_path: Path) -> None:
    # Loading the champion is the first request's work: done here, so the fuzzer's schema load
    # (10 s timeout) and its first cases do not race a cold start.
    assert requests.get(f"{function_url}/openapi.json", timeout=120).status_code == 200
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{function_url}/openapi.json",
        "--url",
        function_url,
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]

    hooks = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": os.pathsep.join(filter(None, [str(CONFIG.parent), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(command, cwd=tmp_path, env={**environment(), **hooks}, capture_output=True, text=True, timeout=RUN_LIMIT_S)

    assert completed.returncode == 0, completed.stdout[-20_000:] + completed.stderr[-5_000:]
    assert "No issues found" in completed.stdout
    report = "".join(path.read_text() for path in tmp_path.glob("**/*.xml"))
    assert "POST /predict" in report and "POST /feedback" in report
