"""What every benchmark shares: timing and percentiles, the comparison row each one reports, the
machine description, and a moto server holding the registered champion.

A benchmark module exposes ``run(quick: bool, out_dir: Path) -> BenchReport``; ``bench/run.py``
collects the reports into one table and ``bench/results.md``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
MYSQL_SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
REGION = "us-east-1"
APP_NAME = "sml"
MODEL_NAME = "breast-cancer"
# pandas, for the seed-style baselines only, lives outside the project's venv: scikit-learn imports
# pandas whenever it is installed, which would slow predict down and break its image import test.
SEED_PANDAS = "pandas==3.1.1"  # the seed's DataFrame library, pinned so runs compare alike
SEED_SITE = Path(os.environ.get("SML_BENCH_SEED_SITE", Path.home() / ".cache" / "sml-bench" / "seed-site-packages"))
PACKAGES = (
    "scikit-learn", "numpy", "scipy", "joblib", "boto3", "aws-lambda-powertools", "moto", "pymysql", "sqlalchemy",
    "msgspec", "matplotlib",
)  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    """One line of the results table: our figure next to its baseline, measured in the same run.

    :param target: the goal in words (``"≤ 1.3×"``), empty when the line is for information.
    :param met: whether the goal was reached; ``None`` for information lines.
    """

    benchmark: str
    measure: str
    ours: float
    baseline_name: str
    baseline: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        """Ours over the baseline (below 1 = smaller than the baseline)."""
        return self.ours / self.baseline if self.baseline else float("inf")


@dataclass
class BenchReport:
    """What one benchmark hands to ``bench/run.py``: its table lines, detail lines, plots and method notes."""

    name: str
    comparisons: list[Comparison]
    details: list[dict[str, Any]] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    method: list[str] = field(default_factory=list)


def ratio_at_most(
    benchmark: str, measure: str, ours: float, baseline_name: str, baseline: float, unit: str, limit: float, note: str = ""
) -> Comparison:
    """A line whose goal is ``ours / baseline ≤ limit``."""
    return Comparison(benchmark, measure, ours, baseline_name, baseline, unit, f"≤ {limit:g}×", ours <= limit * baseline, note)


def ratio_at_least(
    benchmark: str, measure: str, ours: float, baseline_name: str, baseline: float, unit: str, limit: float, note: str = ""
) -> Comparison:
    """A line whose goal is ``ours / baseline ≥ limit`` (throughput, or a speed-up given as baseline time over ours)."""
    return Comparison(benchmark, measure, ours, baseline_name, baseline, unit, f"≥ {limit:g}×", ours >= limit * baseline, note)


def percentile_ms(samples: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``samples`` (seconds), in milliseconds."""
    return float(np.percentile(samples, q) * 1000.0)


def latency_summary(samples: np.ndarray) -> dict[str, float]:
    """p50, p90, p99, max and mean of ``samples`` (seconds), in milliseconds, plus the count."""
    return {
        "n": len(samples),
        "p50_ms": round(percentile_ms(samples, 50), 4),
        "p90_ms": round(percentile_ms(samples, 90), 4),
        "p99_ms": round(percentile_ms(samples, 99), 4),
        "max_ms": round(float(samples.max()) * 1000.0, 4),
        "mean_ms": round(float(samples.mean()) * 1000.0, 4),
    }


