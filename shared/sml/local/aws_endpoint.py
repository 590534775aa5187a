"""The local AWS endpoint: S3, SQS, SNS and SSM on 127.0.0.1, behind one seam.

Two emulators can serve it:

- ``ministack`` (the default): ministack's server in its own process. Its SQS keeps per-call cost
  flat as the queue grows (moto's grows with depth: see CONTRIBUTING.md, "Local AWS endpoint"),
  and it has what the stack uses: redrive to a DLQ after ``maxReceiveCount``, visibility
  timeout, long polling, ``ApproximateReceiveCount``, batches, SNS → SQS, S3 and SSM. It lacks
  ``ListDeadLetterSourceQueues`` and ``StartMessageMoveTask``; ``sml dlq replay`` falls back to
  receive → send → delete, as it does on moto.
- ``moto``: moto's threaded server in this process (what the stack used before; kept as the
  benchmark's baseline and as a fallback where ministack is not installed).

Anything else (another emulator, a real account) is reached with ``sml up --aws-endpoint-url``:
the stack then starts no server at all (see :mod:`sml.local.stack`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from sml.core.errors import SmlError

logger = logging.getLogger(__name__)

EMULATORS = ("ministack", "moto")
MINISTACK_SERVICES = "s3,sqs,sns,ssm"
STARTUP_LIMIT_S = 60.0  # a bound on waiting for the server, not a speed claim


class AwsServer(Protocol):
    url: str

    def stop(self) -> None: ...


def start_aws_server(emulator: str, *, host: str, port: int, log_path: Path | None = None) -> AwsServer:
    """Start ``emulator`` on ``host:port`` (0 picks a free port) and wait until it answers.

    :raises SmlError: unknown emulator, a port that is taken, ministack not installed, or a
        server that did not come up (its log is named).
    """
    if emulator == "ministack":
        return MinistackServer(host=host, port=port, log_path=log_path)
    if emulator == "moto":
        return MotoServer(host=host, port=port)
    raise SmlError(f"--aws-emulator {emulator!r}: expected one of {', '.join(EMULATORS)}")


def ensure_port_free(host: str, port: int, *, option: str) -> None:
    """:raises SmlError: naming ``option`` when ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SmlError(f"{option} {port}: cannot listen on {host}: {exc.strerror}") from None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class MotoServer:
    """moto's threaded server in this process."""

    def __init__(self, *, host: str, port: int) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # it logs every request even with verbose=False
        if port:
            # ThreadedMotoServer.start() waits forever when its port is taken; fail first instead.
            ensure_port_free(host, port, option="--aws-port")
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._server.start()
        bound_host, bound_port = self._server.get_host_and_port()
        self.url = f"http://{bound_host}:{bound_port}"

    def stop(self) -> None:
        self._server.stop()


class MinistackServer:
    """ministack in a child process (``python -m sml.local.aws_endpoint``) that dies with us."""

    def __init__(self, *, host: str, port: int, log_path: Path | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("ministack") is None:
            raise SmlError(
                "the local AWS endpoint needs ministack, which ./run installs (pip install --no-deps -c constraints.txt"
                " ministack); or pass --aws-emulator moto"
            )
        if port:
            ensure_port_free(host, port, option="--aws-port")
        else:
            port = free_port(host)
        self.url = f"http://{host}:{port}"
        environment = {
            **os.environ,
            "GATEWAY_PORT": str(port),
            "BIND_HOST": host,
            "SERVICES": MINISTACK_SERVICES,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
            "SML_AWS_SERVER_PARENT_PID": str(os.getpid()),
        }
        self.log_path = log_path
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sml.local.aws_endpoint"], env=environment, stdout=log, stderr=log,
            start_new_session=True,  # Ctrl-C is for the stack, which stops this server last
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self) -> None:
        import urllib.request

        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if self.process.poll() is not None:
                raise SmlError(f"the local AWS endpoint (ministack) exited with {self.process.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_ministack/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SmlError(f"the local AWS endpoint (ministack) did not answer within {STARTUP_LIMIT_S:.0f} s; log: {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def main() -> None:
    """Child side: run ministack's server in the foreground until the parent stops or dies."""
    threading.Thread(target=_watch_parent, args=(int(os.environ["SML_AWS_SERVER_PARENT_PID"]),), daemon=True).start()
    from ministack.app import main as ministack_main

    sys.argv = ["ministack"]
    ministack_main()


if __name__ == "__main__":
    main()
