"""`sml query`: DuckDB over the archive (moto's S3), and Athena's calls against botocore's Stubber."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from archive_support import new_archive, s3  # noqa: F401 - fixture
from botocore.stub import Stubber

from sml.archive.query import AthenaTarget, archive_ctes, run_athena_query, run_duckdb_query, with_archive_tables
from sml.archive.store import ArchiveLocation, archive_rows
from sml.cli.main import main
from sml.core.errors import SmlError
from sml.core.events import build_prediction_event, serialise_event
from sml.writer.batch import parse_records

DAY = datetime(2026, 5, 10, 12, 0, tzinfo=timezone.utc)


def archive_predictions(s3: Any, location: ArchiveLocation, count: int, day: datetime, version: str = "v1", copies: int = 0) -> None:
    bodies = [
        serialise_event(
            build_prediction_event(
                model_name="breast-cancer",
                model_version=version,
                features={"mean radius": float(index), "grade": "ab"[index % 2]},
                prediction="benign",
                probabilities={"benign": 0.9, "malignant": 0.1},
                predicted_at=day,
            )
        )
        for index in range(count)
    ]
    rows = parse_records([(str(index), body) for index, body in enumerate(bodies)], day).rows
    archive_rows(s3, location, predictions=rows)
    if copies:
        archive_rows(s3, location, predictions=parse_records([(str(index), body) for index, body in enumerate(bodies[:copies])], day + timedelta(seconds=5)).rows)


def test_duckdb_answers_over_the_archive_without_copies_and_only_for_the_days_asked(s3: Any) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 10, DAY, copies=4)
    archive_predictions(s3, location, 3, DAY + timedelta(days=1), version="v2")
    result = run_duckdb_query(s3, location, "SELECT model_version, count(*) AS n, sum(f_mean_20_radius) AS total FROM predictions GROUP BY 1 ORDER BY 1")
    assert result.to_pylist() == [{"model_version": "v1", "n": 10, "total": 45.0}, {"model_version": "v2", "n": 3, "total": 3.0}]
    one_day = run_duckdb_query(s3, location, 'SELECT "date", model, count(*) AS n FROM predictions GROUP BY ALL', since=DAY.date(), until=DAY.date())
    assert one_day.to_pylist() == [{"date": "2026-05-10", "model": "breast-cancer", "n": 10}]
    merged = run_duckdb_query(s3, location, "WITH v AS (SELECT DISTINCT model_version FROM predictions) SELECT count(*) AS versions FROM v")
    assert merged.to_pylist() == [{"versions": 2}]


def test_a_query_duckdb_refuses_or_an_empty_range_is_one_line_naming_the_problem(s3: Any) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 2, DAY)
    with pytest.raises(SmlError, match=r"^query: .*no_such_column"):
        run_duckdb_query(s3, location, "SELECT no_such_column FROM predictions")
    with pytest.raises(SmlError, match="nothing archived in s3://.*from 2027-01-01 to today"):
        run_duckdb_query(s3, location, "SELECT 1", since=date(2027, 1, 1))


def test_an_archived_object_duckdb_cannot_read_is_named_by_its_s3_key_not_a_temporary_path(s3: Any) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 2, DAY)
    broken = f"{location.prefix}predictions/model=breast-cancer/date=2026-05-10/batch,v2,20260510T130000000000Z,0123456789abcdef.parquet"
    s3.put_object(Bucket=location.bucket, Key=broken, Body=b"not parquet")

    with pytest.raises(SmlError) as refused:
        run_duckdb_query(s3, location, "SELECT count(*) FROM predictions")

    assert f"'{location.uri(broken)}'" in str(refused.value) and "sml-query-" not in str(refused.value)


def test_a_table_with_nothing_archived_in_the_range_is_empty_with_its_columns_as_in_the_database(s3: Any) -> None:
    # No label archived yet: the usual accuracy question joins predictions to ground_truth, which must answer
    # "no labelled rows", as the database does, not "Table with name ground_truth does not exist".
    location = new_archive(s3)
    archive_predictions(s3, location, 3, DAY)
    joined = run_duckdb_query(
        s3, location,
        "SELECT count(p.prediction_id) AS predictions, count(g.label) AS labelled FROM predictions p "
        "LEFT JOIN ground_truth g USING (prediction_id) WHERE p.model = 'breast-cancer'",
    )
    assert joined.to_pylist() == [{"predictions": 3, "labelled": 0}]
    refusals = run_duckdb_query(s3, location, "SELECT refusal_id, field_name, refused_count, refused_at, model, \"date\" FROM predict_refusals")
    assert refusals.num_rows == 0 and refusals.column_names == ["refusal_id", "field_name", "refused_count", "refused_at", "model", "date"]


def test_a_question_may_open_with_comments_and_several_statements_are_refused_by_name(s3: Any) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 4, DAY)
    commented = "-- versions seen\n/* one row each */ WITH v AS (SELECT DISTINCT model_version FROM predictions) SELECT count(*) AS n FROM v"
    assert run_duckdb_query(s3, location, commented).to_pylist() == [{"n": 1}]
    assert with_archive_tables("-- note\nwith x AS (SELECT 1) SELECT * FROM x", "t AS (SELECT 2)") == "WITH t AS (SELECT 2),\nx AS (SELECT 1) SELECT * FROM x"
    with pytest.raises(SmlError, match=r"^query: one statement at a time, got 2"):
        run_duckdb_query(s3, location, "SELECT 1; SELECT count(*) FROM predictions")
    assert run_duckdb_query(s3, location, "SELECT count(*) AS n FROM predictions WHERE prediction <> ';';").to_pylist() == [{"n": 4}]


def test_the_model_column_is_text_whatever_the_models_name_as_on_athena(s3: Any) -> None:
    # DuckDB guesses a partition's type from the folder names: a model named "2024" gave a BIGINT column (Glue's is a string).
    location = new_archive(s3)
    rows = parse_records([("0", serialise_event(build_prediction_event(
        model_name="2024", model_version="v1", features={"a": 1.0}, prediction="yes", predicted_at=DAY)))], DAY).rows
    archive_rows(s3, location, predictions=rows)
    result = run_duckdb_query(s3, location, "SELECT model, typeof(model) AS type, model || '/' || \"date\" AS folder FROM predictions")
    assert result.to_pylist() == [{"model": "2024", "type": "VARCHAR", "folder": "2024/2026-05-10"}]


def test_sml_query_prints_or_writes_csv_and_parquet(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 5, DAY)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    assert main(["query", "SELECT f_grade, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr().out
    assert "f_grade" in out and "2 rows" in out
    assert main(["query", "SELECT prediction_id, f_mean_20_radius FROM predictions", "--csv", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 5
    assert main(["query", "SELECT * FROM predictions", "--parquet", str(tmp_path / "out.parquet"), "--since", "2026-05-10"]) == 0
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 5
    assert main(["query", "SELECT 1", "--since", "2026-05-11", "--until", "2026-05-10"]) == 2
    assert "--until 2026-05-10 is before --since 2026-05-11" in capsys.readouterr().err
    assert main(["query", "SELECT 1", "--engine", "athena"]) == 2
    assert "needs SML_ATHENA_WORKGROUP" in capsys.readouterr().err


def test_a_result_the_file_format_cannot_hold_names_the_column_and_leaves_the_file_as_it_was(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 2, DAY)
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("kept\n")
    assert main(["query", "SELECT model, list(prediction_id) AS ids FROM predictions GROUP BY 1", "--csv", str(earlier)]) == 2
    err = capsys.readouterr().err
    assert "--csv" in err and "column ids (list<" in err and "Traceback" not in err
    assert earlier.read_text() == "kept\n" and sorted(path.name for path in tmp_path.glob("*.csv")) == ["earlier.csv"]
    assert main(["query", "SELECT max(stored_at) - min(stored_at) AS spread FROM predictions", "--parquet", str(tmp_path / "out.parquet")]) == 2
    assert "--parquet" in capsys.readouterr().err and not (tmp_path / "out.parquet").exists()


def test_sml_compact_merges_the_days_asked_for_and_a_second_run_does_nothing(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    location = new_archive(s3)
    archive_predictions(s3, location, 6, DAY, copies=2)
    archive_predictions(s3, location, 3, DAY + timedelta(days=1))
    monkeypatch.setenv("SML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SML_BUCKET", location.bucket)
    monkeypatch.setenv("SML_ARCHIVE_PREFIX", location.prefix)
    assert main(["compact", "--since", "2026-05-10", "--tables", "predictions"]) == 0
    assert "model=breast-cancer/date=2026-05-10/: 2 objects merged into 1, 6 rows" in capsys.readouterr().out
    assert main(["compact", "--since", "2026-05-10", "--until", "2026-05-11"]) == 0
    out = capsys.readouterr().out
    assert "date=2026-05-10" not in out and "date=2026-05-11/: 1 object merged into 1, 3 rows" in out
    assert run_duckdb_query(s3, location, "SELECT count(*) AS n FROM predictions").to_pylist() == [{"n": 9}]
    assert main(["compact", "--tables", "labels"]) == 2
    assert "--tables: unknown table 'labels'" in capsys.readouterr().err


def test_the_archive_tables_go_in_front_of_the_question_or_into_its_own_with() -> None:
    ctes = archive_ctes({"predictions": "src"}, date(2026, 1, 1), date(2026, 1, 7), dialect="athena")
    assert ctes == (
        "predictions AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY \"prediction_id\" ORDER BY stored_at) AS archive_copy "
        "FROM src WHERE \"date\" >= '2026-01-01' AND \"date\" <= '2026-01-07') WHERE archive_copy = 1)"
    )
    assert with_archive_tables("SELECT 1", "t AS (SELECT 2)") == "WITH t AS (SELECT 2)\nSELECT 1"
    assert with_archive_tables("  with x AS (SELECT 1) SELECT * FROM x", "t AS (SELECT 2)") == "WITH t AS (SELECT 2),\nx AS (SELECT 1) SELECT * FROM x"
    with pytest.raises(SmlError, match="WITH RECURSIVE"):
        with_archive_tables("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r", "t AS (SELECT 2)")


# --------------------------------------------------------------------------------------------
# Athena, against the documented response shapes (botocore validates them against the service model)

TARGET = AthenaTarget(workgroup="sml-archive", database="sml_archive")
COLUMNS = [
    {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "model_version", "Label": "model_version", "Type": "varchar", "Precision": 2147483647, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": True},
    {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "n", "Label": "n", "Type": "bigint", "Precision": 19, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": False},
    {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "mean", "Label": "mean", "Type": "double", "Precision": 17, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": False},
]


def execution(state: str, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "SubmissionDateTime": DAY}
    if reason:
        status["StateChangeReason"] = reason
    return {"QueryExecution": {"QueryExecutionId": "q-1", "Status": status, "WorkGroup": TARGET.workgroup, "EngineVersion": {"SelectedEngineVersion": "Athena engine version 3", "EffectiveEngineVersion": "Athena engine version 3"}}}


def row(*values: str | None) -> dict[str, Any]:
    return {"Data": [{} if value is None else {"VarCharValue": value} for value in values]}


def test_athena_runs_in_the_workgroup_polls_until_done_and_reads_every_page() -> None:
    athena = boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(athena)
    sql = "SELECT model_version, count(*) AS n, avg(f_x) AS mean FROM predictions GROUP BY 1"
    expected_query = with_archive_tables(
        sql, archive_ctes({table: f'"sml_archive"."{table}"' for table in ("predictions", "ground_truth", "predict_refusals")}, date(2026, 5, 1), None, dialect="athena")
    )
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": "q-1"},
        {"QueryString": expected_query, "WorkGroup": TARGET.workgroup, "QueryExecutionContext": {"Database": TARGET.database}},
    )
    stubber.add_response("get_query_execution", execution("QUEUED"), {"QueryExecutionId": "q-1"})
    stubber.add_response("get_query_execution", execution("RUNNING"), {"QueryExecutionId": "q-1"})
    stubber.add_response("get_query_execution", execution("SUCCEEDED"), {"QueryExecutionId": "q-1"})
    stubber.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [row("model_version", "n", "mean"), row("v1", "10", "4.5")], "ResultSetMetadata": {"ColumnInfo": COLUMNS}}, "NextToken": "page-2", "UpdateCount": 0},
        {"QueryExecutionId": "q-1"},
    )
    stubber.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [row("v2", "3", None)], "ResultSetMetadata": {"ColumnInfo": COLUMNS}}, "UpdateCount": 0},
        {"QueryExecutionId": "q-1", "NextToken": "page-2"},
    )
    waits: list[float] = []
    with stubber:
        result = run_athena_query(athena, TARGET, sql, since=date(2026, 5, 1), sleep=waits.append)
    stubber.assert_no_pending_responses()
    assert result.to_pylist() == [{"model_version": "v1", "n": 10, "mean": 4.5}, {"model_version": "v2", "n": 3, "mean": None}]
    assert waits == [1.0, 1.0]


def test_athena_columns_of_one_name_all_come_back_as_duckdb_gives_them() -> None:
    # A join's SELECT * (stored_at and date of both tables) names columns twice: building the result from a dict of
    # names kept only the last, so the labels' stored_at was shown as the predictions'.
    athena = boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(athena)
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
    stubber.add_response("get_query_execution", execution("SUCCEEDED"), {"QueryExecutionId": "q-1"})
    varchar = {**COLUMNS[0], "Name": "stored_at", "Label": "stored_at"}
    columns = [{**COLUMNS[1], "Name": "n", "Label": "n"}, varchar, varchar]
    stubber.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [row("n", "stored_at", "stored_at"), row("1", "2026-05-10 12:00:00.000", "2026-05-11 08:00:00.000")],
                       "ResultSetMetadata": {"ColumnInfo": columns}}, "UpdateCount": 0},
        {"QueryExecutionId": "q-1"},
    )
    with stubber:
        result = run_athena_query(athena, TARGET, "SELECT 1 AS n, p.stored_at, g.stored_at FROM predictions p JOIN ground_truth g USING (prediction_id)", sleep=lambda _: None)
    assert result.column_names == ["n", "stored_at", "stored_at"]
    assert [column.to_pylist() for column in result.columns] == [[1], ["2026-05-10 12:00:00.000"], ["2026-05-11 08:00:00.000"]]


def test_a_failed_athena_query_is_one_line_with_athenas_reason() -> None:
    athena = boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(athena)
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
    stubber.add_response("get_query_execution", execution("FAILED", "Query exhausted resources at this scale factor; bytes scanned limit exceeded"))
    with stubber, pytest.raises(SmlError, match="Athena query q-1 FAILED: Query exhausted resources.*bytes scanned limit exceeded"):
        run_athena_query(athena, TARGET, "SELECT 1", sleep=lambda seconds: None)
