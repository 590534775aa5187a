"""Capture after the response: an internal Lambda extension that sends an invocation's events in
the invocation's post-runtime phase, so the caller never waits on SQS.

How AWS runs it (Lambda Extensions API, "Using the Lambda Extensions API to create extensions"):

- During init, before the runtime asks for its first invocation, the runtime process registers
  the extension: ``POST http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension/register`` with the
  header ``Lambda-Extension-Name`` and the body ``{"events": ["INVOKE"]}`` (an internal extension
  may not register for ``SHUTDOWN``). The answer carries ``Lambda-Extension-Identifier``.
- A thread of the runtime process then long-polls ``GET .../2020-01-01/extension/event/next`` with
  that identifier. Lambda answers with an ``INVOKE`` event (``eventType``, ``deadlineMs``,
  ``requestId``, ``invokedFunctionArn``, ``tracing``) when an invocation starts.
- The invocation ends, and Lambda may freeze the environment, only when the runtime has posted
  its response *and* every extension has called ``next`` again. The time between the two is the
  post-runtime phase (``PostRuntimeExtensionsDuration`` in the REPORT line): the caller already
  has its answer, and the duration is billed.

So the handler hands its events over with :meth:`PostResponseCapture.defer`, ends its part with
:meth:`PostResponseCapture.end_invocation` and returns; this extension's thread, holding that
invocation's ``INVOKE`` event, sends them and only then asks for the next event.

Time: the post-runtime phase counts against the function's timeout (the ``deadlineMs`` of the
``INVOKE`` event); an extension still busy at the deadline times the invocation out and Lambda
resets the environment. So a send runs in its own thread and the extension waits for it only until
:data:`DEADLINE_MARGIN_S` before the deadline (:data:`DEFAULT_SEND_BUDGET_S` when the event has no
deadline); what the queue has not confirmed by then is reported as misses
(:data:`DEADLINE_MISS_REASON`, logged as ``capture_miss`` for ``sml capture resend``) and the
extension calls ``next``. A late send that still lands duplicates nothing: the writer skips a
``prediction_id`` it already stored. No exception ends the extension's thread while it can still
poll: a publisher or reporter that raises costs that invocation's events (reported as misses,
or logged when the reporter itself fails), never the container.

Shutdown: with an extension registered, Lambda sends the runtime ``SIGTERM`` before it ends the
environment (500 ms for a runtime with an internal extension; AWS sample
"graceful-shutdown-with-aws-lambda", Python 3.12 runtime). :meth:`PostResponseCapture.shutdown`
reports every event not yet confirmed by the queue as a miss, so nothing is lost silently.
"""

from __future__ import annotations

import http.client
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sml.core.events import event_id, serialise_event
from sml.predict.capture import CapturedEvent, CaptureMiss, CaptureResult

logger = logging.getLogger(__name__)

EXTENSIONS_API_VERSION = "2020-01-01"
EXTENSION_NAME = "sml-capture"
SHUTDOWN_MISS_REASON = "the execution environment shut down before the queue confirmed the send"
DEADLINE_MISS_REASON = "the invocation's deadline came before the queue confirmed the send"
# Time kept back before the invocation's deadline for reporting misses and calling next.
DEADLINE_MARGIN_S = 0.5
# How long a send may take when the INVOKE event carries no deadline (and for the flush at the end).
DEFAULT_SEND_BUDGET_S = 10.0

Publish = Callable[[Sequence[CapturedEvent]], CaptureResult]
Report = Callable[[CaptureResult], None]


class ExtensionsApiError(RuntimeError):
    """The Extensions API refused a call or could not be reached; the message says which call and why."""


