"""Recovering prediction and refusal events that predict could not send to the queue.

When SQS cannot be reached, predict still answers and logs each missed event whole: a JSON log
line with the keys ``capture_miss`` (why), ``prediction_id`` (or ``refusal_id``) and
``message_body`` (the SQS body as it would have been sent). This module reads those lines back
from a log export and re-sends the bodies unchanged. Re-sending twice is harmless: the writer
skips stored ``prediction_id``\\ s and ``refusal_id``\\ s.

Accepted inputs: Powertools JSON lines (``sml up`` output, ``aws logs tail``, a CloudWatch
Logs Insights export), optionally prefixed by a timestamp, and the JSON document that
``aws logs filter-log-events --output json`` prints (its ``events[].message``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sml.predict.capture import CaptureMiss, publish_message_bodies
from sml.core.events import EventValidationError, GroundTruthEvent, event_id, parse_event


@dataclass
class MissedEvents:
    """The events found in a log export, in order, once each, and the entries that were unusable."""

    bodies: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def missed_events_from_log(text: str, *, source: str) -> MissedEvents:
    """Every ``capture_miss`` record of a predict log export, validated against the event contract.

    :param text: the export's content.
    :param source: the file name, used in the problem descriptions.
    """
    found = MissedEvents()
    seen: set[str] = set()
    for where, record in _log_records(text, source):
        if isinstance(record, str):
            found.problems.append(f"{where}: {record}")
            continue
        if "capture_miss" not in record:
            continue
        body = record.get("message_body")
        if not isinstance(body, str):
            found.problems.append(f"{where}: a capture_miss record without a message_body string")
            continue
        try:
            event = parse_event(body)
            if type(event) is GroundTruthEvent:
                raise EventValidationError("event_type", "a ground-truth event; predict captures predictions and refusals only")
        except EventValidationError as exc:
            found.problems.append(f"{where}: message_body is not a valid prediction or refusal event ({exc})")
            continue
        identifier = event_id(event)
        if identifier not in seen:
            seen.add(identifier)
            found.bodies.append((identifier, body))
    return found


def _log_records(text: str, source: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each log record as a dict, or a problem (a string) for an entry that mentions ``capture_miss``
    but cannot be read; entries that are not JSON objects are other log lines, skipped."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("events"), list):
            messages = (item.get("message") if isinstance(item, dict) else None for item in document["events"])
            yield from _records_in((f"{source}: events[{index}]", message if isinstance(message, str) else "") for index, message in enumerate(messages))
            return
    yield from _records_in((f"{source}:{number}", line) for number, line in enumerate(text.splitlines(), start=1))


def _records_in(entries: Iterable[tuple[str, str]]) -> Iterator[tuple[str, dict[str, Any] | str]]:
    for where, line in entries:
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except RecursionError:
            if "capture_miss" in line:
                yield where, "a capture_miss record nested too deeply to read as JSON"
            continue
        except ValueError:
            continue
        if isinstance(record, dict):
            yield where, record


def resend_missed_events(sqs_client: Any, queue_url: str, bodies: list[tuple[str, str]]) -> list[CaptureMiss]:
    """Send the recovered bodies unchanged (batches of 10); returns those the queue did not accept."""
    return publish_message_bodies(sqs_client, queue_url, bodies) if bodies else []
