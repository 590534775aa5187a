"""`sml dlq inspect|replay`: what is in the dead-letter queue and why; move it back to the events queue."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

REPLAY_DESCRIPTION = """\
Move the dead-letter queue's messages back to the events queue, bodies unchanged, so the writer
stores them once the cause is fixed. Rows are never duplicated: the writer skips a prediction_id
it has stored. Safe to interrupt (Ctrl-C) and run again.

On AWS this starts an SQS message move task, which runs server-side: --status shows it, --cancel
stops it. Where move tasks are missing (the local AWS endpoint) or with --max, messages are moved
here in batches: receive, send to the events queue, then delete from the DLQ.
"""
BODY_PREVIEW_CHARS = 240


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq", help="inspect or replay the dead-letter queue", description="Inspect or replay the dead-letter queue."
    )
    commands = parser.add_subparsers(title="dlq commands", dest="dlq_command", metavar="DLQ_COMMAND")
    commands.required = True

    inspect = commands.add_parser(
        "inspect",
        help="count, oldest age and a sample of messages with why each failed",
        description="Count the DLQ's messages and show a sample with why the writer could not store each "
        "(the parse error, or a hint that the database rejected it). Peeking hides no message.",
    )
    inspect.add_argument("--sample", type=_non_negative, default=5, help="messages to show (default: 5; 0 for counts only)")
    _add_queue_options(inspect)
    inspect.set_defaults(run=run_inspect)

    replay = commands.add_parser(
        "replay",
        help="move DLQ messages back to the events queue",
        description=REPLAY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("--max", type=_positive, metavar="N", help="move at most N messages (default: all)")
    replay.add_argument("--rate", type=_positive, metavar="R", help="at most R messages per second, 1-500 (default: unlimited)")
    replay.add_argument(
        "--wait",
        type=_positive,
        metavar="SECONDS",
        help="follow an AWS message move task at most this long, then stop with an error; the task runs on (default: an hour)",
    )
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only count what would move")
    mode.add_argument("--status", action="store_true", help="show the DLQ's message move tasks (AWS)")
    mode.add_argument("--cancel", action="store_true", help="cancel the running message move task (AWS)")
    _add_queue_options(replay)
    replay.add_argument("--queue-url", help="where messages go (default: $SML_QUEUE_URL or the local stack's events queue)")
    replay.set_defaults(run=run_replay)


def _add_queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dlq-url", help="the dead-letter queue (default: $SML_DLQ_URL or the local stack's)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _sqs_and_dlq(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """The SQS client, the DLQ URL and the settings the command runs with."""
    from sml.core.aws import aws_client
    from sml.core.errors import SmlError
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    dlq_url = args.dlq_url or settings.dlq_url
    if not dlq_url:
        raise SmlError("no dead-letter queue: give --dlq-url, set SML_DLQ_URL, or start the local stack (`sml up`)")
    return aws_client("sqs", settings), dlq_url, settings


@contextlib.contextmanager
def _queue_errors_named(dlq_url: str) -> Iterator[None]:
    """An endpoint that is gone (a stack.json left by a stopped stack) or refuses: one line, not a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    from sml.core.errors import SmlError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise SmlError(f"{dlq_url}: {exc}; start the local stack with `sml up` or configure AWS credentials and region") from None


def run_inspect(args: argparse.Namespace) -> int:
    from sml.writer.replay import inspect_dlq

    sqs, dlq_url, _ = _sqs_and_dlq(args)
    with _queue_errors_named(dlq_url):
        summary = inspect_dlq(sqs, dlq_url, sample=args.sample)
    age = "none seen" if summary.oldest_age_s is None else f"{timedelta(seconds=round(summary.oldest_age_s))} old"
    print(f"{summary.queue_url}")
    print(f"  messages: {summary.visible} visible, {summary.in_flight} in flight; oldest seen: {age}")
    for sample in summary.samples:
        sent = sample.sent_at.isoformat(timespec="seconds") if sample.sent_at else "?"
        body = _printable(sample.body[:BODY_PREVIEW_CHARS]) + ("…" if len(sample.body) > BODY_PREVIEW_CHARS else "")
        print(f"\n  {sample.message_id}  sent {sent}  received {sample.receive_count or '?'}×")
        print(f"    why:  {sample.reason}")
        print(f"    body: {body}")
    return 0


