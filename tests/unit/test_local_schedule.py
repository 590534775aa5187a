"""The local stack's schedule: invoked at start, then every interval, with the rule's input and the time."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

from sml.local.schedule import ScheduledInvocation

MOMENT = datetime(2026, 12, 7, 0, 30, tzinfo=timezone.utc)


def test_the_event_is_the_rules_input_with_the_time_of_the_invocation() -> None:
    events: list[dict[str, Any]] = []
    schedule = ScheduledInvocation("retention", events.append, {"sml_action": "retention"}, interval_s=60, clock=lambda: MOMENT)

    schedule.run_once()

    assert events == [{"sml_action": "retention", "time": "2026-12-07T00:30:00Z"}]


def test_it_runs_at_start_and_again_each_interval_until_stopped() -> None:
    calls = threading.Semaphore(0)
    schedule = ScheduledInvocation("retention", lambda _event: calls.release(), {}, interval_s=0.01).start()

    assert all(calls.acquire(timeout=10) for _ in range(3))
    schedule.stop()
    after_stop = schedule.invocations
    threading.Event().wait(0.1)
    assert schedule.invocations == after_stop


def test_a_failed_run_is_kept_and_the_next_one_still_comes(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = iter([RuntimeError("database down"), "done"])

    def invoke(_event: dict[str, Any]) -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    schedule = ScheduledInvocation("retention", invoke, {}, interval_s=60)

    # The schedule's own logger, whatever level an earlier test in this process left on "sml".
    with caplog.at_level(logging.WARNING, logger="sml.local.schedule"):
        assert schedule.run_once() is None and str(schedule.last_error) == "database down"
    assert "scheduled retention failed: database down" in caplog.text
    assert schedule.run_once() == "done" and schedule.last_error is None


def test_a_result_not_worth_logging_gets_a_debug_line_only(caplog: pytest.LogCaptureFixture) -> None:
    results = iter([{"converted": 0}, {"converted": 2}])
    schedule = ScheduledInvocation("conversion", lambda _event: next(results), {}, interval_s=60, worth_logging=lambda result: bool(result["converted"]))

    with caplog.at_level(logging.DEBUG, logger="sml.local.schedule"):
        schedule.run_once()
        schedule.run_once()

    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("DEBUG", "scheduled conversion: {'converted': 0}"),
        ("INFO", "scheduled conversion: {'converted': 2}"),
    ]


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        ScheduledInvocation("retention", print, {}, interval_s=0)


def test_a_schedule_that_waits_first_does_not_run_at_start_and_stops_while_waiting() -> None:
    calls: list[dict[str, Any]] = []
    schedule = ScheduledInvocation("drift", calls.append, {"model_name": "wine"}, interval_s=3600, first_after_s=3600).start()
    schedule.stop()  # returns at once: the wait ends with the stop
    assert calls == [] and schedule.invocations == 0
    assert not schedule._thread.is_alive()


def test_after_its_first_wait_it_runs_each_interval() -> None:
    calls = threading.Semaphore(0)
    schedule = ScheduledInvocation("drift", lambda _event: calls.release(), {}, interval_s=0.01, first_after_s=0.01).start()
    assert all(calls.acquire(timeout=10) for _ in range(2))
    schedule.stop()
