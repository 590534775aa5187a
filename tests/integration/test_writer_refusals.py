"""Refusal events through the writer on SQLite and MariaDB: one row per field and reason, counted once, bisected by event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from writer_support import event_body

from sml.core.db import PREDICT_REFUSALS, create_db_engine, dialect_family
from sml.core.events import build_refusal_event, serialise_event
from sml.writer.batch import write_batch

REFUSED_AT = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


def refusal_body(refused: dict[str, dict[str, int]] | None = None, model_version: str | None = "v1") -> str:
    event = build_refusal_event(
        model_name="breast-cancer", model_version=model_version, refused=refused or {"mean_radius": {"out_of_range": 2}}, refused_at=REFUSED_AT
    )
    return serialise_event(event)


def numbered(bodies: list[str]) -> list[tuple[str, str]]:
    return [(f"m{index}", body) for index, body in enumerate(bodies)]


def refused_totals(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as connection:
        query = sa.select(PREDICT_REFUSALS.c.field_name, PREDICT_REFUSALS.c.reason, sa.func.sum(PREDICT_REFUSALS.c.refused_count)).group_by(
            PREDICT_REFUSALS.c.field_name, PREDICT_REFUSALS.c.reason
        )
        return {(field_name, reason): int(total) for field_name, reason, total in connection.execute(query)}


def test_a_refusal_is_stored_as_one_row_per_field_and_reason(engine: Engine) -> None:
    body = refusal_body({"mean_radius": {"out_of_range": 2, "not_finite": 1}, "_request": {"unknown_feature": 1}}, model_version=None)

    outcome = write_batch(engine, numbered([body, event_body()]))

    assert (outcome.refusals_stored, outcome.refusals_skipped, outcome.inserted, outcome.duplicates, outcome.failures) == (1, 0, 1, 0, [])
    assert refused_totals(engine) == {("mean_radius", "out_of_range"): 2, ("mean_radius", "not_finite"): 1, ("_request", "unknown_feature"): 1}
    with engine.connect() as connection:
        rows = connection.execute(sa.select(PREDICT_REFUSALS)).mappings().all()
    assert {(row["model_name"], row["model_version"], row["refused_at"]) for row in rows} == {("breast-cancer", None, REFUSED_AT.replace(tzinfo=None))}


def test_redelivered_and_replayed_refusals_are_never_counted_twice(engine: Engine) -> None:
    bodies = [refusal_body() for _ in range(25)]
    first = write_batch(engine, numbered(bodies + bodies[:3]))  # SQS may deliver a message twice in one batch

    again = write_batch(engine, numbered(bodies))  # a DLQ replay of all of them

    assert (first.refusals_stored, first.refusals_skipped, first.duplicates) == (25, 3, 0)
    assert (again.refusals_stored, again.refusals_skipped, again.duplicates, again.failures) == (0, 25, 0, [])
    assert refused_totals(engine) == {("mean_radius", "out_of_range"): 50}


def test_a_refusal_the_database_rejects_fails_alone_and_whole(engine: Engine) -> None:
    add_refusal_rejecting_trigger(engine)
    good = [refusal_body() for _ in range(4)]
    bad = refusal_body({"mean_radius": {"out_of_range": 1}, "rejected_field": {"invalid_type": 1}})

    outcome = write_batch(engine, numbered([*good[:2], bad, *good[2:]]))

    assert [failure.message_id for failure in outcome.failures] == ["m2"]
    assert outcome.failures[0].reason.startswith("refusal_id ")
    assert outcome.refusals_stored == 4
    assert refused_totals(engine) == {("mean_radius", "out_of_range"): 8}, "none of the rejected event's rows is stored"


def add_refusal_rejecting_trigger(engine: Engine) -> None:
    if dialect_family(engine) == "sqlite":
        statement = (
            "CREATE TRIGGER reject_refusal BEFORE INSERT ON predict_refusals WHEN NEW.field_name = 'rejected_field' "
            "BEGIN SELECT RAISE(ABORT, 'refusal rejected by the test trigger'); END"
        )
    else:
        statement = (
            "CREATE TRIGGER reject_refusal BEFORE INSERT ON predict_refusals FOR EACH ROW BEGIN IF NEW.field_name = 'rejected_field' "
            "THEN SIGNAL SQLSTATE '22000' SET MESSAGE_TEXT = 'refusal rejected by the test trigger'; END IF; END"
        )
    with engine.begin() as connection:
        connection.exec_driver_sql(statement)


def test_a_refusal_that_breaks_the_contract_fails_and_names_the_field(engine: Engine) -> None:
    body = refusal_body().replace('"out_of_range":2', '"out_of_range":0')

    outcome = write_batch(engine, numbered([body]))

    assert [failure.reason for failure in outcome.failures] == ["unparseable event: refused.mean_radius.out_of_range: Expected `int` >= 1"]
    assert refused_totals(engine) == {}
