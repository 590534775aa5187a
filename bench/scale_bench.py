"""Scale: retention by day partitions on MariaDB, what the partitioned table costs the writer, and the weekly run at 10M predictions.

A fresh database ``sml_bench_scale`` gets the schema as it was before partitioning (migrations up
to 0007) and N predictions spread over ``DAYS`` days (the writer's row format, 10 numeric + 1
categorical feature, loaded with ``LOAD DATA``). Then, in one run:

- migration: the partitioning migration (``sql/0008``: new primary key, one ``pmax`` partition)
  on the filled table, then the first retention step that splits ``pmax`` into day partitions;
  both copy the table, and writes wait on them (the writer's events wait in SQS);
- drop vs delete: a ``DELETE`` of one day's rows (the statement's time, then rolled back), and
  ``ALTER TABLE ... DROP PARTITION`` of the same day (the rows are the same);
- the writer: batches of 500 new events into the table before and after partitioning (after, the
  lookup of a batch's ids probes every partition), events per second.

The weekly run (:mod:`weekly_scale`): ``run_drift_job`` in a fresh process over windows of 100k,
1M and 10M predictions (10k, 100k and 300k under ``--quick``) from MariaDB, its peak memory and
time, its KS D and p against ``scipy.stats.ks_2samp`` on the middle window's raw values, and the
same run with the drift summaries read from the archive by DuckDB.

Run alone: ``python bench/scale_bench.py [--quick] [--parts retention,database,archive,archive-no-quality] [--keep]``.
Loading 10M rows takes ~20 minutes: ``python bench/weekly_scale.py --prepare 10000000`` does it
beforehand (outside the bench lock); the run then finds it and drops it at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import pymysql
import weekly_scale
from common import MYSQL_SERVER, BenchReport, Comparison, load_predictions_csv, print_report, ratio_at_most

BENCHMARK = "scale"
DATABASE = "sml_bench_scale"
MODEL_NAME = "scale-bench"
NUMERIC = tuple(f"feature_{index:02d}" for index in range(10))
CATEGORIES = ("a", "b", "c", "d")
DAYS = 7
LAST_DAY = date(2026, 12, 6)
RETENTION_DAYS = 29
WRITER_EVENTS = 20_000
WRITER_BATCH = 500
PARTS = ("retention", *weekly_scale.WEEKLY_PARTS)
MAX_PEAK_GROWTH = 1.2
MAX_PEAK_MIB = 512
KS_REL_TOLERANCE = 1e-9


def _url() -> Any:
    import sqlalchemy as sa

    return sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE)


def _rows(rows: int, first_day: date, seed: int) -> Any:
    """``rows`` writer rows spread evenly over ``DAYS`` days from ``first_day``."""
    from sml.core.events import build_prediction_event
    from sml.writer.batch import prediction_row

    generator = np.random.default_rng(seed)
    values = generator.normal(size=(rows, len(NUMERIC)))
    categories = generator.choice(CATEGORIES, size=rows)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    step = timedelta(days=DAYS) / rows
    for index in range(rows):
        event = build_prediction_event(
            model_name=MODEL_NAME,
            model_version="v1",
            features={**dict(zip(NUMERIC, values[index].tolist())), "grade": str(categories[index])},
            prediction="malignant" if values[index, 1] > 0 else "benign",
            probabilities={"benign": 0.4, "malignant": 0.6},
            predicted_at=start + index * step,
        )
        yield prediction_row(event, stored_at=start + index * step)


def load_rows(rows: int, folder: Path) -> None:
    from sml.core.db import PREDICTIONS

    path = folder / "rows.csv"
    columns = [column.name for column in PREDICTIONS.columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for row in _rows(rows, LAST_DAY - timedelta(days=DAYS - 1), seed=3):
            writer.writerow(_csv(row[column]) for column in columns)
    load_predictions_csv(DATABASE, path)
    path.unlink()


def _csv(value: Any) -> Any:
    if value is None:
        return r"\N"
    return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value


def _timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    outcome = work()
    return time.perf_counter() - started, outcome


def measure(rows: int) -> dict[str, Any]:
    """Every figure of the retention part, on a fresh database of ``rows`` predictions."""
    from sml.core.db import apply_migrations, create_db_engine, default_sql_dir
    from sml.core.retention import apply_retention, partition_name

    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    folder = Path(tempfile.mkdtemp(prefix="sml-scale-"))
    figures: dict[str, Any] = {"rows": rows}
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        before_partitioning = folder / "sql"
        shutil.copytree(default_sql_dir(), before_partitioning)
        for path in before_partitioning.glob("0008_*"):
            path.unlink()
        engine = create_db_engine(_url())
        apply_migrations(engine, before_partitioning)
        load_rows(rows, folder)
        figures["writer_unpartitioned_events_per_s"] = _writer_rate(engine, seed=4)
        figures["migrate_s"], _ = _timed(lambda: apply_migrations(engine))
        figures["split_s"], split = _timed(lambda: apply_retention(engine, today=LAST_DAY, retention_days=RETENTION_DAYS))
        figures["partitions"] = len(split.created)
        day = LAST_DAY - timedelta(days=3)
        name = partition_name(day)
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE TABLE predictions").all()
            figures["day_rows"] = connection.exec_driver_sql(f"SELECT COUNT(*) FROM predictions PARTITION ({name})").scalar()
            figures["day_bytes"] = connection.exec_driver_sql(
                "SELECT data_length + index_length FROM information_schema.partitions "
                "WHERE table_schema = DATABASE() AND table_name = 'predictions' AND partition_name = %s",
                (name,),
            ).scalar()
            bounds = (datetime.combine(day, datetime.min.time()), datetime.combine(day + timedelta(days=1), datetime.min.time()))
            figures["delete_s"], deleted = _timed(
                lambda: connection.exec_driver_sql("DELETE FROM predictions WHERE predicted_at >= %s AND predicted_at < %s", bounds).rowcount
            )
            assert deleted == figures["day_rows"], (deleted, figures["day_rows"])
            figures["rollback_s"], _ = _timed(connection.rollback)
            figures["drop_s"], _ = _timed(lambda: connection.exec_driver_sql(f"ALTER TABLE predictions DROP PARTITION {name}"))
            figures["rows_after_drop"] = connection.exec_driver_sql("SELECT COUNT(*) FROM predictions").scalar()
        figures["writer_events_per_s"] = _writer_rate(engine, seed=5)
        engine.dispose()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.close()
        shutil.rmtree(folder, ignore_errors=True)
    return figures


def _writer_rate(engine: Any, *, seed: int) -> float:
    from sml.writer.batch import write_prediction_rows

    rows = list(_rows(WRITER_EVENTS, LAST_DAY - timedelta(days=DAYS - 1), seed=seed))
    started = time.perf_counter()
    for start in range(0, len(rows), WRITER_BATCH):
        outcome = write_prediction_rows(engine, rows[start : start + WRITER_BATCH])
        assert outcome.inserted == len(rows[start : start + WRITER_BATCH]), outcome
    return len(rows) / (time.perf_counter() - started)


def retention_report(quick: bool) -> tuple[list[Comparison], list[dict[str, Any]], list[str]]:
    """The retention part's table lines, details and method."""
    rows = 100_000 if quick else 1_000_000
    figures = measure(rows)
    day = f"one day ({figures['day_rows']:,} rows, {figures['day_bytes'] / 2**20:.0f} MiB)"
    comparisons = [
        Comparison(
            BENCHMARK, f"DROP PARTITION of {day}", figures["drop_s"], "DELETE of the same rows", figures["delete_s"], "s",
            note="the DELETE frees no disk (the tablespace keeps its size); the drop frees the partition's file",
        ),
        Comparison(
            BENCHMARK, f"migration of {rows:,} rows: partitioning (0008)", figures["migrate_s"], "first split into day partitions",
            figures["split_s"], "s", note="both copy the table; the writer's events wait in SQS meanwhile",
        ),
        Comparison(
            BENCHMARK, f"writer into {figures['partitions']} day partitions", figures["writer_events_per_s"], "same writer, unpartitioned table",
            figures["writer_unpartitioned_events_per_s"], "events/s",
            note=f"batches of {WRITER_BATCH}; the ids are looked up in every partition first; 100M a week needs 165 events/s",
        ),
    ]
    method = [
        f"Retention: {rows:,} predictions over {DAYS} days (10 numeric + 1 categorical feature, the writer's rows) loaded with LOAD DATA "
        "into the pre-partitioning schema; then the partitioning migration, the first retention step (split of pmax), "
        "a DELETE of one day's rows (statement time; rolled back) and DROP PARTITION of the same day, then "
        f"{WRITER_EVENTS:,} new events written in batches of {WRITER_BATCH} before the migration and again after the drop.",
    ]
    return comparisons, [{"measure": key, "value": value} for key, value in figures.items()], method


