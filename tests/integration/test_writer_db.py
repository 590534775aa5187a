"""The writer's database adapter on SQLite and MariaDB: idempotent, verbatim, bisecting, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from writer_support import (
    REJECTED_MODEL,
    TRIGGER_MESSAGE,
    add_rejecting_trigger,
    event_body,
    prediction_id_of,
    row_count,
    stored_rows,
    unreachable_database_url,
)

from sml.writer import batch as writer
from sml.core.db import apply_migrations, create_db_engine
from sml.writer.batch import BatchNotStored, parse_records, write_batch, write_prediction_rows

STORED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def numbered(bodies: list[str]) -> list[tuple[str, str]]:
    return [(f"m{index}", body) for index, body in enumerate(bodies)]


def executed_statements(engine: Engine) -> list[str]:
    """Every statement ``engine`` sends from now on (appended as it goes)."""
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _conn, _cursor, statement, *_: statements.append(statement))
    return statements


def test_every_event_delivered_twice_is_stored_once(engine: Engine) -> None:
    bodies = [event_body(radius=float(index)) for index in range(25)]

    first = write_batch(engine, numbered(bodies + bodies[:5]))
    second = write_batch(engine, numbered(bodies))

    assert (first.inserted, first.duplicates, first.failures) == (25, 5, [])
    assert (second.inserted, second.duplicates, second.failures) == (0, 25, [])
    assert set(stored_rows(engine)) == {prediction_id_of(body) for body in bodies}


@pytest.mark.parametrize(
    "change",
    [{"predicted_at": "2024-05-02T08:00:00Z"}, {"features": {"radius": 99.0, "texture": 20.1}}, {"model_version": "v2"}],
    ids=["other predicted_at", "other features", "other version"],
)
@pytest.mark.parametrize("same_batch", [False, True], ids=["stored before", "same batch"])
def test_an_event_reusing_a_stored_id_with_other_content_is_skipped_and_named(engine: Engine, change: dict[str, Any], same_batch: bool) -> None:
    original = json.loads(event_body())
    original["predicted_at"] = "2024-05-01T08:00:00Z"
    conflicting = {**original, **change}

    if same_batch:
        outcome = write_batch(engine, [("first", json.dumps(original)), ("other", json.dumps(conflicting))])
        assert (outcome.inserted, outcome.duplicates, outcome.failures) == (1, 1, [])
    else:
        write_batch(engine, numbered([json.dumps(original)]))
        outcome = write_batch(engine, [("again", json.dumps(original)), ("other", json.dumps(conflicting))])
        assert (outcome.inserted, outcome.duplicates, outcome.failures) == (0, 2, [])
    assert outcome.conflicting_predictions == (original["prediction_id"],)
    rows = stored_rows(engine)
    assert len(rows) == row_count(engine) == 1
    assert rows[original["prediction_id"]].predicted_at == datetime(2024, 5, 1, 8, 0)


def test_a_redelivered_event_is_no_conflict(engine: Engine) -> None:
    bodies = [event_body(radius=float(index)) for index in range(5)]
    write_batch(engine, numbered(bodies))

    outcome = write_batch(engine, numbered(bodies + [event_body()]))

    assert (outcome.inserted, outcome.duplicates, outcome.conflicting_predictions) == (1, 5, ())


def test_a_batch_larger_than_one_statement_is_stored_whole(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "MAX_ROWS_PER_STATEMENT", 7)
    bodies = [event_body(radius=float(index)) for index in range(30)]
    write_batch(engine, numbered(bodies[:10]))

    outcome = write_batch(engine, numbered(bodies))

    assert (outcome.inserted, outcome.duplicates) == (20, 10)
    assert row_count(engine) == 30


def test_timestamps_are_stored_in_utc_to_the_microsecond(engine: Engine) -> None:
    raw = json.loads(event_body())
    raw["predicted_at"] = "2024-05-01T14:30:00.654321+02:00"
    on_the_second = {**json.loads(event_body()), "predicted_at": "2024-05-01T10:00:00Z"}

    write_batch(engine, numbered([json.dumps(raw), json.dumps(on_the_second)]), stored_at=STORED_AT + timedelta(microseconds=7))

    rows = stored_rows(engine)
    assert rows[raw["prediction_id"]].predicted_at == datetime(2024, 5, 1, 12, 30, 0, 654321)
    assert rows[on_the_second["prediction_id"]].predicted_at == datetime(2024, 5, 1, 10, 0, 0)
    assert {row.stored_at for row in rows.values()} == {datetime(2024, 5, 1, 12, 0, 0, 7)}


def test_a_stored_id_and_a_rejected_row_in_one_statement_each_get_their_outcome(engine: Engine) -> None:
    add_rejecting_trigger(engine)
    bodies = [event_body(REJECTED_MODEL if index == 4 else "breast-cancer", radius=float(index)) for index in range(6)]
    write_batch(engine, numbered(bodies[:3]))

    outcome = write_batch(engine, numbered(bodies))

    assert [failure.message_id for failure in outcome.failures] == ["m4"]
    assert (outcome.inserted, outcome.duplicates) == (2, 3)
    assert set(stored_rows(engine)) == {prediction_id_of(body) for index, body in enumerate(bodies) if index != 4}


TRICKY_TEXT = [
    "O'Brien said \"hi\"",
    "back\\slash \\n \\' \\\\",
    "'); DROP TABLE predictions; --",
    "1' OR '1'='1",
    "%s %(name)s {0} ? :param",
    "naïve café — Ünïcödé",
    "日本語のテキスト 中文 한국어",
    "emoji 😀🚀 and ZWJ 👩‍💻",
    "tab\tnewline\nnul\x00end",
]


@pytest.mark.parametrize("text", TRICKY_TEXT, ids=range(len(TRICKY_TEXT)))
def test_quotes_backslashes_sql_and_non_ascii_are_stored_verbatim(engine: Engine, text: str) -> None:
    features = {text: text, "plain": text[::-1]}
    raw = json.loads(event_body())
    raw.update(model_name=text[:128], model_version=text[:64], features=features, prediction=text)
    body = json.dumps(raw, ensure_ascii=False)

    outcome = write_batch(engine, [("m1", body)])

    assert outcome.failures == []
    row = stored_rows(engine)[raw["prediction_id"]]
    assert row.model_name == text[:128]
    assert row.model_version == text[:64]
    assert json.loads(row.features) == features
    assert json.loads(row.prediction) == text
    assert row.features == json.dumps(features, ensure_ascii=False, separators=(",", ":"))  # not \\u escapes


def test_a_data_error_fails_only_the_rows_at_fault(engine: Engine) -> None:
    add_rejecting_trigger(engine)
    bodies = [event_body(REJECTED_MODEL if index in (3, 11, 12) else "breast-cancer", radius=float(index)) for index in range(20)]

    outcome = write_batch(engine, numbered(bodies))

    assert {failure.message_id for failure in outcome.failures} == {"m3", "m11", "m12"}
    assert all(TRIGGER_MESSAGE in failure.reason for failure in outcome.failures)
    assert outcome.inserted == 17
    assert set(stored_rows(engine)) == {prediction_id_of(body) for index, body in enumerate(bodies) if index not in (3, 11, 12)}


def test_every_copy_of_a_rejected_event_is_reported(engine: Engine) -> None:
    add_rejecting_trigger(engine)
    bad, good = event_body(REJECTED_MODEL), event_body()

    outcome = write_batch(engine, [("a", bad), ("b", good), ("c", bad)])

    assert sorted(failure.message_id for failure in outcome.failures) == ["a", "c"]
    assert outcome.inserted == 1


def test_a_row_breaking_a_not_null_column_is_rejected_alone(engine: Engine) -> None:
    rows = parse_records(numbered([event_body(), event_body(), event_body()]), STORED_AT).rows
    broken = {**rows[1], "features": None}

    outcome = write_prediction_rows(engine, [rows[0], broken, rows[2]])

    assert list(outcome.rejected) == [broken["prediction_id"]]
    assert outcome.rejected[broken["prediction_id"]].startswith(f"prediction_id {broken['prediction_id']} rejected by the database:")
    assert set(stored_rows(engine)) == {rows[0]["prediction_id"], rows[2]["prediction_id"]}


@pytest.fixture
def mysql_engine(mysql_url: str) -> Iterator[Engine]:
    engine = create_db_engine(mysql_url)
    apply_migrations(engine)
    yield engine
    engine.dispose()


@pytest.mark.mysql
def test_mysql_looks_ids_up_then_stores_new_rows_in_one_statement_and_a_redelivery_inserts_nothing(mysql_engine: Engine) -> None:
    records = numbered([event_body(radius=float(index)) for index in range(20)])
    statements = executed_statements(mysql_engine)

    first = write_batch(mysql_engine, records)
    first_statements = [statement.split()[0] for statement in statements]
    statements.clear()
    again = write_batch(mysql_engine, records)

    # The primary key is (prediction_id, predicted_at) on the partitioned table: the lookup by id
    # is what keeps an id unique, so it comes first. The rows inserted then add to their day's count.
    assert (first.inserted, first.duplicates, first_statements) == (20, 0, ["SELECT", "INSERT", "INSERT"])
    assert (again.inserted, again.duplicates) == (0, 20)
    assert [statement.split()[0] for statement in statements] == ["SELECT"]
    assert row_count(mysql_engine) == 20


@pytest.mark.mysql
def test_mysql_splits_a_batch_by_statement_size_and_a_row_over_the_size_goes_alone(
    mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "MAX_STATEMENT_BYTES", 1)
    statements = executed_statements(mysql_engine)

    outcome = write_batch(mysql_engine, numbered([event_body(radius=float(index)) for index in range(5)]))

    assert outcome.inserted == 5
    assert [statement.split()[0] for statement in statements] == ["SELECT", "INSERT"] * 5 + ["INSERT"]
    assert "prediction_day_counts" in statements[-1]
    assert row_count(mysql_engine) == 5


@pytest.mark.mysql
def test_mysql_strict_mode_rejects_a_too_long_label_instead_of_truncating(mysql_engine: Engine) -> None:
    raw = json.loads(event_body())
    raw["prediction"] = "x" * 300  # the column is VARCHAR(255)

    outcome = write_batch(mysql_engine, [("long", json.dumps(raw)), ("fine", event_body())])

    assert [failure.message_id for failure in outcome.failures] == ["long"]
    assert "Data too long" in outcome.failures[0].reason
    assert outcome.inserted == 1


def test_an_unreachable_database_fails_the_whole_batch_then_it_is_stored_once(
    engine: Engine, migrated_db_url: str, tmp_path: Path
) -> None:
    records = numbered([event_body(radius=float(index)) for index in range(12)])
    down = create_db_engine(unreachable_database_url(migrated_db_url, tmp_path))

    with pytest.raises(BatchNotStored) as caught:
        write_batch(down, records)
    down.dispose()

    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert row_count(engine) == 0
    assert write_batch(engine, records).inserted == 12
    assert write_batch(engine, records).duplicates == 12
    assert row_count(engine) == 12


def kill_connection_on(engine: Engine, event_name: str, admin: Engine, *, statement_prefix: str = "") -> list[int]:
    """Kill the session from another one at the first ``event_name`` (matching ``statement_prefix``)."""
    killed: list[int] = []

    def kill(connection: Any, *args: Any) -> None:
        statement = args[1] if event_name == "after_cursor_execute" else ""
        if killed or not statement.startswith(statement_prefix):
            return
        thread_id = connection.connection.dbapi_connection.thread_id()
        with admin.begin() as session:
            session.exec_driver_sql(f"KILL CONNECTION {thread_id}")
        killed.append(thread_id)

    sa.event.listen(engine, event_name, kill)
    return killed


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("event_name", "prefix"), [("after_cursor_execute", "INSERT"), ("commit", "")], ids=["between-statements", "at-commit"]
)
def test_a_connection_killed_mid_batch_fails_the_whole_batch_and_commits_nothing(
    mysql_engine: Engine, mysql_url: str, monkeypatch: pytest.MonkeyPatch, event_name: str, prefix: str
) -> None:
    monkeypatch.setattr(writer, "MAX_ROWS_PER_STATEMENT", 10)
    records = numbered([event_body(radius=float(index)) for index in range(30)])
    admin = sa.create_engine(mysql_url)
    killed = kill_connection_on(mysql_engine, event_name, admin, statement_prefix=prefix)

    with pytest.raises(BatchNotStored) as caught:
        write_batch(mysql_engine, records)

    assert killed, "the test never killed the connection"
    assert isinstance(caught.value.__cause__, sa.exc.DBAPIError) and caught.value.__cause__.connection_invalidated
    assert row_count(mysql_engine) == 0
    assert write_batch(mysql_engine, records).inserted == 30
    assert row_count(mysql_engine) == 30
    admin.dispose()
