"""Any body on the queue, whatever its shape, fails alone and with a reason: generated JSON of every
shape, depth and encoding through the parse path the writer, ``sml dlq inspect`` and
``sml capture resend`` share."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from sml.core.events import (
    EventValidationError,
    build_prediction_event,
    parse_event,
    parse_ground_truth_event,
    parse_prediction_event,
    parse_refusal_event,
    serialise_prediction_event,
)
from sml.predict.capture_recovery import missed_events_from_log
from sml.writer.batch import parse_records
from sml.writer.replay import failure_reason

STORED_AT = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
PARSERS = (parse_event, parse_prediction_event, parse_ground_truth_event, parse_refusal_event)
VALID = serialise_prediction_event(
    build_prediction_event(model_name="breast-cancer", model_version="v1", features={"radius": 14.2}, prediction="benign")
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=25)
event_keys = st.sampled_from(["prediction_id", "schema_version", "model_name", "model_version", "features", "prediction", "predicted_at",
                              "probabilities", "event_type", "label", "labelled_at", "source", "refusal_id", "refused_at", "refused"])
# Objects shaped like events, with any value under the contract's keys.
event_like = st.dictionaries(event_keys, json_values | st.sampled_from(["ground_truth", "predict_refusal", "prediction", "2024-01-01T00:00:00.1234567Z", 1]), max_size=8)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """JSON nested far deeper than any event: arrays or objects, bare or under an event's key."""
    depth = draw(st.integers(500, 60_000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    core = opening * depth + ("1" if opening != "[" else "") + closing * depth
    where = draw(st.sampled_from(["{}", '{{"features":{}}}', '{{"event_type":"ground_truth","label":{}}}', '{{"event_type":{}}}',
                                  '{{"predicted_at":"2024-01-01T00:00:00.1234567Z","features":{}}}', '{{"event_type":"prediction","x":{}}}']))
    return where.format(core)


bodies = (
    st.builds(json.dumps, json_values)
    | st.builds(json.dumps, event_like)
    | deep()
    | st.text()
    | st.binary()
    | st.builds(lambda text: text.encode("utf-8", "surrogatepass"), st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1))
)


@given(body=bodies | st.none() | st.integers() | st.lists(st.integers(), max_size=2))
@settings(max_examples=400, deadline=None)
def test_every_parser_either_returns_an_event_or_names_what_is_wrong(body: object) -> None:
    for parse in PARSERS:
        try:
            parse(body)  # type: ignore[arg-type]
        except EventValidationError as exc:
            assert exc.field and exc.problem, exc


@given(body=bodies)
@settings(max_examples=300, deadline=None)
def test_a_writer_batch_fails_only_the_bad_body_and_says_why(body: str | bytes) -> None:
    parsed = parse_records([("valid", VALID), ("fuzzed", body), ("valid again", VALID)], STORED_AT)

    assert [row["prediction_id"] for row in parsed.rows][:1] == [json.loads(VALID)["prediction_id"]]
    assert parsed.message_ids_by_prediction[json.loads(VALID)["prediction_id"]][0] == "valid"
    assert all(failure.message_id == "fuzzed" and failure.reason.startswith("unparseable event: ") for failure in parsed.failures)
    assert isinstance(failure_reason(body), str)


@given(body=bodies.filter(lambda body: isinstance(body, str)))
@settings(max_examples=200, deadline=None)
def test_capture_resend_reads_a_log_of_any_body_or_names_the_entry(body: str) -> None:
    line = json.dumps({"capture_miss": "timeout", "message_body": body})
    found = missed_events_from_log("\n".join([line, body, json.dumps({"capture_miss": "timeout", "message_body": VALID})]), source="predict.log")

    assert found.bodies[-1][1] == VALID
    assert all(problem.startswith("predict.log:") for problem in found.problems)
