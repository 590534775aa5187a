"""The local stack's schedule: EventBridge rules played by a thread that invokes a function periodically.

Each :class:`ScheduledInvocation` invokes its function once when started (a stack that was down
catches up at once) and then every ``interval_s``, with the event an EventBridge scheduled rule
would send (its ``time`` the moment of the invocation) merged with the rule's fixed input. A
failing invocation is logged and the next one comes on time, as EventBridge retries and then
gives up.

Example::

    retention = ScheduledInvocation("retention", writer.invoke, {"sml_action": "retention"}, interval_s=86400).start()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Self

logger = logging.getLogger(__name__)


class ScheduledInvocation:
    """Invokes ``invoke(event)`` now and then every ``interval_s`` seconds until :meth:`stop`.

    :param name: the rule's name, in logs.
    :param invoke: called with the event; what it returns is kept in ``last_result``.
    :param event_input: the rule's fixed input; ``time`` is added (ISO 8601, UTC).
    :param clock: the current time (replaceable in tests).
    :param first_after_s: wait this long before the first invocation instead of invoking at start
        (a weekly run that a restarted stack need not catch up on).
    :param worth_logging: whether a result gets an INFO line (otherwise DEBUG): a rule that runs
        every minute and mostly finds nothing would fill ``sml up``'s output.
    """

    def __init__(
        self,
        name: str,
        invoke: Callable[[dict[str, Any]], Any],
        event_input: Mapping[str, Any],
        *,
        interval_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        first_after_s: float = 0.0,
        worth_logging: Callable[[Any], bool] = lambda result: True,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.name = name
        self.invoke = invoke
        self.event_input = dict(event_input)
        self.interval_s = interval_s
        self.clock = clock
        self.first_after_s = first_after_s
        self.worth_logging = worth_logging
        self.invocations = 0
        self.last_result: Any = None
        self.last_error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{name}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def run_once(self) -> Any:
        """Invoke now with the scheduled event; returns the result, or ``None`` after logging a failure."""
        event = {**self.event_input, "time": self.clock().isoformat().replace("+00:00", "Z")}
        self.invocations += 1
        try:
            self.last_result, self.last_error = self.invoke(event), None
        except Exception as exc:  # the schedule outlives a failed run, as EventBridge's does
            self.last_error = exc
            logger.warning("scheduled %s failed: %s", self.name, exc)
            return None
        logger.log(logging.INFO if self.worth_logging(self.last_result) else logging.DEBUG, "scheduled %s: %s", self.name, self.last_result)
        return self.last_result

    def _run(self) -> None:
        if self._stopped.wait(self.first_after_s):
            return
        while not self._stopped.is_set():
            self.run_once()
            self._stopped.wait(self.interval_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Take no further invocation; wait up to ``timeout_s`` for one in progress (idempotent)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
