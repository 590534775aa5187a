"""Writer throughput into MariaDB/MySQL: our writer vs per-row insert + commit vs LOAD DATA.

Every variant stores the same events into a fresh ``predictions`` table of a dedicated database
``sml_bench`` (created here, dropped at the end):

- ``writer``: :func:`sml.writer.write_batch`, exactly what the writer Lambda runs per invocation
  (parse and validate each SQS body, map it to a row, idempotent multi-row insert, commit), in
  batches of the Lambda batch size, on one kept connection as in a warm container. Reported per
  batch size.
- ``writer insert only``: :func:`sml.writer.write_prediction_rows` on rows parsed beforehand, the
  database part alone, comparable with LOAD DATA.
- ``per-row insert + commit``: what the seed did (parse one event, one INSERT, one COMMIT) on a
  kept connection. It is slow, so it runs on a subset and the rate is extrapolated; the row says
  how many events were measured.
- ``LOAD DATA LOCAL INFILE``: the same rows written to a CSV file and loaded in one statement,
  the ceiling. ``seconds`` includes writing the CSV; ``load_seconds`` is the statement alone.

``ratio`` is events/s over the per-row baseline's; ``vs_load_data`` over LOAD DATA's (same event
count). The server is ``SML_BENCH_MYSQL_URL`` (default ``SML_TEST_MYSQL_URL``, then
``mysql+pymysql://root@127.0.0.1:3306/test``); LOAD DATA needs the server's ``local_infile`` on.

Run: ``python bench/writer_bench.py [--quick]``; ``bench/run.py`` calls :func:`run`.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from sml.db import PREDICTIONS, apply_migrations, create_db_engine
from sml.events import build_prediction_event, serialise_prediction_event
from sml.writer import Row, parse_records, write_batch, write_prediction_rows

BENCH_DATABASE = "sml_bench"
DEFAULT_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
FEATURES = 30  # the breast-cancer model's feature count
COLUMNS = [column.name for column in PREDICTIONS.columns]

Record = tuple[str, str]


def server_url() -> str:
    return os.environ.get("SML_BENCH_MYSQL_URL") or os.environ.get("SML_TEST_MYSQL_URL") or DEFAULT_SERVER_URL


def sqs_records(count: int, seed: int = 5) -> list[Record]:
    """``count`` (message id, body) pairs of valid events with 30 float features."""
    rng = random.Random(seed)
    names = [f"feature_{index:02d}" for index in range(FEATURES)]
    records = []
    for index in range(count):
        malignant = rng.random()
        event = build_prediction_event(
            model_name="breast-cancer",
            model_version="v1",
            features={name: rng.gauss(50.0, 20.0) for name in names},
            prediction="malignant" if malignant > 0.5 else "benign",
            probabilities={"benign": 1.0 - malignant, "malignant": malignant},
        )
        records.append((f"message-{index}", serialise_prediction_event(event)))
    return records


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh ``sml_bench`` database with the schema; dropped afterwards."""
    server = make_url(server_url())
    admin = sa.create_engine(server)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        connection.exec_driver_sql(f"CREATE DATABASE {BENCH_DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    url = server.set(database=BENCH_DATABASE).render_as_string(hide_password=False)
    try:
        engine = create_db_engine(url)
        apply_migrations(engine)
        engine.dispose()
        yield url
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        admin.dispose()


def _empty_table(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE TABLE predictions")


def _stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(PREDICTIONS)).scalar_one()


def _timed(engine: Engine, expected_rows: int, work: Callable[[], None], repeats: int = 1) -> float:
    """Best seconds of ``repeats`` runs of ``work``, each on an empty table; checks the row count.

    The best run is the one least disturbed by other load on the machine.
    """
    best = float("inf")
    for _ in range(repeats):
        _empty_table(engine)
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
        stored = _stored(engine)
        if stored != expected_rows:
            raise RuntimeError(f"benchmark stored {stored} rows, expected {expected_rows}")
    return best


def time_writer(engine: Engine, records: Sequence[Record], batch_size: int, repeats: int) -> float:
    def work() -> None:
        for start in range(0, len(records), batch_size):
            outcome = write_batch(engine, records[start : start + batch_size])
            if outcome.failures:
                raise RuntimeError(f"writer failed records: {outcome.failures[:3]}")

    return _timed(engine, len(records), work, repeats)


def time_insert_only(engine: Engine, rows: Sequence[Row], batch_size: int, repeats: int) -> float:
    def work() -> None:
        for start in range(0, len(rows), batch_size):
            write_prediction_rows(engine, rows[start : start + batch_size])

    return _timed(engine, len(rows), work, repeats)


def time_per_row(engine: Engine, records: Sequence[Record]) -> float:
    statement = PREDICTIONS.insert()

    def work() -> None:
        with engine.connect() as connection:
            for record in records:
                (row,) = parse_records([record], datetime.now(timezone.utc)).rows
                connection.execute(statement, row)
                connection.commit()

    return _timed(engine, len(records), work)


def _csv_value(value: Any) -> Any:
    return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value


def time_load_data(engine: Engine, url: str, rows: Sequence[Row], repeats: int) -> tuple[float, float]:
    """(best seconds including writing the CSV, best seconds of the LOAD DATA statement alone)."""
    parsed = make_url(url)
    connection = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        local_infile=True,
    )
    load_seconds = float("inf")

    def work() -> None:
        nonlocal load_seconds
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "predictions.csv"
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerows([_csv_value(row[column]) for column in COLUMNS] for row in rows)
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
                cursor.execute(
                    "LOAD DATA LOCAL INFILE %s INTO TABLE predictions CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
                    f"({', '.join(COLUMNS)})",
                    (str(path),),
                )
            connection.commit()
            load_seconds = min(load_seconds, time.perf_counter() - started)

    try:
        return _timed(engine, len(rows), work, repeats), load_seconds
    finally:
        connection.close()


