"""`sml compact`: merge each day's small archive objects into few large ones, dropping redelivered copies."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from sml.cli.commands.rebuild import TABLE_CHOICES, archive_location, parse_day, parse_tables
from sml.core.errors import SmlError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="merge each day's small archive objects into large ones, dropping redelivered copies",
        description=(
            "Compact the event archive day by day (--since to --until, UTC, both included; default: yesterday): per table, "
            "model and model version, the writer's objects become objects of up to 256 MB, copies dropped, and only then are "
            "the merged objects deleted. A day already compacted is left alone, so it can run on a schedule and again."
        ),
    )
    parser.add_argument("--since", type=lambda text: parse_day(text, "--since"), help="first day, YYYY-MM-DD (default: yesterday, UTC)")
    parser.add_argument("--until", type=lambda text: parse_day(text, "--until"), help="last day, YYYY-MM-DD (default: --since)")
    parser.add_argument("--tables", default=",".join(TABLE_CHOICES), help=f"comma-separated tables (default: {','.join(TABLE_CHOICES)})")
    parser.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    from sml.archive.store import CompactionFailed, compact_days
    from sml.core.aws import aws_client
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    location = archive_location(settings)
    since = args.since or datetime.now(timezone.utc).date() - timedelta(days=1)
    until = args.until or since
    tables = parse_tables(args.tables)
    failed = None
    try:
        compacted = compact_days(aws_client("s3", settings), location, since, until, tables)
    except ValueError as exc:
        raise SmlError(str(exc)) from None
    except CompactionFailed as exc:
        compacted, failed = exc.compacted, exc
    for partition, outcome in compacted:
        if outcome.merged:
            print(f"{partition.folder(location.prefix)}: {len(outcome.merged)} objects merged into {len(outcome.written)}, {outcome.rows:,} rows")
    if failed is not None:
        raise SmlError(str(failed))
    return 0
