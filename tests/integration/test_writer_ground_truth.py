"""Ground-truth events through the writer on SQLite and MariaDB: latest labelled_at wins, idempotent, bisecting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from writer_support import (
    REJECTED_LABEL,
    add_label_rejecting_trigger,
    event_body,
    label_body,
    prediction_id_of,
    stored_rows,
    unreachable_database_url,
)
from writer_support import LABELLED_AT as DAY_ONE

from sml.core.db import GROUND_TRUTH, create_db_engine
from sml.core.events import new_prediction_id
from sml.writer.batch import BatchNotStored, write_batch


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def numbered(bodies: list[str], prefix: str = "m") -> list[tuple[str, str]]:
    return [(f"{prefix}{index}", body) for index, body in enumerate(bodies)]


def labels(engine: Engine) -> dict[str, sa.Row[Any]]:
    with engine.connect() as connection:
        return {row.prediction_id: row for row in connection.execute(sa.select(GROUND_TRUTH))}


def test_labels_are_stored_before_and_after_their_predictions(engine: Engine) -> None:
    prediction = event_body()
    early_id = prediction_id_of(prediction)
    late_id = prediction_id_of(event_body())

    first = write_batch(engine, numbered([label_body(early_id, "malignant")]))
    second = write_batch(engine, numbered([prediction]))
    third = write_batch(engine, numbered([label_body(late_id, 1, source=None)]))

    assert (first.labels_stored, first.inserted, second.inserted, third.labels_stored) == (1, 0, 1, 1)
    stored = labels(engine)
    assert stored[early_id].label == '"malignant"' and stored[early_id].source == "crm"
    assert stored[late_id].label == "1" and stored[late_id].source is None
    assert stored[early_id].labelled_at == DAY_ONE.replace(tzinfo=None)
    assert set(stored_rows(engine)) == {early_id}, "a label never creates a prediction row"


def test_numeric_labels_of_a_regression_model_are_stored_exactly(engine: Engine) -> None:
    values = [0.1 + 0.2, 151.0, 42, -1.2345678901234567e-300, 2**60 + 1]
    ids = [prediction_id_of(event_body()) for _ in values]

    result = write_batch(engine, numbered([label_body(prediction_id, value) for prediction_id, value in zip(ids, values)]))

    assert result.labels_stored == len(values)
    stored = labels(engine)
    assert [stored[prediction_id].label for prediction_id in ids] == ["0.30000000000000004", "151.0", "42", repr(values[3]), "1152921504606846977"]
    assert [json.loads(stored[prediction_id].label) for prediction_id in ids] == values


def test_the_label_column_compares_equal_to_the_stored_prediction(engine: Engine) -> None:
    prediction = event_body()
    prediction_id = prediction_id_of(prediction)
    write_batch(engine, numbered([prediction, label_body(prediction_id, "malignant")]))

    with engine.connect() as connection:
        matched = connection.exec_driver_sql(
            "SELECT COUNT(*) FROM predictions p JOIN ground_truth g ON g.prediction_id = p.prediction_id AND g.label = p.prediction"
        ).scalar_one()
    assert matched == 1


def test_a_later_label_replaces_an_earlier_one_and_an_older_or_equal_one_does_not(engine: Engine) -> None:
    prediction_id = new_prediction_id()
    write_batch(engine, numbered([label_body(prediction_id, "benign", DAY_ONE, "triage")]))

    later = write_batch(engine, numbered([label_body(prediction_id, "malignant", DAY_ONE + timedelta(days=20), "biopsy")]))
    older = write_batch(engine, numbered([label_body(prediction_id, "benign", DAY_ONE + timedelta(days=3), "triage")]))
    tie = write_batch(engine, numbered([label_body(prediction_id, "benign", DAY_ONE + timedelta(days=20), "recheck")]))

    assert (later.labels_stored, later.labels_skipped) == (1, 0)
    assert (older.labels_stored, older.labels_skipped) == (0, 1)
    assert (tie.labels_stored, tie.labels_skipped) == (0, 1), "a tie keeps the label stored first"
    row = labels(engine)[prediction_id]
    assert (row.label, row.source, row.labelled_at) == ('"malignant"', "biopsy", (DAY_ONE + timedelta(days=20)).replace(tzinfo=None))


def test_a_label_one_microsecond_later_wins(engine: Engine) -> None:
    prediction_id = new_prediction_id()
    write_batch(engine, numbered([label_body(prediction_id, "benign")]))
    outcome = write_batch(engine, numbered([label_body(prediction_id, "malignant", DAY_ONE + timedelta(microseconds=1))]))

    assert outcome.labels_stored == 1
    assert labels(engine)[prediction_id].label == '"malignant"'


def test_within_one_batch_the_latest_label_wins_and_every_copy_is_acknowledged(engine: Engine) -> None:
    prediction_id = new_prediction_id()
    bodies = [
        label_body(prediction_id, "benign", DAY_ONE),
        label_body(prediction_id, "malignant", DAY_ONE + timedelta(hours=1), "second"),
        label_body(prediction_id, "benign", DAY_ONE + timedelta(hours=1), "tie-later-in-batch"),
        label_body(prediction_id, "benign", DAY_ONE),
    ]

    outcome = write_batch(engine, numbered(bodies))

    assert (outcome.labels_stored, outcome.labels_skipped, outcome.failures) == (1, 3, [])
    assert labels(engine)[prediction_id].source == "second"


def test_redelivered_labels_change_nothing(engine: Engine) -> None:
    bodies = [label_body(new_prediction_id(), "benign") for _ in range(30)]
    write_batch(engine, numbered(bodies), stored_at=DAY_ONE)

    again = write_batch(engine, numbered(bodies), stored_at=DAY_ONE + timedelta(days=1))

    assert (again.labels_stored, again.labels_skipped, again.inserted, again.duplicates) == (0, 30, 0, 0)
    assert {row.stored_at for row in labels(engine).values()} == {DAY_ONE.replace(tzinfo=None)}


def test_a_batch_mixing_both_event_types_stores_each_in_its_table(engine: Engine) -> None:
    predictions = [event_body(radius=float(index)) for index in range(6)]
    ids = [prediction_id_of(body) for body in predictions]
    bodies = [predictions[0], label_body(ids[0]), predictions[1], label_body(ids[1], "malignant"), label_body(new_prediction_id())]
    bodies += predictions[2:] + [predictions[0]]

    outcome = write_batch(engine, numbered(bodies))

    assert (outcome.inserted, outcome.duplicates, outcome.labels_stored, outcome.labels_skipped, outcome.failures) == (6, 1, 3, 0, [])
    assert set(stored_rows(engine)) == set(ids)
    assert len(labels(engine)) == 3


def test_a_label_and_a_prediction_sharing_an_id_in_one_batch_are_both_stored(engine: Engine) -> None:
    prediction = event_body()
    prediction_id = prediction_id_of(prediction)

    outcome = write_batch(engine, numbered([label_body(prediction_id), prediction]))

    assert (outcome.inserted, outcome.labels_stored) == (1, 1)
    assert set(stored_rows(engine)) == set(labels(engine)) == {prediction_id}


def test_poison_records_fail_alone_in_a_mixed_batch(engine: Engine) -> None:
    add_label_rejecting_trigger(engine)
    good_ids = [new_prediction_id() for _ in range(9)]
    rejected_id = new_prediction_id()
    bodies = [label_body(prediction_id) for prediction_id in good_ids[:4]]
    bodies += [label_body(rejected_id, REJECTED_LABEL), event_body(), '{"event_type": "ground_truth", "label": "benign"}']
    bodies += [label_body(prediction_id) for prediction_id in good_ids[4:]] + [label_body(rejected_id, REJECTED_LABEL)]
    records = numbered(bodies)

    outcome = write_batch(engine, records)

    failed = {failure.message_id: failure.reason for failure in outcome.failures}
    assert set(failed) == {"m4", "m6", "m12"}
    assert "label rejected by the test trigger" in failed["m4"] and rejected_id in failed["m4"]
    assert failed["m12"] == failed["m4"], "every copy of a rejected label is reported"
    assert failed["m6"].startswith("unparseable event: prediction_id: ")
    assert (outcome.inserted, outcome.labels_stored, outcome.labels_skipped) == (1, 9, 0)
    assert set(labels(engine)) == set(good_ids)


def test_an_unknown_event_type_is_a_failed_record_naming_the_field(engine: Engine) -> None:
    body = label_body(new_prediction_id()).replace('"ground_truth"', '"label_v2"')

    outcome = write_batch(engine, [("only", body)])

    assert [failure.reason for failure in outcome.failures] == [
        "unparseable event: event_type: unknown event type 'label_v2'; expected 'prediction' (or no event_type), 'ground_truth' or 'predict_refusal'"
    ]


def test_an_unreachable_database_fails_the_whole_batch_of_labels(engine: Engine, migrated_db_url: str, tmp_path: Path) -> None:
    records = numbered([label_body(new_prediction_id()) for _ in range(5)] + [event_body()])
    down = create_db_engine(unreachable_database_url(migrated_db_url, tmp_path))

    with pytest.raises(BatchNotStored):
        write_batch(down, records)
    down.dispose()

    assert labels(engine) == {}
    stored = write_batch(engine, records)
    assert (stored.inserted, stored.labels_stored) == (1, 5)


def test_more_labels_than_one_statement_are_stored_and_replaced_whole(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.writer import batch

    monkeypatch.setattr(batch, "MAX_ROWS_PER_STATEMENT", 7)
    ids = [new_prediction_id() for _ in range(40)]
    write_batch(engine, numbered([label_body(prediction_id, "benign") for prediction_id in ids[:25]]))
    later = DAY_ONE + timedelta(days=1)
    bodies = [label_body(prediction_id, "malignant", later if index % 2 else DAY_ONE) for index, prediction_id in enumerate(ids)]

    outcome = write_batch(engine, numbered(bodies))

    stored = labels(engine)
    replaced = [prediction_id for index, prediction_id in enumerate(ids[:25]) if index % 2]
    assert (outcome.labels_stored, outcome.labels_skipped) == (15 + len(replaced), 25 - len(replaced))
    assert {prediction_id for prediction_id, row in stored.items() if row.label == '"malignant"'} == set(replaced) | set(ids[25:])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    labels=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(["benign", "malignant"])), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 11), max_size=3),
)
def test_whatever_the_batching_the_first_label_with_the_latest_labelled_at_is_stored(engine: Engine, labels, cuts) -> None:
    ids = [new_prediction_id() for _ in range(3)]
    arrivals = [(ids[which], DAY_ONE + timedelta(days=day), label, f"arrival-{index}") for index, (which, day, label) in enumerate(labels)]
    bodies = [label_body(prediction_id, label, labelled_at, source) for prediction_id, labelled_at, label, source in arrivals]
    bounds = [0, *sorted({cut for cut in cuts if cut < len(bodies)}), len(bodies)]

    for start, end in zip(bounds, bounds[1:]):
        assert write_batch(engine, numbered(bodies[start:end])).failures == []

    stored = labels_of(engine, ids)
    for prediction_id in set(arrival[0] for arrival in arrivals):
        mine = [arrival for arrival in arrivals if arrival[0] == prediction_id]
        latest = max(arrival[1] for arrival in mine)
        winner = next(arrival for arrival in mine if arrival[1] == latest)
        assert (stored[prediction_id].source, stored[prediction_id].label) == (winner[3], f'"{winner[2]}"')


def labels_of(engine: Engine, prediction_ids: list[str]) -> dict[str, sa.Row[Any]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(GROUND_TRUTH).where(GROUND_TRUTH.c.prediction_id.in_(prediction_ids)))
        return {row.prediction_id: row for row in rows}
