"""Writer throughput into MariaDB/MySQL: our writer vs per-row insert + commit vs LOAD DATA.

Every variant stores the same events into a freshly emptied ``predictions`` table of a dedicated
database ``sml_bench`` (created here, dropped at the end):

- ``writer, batch N``: :func:`sml.writer.batch.write_batch`, exactly what the writer Lambda runs per
  invocation (parse and validate each SQS body, map it to a row, idempotent multi-row insert,
  commit), one call per batch of N records, on one kept connection as in a warm container;
- ``writer insert only``: :func:`sml.writer.batch.write_prediction_rows` on rows parsed beforehand,
  the database part alone, the like-for-like comparison with LOAD DATA;
- ``per-row insert + commit`` (the seed): parse one event, one INSERT, one COMMIT, on a kept
  connection (the seed even opened a new one per request). Slow, so it runs on a sample and
  the rate is extrapolated;
- ``LOAD DATA LOCAL INFILE`` (the ceiling): the same rows written to a CSV file and loaded in one
  statement and one transaction; its time includes writing the CSV.

Variants run in turns, and each keeps its best turn, so a burst of load from other processes on
the machine does not land on one variant only. The server is ``common.MYSQL_SERVER``; LOAD DATA
needs the server's ``local_infile`` on.

Run alone: ``python bench/writer_bench.py [--quick]``.
"""

from __future__ import annotations

import csv
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
from sqlalchemy.engine import URL, Engine

from common import MYSQL_SERVER, BenchReport, Comparison, ratio_at_least, bench_main
from sml.core.db import PREDICTIONS, apply_migrations, create_db_engine
from sml.core.events import build_prediction_event, serialise_prediction_event
from sml.writer.batch import Row, parse_records, write_batch, write_prediction_rows

BENCHMARK = "writer throughput"
BENCH_DATABASE = "sml_bench"
DEPLOYED_BATCH_SIZE = 500  # infra/config.py: DeploymentConfig.writer_batch_size
MIN_SPEEDUP_OVER_PER_ROW = 10
MIN_SHARE_OF_LOAD_DATA = 0.6
FEATURES = 30  # the breast-cancer model's feature count
COLUMNS = [column.name for column in PREDICTIONS.columns]

Record = tuple[str, str]


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


def _server_url(database: str | None = None) -> URL:
    return URL.create(
        "mysql+pymysql",
        username=MYSQL_SERVER["user"],
        password=MYSQL_SERVER["password"] or None,
        host=MYSQL_SERVER["host"],
        port=MYSQL_SERVER["port"],
        database=database,
    )


