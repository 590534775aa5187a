"""The writer's pure part: SQS bodies into rows, failures with reasons, and error classification."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pymysql
import pytest
import sqlalchemy as sa

from sml.core.events import build_prediction_event, parse_prediction_event, serialise_prediction_event
from sml.writer.batch import is_data_error, parse_records, prediction_row

STORED_AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def event_body(**overrides: object) -> str:
    fields = {
        "model_name": "breast-cancer",
        "model_version": "v1",
        "features": {"radius": 14.2, "texture": None, "colour": "rød"},
        "prediction": "malignant",
        "probabilities": {"benign": 0.25, "malignant": 0.75},
    }
    fields.update(overrides)
    return serialise_prediction_event(build_prediction_event(**fields))  # type: ignore[arg-type]


def test_row_holds_the_event_as_compact_json_and_naive_utc_timestamps() -> None:
    predicted_at = datetime(2024, 5, 1, 14, 30, 0, 654321, tzinfo=timezone(timedelta(hours=2)))
    event = parse_prediction_event(event_body(predicted_at=predicted_at, prediction=1))

    row = prediction_row(event, STORED_AT)

    assert row["prediction_id"] == event.prediction_id
    assert row["features"] == '{"radius":14.2,"texture":null,"colour":"rød"}'
    assert row["probabilities"] == '{"benign":0.25,"malignant":0.75}'
    assert row["prediction"] == "1"
    assert row["predicted_at"] == datetime(2024, 5, 1, 12, 30, 0, 654321)
    assert row["stored_at"] == datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert json.loads(row["features"]) == event.features


def test_a_string_label_is_stored_as_json_text_so_it_reads_back_with_its_type() -> None:
    row = prediction_row(parse_prediction_event(event_body(prediction="1")), STORED_AT)
    assert row["prediction"] == '"1"'


def test_missing_probabilities_are_null() -> None:
    row = prediction_row(parse_prediction_event(event_body(probabilities=None)), STORED_AT)
    assert row["probabilities"] is None


def test_unparseable_records_fail_with_the_parser_reason_and_valid_ones_become_rows() -> None:
    good = event_body()
    wrong_version = json.dumps({**json.loads(event_body()), "schema_version": 2})

    parsed = parse_records([("m1", good), ("m2", "{not json"), ("m3", wrong_version), ("m4", "[]")], STORED_AT)

    assert [row["prediction_id"] for row in parsed.rows] == [json.loads(good)["prediction_id"]]
    reasons = {failure.message_id: failure.reason for failure in parsed.failures}
    assert set(reasons) == {"m2", "m3", "m4"}
    assert reasons["m2"].startswith("unparseable event: body: not valid JSON")
    assert reasons["m3"].startswith("unparseable event: schema_version:")
    assert "expected a JSON object" in reasons["m4"]


def test_a_prediction_id_delivered_twice_in_one_batch_is_one_row_acknowledged_for_both() -> None:
    body, other = event_body(), event_body()

    parsed = parse_records([("first", body), ("second", other), ("copy", body)], STORED_AT)

    assert len(parsed.rows) == 2
    prediction_id = json.loads(body)["prediction_id"]
    assert parsed.message_ids_by_prediction[prediction_id] == ["first", "copy"]
    assert parsed.failures == []


@pytest.mark.parametrize("field", ["prediction", "features"])
def test_a_lone_surrogate_is_a_record_failure(field: str) -> None:
    # Escaped lone surrogates are valid JSON syntax, yet no database can encode them: the event
    # contract refuses them, so the record fails alone and never reaches an INSERT.
    raw = json.loads(event_body())
    if field == "prediction":
        raw["prediction"] = "bad\ud800label"
    else:
        raw["features"]["colour"] = "\udfff"
    body = json.dumps(raw)  # ensure_ascii: the surrogate travels as a \\ud800 escape

    good = event_body()
    parsed = parse_records([("m1", body), ("m2", good)], STORED_AT)

    assert [row["prediction_id"] for row in parsed.rows] == [json.loads(good)["prediction_id"]]
    assert parsed.failures[0].message_id == "m1"
    assert parsed.failures[0].reason.startswith("unparseable event: body: not valid JSON")


def _wrapped(error_class: type[sa.exc.DBAPIError], orig: Exception, *, invalidated: bool = False) -> sa.exc.DBAPIError:
    return error_class("INSERT INTO predictions ...", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_wrapped(sa.exc.DataError, pymysql.err.DataError(1406, "Data too long for column 'prediction'", sqlstate="22001")), True),
        (_wrapped(sa.exc.IntegrityError, pymysql.err.IntegrityError(1048, "Column 'features' cannot be null", sqlstate="23000")), True),
        (_wrapped(sa.exc.OperationalError, pymysql.err.OperationalError(1292, "Incorrect datetime value", sqlstate="22007")), True),
        (_wrapped(sa.exc.OperationalError, pymysql.err.OperationalError(4025, "CONSTRAINT failed", sqlstate="23000")), True),
        (_wrapped(sa.exc.OperationalError, pymysql.err.OperationalError(2003, "Can't connect to MySQL server")), False),
        (_wrapped(sa.exc.OperationalError, pymysql.err.OperationalError(2013, "Lost connection"), invalidated=True), False),
        (_wrapped(sa.exc.OperationalError, pymysql.err.OperationalError(1213, "Deadlock found", sqlstate="40001")), False),
        (_wrapped(sa.exc.ProgrammingError, pymysql.err.ProgrammingError(1146, "Table doesn't exist", sqlstate="42S02")), False),
    ],
    ids=["too-long", "not-null", "bad-datetime", "check", "refused", "lost", "deadlock", "no-table"],
)
def test_only_errors_a_row_causes_are_data_errors(error: sa.exc.DBAPIError, expected: bool) -> None:
    assert is_data_error(error) is expected
