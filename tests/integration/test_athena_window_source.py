"""The weekly run's window through Athena: its SQL run on DuckDB over the same Parquet gives the
database's summaries and verdicts, and its Athena calls against botocore's Stubber."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from archive_support import engine, new_archive, s3  # noqa: F401 - fixtures
from botocore.stub import Stubber
from drift_support import FEATURES, MODEL_NAME, MODEL_VERSION, WINDOW, WINDOW_END, build_manifest, draw_traffic
from sqlalchemy.engine import Engine
from test_archive_window_source import differences, store_both

from sml.archive.athena_window import (
    AthenaWindowSource,
    athena_refusals_and_versions,
    athena_window_summaries,
    column_types_query,
    refusals_query,
    versions_query,
    window_queries,
)
from sml.archive.layout import PREDICTIONS_TABLE, REFUSALS_TABLE
from sml.archive.parquet import REFUSAL_COLUMNS
from sml.archive.query import AthenaTarget, download_days, duckdb_connection, read_parquet_source
from sml.archive.store import ArchiveLocation, archive_rows
from sml.core.errors import SmlError
from sml.core.events import REQUEST_FIELD, build_refusal_event
from sml.lifecycle.manifest import FeatureSpec
from sml.monitoring.data_quality.checks import read_refused_counts
from sml.monitoring.job import DriftJobConfig, run_drift_job
from sml.monitoring.sources import DatabaseWindowSource, SourceWindow
from sml.monitoring.summaries import CategoricalGrid, NumericGrid, SummaryReference
from sml.monitoring.windows import TimeWindow, VersionRows, read_window_summaries, window_versions
from sml.writer.batch import insert_refusal_rows, refusal_rows

DATABASE = "sml_archive"
TARGET = AthenaTarget("sml-archive", DATABASE)
# Trino's functions DuckDB lacks, as Trino documents them: width_bucket(x, bins) is the number of
# bins <= x (bins sorted ascending; MathFunctions.widthBucket's binary search), is_nan and is_infinite.
TRINO_FUNCTIONS = (
    "CREATE MACRO width_bucket(x, bins) AS len(list_filter(bins, lambda b: b <= x))",
    "CREATE MACRO is_nan(x) AS isnan(x)",
    "CREATE MACRO is_infinite(x) AS isinf(x)",
)


@dataclass
class DuckDBAsAthena:
    """The Glue table as DuckDB sees it: a view named like it over the archive's files, in UTC, with Trino's functions."""

    connection: Any
    name: str = "athena"
    max_bytes: int = 262_144

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql).fetchall()

    def read_summaries(self, model_name: str, window: TimeWindow, features: Sequence[FeatureSpec], references: Sequence[SummaryReference], *, version: str | None = None) -> Any:
        return athena_window_summaries(self.run, DATABASE, model_name, window, features, references, version=version, dialect="duckdb", max_bytes=self.max_bytes)

    def read_window(self, manifest: Any, window: TimeWindow, references: Sequence[SummaryReference], *, quality: bool = True) -> SourceWindow:
        """As :meth:`AthenaWindowSource.read_window`, the SQL in DuckDB's dialect."""
        refused, versions = athena_refusals_and_versions(self.run, DATABASE, manifest.model_name, window, dialect="duckdb")
        summaries = self.read_summaries(manifest.model_name, window, manifest.features, references, version=manifest.version)
        return SourceWindow(summaries, refused=refused, versions=tuple(versions))


@pytest.fixture
def as_athena(s3: Any) -> Iterator[tuple[ArchiveLocation, Any]]:
    location = new_archive(s3)
    with tempfile.TemporaryDirectory(prefix="sml-athena-") as work:

        def open_archive() -> DuckDBAsAthena:
            copy = download_days(s3, location, Path(work) / "archive", None, None, tables=[PREDICTIONS_TABLE, REFUSALS_TABLE])
            connection = duckdb_connection(Path(work))
            connection.execute("SET TimeZone = 'UTC'")
            for statement in TRINO_FUNCTIONS:
                connection.execute(statement)
            connection.execute(f'CREATE SCHEMA "{DATABASE}"')
            connection.execute(f'CREATE VIEW "{DATABASE}".predictions AS SELECT * FROM {read_parquet_source(copy.files[PREDICTIONS_TABLE])}')
            if copy.files[REFUSALS_TABLE]:
                connection.execute(f'CREATE VIEW "{DATABASE}".predict_refusals AS SELECT * FROM {read_parquet_source(copy.files[REFUSALS_TABLE])}')
            else:  # the Glue table of an archive without refusals: its columns, no rows
                columns = ", ".join(f'"{name}" {"TIMESTAMPTZ" if name.endswith("_at") else "INTEGER" if name == "refused_count" else "VARCHAR"}' for name in REFUSAL_COLUMNS.names)
                connection.execute(f'CREATE TABLE "{DATABASE}".predict_refusals ({columns}, model VARCHAR, "date" VARCHAR)')
            return DuckDBAsAthena(connection)

        yield location, open_archive


