"""Questions over the archive in SQL: DuckDB on the machine at hand, Athena (engine v3) on AWS.

Both engines see the same three tables, ``predictions``, ``ground_truth`` and
``predict_refusals``, with the archive's columns (:mod:`sml.archive.parquet`) plus the partition
columns ``model`` and ``date`` (``YYYY-MM-DD``), every redelivered copy removed (the copy stored
first kept, :data:`sml.archive.parquet.DEDUPLICATION_KEY`) and, given ``since``/``until``, only
the days between (both included). Each table is a common table expression put in front of the
question (:func:`archive_ctes`), so the question's own ``FROM predictions`` reads it: on Athena
the days become a filter on the partition column (partition projection reads only those
prefixes), on DuckDB only those days' objects are fetched.

DuckDB reads files from a temporary folder: the objects of the days asked for are downloaded
first. DuckDB's own S3 reader (``httpfs``) is an extension that DuckDB downloads from its
extension site at first use, which is not reachable from every machine (nor from a Lambda
function without internet access), while boto3 reaches AWS and the local stack's S3 (fauxqs)
alike, and a Lambda function has up to 10 GB of ``/tmp``.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from sml.archive.layout import GROUND_TRUTH_TABLE, TABLES
from sml.archive.parquet import DEDUPLICATION_KEY, FIXED_COLUMNS
from sml.archive.store import ArchiveLocation, ArchivedObject, download, list_table
from sml.core.errors import SmlError

ATHENA_FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
COPY_COLUMN = "archive_copy"
_LEADING_COMMENTS = r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
_LEADING_WITH = re.compile(_LEADING_COMMENTS + r"with\s+(?!recursive\b)", re.IGNORECASE | re.DOTALL)
_LEADING_WITH_RECURSIVE = re.compile(_LEADING_COMMENTS + r"with\s+recursive\b", re.IGNORECASE | re.DOTALL)
_ATHENA_TYPES: dict[str, Callable[[str], Any]] = {
    "tinyint": int,
    "smallint": int,
    "integer": int,
    "bigint": int,
    "double": float,
    "float": float,
    "real": float,
    "boolean": lambda text: text == "true",
}


def archive_ctes(sources: dict[str, str], since: date | None, until: date | None, *, dialect: str) -> str:
    """``name AS (...)`` for each table of ``sources`` (table -> what to read it from), copies
    dropped and, with ``since``/``until``, limited to those days.

    :param dialect: ``duckdb`` (drops the helper column with ``EXCLUDE``) or ``athena`` (Trino
        has no ``EXCLUDE``: the column ``archive_copy``, always 1, stays).
    """
    parts = []
    for table, source in sources.items():
        days = []
        if since is not None:
            days.append(f"\"date\" >= '{since.isoformat()}'")
        if until is not None:
            days.append(f"\"date\" <= '{until.isoformat()}'")
        where = f" WHERE {' AND '.join(days)}" if days else ""
        key = ", ".join(f'"{name}"' for name in DEDUPLICATION_KEY[table])
        numbered = f"SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY stored_at) AS {COPY_COLUMN} FROM {source}{where}"
        columns = f"* EXCLUDE ({COPY_COLUMN})" if dialect == "duckdb" else "*"
        parts.append(f"{table} AS (SELECT {columns} FROM ({numbered}) WHERE {COPY_COLUMN} = 1)")
    return ",\n".join(parts)


def with_archive_tables(sql: str, ctes: str) -> str:
    """``sql`` with ``ctes`` in front: merged into its own ``WITH`` when it has one (after any comments, which go).

    :raises SmlError: ``sql`` starts with ``WITH RECURSIVE`` (the archive's tables cannot join it).
    """
    if _LEADING_WITH_RECURSIVE.match(sql):
        raise SmlError("query: WITH RECURSIVE is not supported over the archive's tables")
    if _LEADING_WITH.match(sql):
        return f"WITH {ctes},\n{_LEADING_WITH.sub('', sql, count=1)}"
    return f"WITH {ctes}\n{sql}"


# --------------------------------------------------------------------------------------------
# DuckDB


@dataclass(frozen=True)
class LocalCopy:
    """The archive's objects of some days, downloaded: per table, the files DuckDB reads."""

    directory: Path
    files: dict[str, list[Path]]

    def sources(self) -> dict[str, str]:
        """Per table with files, the ``read_parquet(...)`` that reads them (union by name, hive partitions)."""
        return {table: read_parquet_source(paths) for table, paths in self.files.items() if paths}


def read_parquet_source(paths: Sequence[Path]) -> str:
    """DuckDB's ``read_parquet`` over ``paths``, columns matched by name, ``model``/``date`` from the
    paths as text (as Glue's partition keys; DuckDB would take a model named ``2024`` for a number)."""
    files = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    # DuckDB refuses a type for a partition key no path has: ground truth has no model level.
    model = ", 'model': VARCHAR" if any("/model=" in str(path) for path in paths) else ""
    return f"read_parquet([{files}], union_by_name = true, hive_partitioning = true, hive_types = {{'date': VARCHAR{model}}})"


def download_days(
    s3: Any, location: ArchiveLocation, directory: Path, since: date | None, until: date | None, *, tables: Sequence[str] = TABLES, models: Sequence[str] | None = None
) -> LocalCopy:
    """Download the objects of ``tables`` from ``since`` to ``until`` (either open) into ``directory``."""
    files = {}
    for table in tables:
        objects: list[ArchivedObject] = list_table(s3, location, table, models, since=since, until=until)
        files[table] = download(s3, location, objects, directory)
    return LocalCopy(directory, files)


@contextmanager
def duckdb_errors_named(location: ArchiveLocation, work_dir: Path, doing: str) -> Iterator[None]:
    """DuckDB's refusal as one :class:`SmlError` line, ``doing`` first, an object it could not read
    named by its S3 key rather than by its copy under ``work_dir`` (gone once the caller returns).

    Copies are at ``work_dir/<folder>/<key below the prefix>`` (:func:`sml.archive.store.download`).
    """
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        message = re.sub(re.escape(str(work_dir)) + r"/[^/']+/", lambda _: location.uri(location.prefix), str(exc).splitlines()[0])
        raise SmlError(f"{doing}: {message}") from None


def duckdb_connection(work_dir: Path, memory_limit: str = "256MB", threads: int | None = None) -> Any:
    """A DuckDB connection that spills to ``work_dir`` past ``memory_limit``, on ``threads`` threads (default: DuckDB's, one per core)."""
    import duckdb

    config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": str(work_dir / "spill")}
    if threads is not None:
        config["threads"] = threads
    return duckdb.connect(config=config)


def run_duckdb_query(
    s3: Any, location: ArchiveLocation, sql: str, *, since: date | None = None, until: date | None = None, memory_limit: str = "256MB"
) -> pa.Table:
    """Answer ``sql`` over the archive with DuckDB (objects downloaded to a temporary folder).

    :returns: the result as an Arrow table.
    :raises SmlError: no archived objects in the range, ``sql`` is not one statement, or
        DuckDB refused the query (its message).
    """
    import duckdb

    try:
        statements = len(duckdb.extract_statements(sql))
    except duckdb.Error as exc:
        raise SmlError(f"query: {str(exc).splitlines()[0]}") from None
    if statements != 1:  # the archive's tables go in front of the first only: the others would not find them
        raise SmlError(f"query: one statement at a time, got {statements}")
    with tempfile.TemporaryDirectory(prefix="sml-query-") as work:
        copy = download_days(s3, location, Path(work) / "archive", since, until)
        sources = copy.sources()
        if not sources:
            raise SmlError(f"query: nothing archived in {location.uri()} {_range_text(since, until)}")
        connection = duckdb_connection(Path(work), memory_limit)
        for table in TABLES:
            if table not in sources:  # nothing of it archived in the range: empty, as the database's table would be
                sources[table] = f"empty_{table}"
                connection.register(sources[table], empty_archive_table(table))
        try:
            with duckdb_errors_named(location, Path(work), "query"):
                return connection.sql(with_archive_tables(sql, archive_ctes(sources, since, until, dialect="duckdb"))).to_arrow_table()
        finally:
            connection.close()


def empty_archive_table(table: str) -> pa.Table:
    """No rows, with the columns a query sees of ``table`` when it has objects: the archive's own and the partitions' (``model``, ``date``)."""
    schema = FIXED_COLUMNS[table]
    partitions = [("date", pa.string())] if table == GROUND_TRUTH_TABLE else [("model", pa.string()), ("date", pa.string())]
    return pa.schema([*schema, *partitions]).empty_table()


def _range_text(since: date | None, until: date | None) -> str:
    return f"from {since or 'the start'} to {until or 'today'}"


# --------------------------------------------------------------------------------------------
# Athena


@dataclass(frozen=True)
class AthenaTarget:
    """Where Athena queries run: the workgroup (engine v3, its own result location and scan limit) and the Glue database."""

    workgroup: str
    database: str


def run_athena_query(
    athena: Any,
    target: AthenaTarget,
    sql: str,
    *,
    since: date | None = None,
    until: date | None = None,
    poll_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> pa.Table:
    """Answer ``sql`` over the archive's Glue tables with Athena (:func:`athena_rows`), the archive's tables in front of it.

    :param athena: a boto3 Athena client.
    :raises SmlError: the query failed or was cancelled (Athena's ``StateChangeReason``).
    """
    query = with_archive_tables(sql, archive_ctes({table: f'"{target.database}"."{table}"' for table in TABLES}, since, until, dialect="athena"))
    names, rows = athena_rows(athena, target, query, poll_seconds=poll_seconds, sleep=sleep)
    columns: list[list[Any]] = [[] for _ in names]
    for row in rows:
        for index, value in enumerate(row):
            columns[index].append(value)
    # From arrays, not a dict of names: a join's SELECT * names columns twice (stored_at, date), as DuckDB returns them.
    return pa.Table.from_arrays([pa.array(values) for values in columns], names=names) if names else pa.table({})


def athena_rows(
    athena: Any, target: AthenaTarget, query: str, *, poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep
) -> tuple[list[str], Iterator[list[Any]]]:
    """Run ``query`` as it is in the workgroup and stream its rows.

    Starts the query (``StartQueryExecution`` in ``target.workgroup`` with ``target.database`` as
    its context), polls ``GetQueryExecution`` every ``poll_seconds`` until the state is SUCCEEDED,
    FAILED or CANCELLED (the states of ``QueryExecutionStatus`` in the Athena API reference), then
    reads ``GetQueryResults`` page by page as the rows are consumed: the first row of the first
    page holds the column names; values are text, converted by the column's type for numbers and
    booleans; a missing ``VarCharValue`` is NULL.

    :returns: the column names and an iterator of rows (lists in column order).
    :raises SmlError: the query failed or was cancelled, with Athena's ``StateChangeReason``.
    """
    execution_id = athena.start_query_execution(QueryString=query, WorkGroup=target.workgroup, QueryExecutionContext={"Database": target.database})[
        "QueryExecutionId"
    ]
    while True:
        status = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]
        if status["State"] in ATHENA_FINAL_STATES:
            break
        sleep(poll_seconds)
    if status["State"] != "SUCCEEDED":
        raise SmlError(f"query: Athena query {execution_id} {status['State']}: {status.get('StateChangeReason', 'no reason given')}")
    pages = iter(athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id))
    first = next(pages, None)
    if first is None:
        return [], iter(())
    info = first["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    names = [column["Name"] for column in info]
    converters = [_ATHENA_TYPES.get(column["Type"].lower(), str) for column in info]

    def rows() -> Iterator[list[Any]]:
        for number, page in enumerate(itertools.chain([first], pages)):
            for row in page["ResultSet"]["Rows"][1 if number == 0 else 0 :]:  # the first page's first row is the header
                yield [None if (text := datum.get("VarCharValue")) is None else converter(text) for datum, converter in zip(row["Data"], converters)]

    return names, rows()