def interleaved_latencies(
    calls: Mapping[str, Callable[[], Any]],
    count: int,
    *,
    warmup: int = 50,
    upkeep: Callable[[], Any] | None = None,
    upkeep_every: int = 100,
) -> dict[str, np.ndarray]:
    """Seconds per call of each callable, ``count`` calls each, taking turns one call at a time.

    Taking turns call by call puts every variant in the same conditions: the machine's background
    load at that moment, and CPU caches that the other variants' code has just used, as a
    container's caches are between requests. ``upkeep`` runs untimed every ``upkeep_every`` rounds.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    named = list(calls.items())
    samples: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    for round_number in range(1, count + 1):
        for name, call in named:
            started = clock()
            call()
            samples[name].append(clock() - started)
        if upkeep is not None and round_number % upkeep_every == 0:
            upkeep()
    return {name: np.asarray(values) for name, values in samples.items()}


def load_predictions_csv(database: str, path: Path) -> None:
    """``LOAD DATA LOCAL INFILE`` of a CSV of ``predictions`` rows (columns in table order, ``\\N`` for NULL)."""
    import pymysql

    loader = pymysql.connect(**MYSQL_SERVER, database=database, charset="utf8mb4", local_infile=True)
    try:
        with loader.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
            cursor.execute(
                "LOAD DATA LOCAL INFILE %s INTO TABLE predictions CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'",
                (str(path),),
            )
            cursor.execute("ANALYZE TABLE predictions")
        loader.commit()
    finally:
        loader.close()


def machine_description() -> dict[str, str]:
    """Date, CPU, cores, memory, OS, Python, package and database versions, for the report's header."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")), platform.processor()
    )
    memory_kb = next((int(line.split()[1]) for line in _read_lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    packages = ", ".join(f"{name} {_package_version(name)}" for name in PACKAGES)
    packages += f", pandas {_seed_pandas_version()} (seed baselines only, in {SEED_SITE})"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "load average at start": ", ".join(f"{value:.2f}" for value in os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "database": mysql_server_version(),
        "packages": packages,
        "environment": ", ".join(f"{name}={value}" for name, value in sorted(os.environ.items()) if name.startswith("OPENBLAS_")) or "-",
    }


def seed_environment() -> dict[str, str]:
    """``os.environ`` with :data:`SEED_SITE` on ``PYTHONPATH``, for a child process that runs a seed-style baseline.

    Installs :data:`SEED_PANDAS` there on first use: outside the project's venv, because
    scikit-learn picks pandas up whenever it is importable, which would change what predict loads.

    :raises RuntimeError: pandas could not be installed (the message has pip's error).
    """
    if not (SEED_SITE / "pandas").is_dir():
        print(f"bench: installing {SEED_PANDAS} into {SEED_SITE} for the seed-style baselines", file=sys.stderr, flush=True)
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(SEED_SITE), SEED_PANDAS],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise RuntimeError(f"installing {SEED_PANDAS} into {SEED_SITE} (SML_BENCH_SEED_SITE) failed: {install.stderr.strip()[-500:]}")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SEED_SITE), os.environ.get("PYTHONPATH")]))}


def mysql_server_version() -> str:
    """The MariaDB/MySQL server's version string, or why it could not be read."""
    import pymysql

    try:
        connection = pymysql.connect(**MYSQL_SERVER, connect_timeout=2)
    except pymysql.Error as exc:
        return f"unreachable at {MYSQL_SERVER['host']}:{MYSQL_SERVER['port']} ({exc})"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            return f"MariaDB/MySQL {cursor.fetchone()[0]}"
    finally:
        connection.close()


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _seed_pandas_version() -> str:
    found = sorted(SEED_SITE.glob("pandas-*.dist-info"))
    return found[-1].name.removeprefix("pandas-").removesuffix(".dist-info") if found else "not installed"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class ChampionStack:
    """A moto server on loopback with the trained model registered and promoted, and an events queue."""

    endpoint_url: str
    bucket: str
    queue_url: str
    work_dir: Path
    artifact_path: Path
    manifest: Any
    clients: dict[str, Any]

    def predict_environment(self, *, cache_dir: Path, capture: bool) -> dict[str, str]:
        """Predict's environment for this stack; ``capture=False`` sets ``SML_CAPTURE_SAMPLING_RATE=0``."""
        return {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": REGION,
            "SML_AWS_ENDPOINT_URL": self.endpoint_url,
            "SML_APP_NAME": APP_NAME,
            "SML_MODEL_NAME": MODEL_NAME,
            "SML_BUCKET": self.bucket,
            "SML_QUEUE_URL": self.queue_url,
            "SML_CAPTURE_SAMPLING_RATE": "1" if capture else "0",
            "SML_MODEL_CACHE_DIR": str(cache_dir),
            "POWERTOOLS_SERVICE_NAME": "predict",
        }

    def valid_row(self) -> dict[str, Any]:
        """A row the model accepts: each numeric feature mid-way through its training range."""
        row: dict[str, Any] = {}
        for spec in self.manifest.features:
            if spec.kind == "numeric":
                row[spec.name] = (spec.minimum + spec.maximum) / 2
            else:
                row[spec.name] = spec.categories[min(1, len(spec.categories) - 1)]
        return row


