"""Lambda execution environments on one machine: one worker process per container.

Each container of a function is its own Python process (``python -m sml.local.worker``), so it
has its own imports, module globals, cold start and temporary folder, as a Lambda execution
environment does: nothing in one function's module state (Powertools' class-level metric set,
say) can reach another function or another container. The parent hands it one event at a time
and gets the result back with Lambda's semantics:

- an exception in the handler is a function error (``errorType`` = the exception's class name,
  as the Python runtime reports it); the container stays warm;
- no answer within the function's timeout: the container is killed and the invocation reported
  as ``Sandbox.Timedout`` ("Task timed out after N seconds"); the next one cold-starts;
- a container that dies (crash, ``os._exit``, killed from outside) is ``Runtime.ExitError``;
  the next invocation cold-starts a new one;
- a handler that cannot be imported is ``Runtime.ImportModuleError`` at init.

Each container also serves its own Lambda Extensions API (:mod:`sml.local.extensions_api`) on
127.0.0.1 and points ``AWS_LAMBDA_RUNTIME_API`` at it before the handler module is imported, so
internal extensions (predict's capture after the response) register during init, get an
``INVOKE`` event per invocation and finish in the post-invoke phase, as on Lambda.

Invocation protocol (pickled over a socket pair, :class:`multiprocessing.connection.Connection`):
the parent sends ``("invoke", event, context)``; the container answers ``("ok", result, phase)``
or ``("error", error_type, message, phase)``; when ``phase`` is true it then runs its post-invoke
phase (where Lambda lets extensions finish after the response, see
:meth:`ContainerRuntime.post_invoke`) and only then sends ``("ready",)``. The parent hands the result to its caller at once and gives the container
its next event only after ``ready``, so work after the response never delays the response but
always finishes before the next invocation of that container, as on Lambda.

Containers die with the parent: each watches its parent's pid and exits when it changes, and an
end of file on the connection ends it too. A stopping stack sends each container ``SIGTERM`` and
gives it :data:`SHUTDOWN_GRACE_S` (extensions report what they could not finish), then kills it.

Example::

    spec = FunctionSpec(name="sml-predict", handler="functions.predict.app:handler", timeout_s=30)
    with FunctionContainers(spec, concurrency=2) as predict:
        result = predict.invoke(event, new_lambda_context("sml-predict", region="us-east-1", timeout_s=30))
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

logger = logging.getLogger(__name__)

INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase of an on-demand function
PARENT_CHECK_INTERVAL_S = 0.5
SHUTDOWN_GRACE_S = 0.5  # what Lambda gives the runtime between SIGTERM and SIGKILL when extensions are registered
_CONTAINER_REGISTRY: weakref.WeakSet[Container] = weakref.WeakSet()


class FunctionError(Exception):
    """An invocation that ended in a function error, in the shape Lambda reports one.

    :param error_type: Lambda's ``errorType`` (``Sandbox.Timedout``, ``Runtime.ExitError``,
        ``Runtime.ImportModuleError``, or the handler's exception class name).
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class FunctionTimeout(FunctionError):
    """The handler did not answer within the function's timeout; its container was killed."""


class Throttled(FunctionError):
    """Every container was busy for the whole wait (Lambda's ``TooManyRequestsException``)."""