def _printable(text: str) -> str:
    """``text`` safe to print whatever a message holds: control and other unprintable characters
    (terminal escape sequences, NUL) as Python escapes, and characters this terminal's encoding
    cannot show as ``\\x``/``\\u`` escapes instead of an encoding error."""
    import sys

    shown = "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return shown.encode(encoding, "backslashreplace").decode(encoding)


def run_replay(args: argparse.Namespace) -> int:
    sqs, dlq_url, settings = _sqs_and_dlq(args)
    with _queue_errors_named(dlq_url):
        return _replay(args, sqs, dlq_url, settings)


def _replay(args: argparse.Namespace, sqs: Any, dlq_url: str, settings: Any) -> int:
    from sml.core.errors import SmlError
    from sml.writer.replay import replay_dlq

    on_aws = settings.endpoint_url("sqs") is None  # a local endpoint is an emulator (fauxqs, ministack, moto): no move tasks
    if (args.status or args.cancel) and not on_aws:
        option = "--status" if args.status else "--cancel"
        raise SmlError(
            f"{option}: message move tasks exist only on AWS; locally a replay runs in the foreground, stop it with Ctrl-C"
        )
    if args.status:
        return _show_move_tasks(sqs, dlq_url)
    if args.cancel:
        return _cancel_move_task(sqs, dlq_url)
    target_url = args.queue_url or settings.queue_url
    if not target_url:
        raise SmlError("no events queue to replay into: give --queue-url, set SML_QUEUE_URL, or start the local stack (`sml up`)")
    if args.dry_run:
        planned = replay_dlq(sqs, dlq_url, target_url, max_messages=args.max, rate=args.rate, dry_run=True)
        print(f"dry run: {planned.moved} message(s) would move from {dlq_url} to {target_url}")
        return 0
    return _replay_with_progress(args, sqs, dlq_url, target_url, use_move_task=on_aws)


def _show_move_tasks(sqs: Any, dlq_url: str) -> int:
    from sml.writer.replay import list_move_tasks

    tasks = list_move_tasks(sqs, dlq_url)
    if not tasks:
        print(f"no message move tasks for {dlq_url}")
    for task in tasks:
        started = task.started_at.isoformat(timespec="seconds") if task.started_at else "?"
        to_move = "?" if task.to_move is None else task.to_move
        failure = f" ({task.failure_reason})" if task.failure_reason else ""
        print(f"{task.status:<10} moved {task.moved}/{to_move}, started {started}{failure}")
    return 0


def _cancel_move_task(sqs: Any, dlq_url: str) -> int:
    from sml.writer.replay import cancel_move_task

    cancelled = cancel_move_task(sqs, dlq_url)
    print("no running message move task" if cancelled is None else f"cancelling the move task after {cancelled.moved} message(s)")
    return 0


def _replay_with_progress(args: argparse.Namespace, sqs: Any, dlq_url: str, target_url: str, *, use_move_task: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sml.writer.replay import replay_dlq

    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("replay", total=None)

        def show(moved: int, total: int | None) -> None:
            bar.update(task, completed=moved, total=total)

        try:
            outcome = replay_dlq(
                sqs,
                dlq_url,
                target_url,
                max_messages=args.max,
                rate=args.rate,
                progress=show,
                **({"max_wait_s": args.wait} if args.wait else {}),
                use_move_task=use_move_task,
            )
        except KeyboardInterrupt:
            bar.stop()
            print(
                "interrupted: messages already moved stay moved and none is lost; run it again to continue "
                "(an AWS message move task keeps running: see --status, stop it with --cancel)"
            )
            return 130
    print(f"moved {outcome.moved} message(s) to {target_url} ({outcome.method})")
    if outcome.task_status == "CANCELLED":
        print(f"the message move task was cancelled after {outcome.moved} message(s); the rest stay in the DLQ")
        return 1
    if outcome.send_failures:
        print(f"{outcome.send_failures} message(s) were refused by the events queue and stay in the DLQ; run it again")
        return 1
    return 0
