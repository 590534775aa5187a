"""A landing object reads back to exactly the events the writer parsed, whatever their values: every
type kept (True is not 1, 1 is not 1.0, -0.0 is not 0.0), every feature order, integers past 64
bits, any UTC instant of years 1 to 9999, and batches mixing schemas, labels and refusals."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sml.archive.landing import landing_body, read_landing
from sml.core.events import (
    build_ground_truth_event,
    build_prediction_event,
    build_refusal_event,
    serialise_event,
)
from sml.writer.batch import parse_records, rows_of_events

STORED_AT = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
names = st.sampled_from(["a", "b", "é ✓", "1", "predicted_at", " "]) | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128)
feature_values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts
labels = st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts.filter(bool)
instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999), timezones=st.just(timezone.utc))
predictions = st.builds(
    build_prediction_event,
    model_name=names, model_version=names, features=st.dictionaries(names, feature_values, min_size=1, max_size=6), prediction=labels,
    probabilities=st.none() | st.dictionaries(names, st.floats(0.0, 1.0), max_size=3), predicted_at=instants,
)
others = st.builds(build_ground_truth_event, prediction_id=st.uuids().map(str), label=labels, labelled_at=instants, source=st.none() | names) | st.builds(
    build_refusal_event, model_name=names, model_version=st.none() | names, refused=st.just({"a": {"out_of_range": 1}}), refused_at=instants
)


def as_json(event: Any) -> bytes:
    """The event's JSON, which tells apart what == does not (True and 1, 1 and 1.0, -0.0 and 0.0, key order)."""
    return msgspec.json.encode(event)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(predictions | others, min_size=1, max_size=6))
def test_a_landing_body_reads_back_to_the_parsed_events_and_their_rows(events: list[Any]) -> None:
    records = [(f"m{index}", serialise_event(event)) for index, event in enumerate(events)]
    parsed = parse_records(records, STORED_AT)
    assert parsed.failures == []

    stored_at, landed = read_landing(landing_body(parsed.events, STORED_AT), "s3://b/archive/landing/x.msgpack")

    assert stored_at == STORED_AT
    assert [(message_id, as_json(event)) for message_id, event in landed] == [(message_id, as_json(event)) for message_id, event in parsed.events]
    rebuilt = rows_of_events(landed, stored_at)
    assert as_json(rebuilt.rows) == as_json(parsed.rows)
    assert as_json(rebuilt.label_events) == as_json(parsed.label_events) and as_json(rebuilt.refusals) == as_json(parsed.refusals)
    assert as_json(rebuilt.prediction_values) == as_json(parsed.prediction_values)
