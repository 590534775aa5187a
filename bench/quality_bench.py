"""Model quality: the weekly run with labels against the same run without them, in MariaDB.

A fresh database ``sml_bench_quality`` holds one 7-day window of N predictions × 20 numeric
features with their probabilities (the writer's row format), and labels for 30 % of them in
``ground_truth`` (dropped at the end). Three variants of :func:`sml.monitoring.job.run_drift_job`, each
in a fresh process, taking turns (imports done before the clock starts; S3 and SNS on moto
in-process):

- quality off: the run as before issue 16 (``DriftJobConfig(quality=None)``): drift only;
- no labels: quality on, with ``ground_truth`` swapped for an empty table (``RENAME TABLE``):
  the window is read with its probabilities and CBPE estimates every prediction;
- labelled: quality on with the 30 % labels: realized metrics with bootstrap intervals too.

The goal (issue 16): labelled ≤ 1.5× quality off. Run alone: ``python bench/quality_bench.py [--quick]``
(quick: 100k predictions + 30k labels; full: 1M + 300k).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pymysql
from common import MYSQL_SERVER, REPOSITORY, BenchReport, Comparison, print_report, ratio_at_most
from drift_bench import FEATURE_NAMES, WINDOW, WINDOW_END, _csv_value, _memory_mb, bench_manifest

BENCHMARK = "quality"
DATABASE = "sml_bench_quality"
MODEL_NAME = "drift-bench"
CLASSES = ("benign", "malignant")
LABELLED_SHARE = 0.3
MAX_RATIO_TO_DRIFT_ONLY = 1.5
VARIANTS = ("quality off (drift only)", "quality on, no labels", "quality on, 30% labelled")


def quality_manifest() -> Any:
    """The drift benchmark's manifest with held-out metrics and a CBPE calibrator (fitted on 5,000 synthetic held-out rows)."""
    from sml.lifecycle.calibration import fit_calibrator

    rng = np.random.default_rng(3)
    p = 1 / (1 + np.exp(-2 * rng.normal(size=5_000)))
    truth = (rng.random(5_000) < p).astype(int)
    calibrator = fit_calibrator(truth, np.column_stack([1 - p, p]), CLASSES, "malignant", fitted_on="bench held-out")
    manifest = bench_manifest()
    return replace(manifest, metrics={"f1": 0.8, "accuracy": 0.8}, extra={"positive_class": "malignant", "calibration": calibrator.to_json()})


def write_csvs(predictions_path: Path, labels_path: Path, rows: int) -> int:
    """``rows`` predictions over the window and labels for ``LABELLED_SHARE`` of them, a day late; returns the label count."""
    from sml.core.db import GROUND_TRUTH, PREDICTIONS
    from sml.core.events import build_prediction_event
    from sml.writer.batch import prediction_row

    rng = np.random.default_rng(11)
    values = rng.normal(size=(rows, len(FEATURE_NAMES)))
    p = 1 / (1 + np.exp(-2 * values[:, 1]))
    truth = rng.random(rows) < p
    labelled = rng.random(rows) < LABELLED_SHARE
    step = WINDOW / rows
    start = WINDOW_END - WINDOW
    prediction_columns = [column.name for column in PREDICTIONS.columns]
    label_columns = [column.name for column in GROUND_TRUTH.columns]
    with predictions_path.open("w", newline="", encoding="utf-8") as predictions, labels_path.open("w", newline="", encoding="utf-8") as labels:
        prediction_writer = csv.writer(predictions, lineterminator="\n")
        label_writer = csv.writer(labels, lineterminator="\n")
        for index in range(rows):
            predicted_at = start + index * step
            event = build_prediction_event(
                model_name=MODEL_NAME,
                model_version="v1",
                features=dict(zip(FEATURE_NAMES, values[index].tolist())),
                prediction=CLASSES[int(p[index] >= 0.5)],
                probabilities={"benign": float(1 - p[index]), "malignant": float(p[index])},
                predicted_at=predicted_at,
            )
            row = prediction_row(event, stored_at=WINDOW_END)
            prediction_writer.writerow(_csv_value(row[column]) for column in prediction_columns)
            if labelled[index]:
                label = {
                    "prediction_id": event.prediction_id,
                    "label": json.dumps(CLASSES[int(truth[index])]),
                    "labelled_at": (predicted_at + timedelta(days=1)).replace(tzinfo=None),
                    "source": "bench",
                    "stored_at": WINDOW_END.replace(tzinfo=None),
                }
                label_writer.writerow(_csv_value(label[column]) for column in label_columns)
    return int(labelled.sum())


@contextmanager
def quality_database(rows: int, folder: Path) -> Iterator[int]:
    """A fresh ``sml_bench_quality`` with the schema, the window, its labels and an empty ``ground_truth_empty``; dropped afterwards."""
    import sqlalchemy as sa
    from sml.core.db import apply_migrations, create_db_engine

    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        engine = create_db_engine(sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE))
        apply_migrations(engine)
        engine.dispose()
        predictions_csv, labels_csv = folder / "predictions.csv", folder / "labels.csv"
        labels = write_csvs(predictions_csv, labels_csv, rows)
        loader = pymysql.connect(**MYSQL_SERVER, database=DATABASE, charset="utf8mb4", local_infile=True)
        try:
            with loader.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
                for table, path in (("predictions", predictions_csv), ("ground_truth", labels_csv)):
                    cursor.execute(
                        f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'",
                        (str(path),),
                    )
                    cursor.execute(f"ANALYZE TABLE {table}")
                cursor.execute("CREATE TABLE ground_truth_empty LIKE ground_truth")
            loader.commit()
        finally:
            loader.close()
        predictions_csv.unlink()
        labels_csv.unlink()
        yield labels
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.close()


