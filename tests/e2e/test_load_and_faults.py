"""The local stack under load and faults, with the real handlers, over HTTP on 127.0.0.1.

A bounded version of ``bench/local_stack_bench.py``: the same harness (``bench/load_and_faults.py``)
with fewer requests. Durations are bounds on waiting, never speed claims.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.mysql, pytest.mark.xdist_group("load")]

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    # bench/ holds scripts, not a package: its modules import each other by plain name.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("load_and_faults")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def mysql_server(mysql_url: str) -> str:
    """The server of the per-test database (the harness makes and drops its own database on it)."""
    return mysql_url


def test_predict_and_the_writer_driven_hard_together_answer_no_5xx_and_each_emit_only_their_own_metrics(harness: ModuleType, mysql_server: str, tmp_path: Path) -> None:
    plan = harness.LoadPlan(requests=300, rows_per_request=5, clients=8, poison_share=0.0, faults=(), batch_size=10, batching_window_s=0,
                            mysql_server_url=mysql_server)

    result = harness.run_load(plan, work_dir=tmp_path, say=lambda line: None)

    assert result.status_counts == {200: 300}, result.http_errors
    assert result.settled
    assert (result.stored, result.lost, result.duplicates, result.unexpected_rows) == (1500, 0, 0, 0)
    assert (result.archived, result.archive_missing, result.archive_unexpected) == (1500, 0, 0)
    assert result.landing_left == 0 and result.archive_conversion.get("failures") == [], result.archive_conversion
    # one metrics line per predict invocation, and no line of either function carries the other's metrics
    assert result.metric_lines["PredictionsServed"] == 300
    assert result.foreign_metric_lines == []
    assert result.metric_errors == []


def test_under_faults_every_answered_prediction_is_stored_once_or_in_the_dlq_or_logged_as_a_capture_miss(harness: ModuleType, mysql_server: str, tmp_path: Path) -> None:
    plan = harness.LoadPlan(requests=400, rows_per_request=5, clients=4, rate_rps=10, poison_share=0.01, fault_s=10,
                            faults=("database", "queue", "writer-kill"), mysql_server_url=mysql_server, settle_limit_s=180)

    result = harness.run_load(plan, work_dir=tmp_path, say=lambda line: None)

    assert result.server_errors == 0, result.http_errors
    assert [fault["fault"] for fault in result.faults] == ["database", "queue", "writer-kill"]
    assert result.faults[2]["killed_pid"] is not None
    assert result.settled
    assert result.answered == 5 * result.requests_ok
    assert result.lost == 0
    assert result.duplicates == 0 and result.unexpected_rows == 0
    # The event archive (S3, Parquet) holds every stored prediction and nothing else; redelivered copies are dropped where it is read.
    # After one more conversion, as the archive function's schedule does: the writer's landing area is then empty.
    assert result.landing_left == 0 and result.archive_conversion.get("failures") == [], result.archive_conversion
    assert result.archive_missing == 0 and result.archive_unexpected == 0 and result.archived == result.stored
    assert result.stored + result.in_dlq + result.capture_missed == result.answered
    assert result.capture_missed > 0  # the queue outage really cut predict off (and was logged whole)
    assert result.poison_sent == 20 and result.poison_in_dlq == 20
    assert result.dlq_without_reason == 0
    assert result.metrics_clean
