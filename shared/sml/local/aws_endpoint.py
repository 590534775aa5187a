"""The local AWS endpoint: S3, SQS, SNS and SSM on 127.0.0.1, behind one seam.

Three emulators can serve it (``--aws-emulator``):

- ``fauxqs`` (the default): fauxqs (npm, MIT) on Node.js 22 serves SQS, SNS and S3, and ministack
  serves SSM, which fauxqs lacks. fauxqs keeps per-call queue cost flat as the queue grows
  (ministack's SQS scans the queue on every receive and delete: see CONTRIBUTING.md, "Local AWS
  endpoint"), and it has what the stack uses: redrive to a DLQ after ``maxReceiveCount``,
  visibility timeout, long polling, ``ApproximateReceiveCount``, batches, SNS → SQS and S3. SNS
  lives with SQS because a topic delivers to queues in the same emulator. Neither has
  ``ListDeadLetterSourceQueues`` nor ``StartMessageMoveTask``; ``sml dlq replay`` falls back to
  receive → send → delete, as it does on moto. fauxqs and its Node.js come pinned from npm
  (``node/package-lock.json``) into ``<venv>/fauxqs``: ``python -m sml.local.aws_endpoint
  install-fauxqs``, which ``./run`` calls.
- ``ministack``: all four services from ministack's server (Python, in its own process).
- ``moto``: moto's threaded server in this process (what the stack used before; kept as the
  benchmark's baseline).

A server has a main ``url`` and ``service_urls`` for the services it serves elsewhere; clients
are routed per service by :func:`sml.core.aws.aws_client`. Anything else (another emulator, a
real account) is reached with ``sml up --aws-endpoint-url``: the stack then starts no server at
all (see :mod:`sml.local.stack`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from sml.core.errors import SmlError

logger = logging.getLogger(__name__)

EMULATORS = ("fauxqs", "ministack", "moto")
MINISTACK_SERVICES = ("s3", "sqs", "sns", "ssm")
FAUXQS_SERVICES = ("s3", "sqs", "sns")  # SSM comes from ministack beside it
STARTUP_LIMIT_S = 60.0  # a bound on waiting for a server, not a speed claim
NODE_PACKAGE = Path(__file__).resolve().parent / "node"  # package.json + lock (fauxqs, Node.js) and server.mjs
NODE_ARCHITECTURES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
INSTALL_FAUXQS = "python -m sml.local.aws_endpoint install-fauxqs"


class AwsServer(Protocol):
    url: str
    service_urls: Mapping[str, str]  # services served at another URL than ``url``

    def failure(self) -> str | None:
        """Why the server is gone (a child that exited or was killed), or ``None`` while it runs."""
        ...

    def stop(self) -> None: ...


def start_aws_server(emulator: str, *, host: str, port: int, log_dir: Path | None = None) -> AwsServer:
    """Start ``emulator`` with ``url`` on ``host:port`` (0 picks a free port) and wait until it answers.

    :param log_dir: where the emulators' logs go (``aws-<emulator>.log``); none when ``None``.
    :raises SmlError: unknown emulator, a port that is taken, an emulator that is not installed
        (naming the command that installs it), or a server that did not come up (its log is named).
    """
    def log(name: str) -> Path | None:
        return None if log_dir is None else log_dir / f"aws-{name}.log"

    if emulator == "fauxqs":
        fauxqs = FauxqsServer(host=host, port=port, log_path=log("fauxqs"))
        try:
            ssm = MinistackServer(host=host, port=0, services=("ssm",), log_path=log("ministack"))
        except BaseException:
            fauxqs.stop()
            raise
        return CombinedServer(fauxqs, {"ssm": ssm})
    if emulator == "ministack":
        return MinistackServer(host=host, port=port, log_path=log("ministack"))
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

    service_urls: Mapping[str, str] = {}

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

    def failure(self) -> str | None:
        return None  # a thread of this process: it goes only with us

    def stop(self) -> None:
        self._server.stop()


class CombinedServer:
    """One server for most services and others for the rest (fauxqs, with SSM from ministack)."""

    def __init__(self, main: AwsServer, others: Mapping[str, AwsServer]) -> None:
        self._main, self._others = main, dict(others)
        self.url = main.url
        self.service_urls = {service: server.url for service, server in self._others.items()}

    def failure(self) -> str | None:
        return next((failure for server in [self._main, *self._others.values()] if (failure := server.failure())), None)

    def stop(self) -> None:
        for server in [*self._others.values(), self._main]:
            server.stop()


class ChildServer:
    """An emulator in a child process that dies with us; its output goes to ``log_path``.

    :param name: for messages. :param services: what it serves, for messages.
    :param health_path: answers 200 once the server is up.
    """

    service_urls: Mapping[str, str] = {}

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        services: Sequence[str],
        url: str,
        health_path: str,
        environment: Mapping[str, str],
        log_path: Path | None,
    ) -> None:
        self.name, self.services, self.url, self.log_path = name, tuple(services), url, log_path
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(command), env={**os.environ, **environment}, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C is for the stack, which stops this server last
        )
        try:
            self._wait_until_up(health_path)
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, health_path: str) -> None:
        import urllib.request

        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if self.process.poll() is not None:
                raise SmlError(f"the local AWS endpoint ({self.name}) exited with {self.process.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}{health_path}", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SmlError(f"the local AWS endpoint ({self.name}) did not answer within {STARTUP_LIMIT_S:.0f} s; log: {self.log_path}")
            time.sleep(0.1)

    def failure(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        services = ", ".join(service.upper() for service in self.services)
        log = f"; log: {self.log_path}" if self.log_path is not None else ""
        return f"the local AWS endpoint for {services} ({self.name}, pid {self.process.pid}) {how}{log}"

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


def _listen_url(host: str, port: int) -> str:
    if port:
        ensure_port_free(host, port, option="--aws-port")
    else:
        port = free_port(host)
    return f"http://{host}:{port}"


class MinistackServer(ChildServer):
    """ministack in a child process (``python -m sml.local.aws_endpoint ministack``)."""

    def __init__(self, *, host: str, port: int, services: Sequence[str] = MINISTACK_SERVICES, log_path: Path | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("ministack") is None:
            raise SmlError(
                "the local AWS endpoint needs ministack, which ./run installs (pip install --no-deps -c constraints.txt"
                " ministack); or pass --aws-emulator moto"
            )
        url = _listen_url(host, port)
        environment = {
            "GATEWAY_PORT": url.rsplit(":", 1)[1],
            "BIND_HOST": host,
            "SERVICES": ",".join(services),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
            "SML_AWS_SERVER_PARENT_PID": str(os.getpid()),
        }
        super().__init__(
            "ministack", [sys.executable, "-m", "sml.local.aws_endpoint", "ministack"], services=services, url=url,
            health_path="/_ministack/health", environment=environment, log_path=log_path,
        )


def fauxqs_home() -> Path:
    """Where fauxqs and its Node.js are installed: ``$SML_FAUXQS_HOME`` or ``<venv>/fauxqs``."""
    return Path(os.environ.get("SML_FAUXQS_HOME") or Path(sys.prefix) / "fauxqs")


def _lock_digest() -> str:
    return hashlib.sha256((NODE_PACKAGE / "package-lock.json").read_bytes()).hexdigest()[:16]


def fauxqs_installed(home: Path) -> bool:
    """Whether ``home`` holds the pinned install: its stamp matches ``node/package-lock.json`` and nothing is gone."""
    return _install_problem(home) is None


def _install_problem(home: Path) -> str | None:
    """What keeps ``home`` from being the pinned install: no stamp, another lock's, or parts gone since; ``None`` if nothing."""
    try:
        stamp = (home / ".sml-installed").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return "nothing installed there"
    if stamp != _lock_digest():
        return "installed from another node/package-lock.json"
    # `exists()` follows the .bin/node link, so a Node.js package removed under it counts as gone.
    missing = [str(path.relative_to(home)) for path in (_node(home), _fauxqs_app(home)) if not path.exists()]
    return f"missing: {', '.join(missing)}" if missing else None


