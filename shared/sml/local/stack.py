"""The local stack: the local AWS endpoint, the stack's AWS resources, the database and the functions.

This process runs the local AWS endpoint (fauxqs for S3/SQS/SNS with ministack for SSM by
default, see :mod:`sml.local.aws_endpoint`; or none when ``aws_endpoint_url`` points elsewhere)
with the bucket, the events queue with its DLQ and the alerts topic; migrates the database; serves predict behind a local Function URL and
feeds the writer from the SQS poller. Each function runs in its own container processes
(:mod:`sml.local.worker`), as on Lambda: predict in up to ``predict_concurrency``, the writer in
up to ``writer_concurrency`` (the event source mapping's maximum concurrency). Their logs go to
``<state_dir>/logs/<function>.log`` (stdout and stderr, as CloudWatch would get them). The
endpoints go to ``<state_dir>/stack.json``, where every other ``sml`` command finds them. The
schedule (:mod:`sml.local.schedule`) plays the EventBridge rules: the retention step runs in
a writer container at start and every ``retention_interval_s`` (only with the stock writer
handler, which knows the ``retention`` action; a replaced writer owns its storage); the weekly drift run, once per
model, in a drift container every ``drift_interval_s`` (first after one interval: ``sml drift`` runs
it on demand); the drift function's daily step (``{"sml_action": "daily_summaries"}``, which stores
the days' window summaries the weekly run merges), once per model every ``daily_interval_s``
(first after one interval too: a day not stored is read live by the weekly run).

The event archive (``archive_prefix``, ``archive/`` by default; ``None`` archives nothing): the
writer lands each batch's stored records in one object under ``<prefix>landing/``, and the
archive function (``functions.drift.compact:handler``, in its own container, started on its
first run: it imports pyarrow and DuckDB) turns them into the archive's Parquet objects on the
rule ``{"sml_action": "convert"}`` every ``archive_convert_interval_s`` (first after one
interval), as the frequent rule on AWS does. The readers of the archive (``sml query``,
``sml rebuild``, the DuckDB window source) see an event once a conversion has run after its
batch: :meth:`LocalStack.convert_landing` runs one at once (the demo does before it queries),
``sml compact`` converts before it compacts. The daily compaction is not scheduled locally:
``sml compact`` runs it.

Several models (``models``): as the CDK app deploys them, each gets its own predict containers
(``SML_MODEL_NAME`` set to it) behind its own Function URL on its own port; the queue, the
writer, the database and the bucket are shared. ``stack.json`` names every model's URL under
``function_urls`` (``function_url`` is the first's).

Example::

    with LocalStack(LocalStackConfig(state_dir=tmp_path)) as stack:
        requests.post(stack.endpoints.function_url, json={...})
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from sml.core.errors import SmlError
from sml.local.aws_endpoint import AwsServer, start_aws_server
from sml.local.function_url import FunctionUrlServer, Handler
from sml.local.lambda_context import new_lambda_context
from sml.local.poller import SqsEventSourcePoller
from sml.local.schedule import ScheduledInvocation
from sml.local.worker import FunctionContainers, FunctionError, FunctionSpec

logger = logging.getLogger(__name__)
# The writer whose direct invocations include the retention step (functions/writer/app.py).
DEFAULT_WRITER_HANDLER = "functions.writer.app:handler"
# The archive function, whose {"sml_action": "convert"} turns the writer's landing objects into Parquet.
DEFAULT_ARCHIVE_HANDLER = "functions.drift.compact:handler"
CONVERT_EVENT = {"sml_action": "convert"}

STACK_FILE_NAME = "stack.json"
# Held (flock) by the stack running in a state dir from before it starts anything until it stops; the
# kernel lets go if that process dies, so a crash leaves nothing to clean up. The file stays.
STACK_LOCK_NAME = "stack.lock"
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_S = 14 * 24 * 3600  # longer than the source queue's, so nothing expires in the DLQ first
QUEUE_RETENTION_S = 4 * 24 * 3600
# Variables that could route a boto3 client to a real account; removed while the stack runs.
REAL_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}  # the emulators accept any
REAL_AWS = "aws"  # --aws-endpoint-url value that means AWS's own endpoints, with the user's credentials
DRAIN_LIMIT_S = 60.0  # the longest a stopping stack waits for the writer to store what is queued
QUEUE_DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


@dataclass(frozen=True)
class LocalStackConfig:
    """How to run the local stack; the defaults are what ``sml up`` uses.

    :param state_dir: holds ``stack.json`` and the default SQLite database.
    :param database_url: SQLAlchemy URL; ``sqlite:///<state_dir>/sml.db`` when ``None``.
    :param function_url_port: port of predict's Function URL; 0 picks a free port.
    :param aws_port: port of the local AWS endpoint (its main URL); 0 picks a free port.
    :param aws_emulator: ``"fauxqs"`` (default: fauxqs, with SSM from ministack), ``"ministack"``
        or ``"moto"``: which emulator serves the local AWS endpoint.
    :param aws_endpoint_url: use this endpoint instead of starting one (another emulator), or
        ``"aws"`` for AWS itself with the caller's credentials; the resources are created there.
    :param aws_service_endpoint_urls: with ``aws_endpoint_url``, services served elsewhere
        (``{"ssm": URL}``), as the default emulator serves SSM beside fauxqs.
    :param predict_handler: ``"module:function"``, or a module-level function.
    :param writer_handler: likewise, for the writer.
    :param predict_concurrency: most predict containers at once (requests beyond wait for one).
    :param writer_concurrency: most writer batches at once (the mapping's maximum concurrency).
    :param predict_timeout_s: predict's function timeout (a slower invocation is killed: 502).
    :param writer_timeout_s: the writer's (a killed batch is retried, as on Lambda).
    :param visibility_timeout_s: the events queue's visibility timeout (how soon a failed
        message is retried); AWS uses 6 times the writer's timeout, locally shorter is friendlier.
    :param retention_interval_s: how often the retention step runs (daily, as on AWS).
    :param models: models served side by side, each by its own predict containers and Function URL
        (the first on ``function_url_port``, the others on free ports); empty serves
        ``SML_MODEL_NAME`` alone, as before.
    :param drift_handler: the handler of the weekly drift run.
    :param drift_interval_s: how often the drift run goes, for each model (weekly, as on AWS).
    :param daily_interval_s: how often the daily summaries step goes, for each model (daily, as on AWS).
    :param archive_prefix: the event archive's prefix in the bucket; ``None``: no archive, and no
        archive function.
    :param archive_handler: the handler of the archive function (conversion of the landing area).
    :param archive_convert_interval_s: how often the landing area is converted into the archive's
        Parquet objects (every few minutes on AWS; a minute here, so a question follows soon).
    """

    state_dir: Path = Path(".sml")
    database_url: str | None = None
    host: str = "127.0.0.1"
    function_url_port: int = 0
    aws_port: int = 0
    aws_emulator: str = "fauxqs"
    aws_endpoint_url: str | None = None
    aws_service_endpoint_urls: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    app_name: str = "sml"
    bucket: str = "sml-models"
    archive_prefix: str | None = "archive/"
    predict_handler: str | Handler = "functions.predict.app:handler"
    writer_handler: str | Handler = DEFAULT_WRITER_HANDLER
    predict_concurrency: int = 2
    writer_concurrency: int = 2
    predict_timeout_s: float = 30.0
    writer_timeout_s: float = 30.0
    visibility_timeout_s: int = 30
    batch_size: int = 10
    batching_window_s: float = 1.0
    retention_interval_s: float = 24 * 3600.0
    models: tuple[str, ...] = ()
    drift_handler: str | Handler = "functions.drift.app:handler"
    drift_timeout_s: float = 900.0
    drift_interval_s: float = 7 * 24 * 3600.0
    daily_interval_s: float = 24 * 3600.0
    archive_handler: str | Handler = DEFAULT_ARCHIVE_HANDLER
    archive_timeout_s: float = 900.0
    archive_convert_interval_s: float = 60.0

    @property
    def log_dir(self) -> Path:
        """Where the functions' and the AWS endpoint's logs go."""
        return self.state_dir / "logs"

    @property
    def resolved_database_url(self) -> str:
        # Absolute, so a command run from another folder (or a test) reaches the same file.
        return self.database_url or f"sqlite:///{self.state_dir.resolve() / 'sml.db'}"


@dataclass(frozen=True)
class StackEndpoints:
    """What ``stack.json`` holds (besides ``pid``); the keys match ``sml.core.settings.STACK_KEYS``.

    :param service_endpoint_urls: services served elsewhere than ``aws_endpoint_url`` (the default
        emulator's SSM); written as ``aws_endpoint_url_<service>``.
    """

    function_url: str
    aws_endpoint_url: str
    region: str
    queue_url: str
    dlq_url: str
    topic_arn: str
    bucket: str
    database_url: str
    service_endpoint_urls: Mapping[str, str] = field(default_factory=dict)
    archive_prefix: str | None = "archive/"
    function_urls: Mapping[str, str] = field(default_factory=dict)

    def as_stack_file(self) -> dict[str, Any]:
        """The ``stack.json`` form, without ``pid``: flat, plus ``function_urls`` (model -> URL) with several models."""
        fields = {name: value for name, value in asdict(self).items() if name not in ("service_endpoint_urls", "function_urls")}
        extra: dict[str, Any] = {"function_urls": dict(self.function_urls)} if self.function_urls else {}
        return {**fields, **{f"aws_endpoint_url_{service}": url for service, url in self.service_endpoint_urls.items()}, **extra}


@dataclass(frozen=True)
class QueueDepths:
    """Messages in the stack's queues: visible, in flight and delayed."""

    events: int
    dead_letters: int


def stack_file(state_dir: Path) -> Path:
    return state_dir / STACK_FILE_NAME


def stack_function_urls(state_dir: Path) -> dict[str, str]:
    """Model -> Function URL of a local stack serving several models (``{}`` for one model or none)."""
    try:
        urls = json.loads(stack_file(state_dir).read_text(encoding="utf-8")).get("function_urls", {})
    except (FileNotFoundError, ValueError, AttributeError):
        return {}
    return {str(model): str(url) for model, url in urls.items()} if isinstance(urls, dict) else {}


def running_stack_pid(state_dir: Path) -> int | None:
    """The pid in ``<state_dir>/stack.json`` if that process is alive; ``None`` when stale or absent."""
    try:
        pid = int(json.loads(stack_file(state_dir).read_text(encoding="utf-8"))["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by someone else
        return pid
    return pid


def lock_state_dir(state_dir: Path) -> int:
    """Take ``<state_dir>/stack.lock`` for a stack in this process; closing the returned descriptor releases it.

    stack.json only appears once a stack is up, so it cannot keep out a second stack started
    meanwhile; this lock does, and it writes this process's pid into the file for the message.

    :raises SmlError: another stack holds it; the message names the state dir and its pid.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / STACK_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise SmlError(f"a stack is already running in {state_dir} ({holder}); stop it or use --state-dir") from None
    pid = f"{os.getpid()}\n".encode()
    os.pwrite(fd, pid, 0)  # overwrite, then cut: a reader sees the old pid or the new one, never an empty file
    os.ftruncate(fd, len(pid))
    return fd


def stack_lock_holder(state_dir: Path) -> str | None:
    """``"pid N"`` of the stack holding ``<state_dir>/stack.lock``, or ``None`` when no stack runs there."""
    try:
        fd = os.open(state_dir / STACK_LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_holder(fd)
    finally:
        os.close(fd)
    return None


def _lock_holder(fd: int) -> str:
    content = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return f"pid {content}" if content.isdigit() else "pid not yet written"


def aws_endpoint_environment(aws_endpoint_url: str, service_endpoint_urls: Mapping[str, str]) -> dict[str, str]:
    """``SML_AWS_ENDPOINT_URL`` and one ``SML_AWS_ENDPOINT_URL_<SERVICE>`` per service served elsewhere."""
    from sml.core.settings import service_endpoint_variable

    return {"SML_AWS_ENDPOINT_URL": aws_endpoint_url, **{service_endpoint_variable(s): url for s, url in service_endpoint_urls.items()}}


def handler_environment(
    config: LocalStackConfig,
    *,
    aws_endpoint_url: str,
    resources: Mapping[str, str],
    database_url: str,
    service_endpoint_urls: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables the functions read (the settings contract), pointing at this stack.

    Credentials are dummies, so nothing the handlers do can reach a real AWS account, unless the
    stack was pointed at AWS itself (``aws_endpoint_url`` ``"aws"``: no endpoint, no dummies).

    :param resources: what :func:`create_stack_resources` returned.
    :param service_endpoint_urls: services served at another URL than ``aws_endpoint_url``.
    """
    real = aws_endpoint_url == REAL_AWS
    endpoints = aws_endpoint_environment(aws_endpoint_url, service_endpoint_urls or {})
    return {
        "SML_APP_NAME": config.app_name,
        **({} if real else {**endpoints, **MOTO_CREDENTIALS}),
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "SML_BUCKET": config.bucket,
        "SML_ARCHIVE_PREFIX": config.archive_prefix or "",  # empty counts as unset, and hides the caller's
        "SML_QUEUE_URL": resources["queue_url"],
        "SML_DLQ_URL": resources["dlq_url"],
        "SML_TOPIC_ARN": resources["topic_arn"],
        "SML_DATABASE_URL": database_url,
        "SML_STATE_DIR": str(config.state_dir),
    }


def apply_database_migrations(database_url: str) -> list[str]:
    """Bring the database at ``database_url`` up to date; returns the migrations applied.

    :raises SmlError: the database cannot be reached (a server that is not running, say).
    """
    from sqlalchemy.exc import OperationalError

    from sml.core.db import apply_migrations, create_db_engine

    engine = create_db_engine(database_url)
    try:
        return apply_migrations(engine)
    except OperationalError as exc:
        raise SmlError(f"database {database_url}: cannot connect or migrate: {exc.orig}") from exc
    finally:
        engine.dispose()


def create_stack_resources(clients: Mapping[str, Any], config: LocalStackConfig) -> dict[str, str]:
    """Create the bucket, DLQ, events queue (redriving to the DLQ) and alerts topic.

    :param clients: boto3 clients keyed ``"s3"``, ``"sqs"`` and ``"sns"``.
    :returns: ``queue_url``, ``dlq_url`` and ``topic_arn``.
    """
    s3, sqs, sns = clients["s3"], clients["sqs"], clients["sns"]
    bucket_options = {} if config.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": config.region}}
    s3.create_bucket(Bucket=config.bucket, **bucket_options)
    dlq_url = sqs.create_queue(
        QueueName=f"{config.app_name}-events-dlq", Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive_policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
    queue_url = sqs.create_queue(
        QueueName=f"{config.app_name}-events",
        Attributes={
            "VisibilityTimeout": str(config.visibility_timeout_s),
            "MessageRetentionPeriod": str(QUEUE_RETENTION_S),
            "RedrivePolicy": json.dumps(redrive_policy),
        },
    )["QueueUrl"]
    topic_arn = sns.create_topic(Name=f"{config.app_name}-alerts")["TopicArn"]
    return {"queue_url": queue_url, "dlq_url": dlq_url, "topic_arn": topic_arn}


class LocalStack:
    """Starts and stops the whole local stack from this process.

    :param config: ports, names, handlers, concurrency and queue settings.
    :param migrate: applies the database migrations given a URL (replaceable in tests).
    """

    def __init__(
        self, config: LocalStackConfig, *, migrate: Callable[[str], list[str]] = apply_database_migrations
    ) -> None:
        self.config = config
        self.migrate = migrate
        self.endpoints: StackEndpoints | None = None
        self.function_url_server: FunctionUrlServer | None = None  # the first model's
        self.poller: SqsEventSourcePoller | None = None
        self.predict: FunctionContainers | None = None  # the first model's
        self.writer: FunctionContainers | None = None
        self.drift: FunctionContainers | None = None
        self.archive: FunctionContainers | None = None  # with an archive_prefix only
        # Model -> its predict containers and Function URL server (one entry per model, or "" for one model).
        self.predicts: dict[str, FunctionContainers] = {}
        self.function_url_servers: dict[str, FunctionUrlServer] = {}
        self.aws_server: AwsServer | None = None
        self.retention: ScheduledInvocation | None = None
        self.drift_runs: dict[str, ScheduledInvocation] = {}
        self.daily_summaries: dict[str, ScheduledInvocation] = {}
        self.archive_conversion: ScheduledInvocation | None = None
        self._sqs: Any = None
        self.discarded: QueueDepths | None = None  # what the emulator held when stop() ended it
        self._saved_environment: dict[str, str | None] = {}
        self._state_dir_lock: int | None = None

    @property
    def stack_file(self) -> Path:
        return stack_file(self.config.state_dir)

    def start(self) -> Self:
        """Start everything and write ``stack.json``; on any failure, undo what was started.

        :raises SmlError: another stack runs on the same state dir (it holds ``stack.lock``), a port
            is taken, the AWS endpoint does not come up, or a handler cannot be imported.
        """
        self._state_dir_lock = lock_state_dir(self.config.state_dir)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from sml.core.aws import aws_client
        from sml.core.settings import AwsSettings, RetentionSettings, load_settings

        config = self.config
        load_settings(RetentionSettings)  # a retention under its minimum stops the stack before it starts
        config.state_dir.mkdir(parents=True, exist_ok=True)
        real_aws = config.aws_endpoint_url == REAL_AWS
        if not real_aws:
            self._set_environment(MOTO_CREDENTIALS)  # before the first client: a profile must not leak in
        aws_endpoint_url, service_endpoint_urls = self._aws_endpoint()
        aws_settings = AwsSettings.model_validate(
            {"AWS_REGION": config.region, **({} if real_aws else aws_endpoint_environment(aws_endpoint_url, service_endpoint_urls))}
        )
        sqs = self._sqs = aws_client("sqs", aws_settings)
        try:
            resources = create_stack_resources(
                {"s3": aws_client("s3", aws_settings), "sqs": sqs, "sns": aws_client("sns", aws_settings)}, config
            )
        except (BotoCoreError, ClientError) as exc:
            where = f"the local AWS endpoint ({config.aws_emulator}) at {aws_endpoint_url}"
            if config.aws_endpoint_url is not None:
                where = f"--aws-endpoint-url {config.aws_endpoint_url}"
            raise SmlError(f"{where}: cannot create the stack's bucket, queues and topic: {exc}") from None
        database_url = config.resolved_database_url
        applied = self.migrate(database_url)
        logger.info("database %s: %s", database_url, f"applied {', '.join(applied)}" if applied else "up to date")
        environment = handler_environment(
            config,
            aws_endpoint_url=aws_endpoint_url,
            resources=resources,
            database_url=database_url,
            service_endpoint_urls=service_endpoint_urls,
        )
        self._set_environment(environment)
        # Each function in its own processes; one container of each is started now, so a handler
        # that cannot be imported is reported here rather than on the first request.
        models = config.models or ("",)  # "": the one model SML_MODEL_NAME names, as before
        for index, model in enumerate(models):
            role = f"predict-{model}" if model else "predict"
            model_environment = {**environment, "SML_MODEL_NAME": model} if model else environment
            self.predicts[model] = self._start_containers(
                role, config.predict_handler, config.predict_timeout_s, config.predict_concurrency, model_environment
            )
            self.function_url_servers[model] = self._bind_function_url_server(
                self.predicts[model].invoke, role=role, port=config.function_url_port if index == 0 else 0
            )
        self.predict, function_url_server = self.predicts[models[0]], self.function_url_servers[models[0]]
        self.function_url_server = function_url_server
        self.writer = self._start_containers("writer", config.writer_handler, config.writer_timeout_s, config.writer_concurrency, environment)
        # Started on the first weekly run, not now: a drift container imports scipy and scikit-learn.
        self.drift = self._start_containers("drift", config.drift_handler, config.drift_timeout_s, 1, environment, warm=0)
        if config.archive_prefix is not None:
            # Likewise on its first conversion (pyarrow, DuckDB); one at a time, so two runs never convert the same object.
            self.archive = self._start_containers("archive", config.archive_handler, config.archive_timeout_s, 1, environment, warm=0)
        self.endpoints = StackEndpoints(
            function_url=function_url_server.url,
            function_urls={model: server.url for model, server in self.function_url_servers.items() if model},
            aws_endpoint_url=aws_endpoint_url,
            region=config.region,
            bucket=config.bucket,
            database_url=database_url,
            service_endpoint_urls=service_endpoint_urls,
            archive_prefix=config.archive_prefix,
            **resources,
        )
        self.poller = SqsEventSourcePoller(
            sqs,
            resources["queue_url"],
            self.writer.invoke,
            batch_size=config.batch_size,
            batching_window_s=config.batching_window_s,
            visibility_timeout_s=config.visibility_timeout_s,
            function_name=f"{config.app_name}-writer",
            region=config.region,
            timeout_s=config.writer_timeout_s,
            concurrency=config.writer_concurrency,
        )
        for server in self.function_url_servers.values():
            server.start()
        self.poller.start()
        writer = self.writer
        if config.writer_handler == DEFAULT_WRITER_HANDLER:
            self.retention = ScheduledInvocation(
                "retention",
                lambda event: writer.invoke(event, new_lambda_context(f"{config.app_name}-writer", region=config.region, timeout_s=config.writer_timeout_s)),
                {"sml_action": "retention"},
                interval_s=config.retention_interval_s,
            ).start()
        drift = self.drift
        for model in models:
            # One weekly rule per model naming it, as the CDK app deploys them; one model: the plain event.
            self.drift_runs[model] = ScheduledInvocation(
                f"drift {model}" if model else "drift",
                lambda event: drift.invoke(event, new_lambda_context(f"{config.app_name}-drift", region=config.region, timeout_s=config.drift_timeout_s)),
                {"model_name": model} if model else {},
                interval_s=config.drift_interval_s,
                first_after_s=config.drift_interval_s,
            ).start()
            self.daily_summaries[model] = ScheduledInvocation(
                f"daily summaries {model}" if model else "daily summaries",
                lambda event: drift.invoke(event, new_lambda_context(f"{config.app_name}-drift", region=config.region, timeout_s=config.drift_timeout_s)),
                {"sml_action": "daily_summaries", **({"model_name": model} if model else {})},
                interval_s=config.daily_interval_s,
                first_after_s=config.daily_interval_s,
            ).start()
        if self.archive is not None:
            self.archive_conversion = ScheduledInvocation(
                "archive conversion", self.convert_landing, CONVERT_EVENT,
                interval_s=config.archive_convert_interval_s,
                first_after_s=config.archive_convert_interval_s,
                worth_logging=lambda summary: not isinstance(summary, dict) or bool(summary.get("landing_converted")),  # a replaced handler's: say it
            ).start()
        self._write_stack_file()

    def convert_landing(self, event: Mapping[str, Any] = CONVERT_EVENT) -> dict[str, Any]:
        """Convert the archive's landing area now, in the archive function's container, as its schedule does.

        Waits for a conversion in progress first (the function runs one at a time).

        :returns: what the function returned (:meth:`sml.archive.landing.ConversionOutcome.summary`).
        :raises SmlError: the stack has no archive (``archive_prefix`` ``None``) or is stopped.
        :raises FunctionError: the function failed; ``ConversionFailed`` when a landing object was not
            converted (it stays for the next run; the others were converted).
        """
        if self.archive is None:
            why = "has no event archive (archive_prefix is None)" if self.config.archive_prefix is None else "is not running"
            raise SmlError(f"this stack {why}: nothing to convert")
        context = new_lambda_context(f"{self.config.app_name}-archive", region=self.config.region, timeout_s=self.config.archive_timeout_s)
        return self.archive.invoke(dict(event), context)

    def _aws_endpoint(self) -> tuple[str, dict[str, str]]:
        """The endpoint URL and the services served elsewhere, starting the emulator unless one is given."""
        if self.config.aws_endpoint_url is not None:
            return self.config.aws_endpoint_url, dict(self.config.aws_service_endpoint_urls)
        config = self.config
        self.aws_server = start_aws_server(config.aws_emulator, host=config.host, port=config.aws_port, log_dir=config.log_dir)
        return self.aws_server.url, dict(self.aws_server.service_urls)

    def _start_containers(
        self,
        role: str,
        handler: str | Handler,
        timeout_s: float,
        concurrency: int,
        environment: Mapping[str, str],
        *,
        warm: int = 1,
    ) -> FunctionContainers:
        name = f"{self.config.app_name}-{role}"
        try:
            spec = FunctionSpec(
                name=name,
                handler=handler,
                timeout_s=timeout_s,
                environment=environment,
                region=self.config.region,
                log_path=self.config.log_dir / f"{name}.log",
            )
            return FunctionContainers(spec, concurrency=concurrency).start(warm=warm)
        except ValueError as exc:
            raise SmlError(f"{role} handler {handler!r}: {exc}") from None
        except FunctionError as exc:
            detail = exc.message.replace("Unable to import module", "cannot import module")
            raise SmlError(f"{role} handler {spec.handler_path!r}: {detail} (log: {spec.log_path})") from None

    def _bind_function_url_server(self, handler: Handler, *, role: str, port: int) -> FunctionUrlServer:
        try:
            return FunctionUrlServer(
                handler,
                host=self.config.host,
                port=port,
                function_name=f"{self.config.app_name}-{role}",
                region=self.config.region,
                timeout_s=self.config.predict_timeout_s,
            )
        except OSError as exc:
            raise SmlError(f"--port {port}: cannot listen on {self.config.host}: {exc.strerror}") from None

    def _set_environment(self, values: Mapping[str, str]) -> None:
        from sml.core.settings import ENDPOINT_SERVICES, service_endpoint_variable

        # A service endpoint left in the caller's environment would send that service past the stack's.
        stray = [service_endpoint_variable(service) for service in ENDPOINT_SERVICES]
        for name in [*values, *REAL_AWS_VARIABLES, *stray]:
            self._saved_environment.setdefault(name, os.environ.get(name))
        for name in stray:
            os.environ.pop(name, None)
        if self.config.aws_endpoint_url != REAL_AWS:
            for name in REAL_AWS_VARIABLES:
                os.environ.pop(name, None)
        os.environ.update(values)

    def _restore_environment(self) -> None:
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}

    def _write_stack_file(self) -> None:
        assert self.endpoints is not None
        temporary = self.stack_file.with_suffix(".json.tmp")
        temporary.write_text(json.dumps({**self.endpoints.as_stack_file(), "pid": os.getpid()}, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.stack_file)

    def queue_depths(self) -> QueueDepths:
        """How many messages the events queue and the DLQ hold now."""
        assert self.endpoints is not None

        def depth(queue_url: str) -> int:
            attributes = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(QUEUE_DEPTH_ATTRIBUTES))["Attributes"]
            return sum(int(attributes.get(name, 0)) for name in QUEUE_DEPTH_ATTRIBUTES)

        return QueueDepths(events=depth(self.endpoints.queue_url), dead_letters=depth(self.endpoints.dlq_url))

    def drain(self, abandon: threading.Event, *, limit_s: float = DRAIN_LIMIT_S, poll_interval_s: float = 0.1) -> None:
        """Take no more requests and let the writer store what is queued.

        For a stack whose emulator is about to stop and take its queues with it. Closes the
        Function URL, waits for predict's post-invoke phases (the events it sends after
        answering), then until the events queue is empty, ``abandon`` is set or ``limit_s``
        has passed. The DLQ is left as it is.
        """
        deadline = time.monotonic() + limit_s
        self._stop_function_urls()
        for predict in self.predicts.values():
            while not predict.wait_all_ready(poll_interval_s) and not abandon.is_set() and time.monotonic() < deadline:
                pass
        while self.queue_depths().events and not abandon.wait(poll_interval_s) and time.monotonic() < deadline:
            pass

    def _stop_function_urls(self) -> None:
        for server in self.function_url_servers.values():
            server.stop()
        self.function_url_servers = {}
        self.function_url_server = None

    def _depths_at_stop(self) -> QueueDepths | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.endpoints is None or self.aws_endpoint_failure() is not None:
            return None
        try:
            return self.queue_depths()
        except (BotoCoreError, ClientError) as exc:
            logger.warning("could not count the messages left in the queues: %s", exc)
            return None

    def aws_endpoint_failure(self) -> str | None:
        """Why the emulator this stack started is gone (it exited or was killed), or ``None`` while it runs.

        Its queues, topic, bucket and parameters lived in that process, so they went with it.
        """
        return self.aws_server.failure() if self.aws_server is not None else None

    def stop(self) -> None:
        """Stop the poller (finishing its batches), the servers, the containers, and remove ``stack.json`` (idempotent).

        An emulator this stack started goes last; what its queues held then is in ``discarded``.
        """
        if running_stack_pid(self.config.state_dir) == os.getpid():
            self.stack_file.unlink(missing_ok=True)
        for schedule in [self.retention, *self.drift_runs.values(), *self.daily_summaries.values(), self.archive_conversion]:
            if schedule is not None:
                schedule.stop()
        self.retention, self.drift_runs, self.daily_summaries, self.archive_conversion = None, {}, {}, None
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        self._stop_function_urls()
        for containers in [*self.predicts.values(), self.writer, self.drift, self.archive]:
            if containers is not None:
                containers.stop()
        self.predict = self.writer = self.drift = self.archive = None
        self.predicts = {}
        if self.aws_server is not None:
            self.discarded = self._depths_at_stop()
            self.aws_server.stop()
            self.aws_server = None
        self._restore_environment()
        if self._state_dir_lock is not None:  # last: until everything above is down, the state dir is still ours
            os.close(self._state_dir_lock)
            self._state_dir_lock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_local_stack(config: LocalStackConfig | None = None, **overrides: Any) -> LocalStack:
    """Start a :class:`LocalStack` from ``config`` (default :class:`LocalStackConfig`) plus overrides."""
    return LocalStack(replace(config or LocalStackConfig(), **overrides)).start()

