"""`sml rebuild`: tables dropped, rebuilt from the archive, found with the same content."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from archive_support import engine, new_archive, s3, write_and_archive  # noqa: F401 - fixtures
from sqlalchemy.engine import Engine
from writer_support import label_body

from sml.archive.rebuild import rebuild_tables
from sml.archive.store import ArchiveLocation, compact_days, compact_partition, partitions
from sml.cli.main import main
from sml.core.db import PREDICTION_DAY_COUNTS, PREDICTIONS
from sml.core.events import build_prediction_event, build_refusal_event, serialise_event

DAY_ONE = datetime(2026, 4, 1, 23, 59, 59, 999999, tzinfo=timezone.utc)
DAY_TWO = DAY_ONE + timedelta(seconds=1)


def store(engine: Engine, s3: Any, location: ArchiveLocation, bodies: list[str]) -> None:
    outcome = write_and_archive(engine, s3, location, [(str(index), body) for index, body in enumerate(bodies)])
    assert not outcome.failures


def traffic(engine: Engine, s3: Any, location: ArchiveLocation) -> None:
    predictions = []
    for index in range(30):
        version = "v1" if index < 20 else "v2"
        features: dict[str, Any] = {"mean radius": 10.0 + index / 7, "grade": "ab"[index % 2], "count": index}
        if version == "v2":
            features = {"mean radius": 11.5, "smoothness": None if index % 3 else 0.25}
        event = build_prediction_event(
            model_name="breast-cancer",
            model_version=version,
            features=features,
            prediction=["benign", "malignant"][index % 2],
            probabilities={"benign": 0.5 + index / 100, "malignant": 0.5 - index / 100},
            predicted_at=DAY_ONE if index % 2 else DAY_TWO,
        )
        predictions.append(serialise_event(event))
    ids = [json.loads(body)["prediction_id"] for body in predictions]
    store(engine, s3, location, predictions[:12])
    store(engine, s3, location, predictions[8:])  # four of them twice
    store(engine, s3, location, [label_body(ids[0], "benign", DAY_ONE), label_body(ids[1], "malignant", DAY_TWO, None)])
    store(engine, s3, location, [label_body(ids[0], "malignant", DAY_TWO)])  # a later label wins
    refusal = build_refusal_event(model_name="breast-cancer", model_version="v1", refused={"mean radius": {"out_of_range": 3}}, refused_at=DAY_ONE)
    store(engine, s3, location, [serialise_event(refusal)])


def content(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    tables = {"predictions": "prediction_id", "ground_truth": "prediction_id", "predict_refusals": "refusal_id"}
    found = {}
    with engine.connect() as connection:
        for name, key in tables.items():
            table = sa.Table(name, sa.MetaData(), autoload_with=connection)
            rows = [dict(row._mapping) for row in connection.execute(sa.select(table).order_by(table.c[key]))]
            for row in rows:
                for column in ("features", "probabilities"):
                    if row.get(column) is not None:
                        row[column] = json.loads(row[column])
            found[name] = rows
    return found


def day_counts(engine: Engine) -> dict[tuple[str, str, str], int]:
    """``prediction_day_counts`` by (model, version, day), checked equal to the rows' own count."""
    table = PREDICTION_DAY_COUNTS
    with engine.connect() as connection:
        counts = {(m, v, str(d)[:10]): int(n) for m, v, d, n in connection.execute(sa.select(table.c.model_name, table.c.model_version, table.c.day, table.c.n_rows))}
        day = sa.func.date(PREDICTIONS.c.predicted_at)
        query = sa.select(PREDICTIONS.c.model_name, PREDICTIONS.c.model_version, day, sa.func.count()).group_by(PREDICTIONS.c.model_name, PREDICTIONS.c.model_version, day)
        assert counts == {(m, v, str(d)[:10]): int(n) for m, v, d, n in connection.execute(query)}
    return counts


def drop_every_table(engine: Engine) -> None:
    metadata = sa.MetaData()
    metadata.reflect(engine)
    metadata.drop_all(engine)


def test_dropped_tables_are_rebuilt_with_the_same_content_and_a_second_rebuild_changes_nothing(engine: Engine, s3: Any) -> None:
    location = new_archive(s3)
    traffic(engine, s3, location)
    before = content(engine)
    assert len(before["predictions"]) == 30 and len(before["ground_truth"]) == 2 and len(before["predict_refusals"]) == 1

    counts = day_counts(engine)
    assert sum(counts.values()) == 30

    drop_every_table(engine)
    outcome = rebuild_tables(engine, s3, location, DAY_ONE.date(), DAY_TWO.date())
    assert content(engine) == before
    assert outcome["predictions"].inserted == 30 and outcome["predictions"].skipped == 4
    assert day_counts(engine) == counts  # the writer's per-day counts come back with the rows

    again = rebuild_tables(engine, s3, location, DAY_ONE.date(), DAY_TWO.date())
    assert again["predictions"].inserted == 0 and again["predictions"].skipped == 34
    assert content(engine) == before
    assert day_counts(engine) == counts


def test_a_rebuild_from_compacted_objects_finds_the_same_content(engine: Engine, s3: Any) -> None:
    location = new_archive(s3)
    traffic(engine, s3, location)
    before = content(engine)
    for table in ("predictions", "ground_truth", "predict_refusals"):
        for partition in partitions(s3, location, table, DAY_ONE.date(), DAY_TWO.date()):
            compact_partition(s3, location, partition)
    drop_every_table(engine)
    outcome = rebuild_tables(engine, s3, location, DAY_ONE.date(), DAY_TWO.date())
    assert outcome["predictions"].skipped == 0  # compaction dropped the copies
    assert content(engine) == before


