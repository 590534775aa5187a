"""A local Lambda Function URL: an HTTP server that invokes a handler the way AWS does.

Requests become payload format 2.0 events (AWS's "Invoking Lambda function URLs" page) and the
handler's return value becomes the HTTP response by AWS's rules, so the same handler runs here
and behind a real Function URL. Auth type is NONE; the function's timeout is reported through
the context; the local stack enforces it by running the handler in worker processes
(:mod:`sml.local.worker`), whose function errors map to responses as on AWS: 502 for a function
error or a timeout, 429 when every container stays busy.

Example::

    with FunctionUrlServer(handler, function_name="sml-predict") as server:
        requests.post(server.url, json={"features": {...}})
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qsl

from sml.local.http_service import BackgroundHttpServer
from sml.local.extensions_api import ExtensionsApiServer
from sml.local.lambda_context import new_lambda_context
from sml.local.worker import FunctionError, Throttled

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

MAX_REQUEST_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
# AWS delivers these bodies as text; every other content type (none included) arrives base64-encoded.
TEXT_CONTENT_TYPES = ("application/json", "application/xml", "application/javascript")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class InvalidFunctionResponse(ValueError):
    """The handler returned something AWS could not turn into an HTTP response."""


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as it reached the server, before it becomes an event."""

    method: str
    target: str
    protocol: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def is_text_content_type(content_type: str | None) -> bool:
    """Whether AWS passes a body of this content type as text rather than base64."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_CONTENT_TYPES


def format_request_time(moment: datetime) -> str:
    """``requestContext.time``: ``12/Mar/2020:19:03:58 +0000``, independent of the locale."""
    utc = moment.astimezone(timezone.utc)
    return f"{utc:%d}/{_MONTHS[utc.month - 1]}/{utc:%Y:%H:%M:%S} +0000"


def build_function_url_event(
    request: HttpRequest,
    *,
    url_id: str,
    request_id: str,
    received_at: datetime,
    account_id: str = "anonymous",
) -> dict[str, Any]:
    """The Function URL event (payload format 2.0) AWS would build for ``request``.

    Header names are lower-cased and repeated headers comma-joined; the ``Cookie`` header moves
    to ``cookies``; repeated query parameters are comma-joined; keys AWS leaves out for an
    unauthenticated URL (``authorizer``, ``pathParameters``, ``stageVariables``) are absent.

    :param url_id: stands in for the ``<url-id>`` in ``apiId`` and ``domainPrefix``.
    :param request_id: ``requestContext.requestId`` (the invocation's request id).
    :param received_at: when the request arrived (``time``, ``timeEpoch``).
    :param account_id: ``anonymous`` for auth type NONE, as AWS sends it.
    """
    raw_path, _, raw_query = request.target.partition("?")
    raw_path = raw_path or "/"
    headers = _joined(request.headers)
    cookies = [part.strip() for part in headers.pop("cookie", "").split(";") if part.strip()]
    query = _joined(parse_qsl(raw_query, keep_blank_values=True), lower_keys=False)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": url_id,
        "domainName": headers.get("host", "").split(":", 1)[0] or "localhost",
        "domainPrefix": url_id,
        "http": {
            "method": request.method,
            "path": raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": format_request_time(received_at),
        "timeEpoch": round(received_at.timestamp() * 1000),
    }
    if request.body:
        text = _text_body(request.body, headers.get("content-type"))
        event["body"] = text if text is not None else base64.b64encode(request.body).decode("ascii")
        event["isBase64Encoded"] = text is None
    else:
        event["isBase64Encoded"] = False
    return event


def _text_body(body: bytes, content_type: str | None) -> str | None:
    if not is_text_content_type(content_type):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:  # declared as text but is not: deliver it base64-encoded instead
        return None


def _joined(pairs: Iterable[tuple[str, str]], *, lower_keys: bool = True) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower() if lower_keys else name
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def http_response_from_result(result: Any) -> HttpResponse:
    """The HTTP response AWS sends for a handler's return value.

    A dict with ``statusCode`` is a response payload (``headers``, ``cookies`` as ``Set-Cookie``,
    ``body``, ``isBase64Encoded``). Anything else is inferred, as AWS does: status 200,
    ``content-type: application/json`` and the value serialised as JSON.

    :raises InvalidFunctionResponse: a malformed payload or a value JSON cannot represent.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        try:
            body = json.dumps(result, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidFunctionResponse(f"the return value is not JSON-serialisable: {exc}") from None
        return HttpResponse(HTTPStatus.OK, [("content-type", "application/json")], body)
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidFunctionResponse(f"statusCode must be an HTTP status code, got {status!r}")
    headers_in = result.get("headers") or {}
    cookies = result.get("cookies") or []
    if not isinstance(headers_in, dict) or not isinstance(cookies, list):
        raise InvalidFunctionResponse("headers must be an object and cookies a list of strings")
    headers = [(str(name), str(value)) for name, value in headers_in.items()]
    headers += [("set-cookie", str(cookie)) for cookie in cookies]
    body = result.get("body")
    if body is None:
        return HttpResponse(status, headers, b"")
    if not isinstance(body, str):
        raise InvalidFunctionResponse(f"body must be a string, got {type(body).__name__}")
    if result.get("isBase64Encoded"):
        try:
            return HttpResponse(status, headers, base64.b64decode(body, validate=True))
        except ValueError:
            raise InvalidFunctionResponse("isBase64Encoded is true but body is not valid base64") from None
    return HttpResponse(status, headers, body.encode("utf-8"))


def error_response(status: int, error_type: str, message: str) -> HttpResponse:
    """A JSON error in the shape Lambda reports invocation errors (``errorType``, ``errorMessage``)."""
    body = json.dumps({"errorType": error_type, "errorMessage": message}).encode("utf-8")
    return HttpResponse(status, [("content-type", "application/json")], body)


class FunctionUrlServer:
    """Serves ``handler`` behind a local Function URL on a background thread.

    :param handler: ``handler(event, context)``, exactly as Lambda calls it; called concurrently
        from the server's request threads (several Lambda instances, in effect).
    :param host: interface to bind; keep the default, the server has no authentication.
    :param port: TCP port; 0 picks a free one (read it back from :attr:`url`).
    :param function_name: the name in the context and the event's ``apiId``.
    :param region: region of the function ARN in the context.
    :param timeout_s: the function timeout the context reports.
    :param max_body_bytes: larger request bodies get 413, as Lambda's payload limit does.
    :param extensions_api: the Extensions API the handler's extensions registered with (its
        ``runtime_api`` was ``AWS_LAMBDA_RUNTIME_API`` when the handler module was imported). With
        it the server is one execution environment: one invocation at a time, each getting its
        ``INVOKE`` event; the client gets its response as soon as the handler returns, and the
        next invocation starts only after the extensions called ``next`` (the post-runtime phase).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        function_name: str = "function",
        region: str = "us-east-1",
        timeout_s: float = 30.0,
        max_body_bytes: int = MAX_REQUEST_BYTES,
        extensions_api: ExtensionsApiServer | None = None,
    ) -> None:
        self.handler = handler
        self.extensions_api = extensions_api
        self._environment = _FirstComeFirstServed() if extensions_api is not None else contextlib.nullcontext()
        self.function_name = function_name
        self.region = region
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._server = BackgroundHttpServer((host, port), _request_handler_for(self), name=f"function-url-{function_name}")

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080/``."""
        host, port = self._server.host_port
        return f"http://{host}:{port}/"

    def start(self) -> Self:
        """Serve on a daemon thread; returns ``self``."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests and release the port (idempotent)."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def invoke(self, request: HttpRequest) -> HttpResponse:
        """Run the handler for one request and map its outcome to the HTTP response."""
        request_id = str(uuid.uuid4())
        event = build_function_url_event(
            request, url_id=self.function_name, request_id=request_id, received_at=datetime.now(timezone.utc)
        )
        context = new_lambda_context(self.function_name, region=self.region, timeout_s=self.timeout_s, request_id=request_id)
        if self.extensions_api is not None:
            self.extensions_api.begin_invoke(
                request_id, deadline_ms=int(context.deadline_epoch_s * 1000), invoked_function_arn=context.invoked_function_arn
            )
        try:
            result = self.handler(event, context)
        except Throttled as exc:
            logger.warning("%s throttled (request %s): %s", self.function_name, request_id, exc.message)
            return error_response(HTTPStatus.TOO_MANY_REQUESTS, exc.error_type, exc.message)
        except FunctionError as exc:  # raised in a worker process: its log has the traceback
            logger.error("%s failed (request %s): %s: %s", self.function_name, request_id, exc.error_type, exc.message)
            return error_response(HTTPStatus.BAD_GATEWAY, exc.error_type, exc.message)
        except Exception as exc:  # Lambda turns any unhandled error into a 502; logged, not swallowed
            logger.exception("%s failed (request %s)", self.function_name, request_id)
            return error_response(HTTPStatus.BAD_GATEWAY, type(exc).__name__, str(exc))
        try:
            return http_response_from_result(result)
        except InvalidFunctionResponse as exc:
            logger.error("%s returned an invalid response (request %s): %s", self.function_name, request_id, exc)
            return error_response(HTTPStatus.BAD_GATEWAY, "InvalidFunctionResponse", str(exc))


    def serve(self, request: HttpRequest, send: Callable[[HttpResponse], None]) -> None:
        """Invoke for ``request``, ``send`` the response, then run the post-invoke phase.

        With an Extensions API the environment takes its next request only once every extension
        that got this ``INVOKE`` has called ``next`` again (bounded by the function timeout).
        """
        with self._environment:
            try:
                send(self.invoke(request))
            finally:  # also when the client has gone: the environment is not free before the extensions are
                if self.extensions_api is not None:
                    self._wait_post_invoke(self.extensions_api)

    def _wait_post_invoke(self, extensions_api: ExtensionsApiServer) -> None:
        try:
            extensions_api.wait_post_invoke(timeout_s=self.timeout_s)
        except TimeoutError:
            logger.error("%s: an extension did not finish within the %s s timeout", self.function_name, self.timeout_s)


class _FirstComeFirstServed:
    """A lock that serves waiters in arrival order: with one environment and several clients, a plain
    lock lets one request lose the race again and again until its client times out."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turns.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc_info: object) -> None:
        with self._turns:
            self._serving += 1
            self._turns.notify_all()

    @property
    def waiting(self) -> int:
        """Invocations waiting for their turn."""
        with self._turns:
            return max(0, self._next_ticket - self._serving - 1)


def _request_handler_for(server: FunctionUrlServer) -> type[BaseHTTPRequestHandler]:
    class FunctionUrlRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in separate writes; with Nagle on, a kept-alive client's delayed
        # ACK stalls every response after the first by ~40 ms.
        disable_nagle_algorithm = True
        # Buffered, and flushed once per response: headers and body in one write, on the wire before
        # the post-invoke phase (the base class would flush only after do_*() returned).
        wbufsize = 64 * 1024

        def _handle(self) -> None:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                self._send(error_response(HTTPStatus.LENGTH_REQUIRED, "LengthRequired", "send a Content-Length"), close=True)
                return
            length = _content_length(self.headers.get("content-length"))
            if length is None:
                self._send(error_response(HTTPStatus.BAD_REQUEST, "BadRequest", "invalid Content-Length"), close=True)
                return
            if length > server.max_body_bytes:
                message = f"request body of {length} bytes exceeds the {server.max_body_bytes}-byte limit"
                self._send(error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "RequestTooLarge", message), close=True)
                return
            request = HttpRequest(
                method=self.command,
                target=self.path,
                protocol=self.request_version,
                headers=list(self.headers.items()),
                body=self.rfile.read(length) if length else b"",
                source_ip=self.client_address[0],
            )
            server.serve(request, self._send)

        def __getattr__(self, name: str) -> Any:
            # BaseHTTPRequestHandler calls do_<METHOD>; every method (TRACE, QUERY, ...) reaches the
            # function, whose router answers 405 for one it does not serve, instead of a bare 501.
            if name.startswith("do_"):
                return self._handle
            raise AttributeError(name)

        def _send(self, response: HttpResponse, *, close: bool = False) -> None:
            self.send_response(response.status)
            for name, value in response.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            if close:
                self.send_header("connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:  # the base class names it `format`
            logger.info("%s %s", self.address_string(), format % args)

    return FunctionUrlRequestHandler


def _content_length(header: str | None) -> int | None:
    if not header:
        return 0
    try:
        length = int(header)
    except ValueError:
        return None
    return length if length >= 0 else None
