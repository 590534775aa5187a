"""`sml compact`: convert what the writer landed, then merge each day's small archive objects into few large ones, dropping redelivered copies."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timedelta, timezone

from sml.cli.commands.rebuild import TABLE_CHOICES, archive_errors_named, archive_location, check_days, parse_day, parse_tables
from sml.core.errors import SmlError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="merge each day's small archive objects into large ones, dropping redelivered copies",
        description=(
            "First convert the archive's landing area (every batch the writer landed, whatever its day and table) into the "
            "archive's Parquet objects, as the archive function does on its schedule; a batch that cannot be converted is "
            "named, left for the next run, and the command exits non-zero after the rest. Then compact the event archive day by day (--since to --until, UTC, both included; default: yesterday): per table, "
            "model and model version, the writer's objects become objects of up to 256 MB, copies dropped, and only then are "
            "the merged objects deleted. A day already compacted is left alone, so it can run on a schedule and again."
        ),
    )
    parser.add_argument("--since", type=parse_day, help="first day, YYYY-MM-DD (default: yesterday, UTC)")
    parser.add_argument("--until", type=parse_day, help="last day, YYYY-MM-DD (default: --since)")
    parser.add_argument("--tables", default=",".join(TABLE_CHOICES), help=f"comma-separated tables (default: {','.join(TABLE_CHOICES)})")
    parser.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    from sml.archive.landing import convert_landing, landing_prefix
    from sml.archive.store import CompactionFailed, compact_days
    from sml.core.aws import aws_client
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    location = archive_location(settings)
    since = args.since or datetime.now(timezone.utc).date() - timedelta(days=1)
    until = args.until or since
    check_days(since, until, defaulted=None if args.since else "--since defaults to yesterday, UTC")  # before the conversion: bad options change nothing
    tables = parse_tables(args.tables)
    s3 = aws_client("s3", settings)
    # Each failure is printed below, once; without this the conversion's own log line would say it again on stderr.
    conversion_log = logging.getLogger(convert_landing.__module__)
    if not conversion_log.handlers:
        conversion_log.addHandler(logging.NullHandler())
    with archive_errors_named(location):
        converted = convert_landing(s3, location)
    batches, objects = len(converted.converted), len(converted.written)
    print(f"{landing_prefix(location)}: {batches} {'batch' if batches == 1 else 'batches'} converted, {converted.events:,} {'event' if converted.events == 1 else 'events'} in {objects} {'object' if objects == 1 else 'objects'}")
    for failure in converted.failures:
        print(f"not converted (left for the next run): {failure}", file=sys.stderr)
    failed = [_not_converted(converted, location)] if converted.failures else []
    not_compacted = 0
    try:
        with archive_errors_named(location):
            compacted = compact_days(s3, location, since, until, tables)
    except ValueError as exc:
        raise SmlError(str(exc)) from None
    except CompactionFailed as exc:
        compacted, not_compacted = exc.compacted, len(exc.failures)
        failed.append(str(exc))
    for partition, outcome in compacted:
        if outcome.merged:
            merged = len(outcome.merged)
            print(f"{partition.folder(location.prefix)}: {merged} {'object' if merged == 1 else 'objects'} merged into {len(outcome.written)}, {outcome.rows:,} rows")
    days = since.isoformat() if since == until else f"{since.isoformat()} to {until.isoformat()}"
    merged, archived = sum(1 for _, outcome in compacted if outcome.merged), len(compacted) + not_compacted
    print(
        f"{days}: {archived} partitions archived, {merged} compacted now, {len(compacted) - merged} already compacted, {not_compacted} not compacted"
        if archived else f"{days}: nothing archived"
    )
    if failed:
        raise SmlError("; ".join(failed))
    return 0


def _not_converted(converted, location) -> str:  # noqa: ANN001 - a ConversionOutcome and an ArchiveLocation, imported lazily
    from sml.archive.landing import landing_prefix

    count = len(converted.failures)
    return (
        f"{count} landing object{'' if count == 1 else 's'} not converted (named above); "
        f"{'it stays' if count == 1 else 'they stay'} under {location.uri(landing_prefix(location))} for the next run"
    )
