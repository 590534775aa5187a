"""Sustained traffic through the local stack over HTTP, with faults injected mid-run, and the accounting after.

One run: a fresh MySQL database behind an :class:`outage_proxy.OutageProxy`; the local AWS
endpoint (``fauxqs``, ``ministack`` or ``moto``; only its main URL, the queue's) behind another; the local stack (predict and writer in their
own container processes) pointed at both proxies; a champion model registered. Clients POST
``/predict`` to 127.0.0.1 only; 1% poison records go straight onto the events queue. Faults,
one after the other while traffic continues: the database down for ``fault_s``, the queue
endpoint down for ``fault_s``, a writer container killed in the middle of a batch.

Afterwards every answered prediction must be stored exactly once, or be in the DLQ (with a
reason), or be in a ``capture_miss`` log line of predict; nothing else (``lost`` and
``duplicates`` must be 0). Every poison record must be in the DLQ with a reason. The event
archive is read after one more conversion by the stack's archive function (what its schedule
does every minute meanwhile): it must hold every stored prediction and nothing else, and the
landing area must then be empty.

Used by ``bench/local_stack_bench.py`` (the figures) and ``tests/e2e/test_load_and_faults.py``
(a bounded run with assertions).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
import sqlalchemy as sa
from outage_proxy import OutageProxy

FAULTS = ("database", "queue", "writer-kill")
FAULT_AT = {"database": 0.15, "queue": 0.45, "writer-kill": 0.75}  # share of requests sent when each fault starts
# The metrics only one of the two functions emits: one function's name in the other's line is a leak.
PREDICT_METRICS = {"PredictionsServed", "CaptureSampledOut", "CaptureMisses", "RejectedRequests", "FeedbackMisses", "FeedbackLabelsAccepted"}
WRITER_METRICS = {"rows_inserted", "duplicates_skipped", "records_failed", "migrations_applied", "labels_stored", "labels_skipped", "archive_records_landed"}


@dataclass(frozen=True)
class LoadPlan:
    """What one run sends and breaks.

    :param requests: POST /predict requests in all.
    :param rows_per_request: instances per request (events per answered request).
    :param clients: concurrent HTTP clients (keep-alive sessions).
    :param rate_rps: requests per second across all clients; ``None`` = as fast as they go.
    :param poison_share: poison records per event sent, straight to the queue.
    :param faults: which of :data:`FAULTS` to inject, in that order.
    :param fault_s: how long the database and the queue endpoint stay down.
    :param emulator: ``fauxqs`` (with SSM from ministack), ``ministack`` or ``moto``.
    :param settle_limit_s: most seconds to wait after the traffic for the queue to drain.
    """

    requests: int = 2000
    rows_per_request: int = 10
    clients: int = 8
    rate_rps: float | None = None
    poison_share: float = 0.01
    faults: tuple[str, ...] = FAULTS
    fault_s: float = 10.0
    emulator: str = "fauxqs"
    predict_concurrency: int = 2
    writer_concurrency: int = 2
    batch_size: int = 50
    batching_window_s: float = 0.5
    visibility_timeout_s: int = 5
    settle_limit_s: float = 300.0
    mysql_server_url: str = "mysql+pymysql://root@127.0.0.1:3306/test"


@dataclass
class LoadResult:
    """The accounting of one run (times in seconds)."""

    plan: LoadPlan
    requests_ok: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    answered: int = 0
    stored: int = 0
    in_dlq: int = 0
    capture_missed: int = 0
    lost: int = 0
    duplicates: int = 0
    unexpected_rows: int = 0
    stored_and_in_dlq: int = 0
    poison_sent: int = 0
    poison_in_dlq: int = 0
    dlq_without_reason: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    redeliveries_absorbed: int = 0
    traffic_s: float = 0.0
    end_to_end_s: float = 0.0
    events_per_s: float = 0.0
    lag_p50_s: float = float("nan")
    lag_p99_s: float = float("nan")
    peak_depth: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    metric_lines: dict[str, int] = field(default_factory=dict)
    foreign_metric_lines: list[str] = field(default_factory=list)
    metric_errors: list[str] = field(default_factory=list)
    settled: bool = False
    http_errors: list[str] = field(default_factory=list)
    archived: int = 0
    """Distinct predictions in the event archive (S3, Parquet)."""
    archive_copies: int = 0
    """Archived rows beyond one per prediction (redeliveries), which readers and compaction drop."""
    archive_missing: int = 0
    """Stored predictions the archive lacks: must be 0."""
    archive_unexpected: int = 0
    """Archived predictions the table lacks: must be 0."""
    archive_conversion: dict[str, Any] = field(default_factory=dict)
    """What the last conversion before the accounting did (its summary, or ``error``)."""
    landing_left: int = 0
    """Landing objects still waiting after that conversion: must be 0."""

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.status_counts.items() if status >= 500)

    @property
    def metrics_clean(self) -> bool:
        return not self.foreign_metric_lines and not self.metric_errors and self.metric_lines.get("PredictionsServed", 0) == self.requests_ok

    def summary(self) -> dict[str, Any]:
        keys = (
            "requests_ok", "answered", "stored", "in_dlq", "capture_missed", "lost", "duplicates", "unexpected_rows",
            "stored_and_in_dlq", "poison_sent", "poison_in_dlq", "dlq_without_reason", "redeliveries_absorbed",
            "traffic_s", "end_to_end_s", "events_per_s", "lag_p50_s", "lag_p99_s", "peak_depth", "settled",
            "archived", "archive_copies", "archive_missing", "archive_unexpected", "archive_conversion", "landing_left",
        )
        out: dict[str, Any] = {key: getattr(self, key) for key in keys}
        out.update(status_counts=self.status_counts, faults=self.faults, metric_lines=self.metric_lines,
                   metrics_clean=self.metrics_clean, server_errors=self.server_errors, dlq_reasons=self.dlq_reasons)
        return out


def run_load(plan: LoadPlan, work_dir: Path | None = None, say: Any = print) -> LoadResult:
    """One run of ``plan``; returns the accounting. Nothing it starts outlives it."""
    from sml.local.aws_endpoint import start_aws_server

    work = Path(tempfile.mkdtemp(prefix="sml-load-", dir=work_dir))
    database = f"sml_load_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(plan.mysql_server_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    server_url = sa.engine.make_url(plan.mysql_server_url)
    aws = start_aws_server(plan.emulator, host="127.0.0.1", port=0, log_dir=work)
    aws_port = int(aws.url.rsplit(":", 1)[1])
    try:
        with OutageProxy((server_url.host or "127.0.0.1", server_url.port or 3306)) as db_proxy, OutageProxy(("127.0.0.1", aws_port)) as aws_proxy:
            database_url = server_url.set(port=db_proxy.port, database=database).render_as_string(hide_password=False)
            direct_database_url = server_url.set(database=database).render_as_string(hide_password=False)
            return _run(
                plan, work, aws.url, f"http://127.0.0.1:{aws_proxy.port}", dict(aws.service_urls), database_url, direct_database_url,
                db_proxy, aws_proxy, say,
            )
    finally:
        aws.stop()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


def _run(plan: LoadPlan, work: Path, direct_aws_url: str, proxied_aws_url: str, service_urls: dict[str, str], database_url: str,
         direct_database_url: str, db_proxy: OutageProxy, aws_proxy: OutageProxy, say: Any) -> LoadResult:
    import boto3

    from sml.demo.traffic import draw_rows
    from sml.local.stack import LocalStack, LocalStackConfig

    result = LoadResult(plan)
    config = LocalStackConfig(
        state_dir=work / "state",
        database_url=database_url,
        aws_endpoint_url=proxied_aws_url,
        aws_service_endpoint_urls=service_urls,
        app_name=f"load{uuid.uuid4().hex[:6]}",
        bucket=f"load-{uuid.uuid4().hex[:10]}",
        predict_concurrency=plan.predict_concurrency,
        writer_concurrency=plan.writer_concurrency,
        batch_size=plan.batch_size,
        batching_window_s=plan.batching_window_s,
        visibility_timeout_s=plan.visibility_timeout_s,
    )
    logging.getLogger("sml.local").setLevel(logging.CRITICAL)  # the faults make the poller and server log on purpose
    with LocalStack(config) as stack:
        endpoints = stack.endpoints
        sqs = boto3.client("sqs", endpoint_url=direct_aws_url, region_name=endpoints.region)
        queue_url = endpoints.queue_url.replace(proxied_aws_url, direct_aws_url)
        dlq_url = endpoints.dlq_url.replace(proxied_aws_url, direct_aws_url)
        _register_champion(direct_aws_url, service_urls.get("ssm", direct_aws_url), config)
        url = endpoints.function_url.rstrip("/") + "/predict"
        _warm_up(endpoints.function_url, plan.predict_concurrency)
        rng = np.random.default_rng(17)
        rows = draw_rows(plan.requests * plan.rows_per_request, rng)
        bodies = [
            {"instances": rows[i * plan.rows_per_request : (i + 1) * plan.rows_per_request]} if plan.rows_per_request > 1 else {"features": rows[i]}
            for i in range(plan.requests)
        ]
        traffic = _Traffic(url, bodies, plan, sqs, queue_url)
        monitor = _DepthMonitor(sqs, queue_url)
        faults = _FaultInjector(plan, traffic, db_proxy, aws_proxy, stack)
        say(f"  {plan.emulator}: {plan.requests} requests x {plan.rows_per_request} rows, faults {list(plan.faults) or 'none'}")
        monitor.start()
        faults.start()
        started_wall = datetime.now(UTC)
        started = time.perf_counter()
        traffic.run()
        result.traffic_s = time.perf_counter() - started
        faults.join()
        say(f"  traffic done in {result.traffic_s:.1f} s; waiting for the queue to drain")
        stack.predict.wait_all_ready(120)  # predict sends after answering: its post-invoke phases end first
        result.settled = _wait_settled(sqs, queue_url, dlq_url, traffic, plan.settle_limit_s)
        monitor.stop()
        result.end_to_end_s = time.perf_counter() - started
        result.peak_depth = monitor.peak
        result.faults = faults.log
        result.poison_sent = len(traffic.poison_bodies)
        _account(result, traffic, direct_database_url, sqs, dlq_url, config, started_wall)
        result.archive_conversion = _convert_landing(stack)
        s3 = boto3.client("s3", endpoint_url=service_urls.get("s3", direct_aws_url), region_name=endpoints.region)
        _account_archive(result, s3, endpoints.bucket, endpoints.archive_prefix, direct_database_url)
    _check_metrics(result, config)
    return result


def _register_champion(aws_url: str, ssm_url: str, config: Any) -> None:
    import boto3

    from sml.core.settings import PredictSettings
    from sml.lifecycle.registry import ModelRegistry
    from sml.lifecycle.training import TrainingConfig, build_manifest, save_artifact, train_model

    model_name = PredictSettings.model_fields["model_name"].default
    session = boto3.session.Session(region_name=config.region)
    registry = ModelRegistry(
        session.client("s3", endpoint_url=aws_url), session.client("ssm", endpoint_url=ssm_url),
        bucket=config.bucket, app_name=config.app_name, model_name=model_name,
    )
    trained = train_model(TrainingConfig(model_name=model_name))
    artifact = config.state_dir / "model.joblib"
    save_artifact(trained.pipeline, artifact)
    registry.register(artifact, build_manifest(trained, version="v1", sha256="", wandb_run_path=None, created_at=datetime.now(UTC)))
    registry.promote("v1")


def _warm_up(function_url: str, containers: int) -> None:
    """Cold-start every predict container (model loaded) before the clock starts, as steady traffic would have."""
    with ThreadPoolExecutor(containers) as pool:
        answers = list(pool.map(lambda _: requests.get(function_url.rstrip("/") + "/health", timeout=120), range(containers)))
    failed = [answer.text for answer in answers if answer.status_code != 200]
    if failed:
        raise RuntimeError(f"predict did not come up: {failed[0][:300]}")


class _Traffic:
    """Closed-loop clients (optionally paced) plus the poison records, with what they got back."""

    def __init__(self, url: str, bodies: list[dict[str, Any]], plan: LoadPlan, sqs: Any, queue_url: str) -> None:
        self.url, self.bodies, self.plan, self.sqs, self.queue_url = url, bodies, plan, sqs, queue_url
        self.lock = threading.Lock()
        self.next_index = 0
        self.sent = 0
        self.status_counts: Counter[int] = Counter()
        self.answered: dict[str, None] = {}
        self.errors: list[str] = []
        self.poison_bodies: list[str] = []
        self.events_answered = 0
        self.done = threading.Event()

    @property
    def progress(self) -> float:
        return self.sent / max(1, len(self.bodies))

    def run(self) -> None:
        self.started = time.perf_counter()
        with ThreadPoolExecutor(self.plan.clients) as pool:
            list(pool.map(lambda _: self._client(), range(self.plan.clients)))
        self.done.set()

    def _client(self) -> None:
        with requests.Session() as session:
            while True:
                with self.lock:
                    index = self.next_index
                    self.next_index += 1
                if index >= len(self.bodies):
                    return
                if self.plan.rate_rps:
                    delay = self.started + index / self.plan.rate_rps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    response = session.post(self.url, json=self.bodies[index], timeout=60)
                except requests.RequestException as exc:
                    with self.lock:
                        self.sent += 1
                        self.status_counts[0] += 1
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                ids: list[str] = []
                if response.status_code == 200:
                    answer = response.json()
                    ids = [item["prediction_id"] for item in answer["predictions"]] if "predictions" in answer else [answer["prediction_id"]]
                with self.lock:
                    self.sent += 1
                    self.status_counts[response.status_code] += 1
                    if response.status_code != 200:
                        self.errors.append(f"{response.status_code}: {response.text[:300]}")
                    self.answered.update(dict.fromkeys(ids))
                    self.events_answered += len(ids)
                    due = int(self.events_answered * self.plan.poison_share) - len(self.poison_bodies)
                    poison = [self._poison_body(len(self.poison_bodies) + n) for n in range(max(0, due))]
                    self.poison_bodies += poison
                for body in poison:
                    self._send_poison(body)

    @staticmethod
    def _poison_body(n: int) -> str:
        if n % 2:
            return f"poison {n}: not JSON {{"
        return json.dumps({"prediction_id": str(uuid.uuid4()), "schema_version": 1, "poison": n})

    def _send_poison(self, body: str) -> None:
        for _ in range(30):  # straight to the queue, not through the proxy; retried while the queue is busy
            try:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
                return
            except Exception:  # noqa: BLE001 - a bench producer retries whatever the endpoint answers
                time.sleep(0.2)
        raise RuntimeError("could not send a poison record")


class _DepthMonitor(threading.Thread):
    def __init__(self, sqs: Any, queue_url: str) -> None:
        super().__init__(daemon=True, name="depth-monitor")
        self.sqs, self.queue_url = sqs, queue_url
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            try:
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
                )["Attributes"]
            except Exception:  # noqa: BLE001 - a missed sample is only a missed sample
                continue
            self.peak = max(self.peak, sum(int(value) for value in attributes.values()))

    def stop(self) -> None:
        self._halt.set()
        self.join()


class _FaultInjector(threading.Thread):
    def __init__(self, plan: LoadPlan, traffic: _Traffic, db_proxy: OutageProxy, aws_proxy: OutageProxy, stack: Any) -> None:
        super().__init__(daemon=True, name="faults")
        self.plan, self.traffic, self.db_proxy, self.aws_proxy, self.stack = plan, traffic, db_proxy, aws_proxy, stack
        self.log: list[dict[str, Any]] = []

    def run(self) -> None:
        origin = time.perf_counter()
        for fault in self.plan.faults:
            while self.traffic.progress < FAULT_AT[fault] and not self.traffic.done.is_set():
                time.sleep(0.05)
            entry: dict[str, Any] = {"fault": fault, "at_s": round(time.perf_counter() - origin, 1), "progress": round(self.traffic.progress, 2)}
            if fault == "writer-kill":
                entry["killed_pid"] = self._kill_a_busy_writer()
            else:
                proxy = self.db_proxy if fault == "database" else self.aws_proxy
                proxy.down()
                time.sleep(self.plan.fault_s)
                proxy.up()
                entry["down_s"] = self.plan.fault_s
            self.log.append(entry)

    def _kill_a_busy_writer(self) -> int | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = self.stack.writer.busy_pids()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                return busy[0]
            time.sleep(0.01)
        return None


def _queue_counts(sqs: Any, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def _wait_settled(sqs: Any, queue_url: str, dlq_url: str, traffic: _Traffic, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    empty_in_a_row = 0
    while time.monotonic() < deadline:
        empty_in_a_row = empty_in_a_row + 1 if _queue_counts(sqs, queue_url) == 0 else 0
        if empty_in_a_row >= 3:
            return True
        time.sleep(0.5)
    return False


def _account(result: LoadResult, traffic: _Traffic, database_url: str, sqs: Any, dlq_url: str, config: Any, started: datetime) -> None:
    from sml.writer.replay import failure_reason

    result.status_counts = dict(traffic.status_counts)
    result.requests_ok = traffic.status_counts.get(200, 0)
    result.http_errors = traffic.errors[:20]
    answered = set(traffic.answered)
    result.answered = len(answered)

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT prediction_id, predicted_at, stored_at FROM predictions")).all()
            total, distinct = connection.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT prediction_id) FROM predictions")).one()
    finally:
        engine.dispose()
    stored = {row[0] for row in rows}
    result.stored = len(stored & answered)
    result.duplicates = total - distinct
    result.unexpected_rows = len(stored - answered)

    dlq_ids: set[str] = set()
    poison = set(traffic.poison_bodies)
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    while True:
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=300, WaitTimeSeconds=0).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            body = message["Body"]
            reason = failure_reason(body)
            if not reason:
                result.dlq_without_reason += 1
            if body in poison:
                result.poison_in_dlq += 1
                reasons[f"poison: {reason[:60]}"] += 1
                continue
            try:
                prediction_id = json.loads(body)["prediction_id"]
            except (ValueError, KeyError, TypeError):
                prediction_id = None
            if prediction_id in answered:
                dlq_ids.add(prediction_id)
                reasons[f"prediction: {reason[:60]}"] += 1
            else:
                reasons[f"unknown: {reason[:60]}"] += 1
    result.dlq_reasons = dict(reasons)
    result.in_dlq = len(dlq_ids - stored)
    result.stored_and_in_dlq = len(dlq_ids & stored)

    missed = _capture_missed_ids(config.log_dir / f"{config.app_name}-predict.log")
    result.capture_missed = len((missed & answered) - stored - dlq_ids)
    result.lost = len(answered - stored - dlq_ids - missed)

    lags = [(row[2] - row[1]).total_seconds() for row in rows if row[0] in answered]
    if lags:
        result.lag_p50_s = float(np.percentile(lags, 50))
        result.lag_p99_s = float(np.percentile(lags, 99))
        last_stored = max(row[2] for row in rows).replace(tzinfo=UTC)
        result.events_per_s = result.stored / max(1e-9, (last_stored - started).total_seconds())


def _convert_landing(stack: Any) -> dict[str, Any]:
    """Convert what the writer landed, in the stack's archive function, as its schedule would; its summary or the error."""
    from sml.local.worker import FunctionError

    try:
        return stack.convert_landing()
    except FunctionError as exc:
        return {"error": f"{exc.error_type}: {exc.message}"}