def _result(name: str, events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds), **extra}


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every variant; one dict per line of the report.

    :param quick: 10k events, two batch sizes, a 1,000-event per-row sample, best of 3 runs
        (about a minute); otherwise 10k and 100k events, four batch sizes, a 5,000-event sample,
        best of 3 runs at 10k and of 2 at 100k.
    :returns: dicts with ``name``, ``events``, ``seconds``, ``events_per_s``, ``ratio`` (over
        per-row insert + commit), ``vs_load_data`` and notes where a number is extrapolated.
    """
    sizes = [10_000] if quick else [10_000, 100_000]
    batch_sizes = [100, 1_000] if quick else [10, 100, 1_000, 10_000]
    per_row_sample = 1_000 if quick else 5_000
    records = sqs_records(max(sizes))
    results: list[dict[str, Any]] = []
    with bench_database() as url:
        engine = create_db_engine(url)
        try:
            per_row_seconds = time_per_row(engine, records[:per_row_sample])
            per_row_rate = per_row_sample / per_row_seconds
            for size in sizes:
                repeats = 3 if size <= 10_000 else 2
                subset = records[:size]
                rows = parse_records(subset, datetime.now(timezone.utc)).rows
                total_seconds, load_seconds = time_load_data(engine, url, rows, repeats)
                load_rate = size / total_seconds
                lines = [
                    _result(
                        "per-row insert + commit (seed)",
                        size,
                        size / per_row_rate,
                        note=f"extrapolated from {per_row_sample} events measured" if size != per_row_sample else "",
                    ),
                    _result("LOAD DATA LOCAL INFILE (CSV + load)", size, total_seconds, load_seconds=round(load_seconds, 3)),
                    _result("writer insert only (pre-parsed rows), batch 1000", size, time_insert_only(engine, rows, 1_000, repeats)),
                ]
                lines += [
                    _result(f"writer (parse + insert), batch {batch_size}", size, time_writer(engine, subset, batch_size, repeats))
                    for batch_size in batch_sizes
                ]
                for line in lines:
                    line["ratio"] = round(line["events_per_s"] / per_row_rate, 1)
                    line["vs_load_data"] = round(line["events_per_s"] / load_rate, 2)
                results += lines
        finally:
            engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Writer throughput into MariaDB/MySQL.")
    parser.add_argument("--quick", action="store_true", help="10k events only, per-row baseline extrapolated from 1,000")
    args = parser.parse_args()
    print(f"{'variant':<52} {'events':>8} {'seconds':>8} {'events/s':>9} {'× per-row':>9} {'× LOAD DATA':>11}")
    for line in run(args.quick):
        print(
            f"{line['name']:<52} {line['events']:>8} {line['seconds']:>8.2f} {line['events_per_s']:>9} "
            f"{line['ratio']:>9} {line['vs_load_data']:>11}  {line.get('note', '')}"
        )


if __name__ == "__main__":
    main()
