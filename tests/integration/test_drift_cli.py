"""`sml drift` against moto (in-process) and SQLite/MariaDB: the table, the report, exit codes, errors."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from drift_support import MODEL_NAME, MODEL_VERSION, build_manifest, draw_traffic, store_refusals, store_traffic
from moto import mock_aws

from sml.cli.main import main
from sml.core.db import create_db_engine
from sml.monitoring.store import load_drift_run
from sml.lifecycle.registry import ModelRegistry

WINDOW_END = datetime(2025, 3, 10, 6, tzinfo=timezone.utc)
END_OPTION = ["--end", "2025-03-10T06:00:00Z"]


@pytest.fixture
def local(migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A champion in moto's registry, category-mix-shifted traffic in the window, and the CLI's environment."""
    with mock_aws():
        bucket = f"sml-drift-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        topic_arn = boto3.client("sns", region_name="us-east-1").create_topic(Name=f"drift-{uuid.uuid4().hex[:12]}")["TopicArn"]
        registry = ModelRegistry(s3, boto3.client("ssm", region_name="us-east-1"), bucket=bucket, app_name="sml", model_name=MODEL_NAME)
        artifact = tmp_path / "model.joblib"
        artifact.write_bytes(b"drift reads only the manifest")
        registry.register(artifact, build_manifest(draw_traffic(10_000, seed=1)))
        registry.promote(MODEL_VERSION)
        engine = create_db_engine(migrated_db_url)
        store_traffic(engine, draw_traffic(3_000, seed=2, shift="category_mix"), start=WINDOW_END - timedelta(days=7), end=WINDOW_END)
        engine.dispose()
        environment = {
            "SML_STATE_DIR": str(tmp_path / "state"),
            "SML_DATABASE_URL": migrated_db_url,
            "SML_BUCKET": bucket,
            "SML_TOPIC_ARN": topic_arn,
            "SML_MODEL_NAME": "breast-cancer",  # --model picks the test's model instead
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield {"database_url": migrated_db_url, "state_dir": tmp_path / "state"}


def test_prints_the_verdict_table_and_writes_the_report(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = main(["drift", "--model", MODEL_NAME, "--window", "7d", *END_OPTION])

    output = capsys.readouterr().out
    engine = create_db_engine(local["database_url"])
    stored = load_drift_run(engine, MODEL_NAME, WINDOW_END)
    engine.dispose()
    assert stored is not None and stored.run["status"] == "DRIFT"
    report = local["state_dir"] / "reports" / MODEL_NAME / f"20250310T060000.000000Z-{stored.run['run_id']}.html"
    assert exit_code == 0
    assert "verdict: DRIFT (1 of 5 features drifted; 3000 rows in the window, 10000 in the training reference)" in output
    colour_line = next(line for line in output.splitlines() if "colour" in line and "chi2" in line)
    assert "DRIFT" in colour_line and "3000" in colour_line
    assert output.index("colour") < output.index("mean_shift")
    assert f"report: {report}" in output and "alert: published as SNS message" in output
    assert "<svg " in report.read_text(encoding="utf-8")


def test_prints_the_data_quality_verdict_with_its_violations_and_the_refused_requests(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    # The run's data quality (refused values included) was only in the report and the alert: the terminal said nothing.
    engine = create_db_engine(local["database_url"])
    store_refusals(engine, {"steady": {"out_of_range": 1}, "_request": {"unknown_feature": 1}}, at=WINDOW_END - timedelta(days=1), times=300)
    store_refusals(engine, {"_request": {"invalid_json": 1}}, at=WINDOW_END - timedelta(days=1), times=4)
    engine.dispose()

    assert main(["drift", "--model", MODEL_NAME, *END_OPTION]) == 0

    output = capsys.readouterr().out
    assert "data quality: VIOLATIONS (" in output
    assert "steady refused 9.09% > 1.00% (300 of 3300 values)" in output
    assert "requests refused for a problem that names no feature: 304 (unknown_feature 300, invalid_json 4)" in output


def test_fail_on_drift_turns_drift_into_exit_status_1(local: dict[str, Any]) -> None:
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION, "--fail-on-drift"]) == 1


def test_previous_reference_without_earlier_traffic_is_inconclusive_not_a_failure(
    local: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    exit_code = main(["drift", "--model", MODEL_NAME, *END_OPTION, "--reference", "previous", "--report-dir", str(tmp_path / "out"), "--fail-on-drift"])

    output = capsys.readouterr().out
    assert exit_code == 0
    assert "verdict: INCONCLUSIVE" in output and "0 in the previous reference" in output
    [report] = (tmp_path / "out" / MODEL_NAME).iterdir()
    assert report.name.startswith("20250310T060000.000000Z-") and report.name.endswith(".html")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--window", "seven days"], "sml drift: error: --window: 'seven days' is not a window length such as 7d, 12h, 90m or 2w"),
        (["--end", "next monday"], "sml drift: error: --end: 'next monday' is not an ISO 8601 time"),
        (["--end", "9999-12-31T00:00:00Z"], "sml drift: error: --end: 9999-12-31T00:00:00+00:00 is in the future (now "),
        (["--end", "0001-01-03T00:00:00Z"], "sml drift: error: a window of 7 days ending at 0001-01-03T00:00:00+00:00 would start before 0001-01-01"),
        (["--window", "999999999999d"], "sml drift: error: --window: '999999999999d' is longer than the 3652058 days from 0001-01-01 to 9999-12-31"),
        (["--window", "1e400d"], "sml drift: error: --window: '1e400d' is not a window length"),
        (["--end", "2025-03-10T06:00:60Z"], "sml drift: error: --end: '2025-03-10T06:00:60Z' has second 60, a leap second, which RFC 3339 allows only at 23:59:60 UTC"),
        (["--model", "Not A Name"], "sml drift: error: --model: 'Not A Name' is not a model name"),
        (["--model", "no-such-model"], "sml drift: error: model 'no-such-model' has no champion"),
    ],
)
def test_user_errors_exit_2_naming_the_option(local: dict[str, Any], capsys: pytest.CaptureFixture[str], arguments: list[str], message: str) -> None:
    exit_code = main(["drift", "--model", MODEL_NAME, *END_OPTION, *arguments])

    assert exit_code == 2
    assert capsys.readouterr().err.startswith(message)


