"""`sml rebuild`: restore the database tables from the event archive."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import Any

from sml.core.errors import SmlError

TABLE_CHOICES = ("predictions", "ground_truth", "predict_refusals")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rebuild",
        help="restore the database tables from the event archive",
        description=(
            "Insert the archived events of the days --since to --until (UTC, both included) into the database with the "
            "writer's idempotent inserts: rows already stored are skipped, the latest label wins, so it can run over a "
            "table that still holds some rows, and again. Missing tables are created first (sml db migrate). The archive "
            "is s3://SML_BUCKET/SML_ARCHIVE_PREFIX (the local stack's when one is up). Batches the writer landed that the "
            "conversion has not yet turned into Parquet are not rebuilt (a warning counts them): run `sml compact` first."
        ),
    )
    parser.add_argument("--since", required=True, type=parse_day, help="first day, YYYY-MM-DD")
    parser.add_argument("--until", type=parse_day, help="last day, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument(
        "--tables", default=",".join(TABLE_CHOICES), help=f"comma-separated tables to restore (default: {','.join(TABLE_CHOICES)})"
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL of the database to restore into (default: the configured one)")
    parser.set_defaults(run=run_rebuild)


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` day; an ``argparse`` error otherwise (argparse names the option)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-01-31") from None


def check_days(since: date, until: date, *, defaulted: str | None = None) -> None:
    """Refuse ``until`` before ``since``, before anything is read or written.

    :param defaulted: the option the user left out, as ``"--since defaults to yesterday, UTC"``,
        so the message does not name a day as if the user had given it.
    :raises SmlError: ``until`` is before ``since``, naming both options.
    """
    from sml.archive.layout import check_range

    try:
        check_range(since, until)
    except ValueError as exc:
        raise SmlError(f"{exc} ({defaulted})" if defaulted else str(exc)) from None


def parse_tables(text: str) -> list[str]:
    """The tables of a comma-separated ``--tables``.

    :raises SmlError: a name is not one of :data:`TABLE_CHOICES`, or none is given.
    """
    tables = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in tables if name not in TABLE_CHOICES]
    if unknown:
        raise SmlError(f"--tables: unknown table {unknown[0]!r} (expected some of {', '.join(TABLE_CHOICES)})")
    if not tables:
        raise SmlError(f"--tables: no table given (expected some of {', '.join(TABLE_CHOICES)})")
    return tables


def archive_location(settings):  # noqa: ANN001, ANN201 - LocalSettings -> ArchiveLocation, imported lazily
    """Where the archive is, from the settings (``SML_BUCKET``, ``SML_ARCHIVE_PREFIX`` or the local stack's).

    :raises SmlError: no archive prefix is configured.
    """
    from sml.archive.store import ArchiveLocation

    if settings.archive_prefix is None:
        raise SmlError("SML_ARCHIVE_PREFIX is not set and no local stack is up: where is the archive? (e.g. SML_ARCHIVE_PREFIX=archive/)")
    return ArchiveLocation(settings.bucket, settings.archive_prefix)


@contextmanager
def archive_errors_named(location: Any) -> Iterator[None]:  # location: an ArchiveLocation
    """S3 failures while reading or writing the archive as one line naming it, not a traceback.

    :raises SmlError: S3 refused (its code and message) or could not be reached (no credentials,
        a stack that is gone).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SmlError(f"{location.uri(location.prefix)}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise SmlError(f"{location.uri(location.prefix)}: {exc}; start the local stack with `sml up` or configure AWS credentials and region") from None


def warn_unconverted(s3: Any, location: Any, left_out: str) -> None:  # location: an ArchiveLocation
    """Warn on stderr when batches wait in the archive's landing area (one list call; silent when it cannot list).

    :param left_out: what they are missing from, e.g. ``"this answer"``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from sml.archive.landing import count_landing

    try:
        count, more = count_landing(s3, location)
    except (BotoCoreError, ClientError):  # a reader allowed the tables' objects only: the question still gets its answer
        return
    if count:
        one = count == 1 and not more
        print(
            f"warning: {count}{' or more' if more else ''} {'batch' if one else 'batches'} landed but not yet converted into the archive;"
            f" {'it is' if one else 'they are'} not in {left_out}: run `sml compact` (it converts what it can and names the rest)"
            " or wait for the conversion schedule",
            file=sys.stderr,
        )


def run_rebuild(args: argparse.Namespace) -> int:
    from sml.archive.rebuild import rebuild_tables
    from sml.core.aws import aws_client
    from sml.core.db import database_engine_from_settings
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    location = archive_location(settings)
    tables = parse_tables(args.tables)
    until = args.until or datetime.now(timezone.utc).date()
    check_days(args.since, until, defaulted=None if args.until else "--until defaults to today, UTC")
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    s3 = aws_client("s3", settings)
    warn_unconverted(s3, location, "this rebuild")
    engine = database_engine_from_settings(settings)
    try:
        with archive_errors_named(location):
            outcome = rebuild_tables(engine, s3, location, args.since, until, tables=tables)
    except ValueError as exc:
        raise SmlError(str(exc)) from None
    finally:
        engine.dispose()
    for table, rebuilt in outcome.items():
        rows = f" ({rebuilt.rows} rows)" if rebuilt.rows != rebuilt.events else ""
        skipped = "already stored or replaced by a later one" if table == "ground_truth" else "already stored"
        print(
            f"{table}: {rebuilt.events} archived {'event' if rebuilt.events == 1 else 'events'}{rows} in {rebuilt.objects} {'object' if rebuilt.objects == 1 else 'objects'}, {rebuilt.inserted} inserted, "
            f"{rebuilt.skipped} {skipped}" + (f", {rebuilt.rejected} rejected by the database" if rebuilt.rejected else "")
        )
    return 1 if any(rebuilt.rejected for rebuilt in outcome.values()) else 0