@contextmanager
def bench_engine(database: str = BENCH_DATABASE) -> Iterator[Engine]:
    """The writer's engine on a fresh ``database`` (``sml_bench``) with the schema; dropped afterwards."""
    admin = sa.create_engine(_server_url())
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        connection.exec_driver_sql(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    engine = create_db_engine(_server_url(database))
    try:
        apply_migrations(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        admin.dispose()


def _timed(engine: Engine, expected_rows: int, work: Callable[[], None]) -> float:
    """Seconds ``work`` takes on an emptied table; checks it stored ``expected_rows``."""
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE TABLE predictions")
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    with engine.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(PREDICTIONS)).scalar_one()
    if stored != expected_rows:
        raise RuntimeError(f"benchmark stored {stored} rows, expected {expected_rows}")
    return seconds


def writer_batches(engine: Engine, records: Sequence[Record], batch_size: int) -> Callable[[], None]:
    def work() -> None:
        for start in range(0, len(records), batch_size):
            outcome = write_batch(engine, records[start : start + batch_size])
            if outcome.failures:
                raise RuntimeError(f"the writer failed records: {outcome.failures[:3]}")

    return work


def insert_only(engine: Engine, rows: Sequence[Row], batch_size: int) -> Callable[[], None]:
    def work() -> None:
        for start in range(0, len(rows), batch_size):
            write_prediction_rows(engine, rows[start : start + batch_size])

    return work


def per_row_commits(engine: Engine, records: Sequence[Record]) -> Callable[[], None]:
    statement = PREDICTIONS.insert()

    def work() -> None:
        with engine.connect() as connection:
            for record in records:
                (row,) = parse_records([record], datetime.now(timezone.utc)).rows
                connection.execute(statement, row)
                connection.commit()

    return work


def load_data(rows: Sequence[Row], folder: Path) -> Callable[[], None]:
    def csv_value(value: Any) -> Any:
        return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value

    def work() -> None:
        path = folder / "predictions.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows([csv_value(row[column]) for column in COLUMNS] for row in rows)
        connection = pymysql.connect(**MYSQL_SERVER, database=BENCH_DATABASE, charset="utf8mb4", local_infile=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
                cursor.execute(
                    "LOAD DATA LOCAL INFILE %s INTO TABLE predictions CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
                    f"({', '.join(COLUMNS)})",
                    (str(path),),
                )
            connection.commit()
        finally:
            connection.close()

    return work


def best_of_turns(engine: Engine, expected_rows: int, variants: dict[str, Callable[[], None]], turns: int) -> dict[str, float]:
    """Best seconds of each variant over ``turns`` rounds in which every variant runs once."""
    best = {name: float("inf") for name in variants}
    for _ in range(turns):
        for name, work in variants.items():
            best[name] = min(best[name], _timed(engine, expected_rows, work))
    return best


def measure(engine: Engine, records: Sequence[Record], batch_sizes: Sequence[int], turns: int, folder: Path) -> dict[str, float]:
    """Events per second of every variant on ``records`` (except the per-row baseline)."""
    rows = parse_records(records, datetime.now(timezone.utc)).rows
    variants = {"LOAD DATA LOCAL INFILE": load_data(rows, folder), "writer insert only, batch 1000": insert_only(engine, rows, 1_000)}
    variants |= {f"writer, batch {size}": writer_batches(engine, records, size) for size in batch_sizes}
    seconds = best_of_turns(engine, len(records), variants, turns)
    return {name: len(records) / value for name, value in seconds.items()}


def compare(size: int, rates: dict[str, float], per_row_rate: float, per_row_sample: int) -> list[Comparison]:
    """Table lines for ``size`` events: the deployed batch size against both goals, the rest for information."""
    events = f"{size // 1000}k events"
    load_rate = rates["LOAD DATA LOCAL INFILE"]
    headline = f"writer, batch {DEPLOYED_BATCH_SIZE}"
    per_row_note = f"per-row rate measured on {per_row_sample} events"
    insert_only_name = "writer insert only, batch 1000"
    lines = [
        ratio_at_least(BENCHMARK, f"{events}, {headline}", rates[headline], "per-row insert + commit", per_row_rate, "events/s",
                       MIN_SPEEDUP_OVER_PER_ROW, note=per_row_note),
        ratio_at_least(BENCHMARK, f"{events}, {headline}", rates[headline], "LOAD DATA LOCAL INFILE", load_rate, "events/s",
                       MIN_SHARE_OF_LOAD_DATA, note="the writer also parses and validates every body"),
        ratio_at_least(BENCHMARK, f"{events}, {insert_only_name}", rates[insert_only_name], "LOAD DATA LOCAL INFILE", load_rate,
                       "events/s", MIN_SHARE_OF_LOAD_DATA, note="like for like: both get parsed rows"),
    ]  # fmt: skip
    lines += [
        Comparison(BENCHMARK, f"{events}, {name}", rate, "LOAD DATA LOCAL INFILE", load_rate, "events/s")
        for name, rate in rates.items()
        if name not in (headline, insert_only_name, "LOAD DATA LOCAL INFILE")
    ]
    return lines


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Measure every variant; quick: 10k events, 3 turns; full: 10k (3 turns) and 100k (2 turns)."""
    sizes = [10_000] if quick else [10_000, 100_000]
    batch_sizes = [DEPLOYED_BATCH_SIZE, 1_000] if quick else [10, DEPLOYED_BATCH_SIZE, 1_000, 10_000]
    per_row_sample = 1_000 if quick else 5_000
    records = sqs_records(max(sizes))
    comparisons: list[Comparison] = []
    details: list[dict[str, Any]] = []
    with bench_engine() as engine, tempfile.TemporaryDirectory(prefix="sml-bench-writer-") as folder:
        sample = records[:per_row_sample]
        per_row_rate = per_row_sample / _timed(engine, per_row_sample, per_row_commits(engine, sample))
        details.append({"variant": "per-row insert + commit", "events": per_row_sample, "events_per_s": round(per_row_rate)})
        for size in sizes:
            rates = measure(engine, records[:size], batch_sizes, 3 if size <= 10_000 else 2, Path(folder))
            comparisons += compare(size, rates, per_row_rate, per_row_sample)
            details += [{"variant": name, "events": size, "events_per_s": round(rate)} for name, rate in rates.items()]
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=details,
        method=[
            (
                f"{', '.join(f'{size:,}' for size in sizes)} events of 30 float features each, into MariaDB/MySQL "
                f"({BENCH_DATABASE}, created and dropped); every variant starts from an emptied table and its row count is checked."
            ),
            (
                "Writer: `write_batch` per batch (what the Lambda runs: parse, validate, idempotent multi-row insert, commit) "
                "on one kept connection; batch 100 is the deployed default. Insert only: `write_prediction_rows` on parsed rows."
            ),
            (
                f"Per-row insert + commit (the seed, here on a kept connection): measured on {per_row_sample:,} events and "
                "extrapolated as a rate. LOAD DATA LOCAL INFILE: CSV writing included, one statement, one commit."
            ),
            "Variants run in turns and keep their best turn, spreading other load on the machine over all of them.",
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