def test_history_prints_past_runs_newest_first_and_a_features_effects(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_db_engine(local["database_url"])
    store_traffic(engine, draw_traffic(3_000, seed=3), start=WINDOW_END - timedelta(days=14), end=WINDOW_END - timedelta(days=7))
    engine.dispose()
    assert main(["drift", "--model", MODEL_NAME, "--end", "2025-03-03T06:00:00Z"]) == 0
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION]) == 0
    capsys.readouterr()

    assert main(["drift", "history", "--model", MODEL_NAME]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "2025-03-" in line]
    assert len(lines) == 2
    assert "2025-03-10 06:00" in lines[0] and "DRIFT" in lines[0] and "1 of 5" in lines[0]
    assert "2025-03-03 06:00" in lines[1] and "NO_DRIFT" in lines[1] and "0 of 5" in lines[1] and "OK" in lines[1]

    assert main(["drift", "history", "--model", MODEL_NAME, "--feature", "colour", "--limit", "1"]) == 0
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if "2025-03-" in line]
    assert [("chi2" in row, "missing_rate" in row) for row in rows] == [(True, False), (False, True)]
    assert all("2025-03-10" in row for row in rows) and "DRIFT" in rows[0]

    assert main(["drift", "history", "--model", MODEL_NAME, "--feature", "no_such_feature"]) == 0
    assert "no stored drift runs for feature 'no_such_feature'" in capsys.readouterr().out


def test_history_refuses_a_limit_below_one(local: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "history", "--limit", "0"]) == 2
    assert "--limit: must be at least 1, got 0" in capsys.readouterr().err