class ExtensionsApiClient:
    """The two calls of the Lambda Extensions API an internal extension makes.

    :param runtime_api: ``host:port`` of the API, the value of ``AWS_LAMBDA_RUNTIME_API``.
    :param timeout_s: socket timeout of ``register``; ``next`` waits without a limit, as
        it must (Lambda answers it only when the next invocation starts).
    """

    def __init__(self, runtime_api: str, *, timeout_s: float = 5.0) -> None:
        self.runtime_api = runtime_api
        self.timeout_s = timeout_s
        self._next_connection: http.client.HTTPConnection | None = None

    def register(self, name: str, events: Sequence[str]) -> str:
        """``POST /2020-01-01/extension/register``; returns the ``Lambda-Extension-Identifier``.

        :raises ExtensionsApiError: not 200, no identifier, or the API is unreachable.
        """
        connection = http.client.HTTPConnection(self.runtime_api, timeout=self.timeout_s)
        try:
            body = json.dumps({"events": list(events)})
            connection.request("POST", f"/{EXTENSIONS_API_VERSION}/extension/register", body=body, headers={"Lambda-Extension-Name": name})
            response = connection.getresponse()
            payload = response.read()
            identifier = response.getheader("Lambda-Extension-Identifier")
        except OSError as exc:
            raise ExtensionsApiError(f"register at {self.runtime_api}: {exc}") from exc
        finally:
            connection.close()
        if response.status != 200 or not identifier:
            raise ExtensionsApiError(f"register at {self.runtime_api}: HTTP {response.status} {payload[:300]!r}")
        return identifier

    def next_event(self, extension_id: str) -> dict[str, Any]:
        """``GET /2020-01-01/extension/event/next``: blocks until Lambda has an event; returns it.

        :raises ExtensionsApiError: not 200, not a JSON object, or the API is unreachable.
        """
        if self._next_connection is None:
            self._next_connection = http.client.HTTPConnection(self.runtime_api)
        try:
            self._next_connection.request(
                "GET", f"/{EXTENSIONS_API_VERSION}/extension/event/next", headers={"Lambda-Extension-Identifier": extension_id}
            )
            response = self._next_connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._next_connection.close()
            self._next_connection = None
            raise ExtensionsApiError(f"next at {self.runtime_api}: {type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise ExtensionsApiError(f"next at {self.runtime_api}: HTTP {response.status} {payload[:300]!r}")
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise ExtensionsApiError(f"next at {self.runtime_api}: the event is not JSON: {exc}") from exc
        if not isinstance(event, dict):
            raise ExtensionsApiError(f"next at {self.runtime_api}: the event is not a JSON object")
        return event


@dataclass
class _Invocation:
    events: list[CapturedEvent] = field(default_factory=list)
    ended: bool = False


class PostResponseCapture:
    """The internal extension: sends each invocation's deferred events after the response.

    Build it with :meth:`register`. The handler calls :meth:`defer` with the events to capture
    and :meth:`end_invocation` when it returns (also when it fails, so the extension never
    waits for a hand-over that will not come). Thread-safe.

    :param client: the Extensions API client.
    :param extension_id: the identifier ``register`` returned.
    :param publish: sends events and returns what happened (``PredictionCapture.capture``).
    :param report: records a result after the response (metrics, ``capture_miss`` log lines).
    :param clock: seconds since the epoch, the scale of an ``INVOKE`` event's ``deadlineMs``
        (tests pass a fake).
    """

    def __init__(
        self, client: ExtensionsApiClient, extension_id: str, *, publish: Publish, report: Report, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.extension_id = extension_id
        self._publish = publish
        self._report = report
        self._clock = clock
        self._lock = threading.Condition()
        self._invocations: dict[str, _Invocation] = {}
        self._in_flight: list[CapturedEvent] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{EXTENSION_NAME}-extension", daemon=True)

    @classmethod
    def register(
        cls, runtime_api: str, *, publish: Publish, report: Report, name: str = EXTENSION_NAME, clock: Callable[[], float] = time.time
    ) -> PostResponseCapture:
        """Register with the Extensions API at ``runtime_api`` for ``INVOKE`` and start the extension thread.

        Call it during init (at import of the handler module): Lambda refuses registrations
        once the runtime has asked for its first invocation.

        :raises ExtensionsApiError: the registration failed.
        """
        client = ExtensionsApiClient(runtime_api)
        extension = cls(client, client.register(name, ["INVOKE"]), publish=publish, report=report, clock=clock)
        extension._thread.start()
        return extension

    @property
    def active(self) -> bool:
        """Whether the extension still takes events (false after :meth:`shutdown` or a lost API)."""
        with self._lock:
            return not self._stopped

    def defer(self, request_id: str, events: Sequence[CapturedEvent]) -> bool:
        """Hand ``events`` of invocation ``request_id`` over for sending after the response.

        :returns: false when the extension no longer runs; the caller must then send them itself.
        """
        with self._lock:
            if self._stopped:
                return False
            self._invocations.setdefault(request_id, _Invocation()).events.extend(events)
            return True

    def end_invocation(self, request_id: str) -> None:
        """The handler of ``request_id`` is done: the extension may send and ask for the next event."""
        with self._lock:
            self._invocations.setdefault(request_id, _Invocation()).ended = True
            self._lock.notify_all()

    def shutdown(self) -> CaptureResult:
        """Stop taking events and report every event not yet confirmed by the queue as a miss.

        What ``SIGTERM`` calls: there is no time for another send, so the events are logged
        whole (by ``report``) for ``sml capture resend``. An event whose send was under way may
        also have reached the queue; the writer skips a ``prediction_id`` it already stored.
        """
        with self._lock:
            self._stopped = True
            pending = [*self._in_flight, *(event for invocation in self._invocations.values() for event in invocation.events)]
            self._in_flight = []
            self._invocations.clear()
            self._lock.notify_all()
        result = _all_missed(pending, SHUTDOWN_MISS_REASON)
        if result.misses:
            self._report_safely(result)
        return result

    def install_sigterm_handler(self) -> bool:
        """Make ``SIGTERM`` call :meth:`shutdown`, then the handler that was there before.

        With the default disposition, the signal is raised again so the process still ends.

        :returns: false when not called from the main thread (Python installs handlers only there).
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.shutdown()
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def _run(self) -> None:
        try:
            while True:
                event = self.client.next_event(self.extension_id)
                if event.get("eventType") != "INVOKE":
                    logger.warning("%s: unexpected event %r; stopping", EXTENSION_NAME, event.get("eventType"))
                    break
                try:
                    self._post_runtime(str(event.get("requestId", "")), event.get("deadlineMs"))
                except Exception:  # noqa: BLE001 - logged with its traceback; the next invocation must still be polled for
                    logger.exception("%s: handling invocation %s failed; polling for the next", EXTENSION_NAME, event.get("requestId"))
        except ExtensionsApiError as exc:
            logger.warning("%s: the Extensions API is gone (%s); events are sent inline from now on", EXTENSION_NAME, exc)
        except Exception:  # noqa: BLE001 - the thread ends here: stop taking events so the handler sends inline
            logger.exception("%s: the extension failed; events are sent inline from now on", EXTENSION_NAME)
        finally:
            self._stop_and_flush()

    def _post_runtime(self, request_id: str, deadline_ms: Any) -> None:
        deadline = deadline_ms / 1000 if isinstance(deadline_ms, int | float) and not isinstance(deadline_ms, bool) else None
        with self._lock:
            while not self._stopped and not self._invocations.get(request_id, _Invocation()).ended:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    break
                self._lock.wait(remaining)
            if self._stopped:
                return
            # Invocations that ended without their INVOKE reaching this extension go along, never stranded.
            finished = [key for key, invocation in self._invocations.items() if invocation.ended or key == request_id]
            batch = [event for key in finished for event in self._invocations.pop(key).events]
            if not batch:
                return
            self._in_flight = batch
        budget = DEFAULT_SEND_BUDGET_S if deadline is None else deadline - self._clock() - DEADLINE_MARGIN_S
        self._send(batch, budget)

    def _send(self, events: list[CapturedEvent], budget_s: float) -> None:
        """Publish ``events`` in a thread, waiting at most ``budget_s``; then report once what happened."""
        outcome: list[CaptureResult] = []
        if budget_s > 0:
            sender = threading.Thread(target=self._publish_into, args=(events, outcome), name=f"{EXTENSION_NAME}-send", daemon=True)
            sender.start()
            sender.join(budget_s)
        with self._lock:
            if self._in_flight is not events:  # shutdown() took them over and reported them
                return
            self._in_flight = []
            result = outcome[0] if outcome else _all_missed(events, DEADLINE_MISS_REASON)
        if not outcome:
            logger.warning("%s: %d events not confirmed within %.3f s of the deadline", EXTENSION_NAME, len(events), max(budget_s, 0.0))
        self._report_safely(result)

    def _publish_into(self, events: list[CapturedEvent], outcome: list[CaptureResult]) -> None:
        try:
            result = self._publish(events)
        except Exception as exc:  # noqa: BLE001 - not swallowed: every event is reported whole as a miss, and logged with its traceback
            logger.exception("%s: sending failed unexpectedly", EXTENSION_NAME)
            result = _all_missed(events, f"{type(exc).__name__}: {exc}")
        with self._lock:
            if self._in_flight is events:  # not given up on: the waiting thread reports it
                outcome.append(result)

    def _report_safely(self, result: CaptureResult) -> None:
        try:
            self._report(result)
        except Exception:  # noqa: BLE001 - the misses still reach the log below, so they can be resent
            logger.exception("%s: reporting a capture result failed", EXTENSION_NAME)
            for miss in result.misses:
                logger.error(
                    "event not captured; re-send message_body to the events queue",
                    extra={"capture_miss": miss.reason, "event_id": miss.event_id, "message_body": miss.body},
                )

    def _stop_and_flush(self) -> None:
        with self._lock:
            self._stopped = True
            leftover = [event for invocation in self._invocations.values() for event in invocation.events]
            self._invocations.clear()
            self._in_flight = leftover
        if leftover:
            self._send(leftover, DEFAULT_SEND_BUDGET_S)


def _all_missed(events: Sequence[CapturedEvent], reason: str) -> CaptureResult:
    return CaptureResult(0, 0, tuple(CaptureMiss(event_id(event), serialise_event(event), reason) for event in events))
