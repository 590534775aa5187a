"""Helpers of the archive tests: a moto bucket for the archive, and archived rows read back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy.engine import Engine

from sml.archive.landing import convert_landing, land_acknowledged
from sml.archive.parquet import DEDUPLICATION_KEY, read_parquet_bytes, table_rows
from sml.archive.store import ArchiveLocation, iter_objects
from sml.core.db import create_db_engine
from sml.writer.batch import BatchOutcome, write_batch


@pytest.fixture
def s3() -> Iterator[Any]:
    """An S3 client of moto's in-process AWS."""
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    """An engine on the test's migrated database."""
    engine = create_db_engine(migrated_db_url)
    yield engine
    engine.dispose()


EARLY, LATE = date(2026, 3, 1), date(2026, 12, 31)  # the days the tests write (listing goes day by day)


def new_archive(s3: Any) -> ArchiveLocation:
    bucket = f"sml-archive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return ArchiveLocation(bucket, "archive/")


def archived_rows(s3: Any, location: ArchiveLocation, table: str, since: date = EARLY, until: date = LATE) -> list[dict[str, Any]]:
    """Every archived row of ``table``, copies included."""
    return [row for _, data in iter_objects(s3, location, table, since, until) for row in table_rows(table, read_parquet_bytes(data))]


def event_keys(table: str, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(row[name] for name in DEDUPLICATION_KEY[table]) for row in rows)


def write_and_archive(engine: Engine, s3: Any, location: ArchiveLocation, records: list[tuple[str, str]], stored_at: datetime | None = None) -> BatchOutcome:
    """What the writer Lambda does with a batch when the archive is on, then the conversion step:
    store the records, land those stored, and turn the landing object into the archive's Parquet objects."""
    stored_at = stored_at or datetime.now(timezone.utc)
    outcome = write_batch(engine, records, stored_at=stored_at)
    land_acknowledged(s3, location, outcome.events, (failure.message_id for failure in outcome.failures), stored_at)
    converted = convert_landing(s3, location)
    assert converted.failures == [], converted.failures
    return outcome