class CountedListings:
    """An S3 client that counts the pages of object listings it was asked for."""

    def __init__(self, s3: Any) -> None:
        self._s3, self.pages = s3, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_paginator(self, operation: str) -> Any:
        paginator = self._s3.get_paginator(operation)
        client = self

        class Counted:
            def paginate(self, **kwargs: Any) -> Any:
                for page in paginator.paginate(**kwargs):
                    client.pages += 1
                    yield page

        return Counted()


def test_a_rebuild_or_compaction_of_every_day_since_long_ago_lists_each_table_once_not_each_day(engine: Engine, s3: Any) -> None:
    # "Everything since 2000" was a listing per day, table and model (~28,000 requests, minutes before the first row).
    location = new_archive(s3)
    traffic(engine, s3, location)
    before = content(engine)
    drop_every_table(engine)
    counted = CountedListings(s3)
    outcome = rebuild_tables(engine, counted, location, date(2000, 1, 1), date(2026, 12, 31))
    assert content(engine) == before and outcome["predictions"].inserted == 30
    assert counted.pages <= 10
    counted.pages = 0
    compacted = compact_days(counted, location, date(2000, 1, 1), date(2026, 12, 31), ["predictions", "ground_truth", "predict_refusals"])
    assert sorted(str(partition.day) for partition, _ in compacted) == ["2026-04-01"] * 3 + ["2026-04-02"] * 2
    assert counted.pages <= 20


def test_since_and_tables_choose_what_comes_back(engine: Engine, s3: Any) -> None:
    location = new_archive(s3)
    traffic(engine, s3, location)
    before = content(engine)
    drop_every_table(engine)
    rebuild_tables(engine, s3, location, DAY_TWO.date(), DAY_TWO.date(), tables=["predictions"])
    after = content(engine)
    assert after["predictions"] == [row for row in before["predictions"] if row["predicted_at"] >= DAY_TWO.replace(tzinfo=None)]
    assert after["ground_truth"] == after["predict_refusals"] == []


def test_sml_rebuild_restores_the_configured_database_and_names_a_bad_option(
    engine: Engine, migrated_db_url: str, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = new_archive(s3)
    traffic(engine, s3, location)
    before = content(engine)
    drop_every_table(engine)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    assert main(["rebuild", "--since", "2026-04-01", "--until", "2026-04-02"]) == 0
    assert "predictions: 34 archived events in 6 objects, 30 inserted, 4 already stored" in capsys.readouterr().out
    assert content(engine) == before

    assert main(["rebuild", "--since", "2026-04-01", "--tables", "predictions,labels"]) == 2
    assert "--tables: unknown table 'labels'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rebuild", "--since", "April"])
    err = capsys.readouterr().err
    assert "argument --since: 'April' is not a day like 2026-01-31" in err and "--since: --since" not in err
    assert main(["rebuild", "--since", "2026-04-02", "--until", "2026-04-01"]) == 2
    assert "--until 2026-04-01 is before --since 2026-04-02\n" in capsys.readouterr().err
    today = datetime.now(timezone.utc).date().isoformat()
    assert main(["rebuild", "--since", "2999-01-01"]) == 2  # the option not given is named as the default it took
    assert f"--until {today} is before --since 2999-01-01 (--until defaults to today, UTC)" in capsys.readouterr().err
    monkeypatch.delenv("SML_ARCHIVE_PREFIX")
    assert main(["rebuild", "--since", "2026-04-01"]) == 2
    assert "SML_ARCHIVE_PREFIX is not set" in capsys.readouterr().err
    assert date(2026, 4, 1) == DAY_ONE.date()


def test_an_empty_tables_option_is_refused_by_name_not_taken_for_nothing_to_do(
    s3: Any, migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = new_archive(s3)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    for command in (["rebuild", "--since", "2026-04-01"], ["compact"]):
        assert main([*command, "--tables", " , "]) == 2
        assert "--tables: no table given (expected some of predictions, ground_truth, predict_refusals)" in capsys.readouterr().err


def test_the_summary_counts_events_in_every_column_not_rows_beside_events(
    engine: Engine, s3: Any, monkeypatch: pytest.MonkeyPatch, migrated_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A refusal of three fields is three archived rows but one event; inserted and skipped count events, so the
    # line must too (it said "3 archived rows ..., 1 inserted, 0 already stored"). Two labels of one prediction are
    # two events of which the table keeps one: the other is counted as replaced, not lost.
    location = new_archive(s3)
    refusal = build_refusal_event(
        model_name="breast-cancer", model_version="v1", refused={"a": {"out_of_range": 1}, "b": {"out_of_range": 2}, "c": {"not_a_number": 1}},
        refused_at=DAY_ONE,
    )
    prediction_id = json.loads(serialise_event(build_prediction_event(
        model_name="breast-cancer", model_version="v1", features={"a": 1.0}, prediction="benign", predicted_at=DAY_ONE
    )))["prediction_id"]
    labels = [label_body(prediction_id, "benign", DAY_ONE - timedelta(hours=1)), label_body(prediction_id, "malignant", DAY_ONE)]
    store(engine, s3, location, [serialise_event(refusal), *labels])
    drop_every_table(engine)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    assert main(["rebuild", "--since", "2026-04-01", "--until", "2026-04-01", "--tables", "predict_refusals,ground_truth"]) == 0
    out = capsys.readouterr().out
    assert "predict_refusals: 1 archived event (3 rows) in 1 object, 1 inserted, 0 already stored" in out
    assert "ground_truth: 2 archived events in 1 object, 1 inserted, 1 already stored or replaced by a later one" in out
