"""Drift: our whole drift job over a window in MariaDB vs a raw fetch of the same values and a pandas loop.

A fresh database ``sml_bench_drift`` holds one 7-day window of N predictions × 20 numeric
features, stored in the writer's row format (dropped at the end). Three variants, each run in a
fresh process so that its time and peak memory are its own (imports are done before the clock
starts):

- floor: the raw ``SELECT features, prediction`` of the window with pymysql, ``fetchall``;
- ours: :func:`sml.monitoring.job.run_drift_job` with the training reference of the manifest: read
  the window, test every feature and the label, render the HTML report, upload it to S3 (moto
  in-process), store the run, publish the alert to SNS (moto in-process);
- seed-style baseline (bench code, for comparison only): ``pandas.read_sql`` of the window, a
  DataFrame of the parsed ``features`` JSON, then ``scipy.stats.ks_2samp`` per column against
  the same reference.

Peak memory is the process's peak RSS (``VmHWM``) and its growth over the RSS just before the
work. Run alone: ``python bench/drift_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pymysql
from common import MYSQL_SERVER, REPOSITORY, BenchReport, Comparison, load_predictions_csv, print_report, ratio_at_most, seed_environment

BENCHMARK = "drift"
DATABASE = "sml_bench_drift"
MODEL_NAME = "drift-bench"
FEATURE_NAMES = tuple(f"feature_{index:02d}" for index in range(20))
CLASSES = ("benign", "malignant")
REFERENCE_ROWS = 10_000
WINDOW_END = datetime(2025, 3, 10, 6, 0, tzinfo=UTC)
WINDOW = timedelta(days=7)
MAX_RATIO_TO_FETCH = 1.5
MIN_SPEEDUP_OVER_PANDAS = 5
WINDOW_QUERY = (
    "SELECT features, prediction FROM predictions WHERE model_name = %(model)s AND predicted_at >= %(start)s AND predicted_at < %(end)s"
)


def bench_manifest() -> Any:
    """A manifest with 20 numeric features whose training reference is 10,000 standard-normal rows."""
    from sml.lifecycle.manifest import FeatureSpec, ModelManifest, NumericReference, ReferenceData

    reference = np.sort(np.random.default_rng(7).normal(size=(REFERENCE_ROWS, len(FEATURE_NAMES))), axis=0)
    return ModelManifest(
        model_name=MODEL_NAME,
        version="v1",
        created_at="2025-01-01T00:00:00Z",
        sha256="",
        artifact_key="",
        estimator="LogisticRegression",
        metrics={},
        params={},
        classes=CLASSES,
        features=tuple(FeatureSpec(name, "numeric") for name in FEATURE_NAMES),
        reference=ReferenceData(
            n_rows=REFERENCE_ROWS,
            features={
                name: NumericReference(sorted_values=tuple(reference[:, index].tolist())) for index, name in enumerate(FEATURE_NAMES)
            },
            label_counts={"benign": REFERENCE_ROWS // 2, "malignant": REFERENCE_ROWS - REFERENCE_ROWS // 2},
        ),
        library_versions={},
    )


def write_window_csv(path: Path, rows: int) -> None:
    """``rows`` predictions spread evenly over the window, as the writer stores them, to a CSV for LOAD DATA.

    The current window is drawn with a small mean shift on one feature, so the job has drift to find.
    """
    from sml.core.db import PREDICTIONS
    from sml.core.events import build_prediction_event
    from sml.writer.batch import prediction_row

    values = np.random.default_rng(11).normal(size=(rows, len(FEATURE_NAMES)))
    values[:, 0] += 0.3
    labels = np.where(values[:, 1] > 0, "malignant", "benign")
    step = WINDOW / rows
    start = WINDOW_END - WINDOW
    columns = [column.name for column in PREDICTIONS.columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for index, (features, label) in enumerate(zip(values.tolist(), labels.tolist())):
            event = build_prediction_event(
                model_name=MODEL_NAME,
                model_version="v1",
                features=dict(zip(FEATURE_NAMES, features)),
                prediction=label,
                predicted_at=start + index * step,
            )
            row = prediction_row(event, stored_at=WINDOW_END)
            writer.writerow(_csv_value(row[column]) for column in columns)


def _csv_value(value: Any) -> Any:
    if value is None:
        return r"\N"
    return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value


@contextmanager
def drift_database(rows: int, folder: Path) -> Iterator[str]:
    """A fresh ``sml_bench_drift`` database with the schema and one window of ``rows`` predictions; dropped afterwards."""
    import sqlalchemy as sa
    from sml.core.db import apply_migrations, create_db_engine

    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = sa.URL.create(
            "mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE
        )
        engine = create_db_engine(url)
        apply_migrations(engine)
        engine.dispose()
        csv_path = folder / "window.csv"
        write_window_csv(csv_path, rows)
        load_predictions_csv(DATABASE, csv_path)
        csv_path.unlink()
        yield DATABASE
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.close()


def _window_parameters() -> dict[str, Any]:
    return {"model": MODEL_NAME, "start": (WINDOW_END - WINDOW).replace(tzinfo=None), "end": WINDOW_END.replace(tzinfo=None)}


def raw_select() -> Callable[[], Any]:
    """The floor: every ``features`` and ``prediction`` text of the window, fetched with pymysql."""

    def work() -> int:
        connection = pymysql.connect(**MYSQL_SERVER, database=DATABASE, charset="utf8mb4")
        try:
            with connection.cursor() as cursor:
                cursor.execute(WINDOW_QUERY, _window_parameters())
                return len(cursor.fetchall())
        finally:
            connection.close()

    return work


def our_drift_job() -> Callable[[], Any]:
    """Ours: the whole drift job, with S3 and SNS on moto in-process."""
    import boto3
    import sqlalchemy as sa
    from moto import mock_aws
    from sml.core.db import create_db_engine
    from sml.monitoring.job import DriftJobConfig, run_drift_job

    mock = mock_aws()
    mock.start()
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    s3, sns = session.client("s3"), session.client("sns")
    s3.create_bucket(Bucket="sml-bench-drift")
    config = DriftJobConfig(bucket="sml-bench-drift", window_length=WINDOW, topic_arn=sns.create_topic(Name="sml-bench-drift")["TopicArn"])
    manifest = bench_manifest()
    url = sa.URL.create(
        "mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE
    )
    engine = create_db_engine(url)

    def work() -> str:
        result = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=sns, window_end=WINDOW_END)
        return f"{result.run.status.value}, {result.run.current_rows} rows, drifted {result.run.drifted_features}"

    return work


def seed_style_pandas_loop() -> Callable[[], Any]:
    """Seed-style baseline, for comparison only: pandas DataFrames and ``ks_2samp`` per column."""
    import warnings

    import pandas as pd
    from scipy.stats import ks_2samp

    manifest = bench_manifest()
    # pandas warns that it only tests SQLAlchemy connectables; a pymysql connection is what the seed used.
    warnings.filterwarnings("ignore", message="pandas only supports SQLAlchemy", category=UserWarning)

    def work() -> str:
        connection = pymysql.connect(**MYSQL_SERVER, database=DATABASE, charset="utf8mb4")
        try:
            frame = pd.read_sql(WINDOW_QUERY, connection, params=_window_parameters())
        finally:
            connection.close()
        current = pd.DataFrame([json.loads(text) for text in frame["features"]])
        reference = pd.DataFrame({name: manifest.reference.features[name].sorted_values for name in FEATURE_NAMES})
        p_values = {name: ks_2samp(reference[name].dropna(), current[name].dropna()).pvalue for name in FEATURE_NAMES}
        drifted = sorted(name for name, p_value in p_values.items() if p_value < 0.05)
        return f"{len(frame)} rows, drifted {drifted}"

    return work


VARIANTS = {"raw SELECT (floor)": raw_select, "ours: drift job": our_drift_job, "seed-style: pandas + ks_2samp": seed_style_pandas_loop}


def run_child(variant: str) -> None:
    """In a fresh process: prepare ``variant``, then time its work once and print seconds and memory as JSON."""
    work = VARIANTS[variant]()
    rss_before = _memory_mb("VmRSS")
    started = time.perf_counter()
    outcome = work()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _memory_mb("VmHWM"), "rss_before_mb": rss_before, "outcome": str(outcome)}))


def _memory_mb(field: str) -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(repeats: int) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` fresh-process runs per variant, the variants taking turns."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            env = seed_environment() if name.startswith("seed-style") else None
            completed = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", name],
                check=False,
                cwd=REPOSITORY,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"drift benchmark variant {name!r} failed: {completed.stderr.strip()[-2000:]}")
            runs[name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return runs


def compare(rows: int, runs: dict[str, list[dict[str, Any]]]) -> list[Comparison]:
    """Table lines on median seconds: ours against the fetch and against pandas (≥ 5× faster = ≤ 0.2× its time).

    Memory, for information, is each variant's peak RSS growth over its RSS before the work: the
    processes import different libraries (ours also moto, for S3 and SNS), so whole peaks would
    compare imports.
    """
    seconds = {name: median([run["seconds"] for run in values]) for name, values in runs.items()}
    growth = {name: max(run["peak_rss_mb"] - run["rss_before_mb"] for run in values) for name, values in runs.items()}
    ours, floor, pandas = seconds["ours: drift job"], seconds["raw SELECT (floor)"], seconds["seed-style: pandas + ks_2samp"]
    size = f"{rows // 1000}k rows"
    return [
        ratio_at_most(BENCHMARK, f"{size}, ours: whole job (median)", ours, "raw SELECT of the same values", floor, "s", MAX_RATIO_TO_FETCH),
        ratio_at_most(
            BENCHMARK, f"{size}, ours: whole job (median)", ours, "seed-style pandas + ks_2samp loop", pandas, "s", 1 / MIN_SPEEDUP_OVER_PANDAS,
            note=f"{pandas / ours:.1f}× faster; the goal is ≥ {MIN_SPEEDUP_OVER_PANDAS}× faster",
        ),
        Comparison(BENCHMARK, f"{size}, ours: memory for the work", growth["ours: drift job"], "raw SELECT", growth["raw SELECT (floor)"], "MB",
                   note="peak RSS minus RSS before the work"),
        Comparison(BENCHMARK, f"{size}, ours: memory for the work", growth["ours: drift job"], "seed-style pandas loop",
                   growth["seed-style: pandas + ks_2samp"], "MB"),
    ]  # fmt: skip


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Measure every variant on 100k rows (quick, 3 runs each) or on 100k and 1M rows (full, 3 runs each)."""
    sizes = [100_000] if quick else [100_000, 1_000_000]
    repeats = 3
    comparisons: list[Comparison] = []
    details: list[dict[str, Any]] = []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="sml-bench-drift-") as folder, drift_database(rows, Path(folder)):
            runs = measure(repeats)
        comparisons += compare(rows, runs)
        for name, values in runs.items():
            details.append(
                {
                    "rows": rows,
                    "variant": name,
                    "median_s": round(median([run["seconds"] for run in values]), 3),
                    "min_s": round(min(run["seconds"] for run in values), 3),
                    "peak_rss_mb": round(max(run["peak_rss_mb"] for run in values)),
                    "rss_growth_mb": round(max(run["peak_rss_mb"] - run["rss_before_mb"] for run in values)),
                    "outcome": values[-1]["outcome"],
                }
            )
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=details,
        method=[
            (
                f"One 7-day window of N predictions × {len(FEATURE_NAMES)} numeric features in MariaDB (the writer's row format, loaded "
                f"with LOAD DATA); reference = {REFERENCE_ROWS:,} training rows in the manifest. Feature 0 is shifted by 0.3 σ."
            ),
            (
                f"Each variant runs in a fresh process, {repeats} times, the variants taking turns; the clock starts after imports and "
                "setup. Floor: pymysql `SELECT features, prediction` + `fetchall`. Ours: `run_drift_job` (read, test, report, S3, "
                "store, SNS; AWS is moto in-process). Seed-style: `pandas.read_sql` + DataFrame of `json.loads` + `ks_2samp` per column."
            ),
            "Peak RSS = the process's `VmHWM` (imports included); growth = peak minus the RSS just before the work.",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-"))))


if __name__ == "__main__":
    main()