@contextmanager
def champion_stack(work_dir: Path) -> Iterator[ChampionStack]:
    """Start moto's server on 127.0.0.1 (free port), train the model, register and promote it.

    The artifact stays at ``work_dir/model.joblib``: the cold-start floor loads that very file.
    """
    import boto3
    from moto.server import ThreadedMotoServer
    from sml.lifecycle.registry import ModelRegistry
    from sml.lifecycle.training import TrainingConfig, build_manifest, save_artifact, train_model

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # werkzeug logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        session = boto3.session.Session(region_name=REGION, aws_access_key_id="bench", aws_secret_access_key="bench")
        clients = {name: session.client(name, endpoint_url=endpoint_url) for name in ("s3", "ssm", "sqs")}
        bucket = f"sml-bench-{uuid.uuid4().hex[:12]}"
        clients["s3"].create_bucket(Bucket=bucket)
        queue_url = clients["sqs"].create_queue(QueueName=f"bench-events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        trained = train_model(TrainingConfig(model_name=MODEL_NAME))
        artifact_path = work_dir / "model.joblib"
        save_artifact(trained.pipeline, artifact_path)
        registry = ModelRegistry(clients["s3"], clients["ssm"], bucket=bucket, app_name=APP_NAME, model_name=MODEL_NAME)
        manifest = build_manifest(trained, version="v1", sha256="", wandb_run_path=None, created_at=datetime.now(UTC))
        stored = registry.register(artifact_path, manifest)
        registry.promote("v1")
        yield ChampionStack(endpoint_url, bucket, queue_url, work_dir, artifact_path, stored, clients)
    finally:
        server.stop()


def fill_model_cache(stack: ChampionStack, cache_dir: Path) -> Path:
    """Put the champion's artifact where predict looks first (named by sha256), as a warm ``/tmp`` holds it."""
    from sml.lifecycle.registry import ModelRegistry

    registry = ModelRegistry(stack.clients["s3"], stack.clients["ssm"], bucket=stack.bucket, app_name=APP_NAME, model_name=MODEL_NAME)
    return registry.fetch_artifact(stack.manifest, cache_dir)


def predict_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The Function URL event (payload 2.0) of ``POST /predict`` with ``{"features": row}``."""
    return function_url_event("POST", "/predict", json.dumps({"features": dict(row)}).encode("utf-8"))


def function_url_event(method: str, target: str, body: bytes = b"") -> dict[str, Any]:
    """The Function URL event (payload 2.0) AWS would build for one JSON request."""
    from sml.local.function_url import HttpRequest, build_function_url_event

    request = HttpRequest(
        method=method,
        target=target,
        protocol="HTTP/1.1",
        headers=[("Host", "bench.lambda-url.us-east-1.on.aws"), ("Content-Type", "application/json")],
        body=body,
        source_ip="127.0.0.1",
    )
    return build_function_url_event(request, url_id="bench", request_id=str(uuid.uuid4()), received_at=datetime.now(UTC))


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in ``os.environ`` for the block, then restore what was there."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def format_number(value: float) -> str:
    """Four significant digits, thousands separated (``21,020``, ``2.388``, ``0.0415``)."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def format_table(comparisons: list[Comparison]) -> list[list[str]]:
    """The results table as text cells: header row first."""
    rows = [["benchmark", "measure", "ours", "baseline", "baseline value", "ratio", "target", "met", "note"]]
    for line in comparisons:
        met = "-" if line.met is None else ("yes" if line.met else "NO")
        rows.append(
            [
                line.benchmark, line.measure, f"{format_number(line.ours)} {line.unit}", line.baseline_name,
                f"{format_number(line.baseline)} {line.unit}", f"{line.ratio:.3g}×", line.target or "-", met, line.note,
            ]
        )  # fmt: skip
    return rows


def text_table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned plain-text columns."""
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def print_report(report: BenchReport) -> None:
    """Print one benchmark's table and detail lines (for running a benchmark module alone)."""
    print(text_table(format_table(report.comparisons)))
    for detail in report.details:
        print("  " + ", ".join(f"{key}={value}" for key, value in detail.items()))
    for path in report.plots:
        print(f"  plot: {path}")


def plot_latency_cdfs(samples: dict[str, np.ndarray], path: Path, *, title: str, dashed: Callable[[str], bool] = lambda name: False) -> Path:
    """Latency CDFs (seconds in, milliseconds on a log x axis) of named samples, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, values in samples.items():
        ordered = np.sort(values) * 1000.0
        axes.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=name, linestyle="--" if dashed(name) else "-")
    axes.set_xscale("log")
    axes.set_xlabel("latency per request (ms, log scale)")
    axes.set_ylabel("share of requests")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def bench_main(run: Callable[[bool, Path], BenchReport], description: str) -> None:
    """The command line of one benchmark module run alone: ``--quick``, then its table."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args()
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-"))))
