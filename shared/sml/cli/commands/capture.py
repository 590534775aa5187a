"""`sml capture resend`: send events that predict logged during a queue outage back to the queue."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capture", help="recover prediction events predict could not queue", description="Prediction capture commands."
    )
    commands = parser.add_subparsers(title="capture commands", dest="capture_command", metavar="CAPTURE_COMMAND")
    commands.required = True
    resend = commands.add_parser(
        "resend",
        help="re-send the events of capture_miss log records to the events queue",
        description=(
            "Read a predict log export (JSON lines from sml up or `aws logs tail`, a Logs Insights export, or the "
            "JSON of `aws logs filter-log-events`), take every capture_miss record's message_body, check it against "
            "the event contract and send it unchanged to the events queue. Safe to repeat: the writer skips "
            "prediction_ids and refusal_ids it has stored (prediction and refusal events are both resent)."
        ),
    )
    resend.add_argument("--log-file", type=Path, required=True, help="the log export to read")
    resend.add_argument("--queue-url", help="the events queue (default: $SML_QUEUE_URL or the local stack's)")
    resend.add_argument("--dry-run", action="store_true", help="only count what would be sent")
    resend.set_defaults(run=run_resend)


def run_resend(args: argparse.Namespace) -> int:
    from sml.core.aws import aws_client
    from sml.predict.capture_recovery import missed_events_from_log, resend_missed_events
    from sml.core.errors import SmlError
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    try:
        text = args.log_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SmlError(f"--log-file {args.log_file}: cannot read it ({exc.strerror})") from None
    found = missed_events_from_log(text, source=str(args.log_file))
    for problem in found.problems:
        print(f"skipped {problem}")
    if not found.bodies:
        print(f"no capture_miss records with a valid event in {args.log_file}")
        return 1 if found.problems else 0
    if args.dry_run:
        print(f"would send {len(found.bodies)} event(s) from {args.log_file}")
        return 0
    settings = load_settings(LocalSettings, stack=read_stack_file())
    queue_url = args.queue_url or settings.queue_url
    if not queue_url:
        raise SmlError("no events queue: pass --queue-url, set SML_QUEUE_URL or start `sml up`")
    misses = resend_missed_events(aws_client("sqs", settings), queue_url, found.bodies)
    print(f"sent {len(found.bodies) - len(misses)} of {len(found.bodies)} event(s) to {queue_url}")
    for miss in misses:
        print(f"not sent {miss.event_id}: {miss.reason}")
    return 1 if misses or found.problems else 0
