"""Daily summaries: the weekly run from stored days vs the full read, and the daily step vs a raw SELECT.

A MariaDB database ``sml_bench_daily`` gets every migration and N predictions over seven days
(``scale_bench``'s rows: 10 numeric + 1 categorical feature, loaded with ``LOAD DATA``), and a
manifest whose training reference is 5,000 rows of the same distributions. ``LOAD DATA`` goes
behind the writer, so the load then fills ``prediction_day_counts`` with the days' counts, as the
writer keeps them when it inserts the same rows (``sml.core.day_counts``). Then, in one run:

- the daily step (:func:`sml.monitoring.daily.summarise_days` of the seven days) against a raw
  ``SELECT features, prediction`` of the same rows, fetched whole (pymysql's unbuffered cursor),
  seconds per million rows;
- the weekly read: :func:`sml.monitoring.windows.read_window_summaries` of the whole window against
  :func:`sml.monitoring.daily.read_window_from_days` of the same window, for a window aligned to
  midnight (every day stored) and for the scheduled run's window ending at 06:00 (its two partial
  days, together a day of rows, are read live); the summaries are checked equal, cell for cell;
- the same aligned read from stored days when the summaries carry no checked day count (stored
  before the counts existed): each day's ``COUNT(*)``, as every read did before the counts.

Run alone: ``python bench/daily_summaries_bench.py [--quick] [--load | --loaded]``: ``--load``
only creates and fills the database (slow, untimed: run it outside the bench lock), ``--loaded``
only measures on it (the summaries stored by an earlier measurement are removed first).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pymysql
import pymysql.cursors
from common import MYSQL_SERVER, BenchReport, Comparison, ratio_at_most
from scale_bench import CATEGORIES, DAYS, LAST_DAY, MODEL_NAME, NUMERIC, load_rows

BENCHMARK = "daily-summaries"
DATABASE = "sml_bench_daily"


def _url() -> Any:
    import sqlalchemy as sa

    return sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE)


def _manifest() -> Any:
    from sml.lifecycle.manifest import CategoricalReference, FeatureSpec, ModelManifest, NumericReference, ReferenceData

    generator = np.random.default_rng(11)
    values = generator.normal(size=(5_000, len(NUMERIC)))
    grades = generator.choice(CATEGORIES, size=5_000)
    references: dict[str, Any] = {name: NumericReference(sorted_values=tuple(np.sort(values[:, index]).tolist()), missing=0) for index, name in enumerate(NUMERIC)}
    references["grade"] = CategoricalReference(counts={str(c): int((grades == c).sum()) for c in CATEGORIES}, missing=0)
    return ModelManifest(
        model_name=MODEL_NAME, version="v1", created_at="2026-01-01T00:00:00Z", sha256="", artifact_key="", estimator="LogisticRegression",
        metrics={"f1": 0.9}, params={}, classes=("benign", "malignant"),
        features=(*(FeatureSpec(name, "numeric") for name in NUMERIC), FeatureSpec("grade", "categorical", categories=CATEGORIES)),
        reference=ReferenceData(n_rows=5_000, features=references, label_counts={"benign": 2_500, "malignant": 2_500}),
        library_versions={"scikit-learn": "1.5.0"},
    )


def _timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    outcome = work()
    return time.perf_counter() - started, outcome


def _raw_select(start: datetime, end: datetime) -> int:
    connection = pymysql.connect(**MYSQL_SERVER, database=DATABASE, cursorclass=pymysql.cursors.SSCursor)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT features, prediction FROM predictions WHERE model_name = %s AND predicted_at >= %s AND predicted_at < %s",
                (MODEL_NAME, start.replace(tzinfo=None), end.replace(tzinfo=None)),
            )
            return sum(1 for _ in cursor)
    finally:
        connection.close()


def _same(first: Any, second: Any) -> None:
    assert first.n_rows == second.n_rows, (first.n_rows, second.n_rows)
    for name, summary in first.features.items():
        other = second.features[name]
        if hasattr(summary, "cells"):
            assert np.array_equal(summary.cells, other.cells) and summary.missing == other.missing, name
        else:
            assert summary.counts == other.counts and summary.unseen == other.unseen and summary.missing == other.missing, name
    assert first.prediction.counts == second.prediction.counts


def measure(rows: int, *, load: bool = True) -> dict[str, Any]:
    from sml.core.db import DRIFT_DAY_SUMMARIES, DRIFT_DAY_SUMMARY_COUNTS, create_db_engine
    from sml.monitoring.daily import read_window_from_days, summarise_days
    from sml.monitoring.summaries import SummaryReference
    from sml.monitoring.windows import TimeWindow, read_window_summaries

    import sqlalchemy as sa

    figures: dict[str, Any] = {"rows": rows}
    manifest = _manifest()
    reference = SummaryReference.from_manifest(manifest)
    first_day = LAST_DAY - timedelta(days=DAYS - 1)
    days = [first_day + timedelta(days=offset) for offset in range(DAYS)]
    midnight = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    aligned = TimeWindow(midnight, midnight + timedelta(days=DAYS))
    scheduled = TimeWindow(midnight + timedelta(hours=6), midnight + timedelta(days=DAYS, hours=6))
    if load:
        load_database(rows)
    engine = create_db_engine(_url())
    try:
        with engine.begin() as connection:
            loaded = connection.exec_driver_sql("SELECT COALESCE(SUM(n_rows), 0) FROM prediction_day_counts").scalar_one()
            assert int(loaded) == rows, f"{DATABASE} holds {loaded} counted rows, not {rows}: run with --load first"
            connection.execute(sa.delete(DRIFT_DAY_SUMMARY_COUNTS))
            connection.execute(sa.delete(DRIFT_DAY_SUMMARIES))
        figures["raw_select_s"], selected = _timed(lambda: _raw_select(aligned.start, aligned.end))
        assert selected == rows, (selected, rows)
        figures["daily_step_s"], step = _timed(lambda: summarise_days(engine, manifest, days))
        assert sum(step.computed.values()) == rows
        figures["daily_step_again_s"], again = _timed(lambda: summarise_days(engine, manifest, days))
        assert not again.computed
        for name, window in (("aligned", aligned), ("scheduled", scheduled)):
            figures[f"{name}_full_s"], (full,) = _timed(lambda: read_window_summaries(engine, MODEL_NAME, window, manifest.features, [reference]))
            figures[f"{name}_days_s"], from_days = _timed(lambda: read_window_from_days(engine, manifest, window))
            _same(full, from_days.summary)
            figures[f"{name}_live_rows"] = full.n_rows - sum(step.computed[day] for day in from_days.stored_days)
        with engine.begin() as connection:
            connection.execute(sa.delete(DRIFT_DAY_SUMMARY_COUNTS))
        figures["aligned_days_counting_s"], from_days = _timed(lambda: read_window_from_days(engine, manifest, aligned))
        assert list(from_days.stored_days) == days
    finally:
        engine.dispose()
    return figures


def load_database(rows: int) -> None:
    """A fresh ``DATABASE`` with every migration, ``rows`` predictions and their days' counts."""
    from sml.core.db import apply_migrations, create_db_engine

    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        admin.close()
    engine = create_db_engine(_url())
    try:
        apply_migrations(engine)
        load_rows_into(rows)
        with engine.begin() as connection:
            # What the writer's inserts would have counted (sml.core.day_counts).
            connection.exec_driver_sql(
                "INSERT INTO prediction_day_counts (model_name, model_version, day, n_rows) "
                "SELECT model_name, model_version, DATE(predicted_at), COUNT(*) FROM predictions GROUP BY 1, 2, 3"
            )
            connection.exec_driver_sql("ANALYZE TABLE predictions").all()
    finally:
        engine.dispose()


