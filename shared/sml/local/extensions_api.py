"""A local Lambda Extensions API: what ``AWS_LAMBDA_RUNTIME_API`` points an extension at on Lambda.

It serves the two calls an extension makes, as AWS documents them ("Using the Lambda Extensions
API to create extensions", API reference):

- ``POST /2020-01-01/extension/register``: header ``Lambda-Extension-Name`` (required), body
  ``{"events": [...]}`` with ``INVOKE`` and/or ``SHUTDOWN``. Answers 200 with the header
  ``Lambda-Extension-Identifier`` and ``{"functionName", "functionVersion", "handler"}``.
  Refused (403) after the init phase ended, as Lambda refuses late registrations.
- ``GET /2020-01-01/extension/event/next``: header ``Lambda-Extension-Identifier``; blocks until
  the next event, then answers 200 with the header ``Lambda-Extension-Event-Identifier`` and an
  ``INVOKE`` event (``eventType``, ``deadlineMs``, ``requestId``, ``invokedFunctionArn``,
  ``tracing``) or a ``SHUTDOWN`` event (``eventType``, ``shutdownReason``, ``deadlineMs``).

Errors are ``{"errorMessage", "errorType"}`` with the statuses AWS documents: 400 (bad request),
403 (unknown identifier, late registration), 500 (the environment is gone); the ``errorType``
strings are this server's own. Internal extensions (``internal=True``, the only kind this
project runs) may not register for ``SHUTDOWN``.

The local runtime drives the lifecycle around each invocation of one container:
:meth:`ExtensionsApiServer.begin_invoke` before calling the handler (every extension registered
for ``INVOKE`` gets the event), :meth:`ExtensionsApiServer.wait_post_invoke` after the response
went to the client (returns once each of them has called ``next`` again: the post-runtime phase).

A worker process that is one execution environment drives it like this: start the server in
the worker, set ``AWS_LAMBDA_RUNTIME_API`` to :attr:`ExtensionsApiServer.runtime_api` and only
then import the handler module in the worker's main thread (its extensions register and install
their ``SIGTERM`` handler at import); per request, :meth:`ExtensionsApiServer.begin_invoke` with
the context's request id and deadline, the handler, the response back to the caller at once,
then :meth:`ExtensionsApiServer.wait_post_invoke` before the worker takes its next request. To
end the environment, send the worker ``SIGTERM`` (what Lambda does when an extension is
registered) and give it about 500 ms before killing it.

Example::

    with ExtensionsApiServer(function_name="sml-predict") as api:
        os.environ["AWS_LAMBDA_RUNTIME_API"] = api.runtime_api  # before the handler module is imported
        ...
        api.begin_invoke(request_id, deadline_ms=..., invoked_function_arn=...)
        response = handler(event, context)
        send(response)
        api.wait_post_invoke()
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from sml.local.http_service import BackgroundHttpServer

API_VERSION = "2020-01-01"
REGISTER_PATH = f"/{API_VERSION}/extension/register"
NEXT_PATH = f"/{API_VERSION}/extension/event/next"
LIFECYCLE_EVENTS = ("INVOKE", "SHUTDOWN")


@dataclass
class RegisteredExtension:
    """One registration: its name, identifier, events, and where it is in the current invocation."""

    name: str
    identifier: str
    events: tuple[str, ...]
    called_next: int = 0
    waiting: bool = False
    owes_next: bool = False
    inbox: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ApiCall:
    """A request the API received: method, path, the headers it carries, and the JSON body (or None)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ExtensionsApiServer:
    """A Lambda Extensions API on 127.0.0.1 (free port) for one execution environment.

    :param function_name: ``functionName`` of the registration answer.
    :param handler: ``handler`` of the registration answer (the function's entry point).
    :param internal: the extensions run inside the runtime process (``SHUTDOWN`` refused).
    """

    def __init__(self, *, function_name: str = "function", handler: str = "app.handler", internal: bool = True) -> None:
        self.function_name = function_name
        self.handler = handler
        self.internal = internal
        self.calls: list[ApiCall] = []
        self._state = threading.Condition()
        self._extensions: dict[str, RegisteredExtension] = {}
        self._init_done = False
        self._closed = False
        self._server = BackgroundHttpServer(("127.0.0.1", 0), _request_handler_for(self), name="extensions-api")

    @property
    def runtime_api(self) -> str:
        """``host:port``, the value for ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self._server.host_port
        return f"{host}:{port}"

    @property
    def extensions(self) -> list[RegisteredExtension]:
        """The registered extensions, in registration order."""
        with self._state:
            return list(self._extensions.values())

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        """Release every waiting ``next`` with an error and close the port (idempotent)."""
        with self._state:
            self._closed = True
            self._state.notify_all()
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def end_init(self, *, timeout_s: float = 5.0) -> None:
        """End the init phase: wait until every registered extension has called ``next`` once, then
        refuse further registrations (what the runtime's first ``next`` does on Lambda).

        :raises TimeoutError: an extension registered but never called ``next``.
        """
        self._wait(lambda: all(extension.called_next for extension in self._extensions.values()), timeout_s, "ended its init")
        with self._state:
            self._init_done = True

    def begin_invoke(
        self, request_id: str, *, deadline_ms: int, invoked_function_arn: str, trace_id: str | None = None
    ) -> None:
        """Start an invocation: every extension registered for ``INVOKE`` gets its event.

        Ends the init phase first if it is still open.
        """
        if not self._init_done:
            self.end_init()
        event = {
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": invoked_function_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id or f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"},
        }
        with self._state:
            for extension in self._extensions.values():
                if "INVOKE" in extension.events:
                    extension.inbox.append(event)
                    extension.owes_next = True
            self._state.notify_all()

    def wait_post_invoke(self, *, timeout_s: float | None = None) -> None:
        """Block until every extension that got the current ``INVOKE`` has called ``next`` again.

        :raises TimeoutError: after ``timeout_s`` (None: no limit, as Lambda's limit is the function timeout).
        """
        self._wait(lambda: not any(extension.owes_next for extension in self._extensions.values()), timeout_s, "finished the invocation")

    def shutdown(self, reason: str = "SPINDOWN", *, deadline_ms: int | None = None) -> None:
        """Send ``SHUTDOWN`` to the extensions registered for it (external ones; the runtime gets SIGTERM)."""
        event = {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms or int(time.time() * 1000) + 2000}
        with self._state:
            for extension in self._extensions.values():
                if "SHUTDOWN" in extension.events:
                    extension.inbox.append(event)
            self._state.notify_all()

    def _wait(self, done: Callable[[], bool], timeout_s: float | None, what: str) -> None:
        with self._state:
            if not self._state.wait_for(done, timeout_s):
                late = [extension.name for extension in self._extensions.values()]
                raise TimeoutError(f"extensions {late} have not {what} within {timeout_s} s")

    def register(self, name: str | None, body: Any) -> tuple[HTTPStatus, dict[str, str], dict[str, Any]]:
        if not name:
            return _error(HTTPStatus.BAD_REQUEST, "InvalidRequest", "the Lambda-Extension-Name header is required")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or any(event not in LIFECYCLE_EVENTS for event in events):
            return _error(HTTPStatus.BAD_REQUEST, "InvalidRequest", f"events must be a list of {list(LIFECYCLE_EVENTS)}, got {events!r}")
        if self.internal and "SHUTDOWN" in events:
            return _error(HTTPStatus.BAD_REQUEST, "ShutdownEventNotSupportedForInternalExtension", "internal extensions cannot register for SHUTDOWN")
        with self._state:
            if self._init_done:
                return _error(HTTPStatus.FORBIDDEN, "Extension.RegistrationAfterInit", "registration is allowed only during the init phase")
            identifier = str(uuid.uuid4())
            self._extensions[identifier] = RegisteredExtension(name, identifier, tuple(events))
        answer = {"functionName": self.function_name, "functionVersion": "$LATEST", "handler": self.handler}
        return HTTPStatus.OK, {"Lambda-Extension-Identifier": identifier}, answer

    def next_event(self, identifier: str | None) -> tuple[HTTPStatus, dict[str, str], dict[str, Any]]:
        with self._state:
            extension = self._extensions.get(identifier or "")
            if extension is None:
                return _error(HTTPStatus.FORBIDDEN, "Extension.UnknownExtensionIdentifier", "unknown Lambda-Extension-Identifier")
            extension.called_next += 1
            extension.owes_next = False
            extension.waiting = True
            self._state.notify_all()
            self._state.wait_for(lambda: extension.inbox or self._closed)
            extension.waiting = False
            if not extension.inbox:
                return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "Extension.ApiStopped", "the execution environment is gone")
            event = extension.inbox.pop(0)
        return HTTPStatus.OK, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())}, event


def _error(status: HTTPStatus, error_type: str, message: str) -> tuple[HTTPStatus, dict[str, str], dict[str, Any]]:
    return status, {}, {"errorMessage": message, "errorType": error_type}


def _request_handler_for(api: ExtensionsApiServer) -> type[BaseHTTPRequestHandler]:
    class ExtensionsApiRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _record(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with api._state:
                api.calls.append(ApiCall(self.command, self.path, dict(self.headers.items()), body))
            return body

        def do_POST(self) -> None:
            body = self._record()
            if self.path != REGISTER_PATH:
                self._send(*_error(HTTPStatus.NOT_FOUND, "InvalidRequest", f"no route POST {self.path}"))
                return
            self._send(*api.register(self.headers.get("Lambda-Extension-Name"), body))

        def do_GET(self) -> None:
            self._record()
            if self.path != NEXT_PATH:
                self._send(*_error(HTTPStatus.NOT_FOUND, "InvalidRequest", f"no route GET {self.path}"))
                return
            self._send(*api.next_event(self.headers.get("Lambda-Extension-Identifier")))

        def _send(self, status: HTTPStatus, headers: dict[str, str], body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it `format`
            pass

    return ExtensionsApiRequestHandler