def install_fauxqs(home: Path | None = None) -> Path:
    """Install the pinned fauxqs and Node.js 22 for this machine into ``home`` (reused when present).

    :raises SmlError: no npm, an unsupported machine, or npm failed (its output is in the message).
    """
    home = home or fauxqs_home()
    if fauxqs_installed(home):
        return home
    if platform.system() != "Linux" or platform.machine().lower() not in NODE_ARCHITECTURES:
        raise SmlError(f"fauxqs: Node.js 22 comes from npm for Linux x64/arm64 only, not {platform.system()} {platform.machine()};"
                       " pass --aws-emulator ministack")
    npm = shutil.which("npm")
    if npm is None:
        raise SmlError("fauxqs: npm is needed to install the local AWS endpoint (Debian: apt-get install nodejs npm)")
    home.mkdir(parents=True, exist_ok=True)
    (home / ".sml-installed").unlink(missing_ok=True)  # stamped again only once npm ci has finished
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_PACKAGE / name, home / name)
    # npm ci installs exactly the lock; the Node.js binary is the optional dependency for this CPU.
    done = subprocess.run(
        [npm, "ci", "--prefix", str(home), "--no-audit", "--no-fund", "--loglevel=error", "--engine-strict=false"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0 or not _node(home).exists():
        raise SmlError(f"fauxqs: `npm ci --prefix {home}` failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    (home / ".sml-installed").write_text(_lock_digest() + "\n", encoding="utf-8")
    return home


def _node(home: Path) -> Path:
    return home / "node_modules" / ".bin" / "node"


def _fauxqs_app(home: Path) -> Path:
    return home / "node_modules" / "fauxqs" / "dist" / "app.js"


class FauxqsServer(ChildServer):
    """fauxqs on Node.js 22 in a child process (``node/server.mjs``), listening on ``host`` only."""

    def __init__(self, *, host: str, port: int, log_path: Path | None = None) -> None:
        home = fauxqs_home()
        problem = _install_problem(home)
        if problem is not None:
            raise SmlError(
                f"the local AWS endpoint needs fauxqs and Node.js 22 in {home} ({problem}), which ./run"
                f" installs; by hand: {INSTALL_FAUXQS} (needs npm); or pass --aws-emulator ministack"
            )
        url = _listen_url(host, port)
        super().__init__(
            "fauxqs", [str(_node(home)), str(NODE_PACKAGE / "server.mjs"), str(_fauxqs_app(home)), host, url.rsplit(":", 1)[1]],
            services=FAUXQS_SERVICES, url=url, health_path="/health", environment={}, log_path=log_path,
        )


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def run_ministack() -> None:
    """Child side: run ministack's server in the foreground until the parent stops or dies."""
    threading.Thread(target=_watch_parent, args=(int(os.environ["SML_AWS_SERVER_PARENT_PID"]),), daemon=True).start()
    from ministack.app import main as ministack_main

    sys.argv = ["ministack"]
    ministack_main()


def main(argv: Sequence[str] | None = None) -> int:
    """``install-fauxqs``: install the pinned fauxqs (what ./run does); ``ministack``: the child side."""
    command = (sys.argv[1:] if argv is None else list(argv))[:1]
    if command == ["ministack"]:
        run_ministack()
        return 0
    if command == ["install-fauxqs"]:
        if fauxqs_installed(fauxqs_home()):
            return 0
        pinned = json.loads((NODE_PACKAGE / "package.json").read_text(encoding="utf-8"))["dependencies"]["fauxqs"]
        print(f"==> installing fauxqs {pinned} and Node.js 22 from npm into {fauxqs_home()}", flush=True)
        try:
            install_fauxqs()
        except SmlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m sml.local.aws_endpoint install-fauxqs", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
