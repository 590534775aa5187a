"""The end-to-end demo: the real system on the local stack, from training to a drift alert.

Every step goes through the product's own code paths: the local stack (local AWS endpoint, Function URL
server, SQS event-source poller running the writer Lambda), ``train_and_register``, HTTP requests
to predict, DLQ inspect/replay, and the drift job. Nothing is mocked: the checks at the end read
what the database, the queues and the alert inbox really hold.

The story: two model versions are trained with the model's drift config (``DEMO_DRIFT_CONFIG``)
and the better one promoted, after the power check of its floors; baseline traffic is served
and stored; a maintenance window takes the ``predictions`` table away, so the writer cannot store
the events of that window and SQS moves them to the DLQ after five tries; after the window they
are replayed and stored exactly once; then traffic shifts (see :data:`sml.demo.traffic.DEMO_SHIFT`) and
the drift job flags exactly the shifted features, stores the run, writes the report and alerts.
In the shifted phase a client also sends values far beyond anything the model can compute:
predict refuses them (422 ``out_of_range``), counts them in refusal events, and data quality flags
the feature's ``refused`` share (issue 18).

Model quality (issue 16): labels for part of the traffic arrive after it was served. In the shifted
phase some of them contradict what the model got right (concept drift, which the input tests
cannot see): realized F1 falls and the verdict is DEGRADED, while the CBPE estimate, which
assumes the relation between score and label holds, does not fall. The labels go in as a user
sends them: ``POST /feedback`` on the Function URL, then the events queue and the writer.

Last, the event archive: the writer landed every batch it stored; the stack's archive function
converts them into the archive's Parquet objects (what its schedule does every minute, run at
once here), and ``sml query`` and ``sml rebuild`` read every stored prediction back from it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests
import sqlalchemy as sa

from sml.core.errors import SmlError
from sml.demo.traffic import DEMO_SHIFT, Row, TrafficShift, draw_labelled_rows, draw_rows

MAINTENANCE_TABLE = "predictions_in_maintenance"
# The champion's own drift config (sml train --drift-config): mean_symmetry must arrive complete, so
# its missing-rate floor is Cohen's h 0.1 (about 0.25% of values missing) instead of the default 0.2.
DEMO_DRIFT_CONFIG = "[features.mean_symmetry]\nmissing_rate = 0.1\n"
CANDIDATES = (("logistic_regression", ["C=1.0"]), ("random_forest", ["n_estimators=150", "max_depth=6"]))


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and places of one demo run; the defaults are what ``sml demo`` runs."""

    state_dir: Path = Path(".sml/demo")
    database_url: str | None = None
    aws_emulator: str = "fauxqs"
    baseline_single: int = 600
    baseline_batches: int = 60
    shifted_single: int = 200
    shifted_batches: int = 140
    rows_per_batch: int = 10
    maintenance_requests: int = 3
    concurrency: int = 8
    seed: int = 7
    visibility_timeout_s: int = 2
    shift: TrafficShift = DEMO_SHIFT
    labelled_share: float = 0.5
    concept_flip_share: float = 0.4
    refused_requests: int = 30
    refused_value: float = 1e300

    @property
    def baseline_rows(self) -> int:
        return self.baseline_single + self.baseline_batches * self.rows_per_batch

    @property
    def shifted_rows(self) -> int:
        return self.shifted_single + self.shifted_batches * self.rows_per_batch


@dataclass
class TrafficResult:
    """What one burst of HTTP traffic got back."""

    requests: int = 0
    ok: int = 0
    prediction_ids: list[str] = field(default_factory=list)
    single_latencies_ms: list[float] = field(default_factory=list)
    batch_latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: list[tuple[str, Row, Any]] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    ended_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def merge(self, other: TrafficResult) -> None:
        self.requests += other.requests
        self.ok += other.ok
        self.prediction_ids += other.prediction_ids
        self.single_latencies_ms += other.single_latencies_ms
        self.batch_latencies_ms += other.batch_latencies_ms
        self.errors += other.errors
        self.answers += other.answers


