"""`sml feedback --file labels.csv|labels.jsonl`: bulk-load true labels as ground-truth events.

The file is read and validated first, every bad line reported with its file and line number
(``labels.csv:17: label: ...``); the good labels are then sent to the events queue with
SendMessageBatch (ten per call) from a few threads at once, under a progress bar. Refused
entries and failed calls are retried; what still did not go is written to
``<file>.unsent.jsonl``, which the same command takes. Sending a label twice changes nothing
(the writer keeps the latest ``labelled_at``), so a run can simply be repeated.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Send the true labels of past predictions to the events queue; the writer stores them in the
ground_truth table (latest labelled_at wins for one prediction_id).

CSV: a header with prediction_id,label and optionally labelled_at,source, then one label per row.
JSON Lines (.jsonl/.ndjson): one object per line, as POST /feedback takes it:
  {"prediction_id": "0190b8f0-...", "label": "malignant", "labelled_at": "2026-11-27T07:01:02Z", "source": "biopsy"}
labelled_at is RFC 3339 with a zone (now when absent). Labels are checked against the champion
(the registry named by SML_BUCKET / the local stack) unless --any-label is given: a class of a
classifier, a finite number for a regression model (kept exactly). Bad lines are reported with
their line number and skipped; the good ones are sent. A prediction_id on several lines of the
file: the last line wins (the earlier ones are listed and not sent), so sending a file again
gives the same labels.
"""
MAX_SHOWN_PROBLEMS = 20
SEND_ROUNDS = 3
DEFAULT_WORKERS = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "feedback",
        help="send true labels (CSV or JSON Lines) as ground truth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from sml.cli.commands.models import add_model_option

    parser.add_argument("--file", type=Path, required=True, help="labels.csv, labels.jsonl or labels.ndjson")
    parser.add_argument("--source", help="the source of labels that name none (at most 128 characters)")
    parser.add_argument("--any-label", action="store_true", help="do not check labels against the champion (its classes, or numbers for regression)")
    parser.add_argument("--queue-url", help="the events queue (default: $SML_QUEUE_URL or the local stack's)")
    parser.add_argument("--workers", type=_workers, default=DEFAULT_WORKERS, help=f"concurrent SendMessageBatch calls, 1-32 (default: {DEFAULT_WORKERS})")
    parser.add_argument("--dry-run", action="store_true", help="validate the file only; send nothing")
    add_model_option(parser)
    parser.set_defaults(run=run_feedback)


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError(f"must be 1 to 32, got {value}")
    return value


