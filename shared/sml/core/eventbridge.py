"""EventBridge scheduled events as the functions read them (pure; no Powertools or AWS import, so a light function stays light)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any


def scheduled_time(event: Mapping[str, Any], *, default_now: bool = False) -> datetime:
    """The ``time`` of an EventBridge (scheduled) event as an aware UTC datetime.

    EventBridge sends it as ISO 8601 in UTC (``2015-10-08T16:53:06Z``); an offset is converted and
    a naive time is taken as UTC.

    :param default_now: without ``time``, now (a direct invocation) instead of an error.
    :raises ValueError: ``time`` is missing (unless ``default_now``) or not an ISO 8601 timestamp, naming the field.
    """
    text = event.get("time")
    if text is None and default_now:
        return datetime.now(timezone.utc)
    if not isinstance(text, str):
        raise ValueError(f"event field 'time': expected the EventBridge event's ISO 8601 time, got {text!r}")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"event field 'time': {text!r} is not an ISO 8601 timestamp") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