@dataclass(frozen=True)
class FunctionSpec:
    """One function's configuration, as Lambda holds it.

    :param name: the function name (context, log file name).
    :param handler: ``"module:function"``, or a module-level function (passed by its import path).
    :param timeout_s: the function timeout; an invocation longer than this kills its container.
    :param environment: variables set in every container, on top of the parent's environment.
    :param region: region of the function ARN.
    :param memory_mb: what the context and ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` report.
    :param log_path: the containers append stdout and stderr here (line-buffered, one write per
        line); ``None`` inherits the parent's.
    :param post_invoke: ``"module:function"`` called with no arguments in the container after each
        answer has gone back and before ``ready`` (the post-runtime phase); an exception there is
        logged and does not end the container.
    """

    name: str
    handler: str | Callable[..., Any]
    timeout_s: float = 30.0
    environment: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    memory_mb: int = 1024
    log_path: Path | None = None
    post_invoke: str | None = None

    @property
    def handler_path(self) -> str:
        """``"module:function"`` for either form of :attr:`handler`."""
        if isinstance(self.handler, str):
            return self.handler
        module, qualname = getattr(self.handler, "__module__", None), getattr(self.handler, "__qualname__", "")
        if not module or not qualname or "." in qualname or "<" in qualname:
            raise ValueError(f"{self.name}: a handler callable must be a module-level function, got {self.handler!r}")
        return f"{module}:{qualname}"


@dataclass
class ContainerStats:
    """Totals over the life of a :class:`FunctionContainers`."""

    cold_starts: int = 0
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    exits: int = 0


