"""The writer's pure part for ground truth: label rows, and which label of a batch goes to the database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sml.core.events import build_ground_truth_event, build_prediction_event, new_prediction_id, serialise_event
from sml.writer.batch import ground_truth_row, parse_records

STORED_AT = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
LABELLED_AT = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))


def test_a_label_row_holds_json_text_and_naive_utc_times() -> None:
    prediction_id = new_prediction_id()
    event = build_ground_truth_event(prediction_id=prediction_id, label="malignant", labelled_at=LABELLED_AT, source="biopsy")

    assert ground_truth_row(event, STORED_AT) == {
        "prediction_id": prediction_id,
        "label": '"malignant"',
        "labelled_at": datetime(2026, 11, 2, 8, 30, 15, 123456),
        "source": "biopsy",
        "stored_at": datetime(2026, 12, 1, 8, 0),
    }
    assert ground_truth_row(build_ground_truth_event(prediction_id=prediction_id, label=7, labelled_at=LABELLED_AT), STORED_AT)["label"] == "7"


def test_the_latest_label_of_a_batch_is_kept_and_a_tie_keeps_the_first() -> None:
    prediction_id = new_prediction_id()
    bodies = [
        serialise_event(build_ground_truth_event(prediction_id=prediction_id, label=label, labelled_at=LABELLED_AT + timedelta(hours=hours), source=source))
        for label, hours, source in [("benign", 0, "a"), ("malignant", 2, "b"), ("benign", 2, "c"), ("benign", 1, "d")]
    ]

    parsed = parse_records([(f"m{index}", body) for index, body in enumerate(bodies)], STORED_AT)

    [row] = parsed.ground_truth_rows
    assert (row["label"], row["source"]) == ('"malignant"', "b")
    assert parsed.message_ids_by_label == {prediction_id: ["m0", "m1", "m2", "m3"]}
    assert parsed.rows == [] and parsed.failures == []


def test_both_event_types_are_sorted_into_their_rows() -> None:
    prediction = build_prediction_event(model_name="m", model_version="v1", features={"x": 1.0}, prediction="benign")
    label = build_ground_truth_event(prediction_id=prediction.prediction_id, label="benign")

    parsed = parse_records([("p", serialise_event(prediction)), ("l", serialise_event(label)), ("bad", '{"event_type": 2}')], STORED_AT)

    assert [row["prediction_id"] for row in parsed.rows] == [prediction.prediction_id]
    assert [row["prediction_id"] for row in parsed.ground_truth_rows] == [prediction.prediction_id]
    assert parsed.message_ids_by_prediction == {prediction.prediction_id: ["p"]}
    assert parsed.message_ids_by_label == {prediction.prediction_id: ["l"]}
    assert [(failure.message_id, failure.reason) for failure in parsed.failures] == [
        ("bad", "unparseable event: event_type: unknown event type 2; expected 'prediction' (or no event_type), 'ground_truth' or 'predict_refusal'")
    ]