@contextmanager
def labels_hidden() -> Iterator[None]:
    """``ground_truth`` swapped for the empty table (atomically, twice) for the duration."""
    swap = "RENAME TABLE ground_truth TO ground_truth_swap, ground_truth_empty TO ground_truth, ground_truth_swap TO ground_truth_empty"
    connection = pymysql.connect(**MYSQL_SERVER, database=DATABASE, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(swap)
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(swap)
        connection.close()


def weekly_run(variant: str) -> Callable[[], str]:
    import boto3
    import sqlalchemy as sa
    from moto import mock_aws
    from sml.core.db import create_db_engine
    from sml.monitoring.job import DriftJobConfig, run_drift_job

    mock = mock_aws()
    mock.start()
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    s3, sns = session.client("s3"), session.client("sns")
    bucket = f"sml-bench-quality-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    topic_arn = sns.create_topic(Name="sml-bench-quality")["TopicArn"]
    overrides = {"quality": None} if variant == VARIANTS[0] else {}
    config = DriftJobConfig(bucket=bucket, window_length=WINDOW, topic_arn=topic_arn, **overrides)
    manifest = quality_manifest()
    engine = create_db_engine(sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=DATABASE))
    # Warm the scikit-learn metrics import like the other imports: the clock measures the work only.
    import sklearn.metrics  # noqa: F401

    def work() -> str:
        result = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=sns, window_end=WINDOW_END)
        quality = result.run.quality
        if quality is None:
            return f"{result.run.status.value}, {result.run.current_rows} rows, quality off"
        estimated = quality.estimated.get("f1").value if quality.estimated else None
        return f"{result.run.status.value}, quality {quality.status.value}, {quality.n_labelled} labelled of {quality.n_predictions}, estimated f1 {estimated:.3f}"

    return work


def run_child(variant: str) -> None:
    work = weekly_run(variant)
    rss_before = _memory_mb("VmRSS")
    started = time.perf_counter()
    outcome = work()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _memory_mb("VmHWM"), "rss_before_mb": rss_before, "outcome": outcome}))


def measure(repeats: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
            if name == VARIANTS[1]:
                with labels_hidden():
                    completed = subprocess.run(command, check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800)
            else:
                completed = subprocess.run(command, check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800)
            if completed.returncode != 0:
                raise RuntimeError(f"quality benchmark variant {name!r} failed: {completed.stderr.strip()[-2000:]}")
            runs[name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return runs


def run(quick: bool, out_dir: Path) -> BenchReport:
    """100k predictions + 30k labels (quick) or 1M + 300k (full), 3 runs per variant."""
    rows = 100_000 if quick else 1_000_000
    repeats = 3
    with tempfile.TemporaryDirectory(prefix="sml-bench-quality-") as folder, quality_database(rows, Path(folder)) as labels:
        runs = measure(repeats)
    seconds = {name: median(run["seconds"] for run in values) for name, values in runs.items()}
    growth = {name: max(run["peak_rss_mb"] - run["rss_before_mb"] for run in values) for name, values in runs.items()}
    size = f"{rows // 1000}k predictions + {labels // 1000}k labels"
    off, unlabelled, labelled = (seconds[name] for name in VARIANTS)
    comparisons = [
        ratio_at_most(BENCHMARK, f"{size}: weekly run with quality (median)", labelled, "the same run, quality off", off, "s", MAX_RATIO_TO_DRIFT_ONLY),
        Comparison(BENCHMARK, f"{size}: weekly run with quality (median)", labelled, "quality on, no labels", unlabelled, "s", note="the cost of the labels themselves"),
        Comparison(BENCHMARK, f"{size}: memory for the work", growth[VARIANTS[2]], "quality off", growth[VARIANTS[0]], "MB", note="peak RSS minus RSS before the work"),
    ]
    details = [
        {
            "variant": name,
            "median_s": round(seconds[name], 3),
            "min_s": round(min(run["seconds"] for run in runs[name]), 3),
            "rss_growth_mb": round(growth[name]),
            "outcome": runs[name][-1]["outcome"],
        }
        for name in VARIANTS
    ]
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=details,
        method=[
            f"One 7-day window of N predictions × {len(FEATURE_NAMES)} numeric features with probabilities in MariaDB (LOAD DATA), "
            f"labels for {LABELLED_SHARE:.0%} of them in ground_truth, a day late.",
            f"Each variant runs in a fresh process, {repeats} times, taking turns; the clock starts after imports and setup. "
            "Quality off: run_drift_job(quality=None). No labels: ground_truth swapped for an empty table. Labelled: the full run.",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-"))))


if __name__ == "__main__":
    main()
