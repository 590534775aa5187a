"""`sml up`: run the local stack in the foreground until Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sml.local.aws_endpoint import EMULATORS
from sml.local.poller import MAX_BATCH_SIZE, MAX_BATCHING_WINDOW_S, MAX_CONCURRENCY, MAX_VISIBILITY_TIMEOUT_S

ENDPOINT_CHECK_INTERVAL_S = 0.5  # how often `sml up` checks that the emulator it started is still there

if TYPE_CHECKING:
    from sml.local.stack import LocalStack, LocalStackConfig

DESCRIPTION = """\
Start the local stack: a local AWS endpoint on 127.0.0.1 (fauxqs: S3, SQS, SNS; ministack beside
it: SSM) with the bucket, the events queue and its DLQ and the alerts topic; the migrated database; predict behind
a local Function URL; the writer fed by an SQS poller that behaves like Lambda's event source
mapping. Each function runs in its own processes, like Lambda execution environments: predict in
up to --predict-concurrency containers, the writer in up to --writer-concurrency. Their logs go to
<state-dir>/logs/.

--aws-endpoint-url points the stack at another emulator instead (e.g. http://127.0.0.1:4566 for
LocalStack), or `aws` at your AWS account with your usual credentials: the bucket, queues and
topic are then created there.

The endpoints are printed and written to <state-dir>/stack.json, where every other sml command
run in this folder finds them. Ctrl-C or SIGTERM closes the Function URL, lets the writer store the
events still queued (at most 60 s; a second Ctrl-C stops at once), then stops everything and
removes the file. The emulator's queues, bucket and parameters live in its process: what they
still hold at the end is discarded and counted in a warning. If the emulator dies, sml up stops
with an error naming it.

Several models: --model a --model b serves each model by its own predict containers behind its own
Function URL (the first on --port, the others on free ports), sharing the queue, the writer, the
database and the bucket, as the CDK app deploys them with -c models=a,b. stack.json lists them
under function_urls, and `sml predict --model b` sends to b's. Without --model, predict serves
SML_MODEL_NAME, as always. The weekly drift run goes for each model, a week after the start and
then weekly (`sml drift --model NAME` runs it at once).

The event archive: the writer lands each batch it stored in the bucket (archive/landing/), and
the archive function, in its own container, converts what landed into the archive's Parquet
objects every minute, as its frequent rule does on AWS. `sml query`, `sml rebuild` and `sml drift
--window-source duckdb` read the Parquet objects only, so an event is in their answers once a
conversion has run after its batch (each warns about batches still waiting); `sml compact`
converts at once (then compacts). The archive is in the bucket, so it goes with the stack.

One stack per state dir: sml up holds <state-dir>/stack.lock from its first step until it stops (the
system lets go if it dies), so a second sml up there fails at once, naming the pid holding it.