def test_version_checks_that_versions_rows_and_counts_the_others(local: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from test_drift_versions import NEW, NEW_VERSION, draw_new_traffic

    registry = ModelRegistry(
        boto3.client("s3", region_name="us-east-1"), boto3.client("ssm", region_name="us-east-1"),
        bucket=os.environ["SML_BUCKET"], app_name="sml", model_name=MODEL_NAME,
    )
    artifact = tmp_path / "new.joblib"
    artifact.write_bytes(b"drift reads only the manifest")
    registry.register(artifact, NEW)
    engine = create_db_engine(local["database_url"])
    store_traffic(engine, draw_new_traffic(2_000, seed=5), start=WINDOW_END - timedelta(days=2), end=WINDOW_END, version=NEW_VERSION)
    engine.dispose()

    assert main(["drift", "--model", MODEL_NAME, "--version", NEW_VERSION, *END_OPTION]) == 0
    output = capsys.readouterr().out
    assert "verdict: NO_DRIFT (0 of 4 features drifted; 2000 rows in the window" in output
    assert f"versions: {NEW_VERSION} since 2025-03-08T06:00:00Z; rows of other versions in the window, not tested: {MODEL_VERSION} 3000" in output

    assert main(["drift", "history", "--model", MODEL_NAME, "--version", NEW_VERSION]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if "2025-03-10" in line]
    assert NEW_VERSION in line and f"{MODEL_VERSION} 3000" in line
    assert main(["drift", "history", "--model", MODEL_NAME, "--version", MODEL_VERSION]) == 0
    assert f"no stored drift runs for model {MODEL_NAME!r} version {MODEL_VERSION!r}" in capsys.readouterr().out


@pytest.mark.parametrize("arguments", [["--version", "../v1"], ["history", "--version", "v 1"]])
def test_a_version_that_is_no_version_name_is_refused_naming_the_option(local: dict[str, Any], capsys: pytest.CaptureFixture[str], arguments: list[str]) -> None:
    assert main(["drift", *arguments, "--model", MODEL_NAME, *([] if arguments[0] == "history" else END_OPTION)]) == 2
    assert "--version: " in capsys.readouterr().err


def test_the_window_is_read_where_sml_window_source_says_as_the_drift_function_reads_it(
    local: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `sml drift` read the database whatever SML_WINDOW_SOURCE said. The archive here holds 1,000 of
    # the database's 3,000 rows of the window, so the count says which one was read.
    from drift_support import traffic_rows

    from sml.archive.store import ArchiveLocation, archive_rows

    bucket = os.environ["SML_BUCKET"]
    rows = traffic_rows(draw_traffic(3_000, seed=2, shift="category_mix"), start=WINDOW_END - timedelta(days=7), end=WINDOW_END)
    archive_rows(boto3.client("s3", region_name="us-east-1"), ArchiveLocation(bucket, "archive/"), predictions=rows[:1_000])
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", "archive/")
    monkeypatch.setenv("SML_WINDOW_SOURCE", "duckdb")
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION]) == 0
    assert "1000 rows in the window" in capsys.readouterr().out
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION, "--window-source", "database"]) == 0
    assert "3000 rows in the window" in capsys.readouterr().out
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION, "--window-source", "athena"]) == 2
    assert "SML_WINDOW_SOURCE: athena reads the archive's Glue table: set SML_ATHENA_WORKGROUP and SML_ATHENA_DATABASE too" in capsys.readouterr().err


def test_a_run_over_the_archive_warns_about_batches_not_yet_converted_as_query_and_rebuild_do(
    local: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from drift_support import traffic_rows

    from sml.archive.landing import put_landing
    from sml.archive.store import ArchiveLocation, archive_rows
    from sml.writer.batch import parse_records

    s3 = boto3.client("s3", region_name="us-east-1")
    location = ArchiveLocation(os.environ["SML_BUCKET"], "archive/")
    archive_rows(s3, location, predictions=traffic_rows(draw_traffic(200, seed=3), start=WINDOW_END - timedelta(days=7), end=WINDOW_END))
    body = '{"prediction_id": "01a25102-82bc-7543-a7a1-037257130a27", "label": "benign", "labelled_at": "2025-03-09T00:00:00Z", "event_type": "ground_truth", "schema_version": 1, "source": "test"}'
    put_landing(s3, location, parse_records([("m1", body)], WINDOW_END).events, WINDOW_END)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", "archive/")

    assert main(["drift", "--model", MODEL_NAME, *END_OPTION, "--window-source", "duckdb"]) == 0
    assert capsys.readouterr().err == (
        "warning: 1 batch landed but not yet converted into the archive; it is not in this run:"
        " run `sml compact` (it converts what it can and names the rest) or wait for the conversion schedule\n"
    )
    assert main(["drift", "--model", MODEL_NAME, *END_OPTION, "--window-source", "database"]) == 0
    assert capsys.readouterr().err == ""  # the database has them