@pytest.mark.parametrize("shift", [None, "mean", "category_mix", "null_spike"])
def test_the_athena_sql_on_duckdb_gives_the_databases_summaries(engine: Engine, s3: Any, as_athena: Any, shift: str | None) -> None:
    location, open_archive = as_athena
    manifest = build_manifest(draw_traffic(500, seed=1))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(700, seed=2, shift=shift), window.start, window.end, copies=30)
    store_both(engine, s3, location, draw_traffic(50, seed=3), window.start - timedelta(days=1), window.start)  # before the window
    store_both(engine, s3, location, draw_traffic(40, seed=4), window.end, window.end + timedelta(hours=5))  # from its end on
    store_both(engine, s3, location, draw_traffic(60, seed=5, shift="mean"), window.start, window.end, model_name="other-model")
    store_both(engine, s3, location, draw_traffic(80, seed=9, shift="mean"), window.start, window.end, version="v-other")
    training = SummaryReference.from_manifest(manifest)
    database = read_window_summaries(engine, MODEL_NAME, window, FEATURES, [training], version=manifest.version)
    athena = open_archive().read_summaries(MODEL_NAME, window, FEATURES, [training], version=manifest.version)
    assert database[0].n_rows == 700
    assert differences(athena[0].to_json(), database[0].to_json()) == []


def test_queries_split_to_fit_athenas_query_size_and_still_give_the_same_summaries(engine: Engine, s3: Any, as_athena: Any) -> None:
    location, open_archive = as_athena
    manifest = build_manifest(draw_traffic(400, seed=21))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(300, seed=22, shift="variance"), window.start, window.end, copies=5)
    training = SummaryReference.from_manifest(manifest)
    source = open_archive()
    types = dict(source.run(column_types_query(DATABASE)))
    one = window_queries(DATABASE, MODEL_NAME, window, FEATURES, [training], types, dialect="duckdb")
    source.max_bytes = max(len(query.sql.encode()) for query in one) // 2
    split = window_queries(DATABASE, MODEL_NAME, window, FEATURES, [training], types, dialect="duckdb", max_bytes=source.max_bytes)
    assert len(one) == 1 and len(split) > 1 and all(len(query.sql.encode()) <= source.max_bytes for query in split)
    database = read_window_summaries(engine, MODEL_NAME, window, FEATURES, [training])
    assert differences(source.read_summaries(MODEL_NAME, window, FEATURES, [training])[0].to_json(), database[0].to_json()) == []
    with pytest.raises(SmlError, match="the reference grid of 'mean_shift' does not fit in one query of 1,000 bytes"):
        window_queries(DATABASE, MODEL_NAME, window, FEATURES, [training], types, dialect="duckdb", max_bytes=1_000)


@pytest.mark.parametrize("shift", ["mean", "null_spike"])
def test_the_weekly_run_reaches_the_databases_verdicts_through_the_athena_sql(engine: Engine, s3: Any, as_athena: Any, shift: str) -> None:
    location, open_archive = as_athena
    manifest = build_manifest(draw_traffic(500, seed=11))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(600, seed=12, shift=shift), window.start, window.end, copies=25)
    config = DriftJobConfig(bucket=location.bucket, topic_arn=None)
    runs = {}
    for source in (DatabaseWindowSource(engine), open_archive()):
        outcome = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END, window_source=source)
        runs[source.name] = outcome.run
    verdicts = {name: [(result.feature, result.test, result.verdict, result.statistic, result.p_value) for result in run.results] for name, run in runs.items()}
    assert verdicts["athena"] == verdicts["database"]
    assert (runs["athena"].status, runs["athena"].current_rows) == (runs["database"].status, 600)
    assert runs["athena"].drifted_features == runs["database"].drifted_features != []