def _account_archive(result: LoadResult, s3: Any, bucket: str, prefix: str, database_url: str) -> None:
    """Every stored prediction in the archive, and nothing else (copies counted apart); nothing left in the landing area."""
    from sml.archive.landing import list_landing
    from sml.archive.parquet import read_parquet_bytes
    from sml.archive.store import ArchiveLocation, list_table

    location = ArchiveLocation(bucket, prefix)
    result.landing_left = sum(1 for _ in list_landing(s3, location))
    ids: list[str] = []
    for item in list_table(s3, location, "predictions"):
        table = read_parquet_bytes(s3.get_object(Bucket=bucket, Key=item.key)["Body"].read())
        ids += table.column("prediction_id").to_pylist()
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = set(connection.execute(sa.text("SELECT prediction_id FROM predictions")).scalars())
    finally:
        engine.dispose()
    archived = set(ids)
    result.archived = len(archived)
    result.archive_copies = len(ids) - len(archived)
    result.archive_missing = len(stored - archived)
    result.archive_unexpected = len(archived - stored)


def _capture_missed_ids(log_path: Path) -> set[str]:
    missed: set[str] = set()
    if not log_path.exists():
        return missed
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"capture_miss"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("prediction_id"):
            missed.add(record["prediction_id"])
    return missed


def _check_metrics(result: LoadResult, config: Any) -> None:
    """No EMF line of one function carries a metric of the other (the leak of shared Powertools state)."""
    counts: Counter[str] = Counter()
    for role, other in (("predict", WRITER_METRICS), ("writer", PREDICT_METRICS)):
        path = config.log_dir / f"{config.app_name}-{role}.log"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []:
            if "SchemaValidationError" in line or "Must contain at least one metric" in line:
                result.metric_errors.append(f"{role}: {line[:200]}")
            if '"_aws"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                result.metric_errors.append(f"{role}: a broken metrics line: {line[:200]}")
                continue
            names = {metric["Name"] for block in record["_aws"]["CloudWatchMetrics"] for metric in block["Metrics"]}
            if names & other:
                result.foreign_metric_lines.append(f"{role}: {sorted(names)}")
            counts.update(names)
            if role == "writer":
                value = record.get("duplicates_skipped", 0)
                result.redeliveries_absorbed += int(sum(value) if isinstance(value, list) else value)
    result.metric_lines = dict(counts)
