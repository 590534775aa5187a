"""The archive's compaction function: the daily rule's event compacts the day before it, as `sml compact` does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from archive_support import new_archive, s3  # noqa: F401 - fixtures
from writer_support import label_body

from functions.drift import compact
from sml.archive.layout import Partition
from sml.archive.store import archive_rows, list_partition
from sml.core.events import build_prediction_event, serialise_event
from sml.core.settings import SettingsError
from sml.local.lambda_context import new_lambda_context
from sml.writer.batch import parse_records

DAY = datetime(2026, 6, 2, 15, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_container() -> Iterator[None]:
    for cached in (compact.archive_location, compact.s3_client):
        cached.cache_clear()
    yield
    for cached in (compact.archive_location, compact.s3_client):
        cached.cache_clear()


def test_the_daily_event_compacts_the_day_before_it_and_leaves_the_others(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    location = new_archive(s3)
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    for day in (DAY, DAY + timedelta(days=1)):
        for batch in range(3):
            stored_at = day + timedelta(minutes=batch)
            bodies = [serialise_event(build_prediction_event(model_name="breast-cancer", model_version="v1", features={"a": float(index)},
                                                             prediction="benign", predicted_at=day)) for index in range(4)]
            parsed = parse_records([(str(index), body) for index, body in enumerate(bodies)] + [("l", label_body(str(uuid.uuid4()), labelled_at=day))], stored_at)
            archive_rows(s3, location, predictions=parsed.rows, ground_truth=parsed.label_events)

    result = compact.handler({"time": (DAY + timedelta(days=1)).replace(hour=0, minute=45).isoformat()}, new_lambda_context("compact", region="us-east-1", timeout_s=900))

    assert (result["day"], result["objects_merged"], result["objects_written"], result["rows"]) == ("2026-06-02", 6, 2, 15)
    compacted = list_partition(s3, location, Partition("predictions", DAY.date(), "breast-cancer"))
    assert [item.compacted for item in compacted] == [True]
    untouched = list_partition(s3, location, Partition("predictions", (DAY + timedelta(days=1)).date(), "breast-cancer"))
    assert [item.compacted for item in untouched] == [False] * 3
    again = compact.handler({"time": (DAY + timedelta(days=1)).isoformat()}, new_lambda_context("compact", region="us-east-1", timeout_s=900))
    assert again["objects_merged"] == 0


def test_without_the_archive_prefix_the_function_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_BUCKET", "bucket")
    monkeypatch.delenv("SML_ARCHIVE_PREFIX", raising=False)
    with pytest.raises(SettingsError, match="SML_ARCHIVE_PREFIX: required: the archive to compact"):
        compact.handler({"time": DAY.isoformat()}, new_lambda_context("compact", region="us-east-1", timeout_s=900))