class Container:
    """Parent side of one execution environment: the process, its connection, its state."""

    def __init__(self, spec: FunctionSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-{index}-"))
        parent_end, child_end = socket.socketpair()
        environment = {
            **os.environ,
            **spec.environment,
            # the child imports what the parent can import, from the same folders
            "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
            "TMPDIR": str(self.tmp_dir),
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{index}",
            "_HANDLER": spec.handler_path,
            "SML_WORKER_FD": str(child_end.fileno()),
            "SML_WORKER_PARENT_PID": str(os.getpid()),
        }
        if spec.post_invoke is not None:
            environment["SML_WORKER_POST_INVOKE"] = spec.post_invoke
        if spec.log_path is not None:
            environment["SML_WORKER_LOG_PATH"] = str(spec.log_path)
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sml.local.worker"], env=environment, pass_fds=[child_end.fileno()], cwd=os.getcwd()
            )
        finally:
            child_end.close()
        self.connection = Connection(parent_end.detach())
        self.awaiting_ready = True  # the init message plays the part of the first "ready"
        self.answered_at: float | None = None  # when the last answer came; the post-invoke phase runs from then
        self.init_error: FunctionError | None = None
        _CONTAINER_REGISTRY.add(self)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float) -> bool:
        """Consume the container's ``ready`` (or init) message; ``False`` if it has not come yet.

        :raises FunctionError: the init failed or the container died.
        """
        if not self.awaiting_ready:
            return True
        try:
            if not self.connection.poll(timeout_s):
                return False
            message = self.connection.recv()
        except (EOFError, OSError):
            raise self._exited() from None
        if message[0] == "init_error":
            self.init_error = FunctionError(message[1], message[2])
            raise self.init_error
        self.awaiting_ready = False
        return True

    def invoke(self, event: Any, context: Any, timeout_s: float) -> Any:
        """Send one event and wait for the answer (not for ``ready``).

        :raises FunctionTimeout: no answer in ``timeout_s``; the container is killed.
        :raises FunctionError: the handler raised, or the container died.
        """
        try:
            self.connection.send(("invoke", event, context))
            answered = self.connection.poll(timeout_s)
            message = self.connection.recv() if answered else None
        except (EOFError, OSError):
            raise self._exited() from None
        if message is None:
            self.kill()
            raise FunctionTimeout("Sandbox.Timedout", f"Task timed out after {timeout_s:.2f} seconds")
        self.awaiting_ready = message[-1]  # whether a post-invoke phase follows (then "ready" comes after it)
        self.answered_at = time.monotonic()
        if message[0] == "ok":
            return message[1]
        raise FunctionError(message[1], message[2])

    def _exited(self) -> FunctionError:
        self.kill()
        code = self.process.returncode
        how = f"signal: {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        return FunctionError("Runtime.ExitError", f"Runtime exited with error: {how}")

    def shut_down(self) -> None:
        """End the container as Lambda ends an environment: ``SIGTERM``, a short grace, then ``SIGKILL``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SHUTDOWN_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the process at once (SIGKILL, as Lambda ends a timed-out environment) and clean up."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable (D state); nothing more to do
            logger.warning("container %s-%d (pid %d) did not exit after SIGKILL", self.spec.name, self.index, self.process.pid)
        self.connection.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


class FunctionContainers:
    """Up to ``concurrency`` containers of one function; :meth:`invoke` is thread-safe.

    An invocation takes an idle container (one that has sent ``ready``); when none is idle and
    fewer than ``concurrency`` exist, it cold-starts a new one; otherwise it waits for one to
    free up, at most ``max_wait_s`` (then :class:`Throttled`, Lambda's 429). Lambda would
    throttle at once; waiting a while is kinder to a laptop and to a demo's bursts.

    :param spec: the function.
    :param concurrency: most containers at once (Lambda's reserved or maximum concurrency).
    :param max_wait_s: how long an invocation may wait for a container; default the timeout.
    """

    def __init__(self, spec: FunctionSpec, *, concurrency: int = 1, max_wait_s: float | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"{spec.name}: concurrency must be at least 1, got {concurrency}")
        self.spec = spec
        self.concurrency = concurrency
        self.max_wait_s = spec.timeout_s if max_wait_s is None else max_wait_s
        self.stats = ContainerStats()
        self._containers: list[Container] = []
        self._idle: list[Container] = []
        self._next_index = 0
        self._changed = threading.Condition()
        self._closed = False

    def start(self, *, warm: int = 1) -> Self:
        """Cold-start ``warm`` containers now and wait for their init.

        :raises FunctionError: a container's init failed (``Runtime.ImportModuleError`` for a
            handler that cannot be imported), or did not finish within :data:`INIT_TIMEOUT_S`
            plus the function timeout.
        """
        started = [self._cold_start() for _ in range(min(warm, self.concurrency))]
        for container in started:
            self._await_init(container)
            with self._changed:
                self._idle.append(container)
                self._changed.notify_all()
        return self

    def pids(self) -> list[int]:
        """Process ids of the live containers (for tests that kill one)."""
        with self._changed:
            return [c.process.pid for c in self._containers if c.alive]

    def busy_pids(self) -> list[int]:
        """Process ids of the containers running an invocation right now (to kill one mid-batch)."""
        with self._changed:
            return [c.process.pid for c in self._containers if c.alive and c not in self._idle]

    def wait_all_ready(self, timeout_s: float) -> bool:
        """Wait until no container runs an invocation or its post-invoke phase; ``False`` on timeout.

        What a caller needs before it reads what the invocations did after answering (the events
        predict sends after the response, say).
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                busy = any(container not in self._idle for container in self._containers)
                for container in list(self._idle):
                    try:
                        container.wait_ready(0)
                    except FunctionError:
                        self._idle.remove(container)
                        self._containers.remove(container)
                        container.kill()
                if not busy and not any(container.awaiting_ready for container in self._idle):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))

    def invoke(self, event: Any, context: Any) -> Any:
        """Run the handler on ``event`` in one container; returns what the handler returned.

        :raises FunctionError: the handler raised (``error_type`` = its class name), timed out
            (:class:`FunctionTimeout`), or its container died.
        :raises Throttled: no container became free within ``max_wait_s``.
        """
        container = self._acquire()
        self.stats.invocations += 1
        try:
            result = container.invoke(event, context, self.spec.timeout_s)
        except FunctionTimeout:
            self.stats.timeouts += 1
            self._discard(container)
            raise
        except FunctionError:
            self.stats.errors += 1
            if not container.alive:
                self.stats.exits += 1
                self._discard(container)
            else:
                self._release(container)
            raise
        self._release(container)
        return result

    def stop(self) -> None:
        """Kill every container (idempotent)."""
        with self._changed:
            self._closed = True
            containers, self._containers, self._idle = self._containers, [], []
            self._changed.notify_all()
        for container in containers:  # SIGTERM to all first, so their grace periods overlap
            if container.alive:
                container.process.terminate()
        for container in containers:
            container.shut_down()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _cold_start(self) -> Container:
        with self._changed:
            return self._cold_start_locked()

    def _cold_start_locked(self) -> Container:
        container = Container(self.spec, self._next_index)
        self._next_index += 1
        self._containers.append(container)
        self.stats.cold_starts += 1
        return container

    def _await_init(self, container: Container) -> None:
        try:
            ready = container.wait_ready(INIT_TIMEOUT_S + self.spec.timeout_s)
        except FunctionError:
            self._discard(container)
            raise
        if not ready:
            self._discard(container)
            raise FunctionError("Runtime.InitTimeout", f"{self.spec.name}: init did not finish in time")

    def _acquire(self) -> Container:
        deadline = time.monotonic() + self.max_wait_s
        with self._changed:
            while True:
                if self._closed:
                    raise FunctionError("Runtime.Unavailable", f"{self.spec.name} is stopped")
                container = self._take_ready()
                if container is not None:
                    return container
                if len(self._containers) < self.concurrency:
                    container = self._cold_start_locked()  # counted at once, so no other thread overshoots
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Throttled("TooManyRequestsException", f"{self.spec.name}: all {self.concurrency} containers busy for {self.max_wait_s:.0f} s")
                self._changed.wait(min(remaining, 0.05))
        self._await_init(container)
        return container

    def _take_ready(self) -> Container | None:
        """An idle container that has finished its post-invoke phase (called under the lock)."""
        for container in list(self._idle):
            try:
                if not container.alive:  # died while idle: Lambda would just use another environment
                    raise FunctionError("Runtime.ExitError", "exited while idle")
                ready = container.wait_ready(0)
                if not ready and container.answered_at is not None and time.monotonic() - container.answered_at > self.spec.timeout_s:
                    logger.error("%s container %d: the post-invoke phase outlasted the %.0f s timeout; killed", self.spec.name, container.index, self.spec.timeout_s)
                    raise FunctionError("Sandbox.Timedout", "post-invoke phase timed out")
            except FunctionError:
                self._idle.remove(container)
                self._containers.remove(container)
                container.kill()
                self.stats.exits += 1
                continue
            if ready:
                self._idle.remove(container)
                return container
        return None

    def _release(self, container: Container) -> None:
        with self._changed:
            if self._closed:
                container.kill()
                return
            self._idle.append(container)
            self._changed.notify_all()

    def _discard(self, container: Container) -> None:
        container.kill()
        with self._changed:
            if container in self._containers:
                self._containers.remove(container)
            if container in self._idle:
                self._idle.remove(container)
            self._changed.notify_all()