def weekly_comparisons(weekly: dict[str, Any]) -> list[Comparison]:
    """Table lines of the weekly part: memory at the largest size against the middle one and the
    limit, KS equal to scipy's on the middle size, and DuckDB against the database on the largest
    (each line from the runs of one part, measured back to back)."""
    runs = {(item["part"], item["source"], item["size"]): item for item in weekly["runs"]}
    middle, largest = weekly["sizes"][1], weekly["sizes"][2]
    lines: list[Comparison] = []
    if ("database", "database", largest) in runs:
        big, mid = runs["database", "database", largest], runs["database", "database", middle]
        lines += [
            ratio_at_most(BENCHMARK, f"weekly run from MariaDB, {largest:,} predictions: peak RSS", big["peak_rss_mb"], f"same at {middle:,}",
                          mid["peak_rss_mb"], "MiB", MAX_PEAK_GROWTH, note="VmHWM of a fresh process, imports included"),
            Comparison(BENCHMARK, f"weekly run from MariaDB, {largest:,} predictions: peak RSS", big["peak_rss_mb"], "limit", MAX_PEAK_MIB, "MiB",
                       f"< {MAX_PEAK_MIB} MiB", big["peak_rss_mb"] < MAX_PEAK_MIB),
        ]  # fmt: skip
        for name, (statistic, p_value, count) in weekly.get("scipy_ks", {}).items():
            ours = mid["ks"][name]
            for index, what in ((0, "D"), (1, "p")):
                equal = math.isclose(ours[index], (statistic, p_value)[index], rel_tol=KS_REL_TOLERANCE) and ours[2] == count
                lines.append(Comparison(BENCHMARK, f"KS {what} of {name}, {middle:,} window, from the run's summaries", ours[index],
                                        "scipy.stats.ks_2samp on the raw values", (statistic, p_value)[index], "",
                                        f"equal (rel. {KS_REL_TOLERANCE:g})", equal))  # fmt: skip
    for part in ("archive", "archive-no-quality"):
        base = runs.get((part, "database", largest)) or (runs.get(("database", "database", largest)) if part == "archive" else None)
        if (part, "duckdb", largest) in runs and base is not None:
            duck = runs[part, "duckdb", largest]
            label = f"weekly run, {largest:,} predictions, drift summaries from DuckDB over the archive{'' if part == 'archive' else ', quality off'}"
            lines += [
                ratio_at_most(BENCHMARK, label, duck["seconds"], "from MariaDB", base["seconds"], "s", 1.0,
                              note="quality on: read from the archive too" if part == "archive" else ""),
                Comparison(BENCHMARK, f"{label}: peak RSS", duck["peak_rss_mb"], "from MariaDB", base["peak_rss_mb"], "MiB", f"< {MAX_PEAK_MIB} MiB",
                           duck["peak_rss_mb"] < MAX_PEAK_MIB),
            ]  # fmt: skip
    return lines