def load_rows_into(rows: int) -> None:
    """``scale_bench.load_rows`` into this benchmark's database."""
    import tempfile

    import scale_bench

    saved = scale_bench.DATABASE
    scale_bench.DATABASE = DATABASE
    try:
        load_rows(rows, Path(tempfile.mkdtemp(prefix="sml-daily-")))
    finally:
        scale_bench.DATABASE = saved


def run(quick: bool, out_dir: Path, *, load: bool = True) -> BenchReport:
    del out_dir
    rows = 100_000 if quick else 1_000_000
    f = measure(rows, load=load)
    per_million = 1_000_000 / rows
    comparisons = [
        ratio_at_most(
            BENCHMARK, f"weekly read from stored days, window aligned to days ({rows:,} rows)", f["aligned_days_s"],
            "full read of the same window", f["aligned_full_s"], "s", 0.1, note="the writer's day counts + 7 stored summaries; same cells",
        ),
        Comparison(
            BENCHMARK, "same, summaries without a checked day count (each day's COUNT(*), as before the counts)", f["aligned_days_counting_s"],
            "full read of the same window", f["aligned_full_s"], "s",
        ),
        ratio_at_most(
            BENCHMARK, f"weekly read from stored days, scheduled window ending 06:00 ({f['scheduled_live_rows']:,} rows live)",
            f["scheduled_days_s"], "full read of the same window", f["scheduled_full_s"], "s", 0.1,
            note="the two partial days (a day of rows) are read live; same cells",
        ),
        ratio_at_most(
            BENCHMARK, "daily step, per million rows", f["daily_step_s"] * per_million, "raw SELECT features, prediction of the same rows",
            f["raw_select_s"] * per_million, "s", 1.2, note="7 days counted and stored",
        ),
        Comparison(BENCHMARK, "daily step again, nothing changed", f["daily_step_again_s"], "daily step", f["daily_step_s"], "s", note="the day counts read"),
    ]
    method = [
        f"{rows:,} predictions over {DAYS} days (scale_bench's rows) in a fresh MariaDB database with every migration; reference of "
        "5,000 rows; the days' counts filled as the writer keeps them (the rows are loaded with LOAD DATA, behind the writer); "
        "the daily step, then each window read whole and from the stored days, summaries checked equal cell for cell. "
        "One run each; the machine is shared with other sessions (its load varies), so the figures are noisy.",
    ]
    return BenchReport(BENCHMARK, comparisons, details=[{"measure": key, "value": value} for key, value in f.items()], method=method)


def _main() -> None:
    global DATABASE
    import argparse
    import tempfile

    from common import print_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--load", action="store_true", help=f"only create and fill {DATABASE} (untimed)")
    stage.add_argument("--loaded", action="store_true", help=f"only measure, on {DATABASE} as --load left it")
    stage.add_argument("--drop", action="store_true", help="only drop the database")
    parser.add_argument("--database", default=DATABASE, help=f"the MariaDB database to use (default {DATABASE}), e.g. one per session")
    args = parser.parse_args()
    DATABASE = args.database
    if args.drop:
        admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        finally:
            admin.close()
        return
    if args.load:
        load_database(100_000 if args.quick else 1_000_000)
        return
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-")), load=not args.loaded))


if __name__ == "__main__":
    _main()