@atexit.register
def _kill_remaining_containers() -> None:
    for container in list(_CONTAINER_REGISTRY):
        if container.alive:
            container.process.kill()


# ---------------------------------------------------------------- the container process side


class ContainerRuntime:
    """The loop inside one container: init once, then invoke → answer → post-invoke → ready."""

    def __init__(
        self, connection: Connection, handler_path: str, post_invoke_path: str | None = None, extensions_api: Any = None
    ) -> None:
        self.connection = connection
        self.extensions_api = extensions_api
        self.handler_path = handler_path
        self.post_invoke_path = post_invoke_path
        self.handler: Callable[[Any, Any], Any] | None = None
        self.post_invoke_hook: Callable[[], Any] | None = None

    def init(self) -> bool:
        """Import the handler; report ``init_ok`` or ``init_error`` to the parent."""
        try:
            handler = _import_function(self.handler_path)
            hook = _import_function(self.post_invoke_path) if self.post_invoke_path else None
        except Exception as exc:  # reported to the parent as Lambda reports an init failure
            traceback.print_exc()
            module_name = getattr(exc, "module_name", self.handler_path)
            self.connection.send(("init_error", "Runtime.ImportModuleError", f"Unable to import module {module_name!r}: {exc}"))
            return False
        self.handler = handler
        self.post_invoke_hook = hook
        if self.extensions_api is not None:
            try:
                self.extensions_api.end_init()
            except TimeoutError as exc:  # an extension registered but never asked for its first event
                traceback.print_exc()
                self.connection.send(("init_error", "Extension.InitError", str(exc)))
                return False
        self.connection.send(("init_ok",))
        return True

    def serve(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                return
            if message[0] != "invoke":
                continue
            _, event, context = message
            has_extensions = self.extensions_api is not None and bool(self.extensions_api.extensions)
            post_invoke = self.post_invoke_hook is not None or has_extensions
            if has_extensions:
                self.extensions_api.begin_invoke(
                    context.aws_request_id,
                    deadline_ms=int(context.deadline_epoch_s * 1000),
                    invoked_function_arn=context.invoked_function_arn,
                )
            try:
                result = self.handler(event, context)  # type: ignore[misc]
                answer: tuple[Any, ...] = ("ok", result, post_invoke)
            except Exception as exc:  # a function error, logged as the Lambda Python runtime does
                traceback.print_exc()
                answer = ("error", type(exc).__name__, str(exc), post_invoke)
            try:
                self.connection.send(answer)
            except Exception as exc:  # the result could not be pickled
                self.connection.send(("error", "Runtime.MarshalError", f"Unable to marshal response: {exc}", post_invoke))
            if post_invoke:
                self.post_invoke(deadline_epoch_s=getattr(context, "deadline_epoch_s", None))
                self.connection.send(("ready",))

    def post_invoke(self, *, deadline_epoch_s: float | None = None) -> None:
        """Work after the response and before the next event (Lambda's post-runtime phase).

        Waits until every extension that got this ``INVOKE`` has called ``next`` again (bounded
        by the invocation's deadline), then calls the ``post_invoke`` hook of the
        :class:`FunctionSpec`, if any.
        """
        if self.extensions_api is not None and self.extensions_api.extensions:
            remaining = None if deadline_epoch_s is None else max(0.1, deadline_epoch_s - time.time())
            try:
                self.extensions_api.wait_post_invoke(timeout_s=remaining)
            except TimeoutError:
                print("an extension did not finish the invocation before the function timeout", file=sys.stderr)
        if self.post_invoke_hook is None:
            return
        try:
            self.post_invoke_hook()
        except Exception:  # the answer has gone; the container keeps serving, as Lambda's would
            traceback.print_exc()


class _ImportFailed(ImportError):
    def __init__(self, module_name: str, exc: Exception) -> None:
        super().__init__(str(exc))
        self.module_name = module_name


def _import_function(path: str) -> Callable[..., Any]:
    module_name, _, function_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _ImportFailed(module_name, exc) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise _ImportFailed(module_name, AttributeError(f"module {module_name!r} has no function {function_name!r}"))
    return function


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_INTERVAL_S)
    os._exit(1)


def _redirect_output(log_path: str) -> None:
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = log
    sys.stderr = log


def main() -> None:
    """Entry point of a container process (``python -m sml.local.worker``)."""
    parent_pid = int(os.environ["SML_WORKER_PARENT_PID"])
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    if os.environ.get("SML_WORKER_LOG_PATH"):
        _redirect_output(os.environ["SML_WORKER_LOG_PATH"])
    else:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    tempfile.tempdir = os.environ["TMPDIR"]
    connection = Connection(int(os.environ.pop("SML_WORKER_FD")))
    from sml.local.extensions_api import ExtensionsApiServer

    # before the handler module is imported: its extensions register at import (Lambda's init)
    extensions_api = ExtensionsApiServer(function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"], handler=os.environ["_HANDLER"]).start()
    os.environ["AWS_LAMBDA_RUNTIME_API"] = extensions_api.runtime_api
    runtime = ContainerRuntime(connection, os.environ["_HANDLER"], os.environ.get("SML_WORKER_POST_INVOKE"), extensions_api)
    if runtime.init():
        runtime.serve()


if __name__ == "__main__":
    main()