def _rounded(item: dict[str, Any]) -> dict[str, Any]:
    keep = ("seconds", "cpu_s", "peak_rss_mb", "rss_before_mb", "rows", "drifted")
    return {key: round(item[key], 2) if isinstance(item[key], float) else item[key] for key in keep}


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def run(quick: bool, out_dir: Path, parts: Sequence[str] = PARTS, *, keep: bool = False) -> BenchReport:
    """The parts named (``retention``, ``database``, ``archive``; see the module doc), full or quick sizes."""
    del out_dir
    comparisons: list[Comparison] = []
    details: list[dict[str, Any]] = []
    method: list[str] = []
    if "retention" in parts:
        comparisons, details, method = retention_report(quick)
    weekly_parts = [part for part in parts if part in weekly_scale.WEEKLY_PARTS]
    if weekly_parts:
        weekly = weekly_scale.measure(quick, weekly_parts, keep=keep)
        comparisons += weekly_comparisons(weekly)
        details += [
            {"measure": f"weekly run ({item['part']} part), {item['source']}, {item['size']:,} rows{'' if item['quality'] else ', quality off'}", "value": _rounded(item)}
            for item in weekly["runs"]
        ]
        details += [{"measure": f"KS of {name} by scipy, {weekly['sizes'][1]:,} window", "value": value} for name, value in weekly.get("scipy_ks", {}).items()]
        details += [{"measure": f"load of {weekly['rows']:,} rows: {name}", "value": round(value, 1) if isinstance(value, float) else value} for name, value in weekly["load"].items()]
        details.append({"measure": "load average at start / end of the weekly part", "value": f"{_loads(weekly['uptime_start'])} / {_loads(weekly['uptime_end'])}"})
        method += [line.strip().replace("\n", " ") for line in (weekly_scale.__doc__ or "").split("\n\n")[1:3]]
    return BenchReport(BENCHMARK, comparisons, details=details, method=method)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--keep", action="store_true", help="keep the weekly part's database and archive for another run")
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",")]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-")), parts, keep=args.keep))


if __name__ == "__main__":
    main()