Ports default to 0: the system picks free ones, so several stacks (one per --state-dir) and
other programs never collide; read the chosen ports from the output or stack.json. Give --port
to pin the Function URL (e.g. 8080); a port that is taken is an error, never silently changed.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start the local stack (local AWS endpoint, Function URL, SQS poller) and keep it running",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--state-dir", type=Path, help="folder for stack.json and the SQLite database (default: $SML_STATE_DIR or .sml)")
    add("--database-url", help="SQLAlchemy URL without a password (default: $SML_DATABASE_URL or sqlite:///<state-dir>/sml.db)")
    add("--port", type=_port, default=0, help="Function URL port (default: 0, a free port)")
    add("--aws-port", type=_port, default=0, help="local AWS endpoint port, S3/SQS/SNS (default: 0, a free port)")
    add("--aws-emulator", choices=EMULATORS, default="fauxqs",
        help="what serves the local AWS endpoint (default: %(default)s, with SSM from ministack; ministack's and moto's"
             " queues slow down as they grow)")
    add("--aws-endpoint-url", metavar="URL|aws", type=_endpoint_url,
        help="use this AWS endpoint instead of starting one (another emulator), or `aws` for your AWS account")
    add("--predict-concurrency", type=_concurrency, default=2, metavar="N",
        help="most predict containers at once; more concurrent requests wait for one (default: 2)")
    add("--writer-concurrency", type=_concurrency, default=2, metavar="N",
        help="most writer batches at once, the event source mapping's maximum concurrency (default: 2)")
    add("--visibility-timeout", type=_visibility_timeout, default=30, metavar="SECONDS",
        help="events queue visibility timeout, i.e. how soon a failed event is retried (default: 30)")
    add("--batch-size", type=_batch_size, default=10, help="most events per writer invocation, 1-10000 (default: 10)")
    add("--batching-window", type=_batching_window, default=1.0, metavar="SECONDS",
        help="how long the poller keeps gathering a batch, 0-300 (default: 1)")
    add("--model", action="append", dest="models", type=_model_name, metavar="NAME",
        help="serve this model; repeat to serve several side by side, each on its own Function URL (default: SML_MODEL_NAME)")
    add("--predict-handler", default="functions.predict.app:handler", metavar="MODULE:FUNCTION",
        help="handler behind the Function URL (default: %(default)s)")
    add("--writer-handler", default="functions.writer.app:handler", metavar="MODULE:FUNCTION",
        help="handler the SQS poller invokes (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sml.core.errors import SmlError
    from sml.local.stack import LocalStack

    config = _config_from(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sml").setLevel(logging.INFO)  # requests, batches, migrations; not botocore's chatter
    stop_requested, abandon = threading.Event(), threading.Event()  # the first Ctrl-C or SIGTERM, and a second

    def request_stop(*_: object) -> None:
        (abandon if stop_requested.is_set() else stop_requested).set()

    previous_handlers = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(config)
    try:
        stack.start()
        _print_endpoints(stack)
        while not stop_requested.wait(ENDPOINT_CHECK_INTERVAL_S):
            failure = stack.aws_endpoint_failure()
            if failure is not None:
                # What it held (events not yet written, the DLQ, models, the champion pointer) is gone, and
                # predict would go on answering with events that have nowhere to go: stop rather than limp.
                raise SmlError(f"{failure}; what it held is gone with it, so the local stack stops: start it again with `sml up`")
        print("stopping the local stack ...", flush=True)
        if stack.aws_server is not None:  # the queues live in the emulator we started and go with it
            _store_queued_events(stack, abandon)
    finally:
        stack.stop()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    left = stack.discarded
    if left is not None and (left.events or left.dead_letters):
        print(
            f"warning: the local AWS endpoint's queues went with it: discarded {left.events} queued event(s) not stored and"
            f" {left.dead_letters} message(s) in the DLQ (`sml dlq replay` before stopping would have kept them)",
            file=sys.stderr, flush=True,
        )
    print("stopped", flush=True)
    return 0


def _config_from(args: argparse.Namespace) -> LocalStackConfig:
    from sml.core.errors import SmlError
    from sml.local.stack import LocalStackConfig
    from sml.core.settings import AwsSettings, DatabaseSettings, SettingsError, load_settings

    aws = load_settings(AwsSettings)
    database_url = args.database_url
    if database_url is not None:
        try:
            load_settings(DatabaseSettings, environ={"SML_DATABASE_URL": database_url})
        except SettingsError as exc:
            raise SmlError(f"--database-url: {exc.problem.removeprefix('Value error, ')}") from None
    else:
        database_url = load_settings(DatabaseSettings).database_url
    models = tuple(args.models or ())
    repeated = sorted({model for model in models if models.count(model) > 1})
    if repeated:
        raise SmlError(f"--model {repeated[0]}: given twice; name each model once")
    return LocalStackConfig(
        models=models,
        state_dir=args.state_dir or aws.state_dir,
        database_url=database_url,
        function_url_port=args.port,
        aws_port=args.aws_port,
        aws_emulator=args.aws_emulator,
        aws_endpoint_url=args.aws_endpoint_url,
        predict_concurrency=args.predict_concurrency,
        writer_concurrency=args.writer_concurrency,
        region=aws.region,
        app_name=aws.app_name,
        bucket=aws.bucket,
        predict_handler=args.predict_handler,
        writer_handler=args.writer_handler,
        visibility_timeout_s=args.visibility_timeout,
        batch_size=args.batch_size,
        batching_window_s=args.batching_window,
    )


def _store_queued_events(stack: LocalStack, abandon: threading.Event) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from sml.core.errors import SmlError
    from sml.local.stack import DRAIN_LIMIT_S

    try:
        queued = stack.queue_depths().events
        if queued:
            print(f"storing the {queued} event(s) still queued first (at most {DRAIN_LIMIT_S:.0f} s; Ctrl-C again to stop now) ...", flush=True)
        stack.drain(abandon)
    except (BotoCoreError, ClientError) as exc:
        raise SmlError(f"could not store the queued events before stopping: {exc}") from None


def _print_endpoints(stack: LocalStack) -> None:
    endpoints = stack.endpoints
    assert endpoints is not None
    urls = [(f"Function URL {model}", url) for model, url in endpoints.function_urls.items()] or [("Function URL", endpoints.function_url)]
    rows = [
        *urls,
        ("AWS endpoint", endpoints.aws_endpoint_url),
        *((f"{service.upper()} endpoint", url) for service, url in endpoints.service_endpoint_urls.items()),
        ("region", endpoints.region),
        ("events queue", endpoints.queue_url),
        ("DLQ", endpoints.dlq_url),
        ("alerts topic", endpoints.topic_arn),
        ("bucket", endpoints.bucket),
        ("database", endpoints.database_url),
        ("logs", str(stack.config.log_dir)),
    ]
    print(f"local stack running (pid {os.getpid()}); endpoints written to {stack.stack_file}")
    width = max(13, *(len(label) for label, _ in rows))
    for label, value in rows:
        print(f"  {label:<{width}} {value}")
    print("Press Ctrl-C to stop.", flush=True)


def _bounded(parse: Any, low: float, high: float, what: str) -> Any:
    def check(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return check


_port = _bounded(int, 0, 65535, "a port number")
_visibility_timeout = _bounded(int, 0, MAX_VISIBILITY_TIMEOUT_S, "whole seconds")
_batch_size = _bounded(int, 1, MAX_BATCH_SIZE, "a whole number")
_batching_window = _bounded(float, 0, MAX_BATCHING_WINDOW_S, "seconds")
_concurrency = _bounded(int, 1, MAX_CONCURRENCY, "a whole number")


def _model_name(text: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name (lower-case letters, digits and '-', at most 63)")
    return text


def _endpoint_url(text: str) -> str:
    from urllib.parse import urlsplit

    if text == "aws":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL such as http://127.0.0.1:4566, or `aws`, got {text!r}")
    return text.rstrip("/")