def run_feedback(args: argparse.Namespace) -> int:
    from sml.core.aws import aws_client
    from sml.core.errors import SmlError
    from sml.core.events import serialise_ground_truth_event
    from sml.cli.commands.models import load_model_settings
    from sml.core.settings import LocalSettings
    from sml.predict.feedback import LABEL_FILE_KINDS, FeedbackSchema, read_label_lines

    kind = LABEL_FILE_KINDS.get(args.file.suffix.lower())
    if kind is None:
        raise SmlError(f"--file {args.file}: unknown kind of file; name it .csv, .jsonl or .ndjson")
    if args.source is not None and not 1 <= len(args.source) <= 128:
        raise SmlError("--source: must be 1 to 128 characters")
    settings = load_model_settings(LocalSettings, args.model)
    queue_url = args.queue_url or settings.queue_url
    if not queue_url and not args.dry_run:
        raise SmlError("no events queue: pass --queue-url, set SML_QUEUE_URL or start `sml up`")
    schema = FeedbackSchema(None, max_items=1) if args.any_label else _champion_schema(args.model)
    try:
        with args.file.open(encoding="utf-8-sig", newline="") as lines:
            loaded = read_label_lines(lines, name=str(args.file), kind=kind, schema=schema, source=args.source)
    except OSError as exc:
        raise SmlError(f"--file {args.file}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SmlError(f"--file {args.file}: {_first_non_utf8_byte(args.file)}") from None
    if not loaded.events and not loaded.problems:
        # A JSON Lines file with no labels and no bad lines has blank lines at most.
        empty = kind == "jsonl" or not args.file.read_bytes().removeprefix(b"\xef\xbb\xbf").strip()
        what = "it is empty" if empty else "it has a header and no rows"
        hint = "; a CSV starts with a header such as prediction_id,label,labelled_at,source" if kind == "csv" and empty else ""
        raise SmlError(f"--file {args.file}: no labels to send: {what}{hint}")
    for problem in loaded.problems[:MAX_SHOWN_PROBLEMS]:
        print(f"skipped {problem}")
    if len(loaded.problems) > MAX_SHOWN_PROBLEMS:
        print(f"skipped {len(loaded.problems) - MAX_SHOWN_PROBLEMS} more bad line(s) of {args.file}")
    for duplicate in loaded.superseded[:MAX_SHOWN_PROBLEMS]:
        print(f"superseded {duplicate}")
    if len(loaded.superseded) > MAX_SHOWN_PROBLEMS:
        print(f"superseded {len(loaded.superseded) - MAX_SHOWN_PROBLEMS} more line(s) of {args.file} by later lines of the same prediction_id")
    if args.dry_run or not loaded.events:
        verb = "would send" if args.dry_run else "sent"
        print(f"{verb} {len(loaded.events)} label(s) from {args.file}; {len(loaded.problems)} bad line(s)")
        return 1 if loaded.problems else 0
    bodies = [(event.prediction_id, serialise_ground_truth_event(event)) for event in loaded.events]
    try:
        unsent = _send_with_progress(aws_client("sqs", settings), queue_url, bodies, workers=args.workers)
    except KeyboardInterrupt:
        print("interrupted: the labels sent so far stay sent; run the same command again (a label sent twice changes nothing)")
        return 130
    print(f"sent {len(bodies) - len(unsent)} of {len(bodies)} label(s) from {args.file} to {queue_url}; {len(loaded.problems)} bad line(s)")
    if unsent:
        leftover = args.file.with_name(args.file.name + ".unsent.jsonl")
        leftover.write_text("".join(_as_label_line(body) + "\n" for _, body in unsent), encoding="utf-8")
        print(f"{len(unsent)} label(s) were not accepted by the queue; written to {leftover}: run `sml feedback --file {leftover}`")
    return 1 if unsent or loaded.problems else 0


def _first_non_utf8_byte(path: Path) -> str:
    """Where the file stops being UTF-8: the byte, its offset in the file and its line (the text
    reader's own offset counts from the start of the chunk it was decoding, not of the file)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}: {exc.reason}); save it as UTF-8"
    return "not UTF-8 text; save it as UTF-8"


def _champion_schema(model: str | None) -> Any:
    from sml.cli.commands.models import open_registry
    from sml.core.errors import SmlError
    from sml.predict.feedback import FeedbackSchema

    registry, _ = open_registry(model)
    try:
        manifest = registry.manifest(registry.champion_version())
    except SmlError as exc:
        raise SmlError(f"cannot check labels against the champion ({exc}); pass --any-label to skip the check") from None
    return FeedbackSchema(manifest.classes, task=manifest.task, max_items=1)


def _as_label_line(body: str) -> str:
    raw = json.loads(body)
    return json.dumps({key: raw[key] for key in ("prediction_id", "label", "labelled_at", "source") if raw.get(key) is not None})


def _send_with_progress(sqs: Any, queue_url: str, bodies: Sequence[tuple[str, str]], *, workers: int) -> list[tuple[str, str]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("sending labels"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("send", total=len(bodies))
        return send_label_bodies(sqs, queue_url, bodies, workers=workers, progress=lambda sent: bar.advance(task, sent))


def send_label_bodies(
    sqs: Any,
    queue_url: str,
    bodies: Sequence[tuple[str, str]],
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] = lambda sent: None,
    rounds: int = SEND_ROUNDS,
    pause_s: float = 1.0,
) -> list[tuple[str, str]]:
    """Send ``(prediction_id, body)`` pairs with SendMessageBatch from ``workers`` threads.

    Chunks of ten go out concurrently (boto3 clients are thread-safe); entries a call refused
    or a failed call left behind are sent again, up to ``rounds`` rounds, ``pause_s`` apart.

    :param progress: called with the number of bodies accepted by each call.
    :returns: the pairs still not accepted after the last round.
    """
    from sml.predict.capture import SQS_BATCH_LIMIT, publish_message_bodies

    def send(chunk: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        misses = publish_message_bodies(sqs, queue_url, chunk)
        progress(len(chunk) - len(misses))
        return [(miss.event_id, miss.body) for miss in misses]

    pending = list(bodies)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sml-feedback")
    try:
        for round_number in range(rounds):
            if round_number:
                time.sleep(pause_s)
            chunks = [pending[start : start + SQS_BATCH_LIMIT] for start in range(0, len(pending), SQS_BATCH_LIMIT)]
            pending = [pair for missed in pool.map(send, chunks) for pair in missed]
            if not pending:
                break
    finally:
        # On Ctrl-C, chunks not started are dropped rather than sent while the command exits.
        pool.shutdown(wait=True, cancel_futures=True)
    return pending