@dataclass(frozen=True)
class DemoCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class DemoSummary:
    """Everything the summary prints, and the checks that decide the exit code."""

    champion: str = ""
    traffic: TrafficResult = field(default_factory=TrafficResult)
    events_captured: int = 0
    rows_stored: int = 0
    dlq_before_replay: int = 0
    dlq_after_replay: int = 0
    baseline_status: str = ""
    baseline_flagged: list[str] = field(default_factory=list)
    model_floors: list[str] = field(default_factory=list)
    drift_status: str = ""
    baseline_data_quality: str = ""
    data_quality_violations: list[str] = field(default_factory=list)
    refused: TrafficResult = field(default_factory=TrafficResult)
    refused_feature: str = ""
    drift_rows: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    label_drift: bool = False
    alert: dict[str, Any] = field(default_factory=dict)
    baseline_quality: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    archived_predictions: int = 0
    rebuilt_predictions: int = 0
    database_url: str = ""
    wandb_dir: Path | None = None
    function_logs: Path | None = None
    elapsed_s: float = 0.0
    checks: list[DemoCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """A machine-readable digest of the run (what ``sml demo --summary-json`` writes)."""
        traffic = self.traffic
        return {
            "passed": self.passed,
            "elapsed_s": round(self.elapsed_s, 3),
            "champion": self.champion,
            "requests": traffic.requests,
            "requests_ok": traffic.ok,
            "latency_ms": {
                "single_p50": percentile(traffic.single_latencies_ms, 50),
                "single_p99": percentile(traffic.single_latencies_ms, 99),
                "batch_p50": percentile(traffic.batch_latencies_ms, 50),
                "batch_p99": percentile(traffic.batch_latencies_ms, 99),
            },
            "events_captured": self.events_captured,
            "rows_stored": self.rows_stored,
            "dlq_before_replay": self.dlq_before_replay,
            "dlq_after_replay": self.dlq_after_replay,
            "baseline_status": self.baseline_status,
            "baseline_flagged": self.baseline_flagged,
            "model_floors": self.model_floors,
            "drift_status": self.drift_status,
            "baseline_data_quality": self.baseline_data_quality,
            "data_quality_violations": self.data_quality_violations,
            "refused_requests": self.refused.requests,
            "refused_feature": self.refused_feature,
            "flagged": self.flagged,
            "label_drift": self.label_drift,
            "drift": self.drift_rows,
            "alert": self.alert,
            "baseline_quality": self.baseline_quality,
            "quality": self.quality,
            "archived_predictions": self.archived_predictions,
            "rebuilt_predictions": self.rebuilt_predictions,
            "report_path": str(self.report_path) if self.report_path else None,
            "database_url": self.database_url,
            "wandb_dir": str(self.wandb_dir) if self.wandb_dir else None,
            "function_logs": str(self.function_logs) if self.function_logs else None,
            "checks": [{"name": check.name, "passed": check.passed, "detail": check.detail} for check in self.checks],
        }


Say = Callable[[str], None]


def run_demo(config: DemoConfig, say: Say = print) -> DemoSummary:
    """Run the whole story once; returns the summary (``summary.passed`` says whether every check held).

    :raises SmlError: the demo could not run (a stack is already running in ``state_dir``, the
        database URL is unusable, a step timed out).
    """
    from sml.local.stack import LocalStack, LocalStackConfig, stack_lock_holder

    started = time.perf_counter()
    holder = stack_lock_holder(config.state_dir)  # a stack holds it from its first step: stack.json comes last
    if holder is not None:
        raise SmlError(f"a stack is already running in {config.state_dir} ({holder}); stop it or pass --state-dir")
    shutil.rmtree(config.state_dir, ignore_errors=True)
    config.state_dir.mkdir(parents=True)
    summary = DemoSummary()
    rng = np.random.default_rng(config.seed)
    stack_config = LocalStackConfig(
        state_dir=config.state_dir,
        database_url=config.database_url,
        aws_emulator=config.aws_emulator,
        visibility_timeout_s=config.visibility_timeout_s,
        batching_window_s=0.2,
    )
    say(f"[1/9] Starting the local stack in {config.state_dir} (AWS endpoint, Function URL, SQS poller, database)")
    with LocalStack(stack_config) as stack:
        endpoints = stack.endpoints
        summary.database_url = _shown_url(stack_config.resolved_database_url)
        summary.function_logs = stack_config.log_dir
        elsewhere = "".join(f" ({service.upper()} at {url})" for service, url in endpoints.service_endpoint_urls.items())
        say(f"      predict at {endpoints.function_url}, AWS APIs at {endpoints.aws_endpoint_url}{elsewhere}, database {summary.database_url}")
        clients = _Clients()
        engine = _engine(stack_config.resolved_database_url)
        try:
            _run_story(config, summary, stack, clients, engine, rng, say)
        finally:
            engine.dispose()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _run_story(config: DemoConfig, summary: DemoSummary, stack: Any, clients: _Clients, engine: sa.Engine, rng: np.random.Generator, say: Say) -> None:
    from sml.cli.commands.models import open_registry

    registry, settings = open_registry()
    url = stack.endpoints.function_url.rstrip("/") + "/predict"

    say("[2/9] Training two model versions (tracked in W&B offline, each with the model's drift config) and promoting the best by F1")
    summary.champion, summary.wandb_dir = _train_candidates(config, registry, say)

    say(f"[3/9] Serving {config.baseline_rows:,} baseline predictions over HTTP ({config.concurrency} clients, single and batch)")
    baseline_rows, baseline_truth = draw_labelled_rows(config.baseline_rows, rng)
    baseline = _send_traffic(url, baseline_rows, config.baseline_single, config, rng)
    summary.traffic.merge(baseline)
    say(f"      {baseline.ok}/{baseline.requests} requests answered 200; waiting for the writer to drain the queue")
    _wait_drained(stack)
    say(f"      {_count_rows(engine, baseline.prediction_ids):,} rows stored")
    labels = _late_labels(baseline, _truth_by_row(baseline_rows, baseline_truth), config.labelled_share, 0.0, rng)
    _deliver_labels(stack, labels)
    say(f"      labels arrive late for {len(labels):,} of them through POST /feedback (the true diagnoses)")
    baseline_run = _run_drift(settings, registry, engine, clients, baseline.started_at, baseline.ended_at, config)
    summary.baseline_quality = _quality_digest(baseline_run.run.quality)
    summary.baseline_status = baseline_run.run.status.value
    summary.baseline_flagged = _flagged_features(baseline_run.run)
    summary.baseline_data_quality = baseline_run.run.data_quality_status
    say(f"      drift check on the baseline window: {_verdict_summary(baseline_run.run)}; data quality {summary.baseline_data_quality}")
    say(f"      model quality on the baseline window: {describe_quality(summary.baseline_quality)}")

    say("[4/9] Maintenance window: the predictions table is taken away while traffic continues")
    summary.dlq_before_replay, maintenance = _maintenance_window(config, stack, clients, engine, url, rng, say)
    summary.traffic.merge(maintenance)

    say(f"[5/9] Replaying the DLQ into the events queue ({summary.dlq_before_replay} message(s))")
    summary.dlq_after_replay = _replay(stack, clients, say)
    _wait_drained(stack)

    say(f"[6/9] Traffic shifts: {_describe_shift(config.shift)}; serving {config.shifted_rows:,} predictions")
    shifted_rows, shifted_truth = draw_labelled_rows(config.shifted_rows, rng, config.shift)
    shifted = _send_traffic(url, shifted_rows, config.shifted_single, config, rng)
    summary.traffic.merge(shifted)
    summary.refused_feature = next(iter(config.shift.out_of_range), next(iter(shifted_rows[0])))
    bad = [{"features": {**row, summary.refused_feature: config.refused_value}} for row in shifted_rows[: config.refused_requests]]
    summary.refused = send_requests(url, bad, concurrency=config.concurrency)
    shifted.ended_at = summary.refused.ended_at  # the refusals belong to the shifted window
    refused_codes = sorted({error.split(":", 1)[0] for error in summary.refused.errors})
    say(f"      a client also sends {summary.refused_feature}={config.refused_value:g} in {summary.refused.requests} requests: answered {', '.join(refused_codes) or 'none'}")
    _wait_drained(stack)
    labels = _late_labels(shifted, _truth_by_row(shifted_rows, shifted_truth), config.labelled_share, config.concept_flip_share, rng)
    _deliver_labels(stack, labels)
    say(
        f"      labels arrive late for {len(labels):,} of them through POST /feedback; concept drift: {config.concept_flip_share:.0%} of the cases the model "
        "got right now carry the other label"
    )

    say("[7/9] Running the drift job on the shifted window (reference: the champion's training data)")
    inbox_url = _subscribe_inbox(clients, stack.endpoints.topic_arn)
    result = _run_drift(settings, registry, engine, clients, shifted.started_at, shifted.ended_at, config)
    summary.drift_status = result.run.status.value
    summary.flagged = _flagged_features(result.run)
    summary.label_drift = any(r.kind == "label" and r.verdict.value == "DRIFT" for r in result.run.results)
    summary.drift_rows = _drift_rows(result.run)
    summary.model_floors = sorted(f"{r.feature}/{r.test}" for r in result.run.results if r.detail.get("floor_source") == "model")
    summary.report_path = result.report_path
    summary.quality = _quality_digest(result.run.quality)
    say(f"      model quality on the shifted window: {describe_quality(summary.quality)}")
    summary.data_quality_violations = sorted(f"{check.feature}:{check.check}" for check in result.run.data_quality if check.violated)
    say(f"      {_verdict_summary(result.run)}; data quality {result.run.data_quality_status}: {', '.join(summary.data_quality_violations) or 'no violation'}")

    say("[8/9] Reading the alert from a queue subscribed to the SNS topic")
    summary.alert = _receive_alert(clients, inbox_url, expected_status=summary.drift_status)

    say("[9/9] The event archive: every stored event is in S3 as Parquet; one question in SQL and the tables rebuilt from it")
    _wait_drained(stack)
    _archive_chapter(config, summary, stack, clients, say)

    summary.events_captured = len(summary.traffic.prediction_ids)
    summary.rows_stored = _count_rows(engine, summary.traffic.prediction_ids)
    summary.checks = _checks(config, summary)


def _archive_chapter(config: DemoConfig, summary: DemoSummary, stack: Any, clients: _Clients, say: Say) -> None:
    """The landing area converted, then ``sml query`` over the archive (DuckDB) and ``sml rebuild`` into a scratch SQLite database."""
    from sml.archive.query import run_duckdb_query
    from sml.archive.rebuild import rebuild_tables
    from sml.archive.store import ArchiveLocation
    from sml.core.db import create_db_engine
    from sml.local.worker import FunctionError

    location = ArchiveLocation(stack.endpoints.bucket, stack.endpoints.archive_prefix)
    try:
        converted = stack.convert_landing()
    except FunctionError as exc:
        raise SmlError(f"the archive function did not convert the landing area: {exc.message} (log: {stack.config.log_dir})") from None
    say(
        f"      the archive function converts the {converted['landing_converted']:,} batches waiting in the landing area into Parquet "
        f"({converted['events']:,} events; its schedule does it every {stack.config.archive_convert_interval_s:g} s)"
    )
    question = "SELECT model_version, count(*) AS predictions FROM predictions GROUP BY 1 ORDER BY 1"
    say(f'      $ sml query "{question}"')
    answer = run_duckdb_query(clients.s3, location, question).to_pylist()
    for row in answer:
        say(f"        {row['model_version']}: {row['predictions']:,} predictions")
    summary.archived_predictions = sum(row["predictions"] for row in answer)
    today = datetime.now(timezone.utc).date()
    scratch = config.state_dir / "rebuilt.db"
    say(f"      $ sml rebuild --since {today - timedelta(days=1)} --database-url sqlite:///{scratch}")
    engine = create_db_engine(f"sqlite:///{scratch}")
    try:
        rebuilt = rebuild_tables(engine, clients.s3, location, today - timedelta(days=1), today)
        with engine.connect() as connection:
            summary.rebuilt_predictions = connection.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one()
    finally:
        engine.dispose()
    for table, outcome in rebuilt.items():
        say(f"        {table}: {outcome.rows:,} archived rows in {outcome.objects} objects, {outcome.inserted:,} inserted, {outcome.skipped:,} already stored")


class _Clients:
    """boto3 clients for the running stack, made once (the stack has set the environment)."""

    def __init__(self) -> None:
        from sml.core.aws import aws_client
        from sml.core.settings import LocalSettings, load_settings

        settings = load_settings(LocalSettings)
        self.sqs = aws_client("sqs", settings)
        self.sns = aws_client("sns", settings)
        self.s3 = aws_client("s3", settings)


def _engine(url: str) -> sa.Engine:
    from sml.core.db import create_db_engine

    return create_db_engine(url, pool_size=2)


def _shown_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _train_candidates(config: DemoConfig, registry: Any, say: Say) -> tuple[str, Path]:
    from sml.monitoring.config import read_model_drift_config
    from sml.monitoring.job import DriftJobConfig, certifiable_floors
    from sml.lifecycle.tracking import tracking_options
    from sml.lifecycle.training import TrainingConfig, parse_params, train_and_register

    tracking = tracking_options(config.state_dir)
    drift_file = config.state_dir / "drift.toml"
    drift_file.write_text(DEMO_DRIFT_CONFIG, encoding="utf-8")
    drift_config = read_model_drift_config(drift_file)
    for estimator, params in CANDIDATES:
        training = TrainingConfig(model_name=registry.model_name, estimator=estimator, params=parse_params(estimator, params), seed=config.seed)
        manifest = train_and_register(
            training, registry=registry, tracking=tracking, work_dir=config.state_dir / "work", drift_config=drift_config.for_manifest
        )
        metrics = ", ".join(f"{name} {manifest.metrics[name]:.3f}" for name in ("accuracy", "f1", "roc_auc"))
        say(f"      registered {manifest.version} ({estimator}): {metrics}")
    champion = registry.promote_best("f1")
    say(f"      champion: {champion}; its drift config ({drift_file.name}) tightens mean_symmetry's missing-rate floor to Cohen's h 0.1")
    shifts = certifiable_floors(DriftJobConfig(bucket=registry.bucket), registry.manifest(champion), window_rows=config.baseline_rows)
    warnings = [shift.warning() for shift in shifts if not shift.certifiable]
    say(f"      power check for {config.baseline_rows:,}-row windows: " + ("; ".join(warnings) or f"all {len(shifts)} tests can certify NO_DRIFT at their floors"))
    return champion, config.state_dir / "wandb"


def _send_traffic(url: str, rows: Sequence[Row], singles: int, config: DemoConfig, rng: np.random.Generator) -> TrafficResult:
    """Send the first ``singles`` rows one per request and the rest as ``instances`` batches, shuffled."""
    batch = config.rows_per_batch
    bodies: list[dict[str, Any]] = [{"features": row} for row in rows[:singles]]
    rest = rows[singles:]
    bodies += [{"instances": list(rest[index : index + batch])} for index in range(0, len(rest), batch)]
    order = rng.permutation(len(bodies))
    return send_requests(url, [bodies[index] for index in order], concurrency=config.concurrency)


def send_requests(url: str, bodies: Sequence[dict[str, Any]], *, concurrency: int) -> TrafficResult:
    """POST every body to ``url`` from ``concurrency`` clients; latencies are measured per request."""
    result = TrafficResult()
    chunks = [bodies[index::concurrency] for index in range(concurrency)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for part in pool.map(lambda chunk: _client_loop(url, chunk), chunks):
            result.merge(part)
    result.ended_at = datetime.now(timezone.utc)
    return result


def _client_loop(url: str, bodies: Sequence[dict[str, Any]]) -> TrafficResult:
    result = TrafficResult()
    with requests.Session() as session:
        for body in bodies:
            started = time.perf_counter()
            response = session.post(url, json=body, timeout=30)
            elapsed_ms = (time.perf_counter() - started) * 1000
            result.requests += 1
            if response.status_code != 200:
                result.errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            result.ok += 1
            answer = response.json()
            if "instances" in body:
                result.batch_latencies_ms.append(elapsed_ms)
                result.prediction_ids += [item["prediction_id"] for item in answer["predictions"]]
                result.answers += [(item["prediction_id"], row, item["prediction"]) for item, row in zip(answer["predictions"], body["instances"])]
            else:
                result.single_latencies_ms.append(elapsed_ms)
                result.prediction_ids.append(answer["prediction_id"])
                result.answers.append((answer["prediction_id"], body["features"], answer["prediction"]))
    return result


def _wait_drained(stack: Any, timeout_s: float = 90.0) -> None:
    # predict sends the last answer's events after answering: its post-runtime phases end first.
    if not stack.predict.wait_all_ready(timeout_s):
        raise SmlError(f"predict's containers did not finish their post-invoke phase within {timeout_s:.0f} s")
    if not stack.poller.wait_until_drained(timeout_s):
        raise SmlError(f"the writer did not drain the events queue within {timeout_s:.0f} s")


def _count_rows(engine: sa.Engine, prediction_ids: Sequence[str]) -> int:
    from sml.core.db import PREDICTIONS

    total = 0
    with engine.connect() as connection:
        for index in range(0, len(prediction_ids), 500):
            chunk = list(prediction_ids[index : index + 500])
            query = sa.select(sa.func.count()).select_from(PREDICTIONS).where(PREDICTIONS.c.prediction_id.in_(chunk))
            total += connection.execute(query).scalar_one()
    return total


@contextmanager
def _table_taken_away(engine: sa.Engine) -> Iterator[None]:
    with engine.begin() as connection:
        connection.execute(sa.text(f"ALTER TABLE predictions RENAME TO {MAINTENANCE_TABLE}"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {MAINTENANCE_TABLE} RENAME TO predictions"))


def _maintenance_window(config: DemoConfig, stack: Any, clients: _Clients, engine: sa.Engine, url: str, rng: np.random.Generator, say: Say) -> tuple[int, TrafficResult]:
    dlq_url = stack.endpoints.dlq_url
    with _table_taken_away(engine):
        bodies = [{"features": row} for row in draw_rows(config.maintenance_requests, rng)]
        traffic = send_requests(url, bodies, concurrency=1)
        say(f"      predict still answered {traffic.ok}/{traffic.requests} (it never waits on the database)")
        say("      the writer cannot store them; SQS retries each 5 times, then moves it to the DLQ")
        deadline = time.monotonic() + 30 * config.visibility_timeout_s + 30
        in_dlq = 0
        while time.monotonic() < deadline:
            in_dlq = _visible_messages(clients.sqs, dlq_url)
            if in_dlq >= len(traffic.prediction_ids):
                break
            time.sleep(0.5)
        else:
            raise SmlError(f"only {in_dlq} of {len(traffic.prediction_ids)} message(s) reached the DLQ in time")
    from sml.writer.replay import inspect_dlq

    summary = inspect_dlq(clients.sqs, dlq_url, sample=1)
    reason = summary.samples[0].reason if summary.samples else "n/a"
    say(f"      `sml dlq inspect`: {summary.visible} message(s), oldest {summary.oldest_age_s or 0:.0f} s; reason: {reason}")
    say("      maintenance over: the table is back")
    return in_dlq, traffic


def _visible_messages(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _replay(stack: Any, clients: _Clients, say: Say) -> int:
    from sml.writer.replay import replay_dlq

    outcome = replay_dlq(clients.sqs, stack.endpoints.dlq_url, stack.endpoints.queue_url)
    remaining = _visible_messages(clients.sqs, stack.endpoints.dlq_url)
    say(f"      moved {outcome.moved} message(s) by {outcome.method}; {remaining} left in the DLQ")
    return remaining


def _run_drift(settings: Any, registry: Any, engine: sa.Engine, clients: _Clients, start: datetime, end: datetime, config: DemoConfig) -> Any:
    from sml.monitoring.job import DriftJobConfig, run_drift_job

    window_end = end + timedelta(milliseconds=1)
    manifest = registry.manifest(registry.champion_version())
    job = DriftJobConfig(bucket=settings.bucket, window_length=window_end - start, topic_arn=settings.topic_arn)
    return run_drift_job(job, manifest, engine=engine, s3_client=clients.s3, sns_client=clients.sns, window_end=window_end, report_dir=config.state_dir / "reports")


def _row_key(row: Row) -> str:
    return json.dumps(row, sort_keys=True)


def _truth_by_row(rows: Sequence[Row], truth: Sequence[str]) -> dict[str, str]:
    # Rows are drawn with replacement, so equal rows are the same biopsy with the same diagnosis.
    return {_row_key(row): label for row, label in zip(rows, truth)}


def _late_labels(traffic: TrafficResult, truth: dict[str, str], share: float, flip_share: float, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(prediction_id, label) for ``share`` of the answered predictions; ``flip_share`` of those the model got right get the other class."""
    labels = []
    for prediction_id, row, prediction in traffic.answers:
        if rng.random() >= share:
            continue
        label = truth[_row_key(row)]
        if label == prediction and rng.random() < flip_share:
            label = "benign" if label == "malignant" else "malignant"
        labels.append((prediction_id, label))
    return labels


def _deliver_labels(stack: Any, labels: Sequence[tuple[str, str]], source: str = "demo", per_request: int = 50) -> None:
    """Send the labels to ``POST /feedback`` in batches (labelled now), then wait until the writer has stored them.

    :raises SmlError: /feedback refused a batch (its status and body are in the message).
    """
    url = stack.endpoints.function_url.rstrip("/") + "/feedback"
    with requests.Session() as session:
        for index in range(0, len(labels), per_request):
            body = {"labels": [{"prediction_id": pid, "label": label, "source": source} for pid, label in labels[index : index + per_request]]}
            response = session.post(url, json=body, timeout=30)
            if response.status_code != 202:
                raise SmlError(f"POST /feedback answered {response.status_code}: {response.text[:300]}")
    _wait_drained(stack)


def _quality_digest(quality: Any) -> dict[str, Any]:
    if quality is None:
        return {}
    from sml.monitoring.alerts import quality_digest

    digest = quality_digest(quality)
    realized = quality.realized.get("f1") if quality.realized else None
    estimated = quality.estimated.get("f1") if quality.estimated else None
    digest["realized_f1"] = None if realized is None else {"value": realized.value, "low": realized.low, "high": realized.high}
    digest["estimated_f1"] = None if estimated is None else estimated.value
    digest["reference_f1"] = quality.reference_metrics.get("f1")
    return digest


def describe_quality(digest: dict[str, Any]) -> str:
    """One line for a window's model quality digest: verdict, realized F1 with its interval, coverage, estimate, held-out F1."""
    if not digest:
        return "not assessed"
    realized = digest.get("realized_f1")
    realized_text = "n/a" if realized is None else f"{realized['value']:.3f} [{realized['low']:.3f}, {realized['high']:.3f}]"
    estimated = digest.get("estimated_f1")
    estimated_text = "n/a" if estimated is None else f"{estimated:.3f}"
    reference = digest.get("reference_f1")
    reference_text = "n/a" if reference is None else f"{reference:.3f}"
    return (
        f"{digest['status']}; F1 realized {realized_text} on {digest['labelled']:,} labels ({digest['coverage']:.0%} coverage), "
        f"estimated (CBPE) {estimated_text}, held-out {reference_text}"
    )


def _flagged_features(run: Any) -> list[str]:
    return sorted({result.feature for result in run.results if result.verdict.value == "DRIFT" and result.kind != "label"})


def _verdict_summary(run: Any) -> str:
    from sml.monitoring.drift.stats import verdict_summary

    return verdict_summary(run.results)


def _drift_rows(run: Any) -> list[dict[str, Any]]:
    rows = []
    for result in run.results:
        rows.append(
            {
                "feature": result.feature,
                "test": result.test,
                "statistic": result.statistic,
                "p_adjusted": result.p_adjusted,
                "effect": result.effect_size,
                "verdict": result.verdict.value,
            }
        )
    return rows


def _subscribe_inbox(clients: _Clients, topic_arn: str) -> str:
    queue_url = clients.sqs.create_queue(QueueName="sml-alerts-inbox")["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return queue_url


def _receive_alert(clients: _Clients, inbox_url: str, *, expected_status: str, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages = clients.sqs.receive_message(QueueUrl=inbox_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            envelope = json.loads(message["Body"])
            attributes = {name: value.get("Value") for name, value in envelope.get("MessageAttributes", {}).items()}
            clients.sqs.delete_message(QueueUrl=inbox_url, ReceiptHandle=message["ReceiptHandle"])
            if attributes.get("status") == expected_status:
                return {"subject": envelope.get("Subject", ""), "attributes": attributes, "body": json.loads(envelope["Message"])}
    return {}


def _describe_shift(shift: TrafficShift) -> str:
    parts = [f"{name} ×{factor}" for name, factor in shift.scale.items()]
    parts += [f"{name} {share:.0%} '{category}'" for name, (category, share) in shift.category_mix.items()]
    parts += [f"{name} {rate:.0%} missing" for name, rate in shift.null_rate.items()]
    parts += [f"{name} {share:.0%} out of range (×{factor})" for name, (share, factor) in shift.out_of_range.items()]
    return ", ".join(parts)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values``; NaN when empty."""
    return float(np.percentile(values, q)) if values else float("nan")


def _checks(config: DemoConfig, summary: DemoSummary) -> list[DemoCheck]:
    traffic = summary.traffic
    expected = sorted(config.shift.features)
    return [
        DemoCheck("every request answered 200", traffic.ok == traffic.requests, f"{traffic.ok}/{traffic.requests}; {traffic.errors[:1]}"),
        DemoCheck(
            "events captured = rows stored",
            summary.events_captured == summary.rows_stored,
            f"{summary.events_captured:,} events, {summary.rows_stored:,} rows",
        ),
        DemoCheck(
            "maintenance events reached the DLQ",
            summary.dlq_before_replay == config.maintenance_requests,
            f"{summary.dlq_before_replay} in the DLQ (expected {config.maintenance_requests})",
        ),
        DemoCheck("DLQ empty after replay", summary.dlq_after_replay == 0, f"{summary.dlq_after_replay} left"),
        DemoCheck(
            "baseline window says NO_DRIFT",
            summary.baseline_status == "NO_DRIFT" and not summary.baseline_flagged,
            f"{summary.baseline_status}; flagged {summary.baseline_flagged or 'none'}",
        ),
        DemoCheck("drift flags exactly the shifted features", summary.flagged == expected, f"flagged {summary.flagged}; shifted {expected}"),
        DemoCheck(
            "the champion's drift config sets the floor it names",
            summary.model_floors == ["mean_symmetry/missing_rate"],
            f"floors from the model's config: {summary.model_floors or 'none'}",
        ),
        DemoCheck(
            "data quality flags the out-of-range burst, and the baseline passes",
            summary.baseline_data_quality == "OK"
            and {f"{name}:out_of_range" for name in config.shift.out_of_range} <= set(summary.data_quality_violations),
            f"baseline {summary.baseline_data_quality}; shifted window violations {summary.data_quality_violations or 'none'}",
        ),
        DemoCheck(
            "predict's refusals reach data quality",
            summary.refused.requests == config.refused_requests
            and len(summary.refused.errors) == summary.refused.requests
            and all(error.startswith("422:") for error in summary.refused.errors)
            and f"{summary.refused_feature}:refused" in summary.data_quality_violations,
            f"{len(summary.refused.errors)}/{summary.refused.requests} refused; violations {summary.data_quality_violations or 'none'}",
        ),
        DemoCheck("alert received", summary.alert.get("attributes", {}).get("status") == "DRIFT", summary.alert.get("subject", "no alert")),
        DemoCheck(
            "quality verdict DEGRADED on the shifted window (concept drift), in the run and the alert",
            summary.quality.get("status") == "DEGRADED" and summary.alert.get("attributes", {}).get("quality_status") == "DEGRADED",
            f"baseline {describe_quality(summary.baseline_quality)}; shifted {describe_quality(summary.quality)}",
        ),
        DemoCheck(
            "the archive holds every stored prediction, and sml rebuild restores them all",
            summary.archived_predictions == summary.rows_stored == summary.rebuilt_predictions,
            f"{summary.archived_predictions:,} archived (copies removed), {summary.rows_stored:,} stored, {summary.rebuilt_predictions:,} rebuilt",
        ),
        DemoCheck(
            "report written",
            summary.report_path is not None and summary.report_path.is_file(),
            str(summary.report_path),
        ),
    ]
