"""Model quality per task: the weekly run with labels against the same run without them, in MariaDB.

For each task (binary, multiclass with three classes, regression) a database
``sml_bench_quality_<task>`` holds one 7-day window of N predictions × 20 numeric features (the writer's
row format: a classifier's class and probabilities, a regression model's number), and labels for
30 % of them in ``ground_truth`` (dropped at the end). The manifest carries held-out metrics and
the task's label-free estimator (CBPE's calibrator, or DLE's loss models fitted on 5,000 synthetic
held-out rows). Three variants of :func:`sml.monitoring.job.run_drift_job`, each in a fresh process,
taking turns (imports done before the clock starts; S3 and SNS on moto in-process):

- quality off: the run as before issue 16 (``DriftJobConfig(quality=None)``): drift only;
- no labels: quality on, with ``ground_truth`` swapped for an empty table (``RENAME TABLE``):
  the window is read with its probabilities and CBPE estimates every prediction;
- labelled: quality on with the 30 % labels: realized metrics with bootstrap intervals too.

The goal: labelled ≤ 1.5× quality off, for each task. Run alone:
``python bench/quality_bench.py [--quick] [--task binary|multiclass|regression]`` (quick: 100k
predictions + 30k labels; full: 1M + 300k; every task unless ``--task``).

Loading the window (a CSV of N events, then ``LOAD DATA``) takes far longer than the timed runs at
1M, so it can be done apart, at low priority, and only the timed runs under the bench lock:
``nice -n 19 python bench/quality_bench.py --setup-only [--database NAME]`` loads and keeps one
database per task (``NAME_<task>``); ``flock /work/bench.lock python bench/quality_bench.py
--reuse [--database NAME] --task T`` times the variants on it and keeps it; ``--drop`` drops them.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pymysql
from common import MYSQL_SERVER, REPOSITORY, BenchReport, Comparison, print_report, ratio_at_most
from drift_bench import FEATURE_NAMES, REFERENCE_ROWS, WINDOW, WINDOW_END, _csv_value, _memory_mb, bench_manifest

BENCHMARK = "quality"
DATABASE = "sml_bench_quality"
MODEL_NAME = "drift-bench"
CLASSES = ("benign", "malignant")
MULTICLASS = ("class_a", "class_b", "class_c")
TASKS = ("binary", "multiclass", "regression")
HELD_OUT_ROWS = 5_000
LABELLED_SHARE = 0.3
MAX_RATIO_TO_DRIFT_ONLY = 1.5
VARIANTS = ("quality off (drift only)", "quality on, no labels", "quality on, 30% labelled")


def synthetic_world(task: str, values: np.ndarray, rng: np.random.Generator) -> tuple[list[Any], np.ndarray | None, list[Any]]:
    """The model's predictions, probabilities (classifiers) and true labels for rows of feature ``values``.

    Binary: P(malignant) = sigmoid(2·x₁). Multiclass: softmax of (2·x₁, 2·x₂, 0). Regression:
    prediction 150 + 50·x₁, label the prediction plus noise of sd 20 growing with |x₂|. The
    model is calibrated and unbiased, so labels drawn this way give OK.
    """
    if task == "regression":
        predictions = 150 + 50 * values[:, 1]
        truth = predictions + rng.normal(size=len(values)) * 20 * (1 + 0.5 * np.abs(values[:, 2]))
        return predictions.tolist(), None, truth.tolist()
    if task == "binary":
        p = 1 / (1 + np.exp(-2 * values[:, 1]))
        probabilities = np.column_stack([1 - p, p])
        classes = CLASSES
    else:
        logits = np.column_stack([2 * values[:, 1], 2 * values[:, 2], np.zeros(len(values))])
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        classes = MULTICLASS
    drawn = (rng.random(len(values))[:, None] > probabilities.cumsum(axis=1)).sum(axis=1).clip(0, len(classes) - 1)
    return [classes[index] for index in probabilities.argmax(axis=1)], probabilities, [classes[index] for index in drawn]


def quality_manifest(task: str) -> Any:
    """The drift benchmark's manifest for ``task`` with held-out metrics and the label-free estimator (fitted on synthetic held-out rows)."""
    from sml.lifecycle.calibration import LABEL_FREE_KEY, fit_label_free_estimator
    from sml.lifecycle.evaluation import held_out_metrics
    from sml.lifecycle.manifest import NumericReference

    rng = np.random.default_rng(3)
    values = rng.normal(size=(HELD_OUT_ROWS, len(FEATURE_NAMES)))
    predictions, probabilities, truth = synthetic_world(task, values, rng)
    manifest = bench_manifest()
    classes = {"binary": CLASSES, "multiclass": MULTICLASS, "regression": ()}[task]
    positive = "malignant" if task == "binary" else None
    columns = {name: values[:, index] for index, name in enumerate(FEATURE_NAMES)}
    estimator = fit_label_free_estimator(
        task, truth=truth, predictions=predictions, probabilities=probabilities, classes=classes, positive_class=positive,
        features=manifest.features, columns=columns, fitted_on="bench held-out",
    )
    reference = manifest.reference
    if task == "regression":
        reference = replace(reference, label_counts={}, predictions=NumericReference(sorted_values=tuple(sorted(predictions))))
    elif task == "multiclass":
        reference = replace(reference, label_counts={label: REFERENCE_ROWS // 3 for label in MULTICLASS})
    extra = {LABEL_FREE_KEY: estimator, **({"positive_class": positive} if positive else {})}
    return replace(
        manifest, task=task, classes=classes, reference=reference, extra=extra,
        metrics=held_out_metrics(task, truth, predictions, probabilities, classes, positive),
    )


def write_csvs(predictions_path: Path, labels_path: Path, rows: int, task: str) -> int:
    """``rows`` predictions over the window and labels for ``LABELLED_SHARE`` of them, a day late; returns the label count."""
    from sml.core.db import GROUND_TRUTH, PREDICTIONS
    from sml.core.events import build_prediction_event
    from sml.writer.batch import prediction_row

    rng = np.random.default_rng(11)
    values = rng.normal(size=(rows, len(FEATURE_NAMES)))
    predictions, probabilities, truth = synthetic_world(task, values, rng)
    names = CLASSES if task == "binary" else MULTICLASS
    labelled = rng.random(rows) < LABELLED_SHARE
    step = WINDOW / rows
    start = WINDOW_END - WINDOW
    prediction_columns = [column.name for column in PREDICTIONS.columns]
    label_columns = [column.name for column in GROUND_TRUTH.columns]
    with predictions_path.open("w", newline="", encoding="utf-8") as predictions_file, labels_path.open("w", newline="", encoding="utf-8") as labels:
        prediction_writer = csv.writer(predictions_file, lineterminator="\n")
        label_writer = csv.writer(labels, lineterminator="\n")
        for index in range(rows):
            predicted_at = start + index * step
            event = build_prediction_event(
                model_name=MODEL_NAME,
                model_version="v1",
                features=dict(zip(FEATURE_NAMES, values[index].tolist())),
                prediction=predictions[index],
                probabilities=None if probabilities is None else dict(zip(names, probabilities[index].tolist())),
                predicted_at=predicted_at,
            )
            row = prediction_row(event, stored_at=WINDOW_END)
            prediction_writer.writerow(_csv_value(row[column]) for column in prediction_columns)
            if labelled[index]:
                label = {
                    "prediction_id": event.prediction_id,
                    "label": json.dumps(truth[index]),
                    "labelled_at": (predicted_at + timedelta(days=1)).replace(tzinfo=None),
                    "source": "bench",
                    "stored_at": WINDOW_END.replace(tzinfo=None),
                }
                label_writer.writerow(_csv_value(label[column]) for column in label_columns)
    return int(labelled.sum())


def database_url(database: str) -> Any:
    import sqlalchemy as sa

    return sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=database)


def load_database(database: str, rows: int, folder: Path, task: str) -> int:
    """Create ``database`` afresh with the schema, the window, its labels and an empty ``ground_truth_empty``; returns the label count."""
    from sml.core.db import apply_migrations, create_db_engine

    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
            cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        engine = create_db_engine(database_url(database))
        apply_migrations(engine)
        engine.dispose()
        predictions_csv, labels_csv = folder / "predictions.csv", folder / "labels.csv"
        labels = write_csvs(predictions_csv, labels_csv, rows, task)
        loader = pymysql.connect(**MYSQL_SERVER, database=database, charset="utf8mb4", local_infile=True)
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
        return labels
    finally:
        admin.close()


def drop_database(database: str) -> None:
    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
    finally:
        admin.close()


def loaded_database(database: str, rows: int) -> int:
    """The label count of a database :func:`load_database` filled with ``rows`` predictions,
    brought up to the schema of the code under test (migrations that landed since it was loaded).

    :raises RuntimeError: the database is missing, holds another number of predictions, or its
        labels are hidden (a run stopped between the two swaps of :func:`labels_hidden`).
    """
    from sml.core.db import apply_migrations, create_db_engine

    try:
        connection = pymysql.connect(**MYSQL_SERVER, database=database)
    except pymysql.err.OperationalError as exc:
        raise RuntimeError(f"--reuse: database {database!r} cannot be opened ({exc}); load it with --setup-only first") from exc
    engine = create_db_engine(database_url(database))
    try:
        apply_migrations(engine)
    finally:
        engine.dispose()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM predictions")
            (predictions,) = cursor.fetchone()
            cursor.execute("SELECT COUNT(*) FROM ground_truth")
            (labels,) = cursor.fetchone()
    finally:
        connection.close()
    if predictions != rows or not labels:
        raise RuntimeError(f"--reuse: database {database!r} holds {predictions} predictions and {labels} labels, expected {rows} predictions with labels")
    return int(labels)


@contextmanager
def quality_database(database: str, rows: int, folder: Path, task: str, reuse: bool) -> Iterator[int]:
    """The task's loaded database: reused as it is (and kept), or loaded afresh (and dropped afterwards)."""
    if reuse:
        yield loaded_database(database, rows)
        return
    try:
        yield load_database(database, rows, folder, task)
    finally:
        drop_database(database)


@contextmanager
def labels_hidden(database: str) -> Iterator[None]:
    """``ground_truth`` swapped for the empty table (atomically, twice) for the duration."""
    swap = "RENAME TABLE ground_truth TO ground_truth_swap, ground_truth_empty TO ground_truth, ground_truth_swap TO ground_truth_empty"
    connection = pymysql.connect(**MYSQL_SERVER, database=database, autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(swap)
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(swap)
        connection.close()


def weekly_run(variant: str, manifest_path: Path, database: str) -> Callable[[], str]:
    import boto3
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
    from sml.lifecycle.manifest import ModelManifest

    manifest = ModelManifest.from_json(manifest_path.read_text(), source=str(manifest_path))
    engine = create_db_engine(database_url(database))
    # Warm the scikit-learn metrics import like the other imports: the clock measures the work only.
    import sklearn.metrics  # noqa: F401

    def work() -> str:
        result = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=sns, window_end=WINDOW_END)
        quality = result.run.quality
        if quality is None:
            return f"{result.run.status.value}, {result.run.current_rows} rows, quality off"
        metric = quality.config.metric
        realized = quality.realized.get(metric) if quality.realized else None
        estimated = quality.estimated.get(metric) if quality.estimated else None
        shown = ", ".join(
            f"{source} {metric} {value.value:.3f}" for source, value in (("realized", realized), ("estimated", estimated)) if value is not None
        )
        return f"{result.run.status.value}, quality {quality.status.value}, {quality.n_labelled} labelled of {quality.n_predictions}, {shown}"

    return work


def run_child(variant: str, manifest_path: Path, database: str) -> None:
    work = weekly_run(variant, manifest_path, database)
    rss_before = _memory_mb("VmRSS")
    started = time.perf_counter()
    outcome = work()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _memory_mb("VmHWM"), "rss_before_mb": rss_before, "outcome": outcome}))


