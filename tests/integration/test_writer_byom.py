"""A user's model's events through the writer and back out of the window: JSON booleans, integers
and regression predictions stored exactly, on SQLite and MariaDB, and read by drift as the
categories the reference keys them by (``"True"``/``"False"``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.db import PREDICTIONS, create_db_engine
from sml.core.events import build_prediction_event, serialise_prediction_event
from sml.monitoring.drift.stats import count_categories
from sml.monitoring.windows import TimeWindow, read_window
from sml.writer.batch import write_batch
from tests.byom_support import CHURN_FEATURES, churn_rows

PREDICTED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
# Regression outputs whose shortest round-trip text is long, tiny, huge or not exactly binary.
REGRESSION_VALUES = [0.1 + 0.2, 1e-300, -2.5e300, 158.03523197381443, 5e-324, 2.0, -0.0]


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def test_regression_predictions_are_stored_and_read_back_exactly(engine: Engine) -> None:
    events = [
        build_prediction_event(model_name="diabetes", model_version="v1", features={"bmi": 0.05}, prediction=value, predicted_at=PREDICTED_AT)
        for value in REGRESSION_VALUES
    ]

    outcome = write_batch(engine, [(f"m{index}", serialise_prediction_event(event)) for index, event in enumerate(events)])

    assert (outcome.inserted, outcome.failures) == (len(events), [])
    with engine.connect() as connection:
        stored = dict(connection.execute(sa.select(PREDICTIONS.c.prediction_id, PREDICTIONS.c.prediction)).all())
    read = [msgspec.json.decode(stored[event.prediction_id]) for event in events]
    assert [value.hex() for value in read] == [value.hex() for value in REGRESSION_VALUES]
    window = read_window(engine, "diabetes", TimeWindow(PREDICTED_AT - timedelta(hours=1), PREDICTED_AT + timedelta(hours=1)), [])
    assert sorted(window.labels, key=float.hex) == sorted(REGRESSION_VALUES, key=float.hex)


def test_booleans_and_integers_are_stored_as_json_and_drift_counts_booleans_as_the_reference_does(engine: Engine) -> None:
    rows = churn_rows()[:60]
    events = [
        build_prediction_event(model_name="churn", model_version="v1", features=row, prediction="no", predicted_at=PREDICTED_AT)
        for row in rows
    ]

    write_batch(engine, [(f"m{index}", serialise_prediction_event(event)) for index, event in enumerate(events)])

    with engine.connect() as connection:
        stored = [msgspec.json.decode(text) for text in connection.execute(sa.select(PREDICTIONS.c.features)).scalars()]
    assert sorted(map(repr, stored)) == sorted(map(repr, rows))
    window = read_window(engine, "churn", TimeWindow(PREDICTED_AT - timedelta(hours=1), PREDICTED_AT + timedelta(hours=1)), CHURN_FEATURES)
    for name in ("Has Partner", "Paperless"):
        counts, missing = count_categories(window.categorical[name])
        present = [row[name] for row in rows if row[name] is not None]
        assert dict(counts) == dict(Counter(str(value) for value in present))
        assert set(counts) <= {"True", "False"}
        assert missing == len(rows) - len(present)
    assert sorted(window.numeric["Tenure Months"].tolist()) == sorted(float(row["Tenure Months"]) for row in rows)