def test_the_refusals_and_versions_sql_on_duckdb_gives_the_databases(engine: Engine, s3: Any, as_athena: Any) -> None:
    location, open_archive = as_athena
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(300, seed=21), window.start, window.end, copies=20)
    store_both(engine, s3, location, draw_traffic(80, seed=22), window.start + timedelta(days=3), window.end, version="v-after")
    store_both(engine, s3, location, draw_traffic(40, seed=23), window.start - timedelta(days=1), window.start)  # before the window
    store_both(engine, s3, location, draw_traffic(30, seed=24), window.start, window.end, model_name="other-model")
    refusals = [
        build_refusal_event(model_name=MODEL_NAME, model_version=MODEL_VERSION, refused=refused, refused_at=at)
        for refused, at in (
            ({"spread": {"out_of_range": 2}, REQUEST_FIELD: {"not_json": 1}}, window.start),  # on the start: in
            ({"spread": {"not_finite": 3}, "colour": {"unknown_category": 1}}, window.start + timedelta(days=2)),
            ({REQUEST_FIELD: {"not_json": 5}}, window.end),  # on the end: out
        )
    ] + [build_refusal_event(model_name="other-model", model_version="v1", refused={"spread": {"out_of_range": 7}}, refused_at=window.start + timedelta(days=1))]
    rows = [{"refusal_id": event.refusal_id, "rows": refusal_rows(event, window.end)} for event in refusals]
    with engine.begin() as connection:
        insert_refusal_rows(connection, rows)
    archived = [row for event in rows for row in event["rows"]]
    archive_rows(s3, location, refusals=archived)
    archive_rows(s3, location, refusals=[{**row, "stored_at": window.end + timedelta(seconds=1)} for row in archived[:3]])  # redelivered
    refused, versions = athena_refusals_and_versions(open_archive().run, DATABASE, MODEL_NAME, window, dialect="duckdb")
    assert refused == read_refused_counts(engine, MODEL_NAME, window.start, window.end)
    assert (dict(refused.features), dict(refused.requests)) == ({"spread": 5, "colour": 1}, {"not_json": 1})
    # Athena reads Parquet timestamps to the millisecond: the first and last are the database's, cut to it.
    expected = [
        VersionRows(entry.version, entry.rows, *(moment.replace(microsecond=moment.microsecond // 1000 * 1000) for moment in (entry.first, entry.last)))
        for entry in window_versions(engine, MODEL_NAME, window)
    ]
    assert versions == expected and [(entry.version, entry.rows) for entry in versions] == [(MODEL_VERSION, 300), ("v-after", 80)]


def test_the_athena_source_reads_the_refusals_and_versions_from_their_queries() -> None:
    athena = client()
    stubber = Stubber(athena)
    info = [column("field_name", "varchar"), column("reason", "varchar"), column("refused", "bigint")]
    expect_query(stubber, refusals_query(DATABASE, MODEL_NAME, SMALL_WINDOW), "q-refusals", ["RUNNING", "SUCCEEDED"], [
        {"Rows": [row("field_name", "reason", "refused"), row("x", "out_of_range", "4"), row(REQUEST_FIELD, "not_json", "2")],
         "ResultSetMetadata": {"ColumnInfo": info}},
        {"Rows": [row("x", "not_finite", "1"), row(REQUEST_FIELD, "too_large", "3")], "ResultSetMetadata": {"ColumnInfo": info}},
    ])
    info = [column("model_version", "varchar"), column("n", "bigint"), column("first_ms", "bigint"), column("last_ms", "bigint")]
    first = int(SMALL_WINDOW.start.timestamp() * 1000)
    expect_query(stubber, versions_query(DATABASE, MODEL_NAME, SMALL_WINDOW), "q-versions", ["SUCCEEDED"], [
        {"Rows": [row("model_version", "n", "first_ms", "last_ms"), row("v2", "5", str(first + 7_200_123), str(first + 9_000_000)),
                  row("v1", "3", str(first), str(first + 3_600_000))],
         "ResultSetMetadata": {"ColumnInfo": info}},
    ])
    with stubber:
        refused, versions = athena_refusals_and_versions(AthenaWindowSource(athena, TARGET, sleep=lambda seconds: None)._run, DATABASE, MODEL_NAME, SMALL_WINDOW)
    stubber.assert_no_pending_responses()
    assert (dict(refused.features), list(refused.requests.items())) == ({"x": 5}, [("too_large", 3), ("not_json", 2)])
    start = SMALL_WINDOW.start
    assert versions == [
        VersionRows("v1", 3, start, start + timedelta(hours=1)),
        VersionRows("v2", 5, start + timedelta(hours=2, microseconds=123_000), start + timedelta(hours=2, minutes=30)),
    ]
    assert "CAST(round(to_unixtime(min(predicted_at)) * 1000) AS BIGINT)" in versions_query(DATABASE, MODEL_NAME, SMALL_WINDOW)


def test_a_feature_column_the_glue_table_lacks_is_refused_with_the_ddl_that_adds_it() -> None:
    reference = SummaryReference.from_manifest(build_manifest(draw_traffic(50, seed=1)))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    types = {"prediction": "varchar", "f_mean__shift": "double", "f_spread": "double", "f_steady": "double", "f_colour": "varchar"}
    with pytest.raises(SmlError, match=r"no column for feature\(s\) 'nullable'.*ALTER TABLE sml_archive.predictions ADD COLUMNS \(f_nullable double\)"):
        window_queries(DATABASE, MODEL_NAME, window, FEATURES, [reference], types)


# --------------------------------------------------------------------------------------------
# Athena's API (documented shapes: StartQueryExecution, GetQueryExecution's QueryExecution.Status,
# GetQueryResults' ResultSet with ResultSetMetadata.ColumnInfo and NextToken)

SMALL = (FeatureSpec("x", "numeric"), FeatureSpec("grade", "categorical", categories=("a", "b")))
SMALL_REFERENCE = SummaryReference(
    features={"x": NumericGrid.from_sorted([1.0, 2.0]), "grade": CategoricalGrid.from_counts({"a": 3, "b": 1})},
    prediction=CategoricalGrid.from_counts({"benign": 2, "malignant": 2}),
)
SMALL_WINDOW = TimeWindow.ending_at(WINDOW_END, WINDOW)


def client() -> Any:
    return boto3.client("athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def execution(state: str, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    return {"QueryExecution": {"QueryExecutionId": "q", "Status": status}}


def column(name: str, kind: str) -> dict[str, Any]:
    return {"Name": name, "Label": name, "Type": kind, "Nullable": "UNKNOWN", "CaseSensitive": kind == "varchar"}


def row(*values: str | None) -> dict[str, Any]:
    return {"Data": [{} if value is None else {"VarCharValue": value} for value in values]}


RESULT_INFO = [column(name, kind) for name, kind in (
    ("entry_index", "integer"), ("cell_index", "bigint"), ("text_key", "varchar"), ("number_key", "double"), ("n", "bigint"),
    ("total", "double"), ("total_squares", "double"), ("minimum", "double"), ("maximum", "double"),
)]


def expect_query(stubber: Stubber, query: str, execution_id: str, states: Sequence[str], pages: Sequence[dict[str, Any]]) -> None:
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": execution_id},
        {"QueryString": query, "WorkGroup": TARGET.workgroup, "QueryExecutionContext": {"Database": DATABASE}},
    )
    for state in states:
        stubber.add_response("get_query_execution", execution(state), {"QueryExecutionId": execution_id})
    for number, page in enumerate(pages):
        expected = {"QueryExecutionId": execution_id} | ({"NextToken": f"page-{number}"} if number else {})
        response = {"ResultSet": page, "UpdateCount": 0} | ({"NextToken": f"page-{number + 1}"} if number + 1 < len(pages) else {})
        stubber.add_response("get_query_results", response, expected)


def test_the_athena_source_polls_each_query_reads_every_page_and_builds_the_summary() -> None:
    athena = client()
    stubber = Stubber(athena)
    types_info = [column("column_name", "varchar"), column("data_type", "varchar")]
    expect_query(stubber, column_types_query(DATABASE), "q-types", ["QUEUED", "RUNNING", "SUCCEEDED"], [
        {"Rows": [row("column_name", "data_type"), row("prediction", "varchar"), row("f_x", "double")], "ResultSetMetadata": {"ColumnInfo": types_info}},
        {"Rows": [row("f_grade", "varchar")], "ResultSetMetadata": {"ColumnInfo": types_info}},
    ])
    [query] = window_queries(DATABASE, MODEL_NAME, SMALL_WINDOW, SMALL, [SMALL_REFERENCE], {"prediction": "varchar", "f_x": "double", "f_grade": "varchar"})
    assert [entry.kind for entry in query.entries] == ["rows", "numeric", "text", "prediction"]
    header = row(*(info["Name"] for info in RESULT_INFO))
    expect_query(stubber, query.sql, "q-window", ["RUNNING", "SUCCEEDED"], [
        {"Rows": [header, row("0", None, None, None, "7", None, None, None, None),
                  # x: 0.5 below the grid, 1.0 twice at its first value, 1.5 between, 2.0 at its last, 9.0 above; one missing
                  row("1", "0", None, None, "1", "0.5", "0.25", "0.5", "0.5"), row("1", "1", None, None, "2", "2.0", "2.0", "1.0", "1.0"),
                  row("1", "2", None, None, "1", "1.5", "2.25", "1.5", "1.5")],
         "ResultSetMetadata": {"ColumnInfo": RESULT_INFO}},
        {"Rows": [row("1", "3", None, None, "1", "2.0", "4.0", "2.0", "2.0"), row("1", "4", None, None, "1", "9.0", "81.0", "9.0", "9.0"),
                  row("1", None, None, None, "1", None, None, None, None),
                  row("2", None, "a", None, "4", None, None, None, None), row("2", None, "z", None, "2", None, None, None, None),
                  row("2", None, None, None, "1", None, None, None, None),
                  row("3", None, '"benign"', None, "5", None, None, None, None), row("3", None, '"malignant"', None, "2", None, None, None, None)],
         "ResultSetMetadata": {"ColumnInfo": RESULT_INFO}},
    ])
    waits: list[float] = []
    with stubber:
        [summary] = AthenaWindowSource(athena, TARGET, sleep=waits.append).read_summaries(MODEL_NAME, SMALL_WINDOW, SMALL, [SMALL_REFERENCE])
    stubber.assert_no_pending_responses()
    assert waits == [1.0, 1.0, 1.0]
    x = summary.features["x"]
    assert summary.n_rows == 7 and x.cells.tolist() == [1, 2, 1, 1, 1] and x.missing == 1  # type: ignore[union-attr]
    assert (x.total, x.minimum, x.maximum, x.below_total, x.above_total) == (15.0, 0.5, 9.0, 0.5, 9.0)  # type: ignore[union-attr]
    grade = summary.features["grade"]
    assert (grade.counts, grade.unseen, grade.unseen_top, grade.missing) == ({"a": 4, "b": 0}, 2, {"z": 2}, 1)  # type: ignore[union-attr]
    assert summary.prediction.counts == {"benign": 5, "malignant": 2}  # type: ignore[union-attr]


@pytest.mark.parametrize(("state", "reason"), [
    ("FAILED", "Query exhausted resources at this scale factor; bytes scanned limit was exceeded"),
    ("CANCELLED", "Query cancelled by user"),
])
def test_a_window_query_athena_fails_or_cancels_stops_the_run_with_athenas_reason(state: str, reason: str) -> None:
    athena = client()
    stubber = Stubber(athena)
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-types"})
    stubber.add_response("get_query_execution", execution("SUCCEEDED"), {"QueryExecutionId": "q-types"})
    types = [column("column_name", "varchar"), column("data_type", "varchar")]
    stubber.add_response("get_query_results", {"ResultSet": {"Rows": [row("column_name", "data_type"), row("prediction", "varchar"), row("f_x", "double"), row("f_grade", "varchar")],
                                                            "ResultSetMetadata": {"ColumnInfo": types}}})
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-window"})
    stubber.add_response("get_query_execution", execution("RUNNING"), {"QueryExecutionId": "q-window"})
    stubber.add_response("get_query_execution", execution(state, reason), {"QueryExecutionId": "q-window"})
    with stubber, pytest.raises(SmlError, match=f"Athena query q-window {state}: {reason}"):
        AthenaWindowSource(athena, TARGET, sleep=lambda seconds: None).read_summaries(MODEL_NAME, SMALL_WINDOW, SMALL, [SMALL_REFERENCE])
    stubber.assert_no_pending_responses()


def test_grid_values_are_double_literals_that_read_back_exactly() -> None:
    values = np.array([0.1, 1 / 3, 1e-300, 12345678901234567.0, -2.5e17, 5.0])
    reference = SummaryReference(features={"x": NumericGrid.from_sorted(np.sort(values))}, prediction=None)
    [query] = window_queries(DATABASE, MODEL_NAME, SMALL_WINDOW, SMALL[:1], [reference], {"f_x": "double"})
    literal = query.sql.split("ARRAY[", 1)[1].split("]", 1)[0].split(",")
    assert all("e" in text for text in literal)
    assert [float(text) for text in literal] == sorted(values.tolist())


def test_numbers_as_categories_a_regression_prediction_and_two_references_give_the_databases_summaries(
    engine: Engine, s3: Any, as_athena: Any
) -> None:
    # A categorical feature sent as numbers is archived as double (counted as "2", not "2.0"), a
    # regression model's prediction is a number counted into its own cells, and the previous-window
    # reference is counted beside the training one in the same queries.
    from drift_support import Traffic

    location, open_archive = as_athena
    rng = np.random.default_rng(5)
    features = (FeatureSpec("x", "numeric"), FeatureSpec("grade", "categorical", categories=(1, 2, 3)))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)

    def draw(rows: int, shift: float) -> Traffic:
        x = [None if missing else float(value) for value, missing in zip(rng.normal(shift, 1.0, rows), rng.random(rows) < 0.05)]
        grade = [int(value) if value < 4 else 2.5 for value in rng.choice([1, 2, 3, 4], size=rows)]
        return Traffic(columns={"x": x, "grade": grade}, labels=[round(float(value), 3) for value in rng.normal(100 + shift, 10, rows)])

    store_both(engine, s3, location, draw(400, 0.3), window.start, window.end, copies=10)
    references = []
    for seed_shift in (0.0, 0.5):
        sample = draw(200, seed_shift)
        references.append(SummaryReference(
            features={
                "x": NumericGrid.from_sorted(sorted(value for value in sample.columns["x"] if value is not None)),
                "grade": CategoricalGrid.from_counts({"1": 70, "2": 60, "3": 70}, 0, (1, 2, 3)),
            },
            prediction=NumericGrid.from_sorted(sorted(sample.labels)),
        ))
    database = read_window_summaries(engine, MODEL_NAME, window, features, references)
    athena = open_archive().read_summaries(MODEL_NAME, window, features, references)
    assert database[0].n_rows == 400 and database[0].features["grade"].unseen > 0  # type: ignore[union-attr]
    for ours, theirs in zip(athena, database, strict=True):
        assert differences(ours.to_json(), theirs.to_json()) == []


def test_no_array_constructor_has_more_elements_than_trino_accepts(engine: Engine, s3: Any, as_athena: Any) -> None:
    # Trino 405 to 445 refuse ARRAY[...] with more than 254 elements, constants or not
    # (trinodb/trino#16033): a grid of 1,000 values and an UNNEST over 300 columns are cut into
    # constructors joined with ||, and still count what the database counts.
    import re

    from drift_support import Traffic

    location, open_archive = as_athena
    rng = np.random.default_rng(8)
    features = tuple(FeatureSpec(f"x{index}", "numeric") for index in range(300))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    reference = SummaryReference(
        features={spec.name: NumericGrid.from_sorted(np.sort(rng.normal(0, 1, 1_000 if spec.name == "x0" else 5))) for spec in features},
        prediction=CategoricalGrid.from_counts({"benign": 1, "malignant": 1}),
    )
    types = {"prediction": "varchar"} | {f"f_x{index}": "double" for index in range(300)}
    queries = window_queries(DATABASE, MODEL_NAME, window, features, [reference], types)
    arrays = [body for query in queries for body in re.findall(r"ARRAY\[([^\]]*)\]", query.sql)]
    assert max(len(body.split(",")) for body in arrays) <= 254
    assert len(queries) == 1 and len(queries[0].entries) > 254

    traffic = Traffic(columns={spec.name: rng.normal(0.2, 1, 30).round(2).tolist() for spec in features}, labels=["benign", "malignant"] * 15)
    store_both(engine, s3, location, traffic, window.start, window.end, copies=3)
    database = read_window_summaries(engine, MODEL_NAME, window, features, [reference])
    athena = open_archive().read_summaries(MODEL_NAME, window, features, [reference])
    assert database[0].n_rows == 30
    assert differences(athena[0].to_json(), database[0].to_json()) == []


def test_a_model_trained_on_float_categories_counts_them_as_the_database_does(engine: Engine, s3: Any, as_athena: Any) -> None:
    # The archive keeps 2 and 2.0 alike as a double; the database counts the text of the value
    # sent. A model trained on float categories (a pandas column of integers with gaps is float64)
    # knows "1.0" and "2.0", and its clients send floats: the archive's sources counted "1" and
    # "2", every value unseen, a drift that the database did not see.
    from drift_support import Traffic

    from sml.archive.sources import archive_window_summaries

    location, open_archive = as_athena
    features = (FeatureSpec("grade", "categorical"), FeatureSpec("x", "numeric"))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    grades = [1.0, 2.0, 2.0, 3.0, 2.5, None, 1e16, 1.0] * 5
    traffic = Traffic(columns={"grade": grades, "x": [float(index) for index in range(40)]}, labels=["benign", "malignant"] * 20)
    store_both(engine, s3, location, traffic, window.start, window.end, copies=4)
    references = [
        SummaryReference(features={"grade": CategoricalGrid.from_counts(counts), "x": NumericGrid.from_sorted([1.0, 5.0])}, prediction=None)
        for counts in ({"1.0": 10, "2.0": 12}, {"1.0": 3, "2.0": 4, "2.5": 1})
    ]
    database = read_window_summaries(engine, MODEL_NAME, window, features, references)
    duckdb = archive_window_summaries(s3, location, MODEL_NAME, window, features, references)
    athena = open_archive().read_summaries(MODEL_NAME, window, features, references)
    assert database[0].features["grade"].counts == {"1.0": 10, "2.0": 10}  # type: ignore[union-attr]
    for index, theirs in enumerate(database):
        assert differences(duckdb[index].to_json(), theirs.to_json()) == []
        assert differences(athena[index].to_json(), theirs.to_json()) == []


def test_booleans_and_mixed_categories_archived_as_json_text_count_as_the_database_counts_them(engine: Engine, s3: Any, as_athena: Any) -> None:
    # A categorical feature of booleans, or of numbers and text mixed, is archived as JSON text
    # (true, "a"); the database counts str() of the value sent (True, a). The archive's sources
    # counted the JSON text: every known value unseen, a drift the database did not see.
    from drift_support import Traffic

    from sml.archive.sources import archive_window_summaries

    location, open_archive = as_athena
    features = (FeatureSpec("smoker", "categorical"), FeatureSpec("grade", "categorical"), FeatureSpec("colour", "categorical"))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    traffic = Traffic(
        columns={
            "smoker": [True, False, None, True] * 6,
            "grade": [1, "a", 2.5, None, "b", 1, "true", 'say "x"'] * 3,
            "colour": ["red", "true", "[1]", "null", None, "1", "True", "blue"] * 3,  # plain text: as it is
        },
        labels=["benign", "malignant"] * 12,
    )
    store_both(engine, s3, location, traffic, window.start, window.end, copies=3)
    reference = SummaryReference(
        features={
            "smoker": CategoricalGrid.from_counts({"True": 5, "False": 5}),
            "grade": CategoricalGrid.from_counts({"1": 3, "a": 3, "2.5": 1, 'say "x"': 1}),
            "colour": CategoricalGrid.from_counts({"red": 4, "true": 1, "1": 1}),
        },
        prediction=CategoricalGrid.from_counts({"benign": 1, "malignant": 1}),
    )
    database = read_window_summaries(engine, MODEL_NAME, window, features, [reference])
    duckdb = archive_window_summaries(s3, location, MODEL_NAME, window, features, [reference])
    athena = open_archive().read_summaries(MODEL_NAME, window, features, [reference])
    assert database[0].features["smoker"].counts == {"True": 12, "False": 6}  # type: ignore[union-attr]
    for ours in (duckdb[0], athena[0]):
        mine, theirs = ours.to_json(), database[0].to_json()
        for name in ("smoker", "grade", "colour"):
            mine["features"][name].pop("unseen_top"), theirs["features"][name].pop("unseen_top")  # an unseen value keeps its archived text
        assert differences(mine, theirs) == []