def measure(repeats: int, manifest_path: Path, database: str) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--manifest", str(manifest_path), "--database", database]
            if name == VARIANTS[1]:
                with labels_hidden(database):
                    completed = subprocess.run(command, check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800)
            else:
                completed = subprocess.run(command, check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800)
            if completed.returncode != 0:
                raise RuntimeError(f"quality benchmark variant {name!r} failed: {completed.stderr.strip()[-2000:]}")
            runs[name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return runs


def window_rows(quick: bool) -> int:
    return 100_000 if quick else 1_000_000


def task_database(database: str, task: str) -> str:
    return f"{database}_{task}"


def run(
    quick: bool, out_dir: Path, tasks: Sequence[str] = TASKS, *, database: str = DATABASE, reuse: bool = False, repeats: int = 3
) -> BenchReport:
    """100k predictions + 30k labels (quick) or 1M + 300k (full), ``repeats`` runs per variant, for each task.

    :param reuse: time the databases ``--setup-only`` loaded (and keep them) instead of loading afresh.
    """
    rows = window_rows(quick)
    comparisons: list[Comparison] = []
    details: list[dict[str, Any]] = []
    for task in tasks:
        with (
            tempfile.TemporaryDirectory(prefix="sml-bench-quality-") as folder,
            quality_database(task_database(database, task), rows, Path(folder), task, reuse) as labels,
        ):
            # Fitted once (DLE's loss models take seconds), read by every child as the weekly run reads it.
            manifest_path = Path(folder) / "manifest.json"
            manifest_path.write_text(quality_manifest(task).to_json())
            runs = measure(repeats, manifest_path, task_database(database, task))
        seconds = {name: median(run["seconds"] for run in values) for name, values in runs.items()}
        growth = {name: max(run["peak_rss_mb"] - run["rss_before_mb"] for run in values) for name, values in runs.items()}
        size = f"{task}, {rows // 1000}k predictions + {labels // 1000}k labels"
        off, unlabelled, labelled = (seconds[name] for name in VARIANTS)
        comparisons += [
            ratio_at_most(BENCHMARK, f"{size}: weekly run with quality (median)", labelled, "the same run, quality off", off, "s", MAX_RATIO_TO_DRIFT_ONLY),
            ratio_at_most(BENCHMARK, f"{size}: weekly run with quality (median)", labelled, "quality on, no labels", unlabelled, "s", MAX_RATIO_TO_DRIFT_ONLY),
            Comparison(BENCHMARK, f"{size}: memory for the work", growth[VARIANTS[2]], "quality off", growth[VARIANTS[0]], "MB", note="peak RSS minus RSS before the work"),
        ]
        details += [
            {
                "task": task,
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
            f"Per task, one 7-day window of N predictions × {len(FEATURE_NAMES)} numeric features in MariaDB (LOAD DATA): a classifier's "
            f"class and probabilities, a regression model's number; labels for {LABELLED_SHARE:.0%} of them in ground_truth, a day late.",
            f"Each variant runs in a fresh process, {repeats} times, taking turns; the clock starts after imports and setup. "
            "Quality off: run_drift_job(quality=None). No labels: ground_truth swapped for an empty table. Labelled: the full run.",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--task", choices=TASKS, help="one task only (default: every task)")
    parser.add_argument("--database", default=DATABASE, help=f"database name prefix; one database per task, NAME_<task> (default {DATABASE})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (default 3)")
    stages = parser.add_mutually_exclusive_group()
    stages.add_argument("--setup-only", action="store_true", help="load the tasks' databases and keep them; time nothing")
    stages.add_argument("--reuse", action="store_true", help="time the databases --setup-only loaded, and keep them")
    stages.add_argument("--drop", action="store_true", help="drop the tasks' databases")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.manifest, args.database)
        return
    tasks = (args.task,) if args.task else TASKS
    if args.setup_only or args.drop:
        for task in tasks:
            database = task_database(args.database, task)
            if args.drop:
                drop_database(database)
                continue
            with tempfile.TemporaryDirectory(prefix="sml-bench-quality-") as folder:
                labels = load_database(database, window_rows(args.quick), Path(folder), task)
            print(f"{database}: {window_rows(args.quick)} predictions, {labels} labels", flush=True)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    out_dir = Path(tempfile.mkdtemp(prefix="sml-bench-"))
    print_report(run(args.quick, out_dir, tasks, database=args.database, reuse=args.reuse, repeats=args.repeats))


if __name__ == "__main__":
    main()
