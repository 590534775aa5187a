"""The benchmarks' S3 on a local folder answers the listings the archive makes as S3 does."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

from sml.archive.store import ArchiveLocation, list_table

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def folder_s3():
    # bench/ holds scripts, not a package: its modules import each other by name.
    sys.path.insert(0, str(BENCH))
    try:
        from archive_bench import FolderS3
    finally:
        sys.path.remove(str(BENCH))
    return FolderS3


def test_a_listing_from_a_day_on_starts_after_the_key_given(folder_s3, tmp_path: Path) -> None:
    s3, location = folder_s3(tmp_path), ArchiveLocation("bench", "archive/")
    for day in ("2026-11-30", "2026-12-01", "2026-12-02"):
        s3.put_object(Bucket="bench", Key=f"archive/predictions/model=m/date={day}/compacted,v1,20261207T000000000000Z,0123456789abcdef.parquet", Body=b"x")

    listed = list_table(s3, location, "predictions", ["m"], since=date(2026, 12, 1))
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="archive/", StartAfter="archive/predictions/model=m/date=2026-12-02"))

    assert [item.day for item in listed] == [date(2026, 12, 1), date(2026, 12, 2)]
    assert [item["Key"].split("/")[3] for item in pages[0]["Contents"]] == ["date=2026-12-02"]
