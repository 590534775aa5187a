"""Reading a window's predictions with their labels, and storing model quality (SQLite and MySQL)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from sml.core.db import GROUND_TRUTH, PREDICTIONS, QUALITY_METRICS, QUALITY_RUNS, apply_migrations, create_db_engine, to_db_timestamp
from sml.core.events import build_prediction_event
from sml.monitoring.model_quality.metrics import LABEL_OUTSIDE_CLASSES, UNLABELLED, QualityConfig, assess_quality
from sml.monitoring.model_quality.store import count_unmatched_labels, load_quality, read_quality_window, save_quality
from sml.monitoring.windows import TimeWindow
from sml.writer.batch import insert_prediction_rows, prediction_row

MODEL = "quality-model"
CLASSES = ("benign", "malignant")
END = datetime(2025, 3, 10, 6, 0, tzinfo=timezone.utc)
WINDOW = TimeWindow.ending_at(END, timedelta(days=7))


def _store_predictions(engine, predictions: list[tuple[str, float | None, datetime]]) -> list[str]:
    rows, ids = [], []
    for label, probability, predicted_at in predictions:
        event = build_prediction_event(
            model_name=MODEL,
            model_version="v1",
            features={"x": 1.0},
            prediction=label,
            probabilities=None if probability is None else {"benign": 1 - probability, "malignant": probability},
            predicted_at=predicted_at,
        )
        rows.append(prediction_row(event, stored_at=END))
        ids.append(event.prediction_id)
    with engine.begin() as connection:
        insert_prediction_rows(connection, rows)
    return ids


def _store_label(engine, prediction_id: str, label: str, labelled_at: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            GROUND_TRUTH.insert().values(
                prediction_id=prediction_id, label=json.dumps(label), labelled_at=to_db_timestamp(labelled_at), source="test", stored_at=to_db_timestamp(END)
            )
        )


@pytest.fixture
def engine(db_url: str):
    engine = create_db_engine(db_url)
    apply_migrations(engine)
    yield engine
    engine.dispose()


def test_window_rows_come_back_with_their_labels_delays_and_probabilities(engine) -> None:
    start = WINDOW.start + timedelta(hours=1)
    ids = _store_predictions(
        engine,
        [("malignant", 0.9, start), ("benign", 0.2, start), ("benign", None, start), ("malignant", 0.6, start), ("benign", 0.1, END + timedelta(hours=1))],
    )
    # A label stored before its prediction row reads the same as one stored after: the join is by id only.
    _store_label(engine, ids[0], "malignant", start + timedelta(hours=2))
    _store_label(engine, ids[1], "malignant", start + timedelta(days=3))
    _store_label(engine, ids[3], "not-a-class", start + timedelta(hours=1))
    _store_label(engine, ids[4], "benign", start)  # its prediction is outside the window
    _store_label(engine, "0190a0a0-0000-7000-8000-000000000000", "benign", start)  # no such prediction

    sample = read_quality_window(engine, MODEL, WINDOW, CLASSES)

    assert count_unmatched_labels(engine, WINDOW) == 1  # only the label of the unknown id; the others have their prediction
    assert sample.n_rows == 4
    order = np.argsort(sample.delay_seconds)  # labelled rows first, by delay; unlabelled (NaN) last
    assert sample.true_index[order].tolist() == [LABEL_OUTSIDE_CLASSES, 1, 1, UNLABELLED]
    assert sample.delay_seconds[order][:3].tolist() == pytest.approx([3600.0, 7200.0, 3 * 86400.0])
    by_prediction = dict(zip(sample.true_index.tolist(), sample.predicted_index.tolist()))
    assert by_prediction[LABEL_OUTSIDE_CLASSES] == 1
    assert sorted(sample.predicted_index.tolist()) == [0, 0, 1, 1]
    complete = ~np.isnan(sample.probabilities).any(axis=1)
    assert complete.sum() == 3
    assert sorted(sample.probabilities[complete][:, 1].tolist()) == pytest.approx([0.2, 0.6, 0.9])


def test_a_probabilities_text_that_is_not_json_counts_as_missing_and_keeps_the_row(engine) -> None:
    ids = _store_predictions(engine, [("benign", 0.3, WINDOW.start), ("malignant", 0.8, WINDOW.start + timedelta(minutes=1))])
    with engine.begin() as connection:
        connection.execute(PREDICTIONS.update().where(PREDICTIONS.c.prediction_id == ids[0]).values(probabilities="{not json"))
    _store_label(engine, ids[0], "benign", END)

    sample = read_quality_window(engine, MODEL, WINDOW, CLASSES)

    assert sample.n_rows == 2
    labelled = sample.true_index == 0
    assert np.isnan(sample.probabilities[labelled]).all()
    assert sample.probabilities[~labelled][0].tolist() == pytest.approx([0.2, 0.8])


def test_a_null_or_missing_class_probability_is_nan_for_that_class_only(engine) -> None:
    ids = _store_predictions(engine, [("benign", 0.3, WINDOW.start), ("malignant", 0.8, WINDOW.start + timedelta(minutes=1))])
    with engine.begin() as connection:
        connection.execute(PREDICTIONS.update().where(PREDICTIONS.c.prediction_id == ids[0]).values(probabilities='{"benign":null,"malignant":0.5}'))
        connection.execute(PREDICTIONS.update().where(PREDICTIONS.c.prediction_id == ids[1]).values(probabilities='{"malignant":0.8}'))

    sample = read_quality_window(engine, MODEL, WINDOW, CLASSES)

    rows = sorted(sample.probabilities.tolist(), key=lambda row: row[1])
    assert np.isnan(rows[0][0]) and rows[0][1] == pytest.approx(0.5)
    assert np.isnan(rows[1][0]) and rows[1][1] == pytest.approx(0.8)


def test_an_empty_window_reads_as_no_rows(engine) -> None:
    sample = read_quality_window(engine, MODEL, WINDOW, CLASSES)
    assert sample.n_rows == 0 and sample.probabilities.shape == (0, 2)


def test_stored_quality_reads_back_and_goes_with_its_drift_run(engine) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 300)
    predicted = np.where(rng.random(300) < 0.8, truth, 1 - truth)
    p = np.clip(np.where(predicted == 1, 0.8, 0.2) + rng.normal(0, 0.05, 300), 0, 1)
    result = assess_quality(
        classes=CLASSES,
        positive_class="malignant",
        predicted_index=predicted,
        probabilities=np.column_stack([1 - p, p]),
        true_index=truth,
        delay_seconds=np.full(300, 60.0),
        reference_metrics={"f1": 0.95, "accuracy": 0.96},
        calibrator=None,
        config=QualityConfig(),
    )
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO drift_runs (run_id, model_name, model_version, window_start, window_end, reference_kind, status, n_reference,"
                " n_current, features_tested, features_drifted, parameters, created_at) VALUES ('r1', 'm', 'v', :start, :end, 'training',"
                " 'NO_DRIFT', 1, 1, 1, 0, '{}', :end)"
            ),
            {"start": to_db_timestamp(WINDOW.start), "end": to_db_timestamp(END)},
        )
    result = replace(result, n_unmatched_labels=3)
    save_quality(engine, "r1", result)
    save_quality(engine, "r1", result)  # a second save replaces, never duplicates

    stored = load_quality(engine, "r1")
    assert stored.run["status"] == result.status.value == "DEGRADED"
    assert stored.run["n_labelled"] == 300 and stored.run["delay_p50_seconds"] == pytest.approx(60.0)
    assert stored.run["n_unmatched_labels"] == 3
    f1 = stored.value("realized", "f1")
    assert f1["value"] == pytest.approx(result.realized.get("f1").value)
    assert f1["ci_low"] == pytest.approx(result.realized.get("f1").low) and f1["interval_method"] == "dirichlet"
    assert stored.value("realized", "f1", "benign") is not None
    assert stored.value("reference", "f1")["value"] == pytest.approx(0.95)
    assert len(json.loads(stored.run["reliability"])) == len(result.realized.reliability)

    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM drift_runs WHERE run_id = 'r1'"))
        assert connection.execute(sa.select(sa.func.count()).select_from(QUALITY_RUNS)).scalar_one() == 0
        assert connection.execute(sa.select(sa.func.count()).select_from(QUALITY_METRICS)).scalar_one() == 0
    assert load_quality(engine, "r1") is None


def test_a_window_counted_into_its_aggregate_keeps_only_the_labels_delays(engine) -> None:
    from sml.lifecycle.manifest import FeatureSpec
    from sml.monitoring.model_quality.metrics import ClassificationAggregate
    from sml.monitoring.model_quality.store import read_window_with_quality

    start = WINDOW.start + timedelta(hours=1)
    ids = _store_predictions(engine, [("malignant", 0.9, start), ("benign", 0.2, start), ("benign", 0.3, start), ("malignant", 0.7, start)])
    _store_label(engine, ids[0], "malignant", start + timedelta(hours=2))
    aggregate = ClassificationAggregate(len(CLASSES), 1)

    _, sample = read_window_with_quality(engine, MODEL, WINDOW, [FeatureSpec("x", "numeric")], CLASSES, aggregate=aggregate)

    # Every prediction is counted; none is held: the memory of a weekly run follows its labels, not its window.
    assert sample.n_rows == 4 and aggregate.n_predictions == 4 and int(aggregate.confusion.sum()) == 1
    assert sample.predicted_index.size == sample.true_index.size == sample.probabilities.shape[0] == 0
    assert sample.delay_seconds.tolist() == pytest.approx([7200.0])
