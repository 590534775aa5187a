"""The weekly run's window read through Athena (engine v3): the counting is done in SQL, exactly.

:func:`window_queries` writes the SQL that turns a window's archived predictions into the counts
a :class:`~sml.monitoring.summaries.WindowSummary` is made of, and :func:`summaries_from_rows`
builds the summaries from what it returns; :class:`AthenaWindowSource` (``SML_WINDOW_SOURCE=athena``)
runs it in the archive's workgroup over its Glue table. The summaries are those of the database
and DuckDB sources: every count is equal, so every statistic and verdict is; only the sums behind
the report's means may differ in the last bits (addition in another order).

**Why in SQL, and why not rows.** A week can be hundreds of millions of predictions: row by row
through ``GetQueryResults`` (1,000 rows a call) or an ``UNLOAD`` read back by the function would
move the whole window through Lambda again. Every part of a summary is a count or a sum that SQL
computes exactly, and the result is small (at most ``2·k + 1`` rows per numeric column and
reference, one per category), so Athena does the scan, the deduplication and the counting and the
function reads a few pages:

- the window's rows: partition pruning on ``model`` and ``date`` (the window's days, partition
  projection reads only those prefixes), then ``model_name``, ``model_version`` and
  ``predicted_at`` in ``[start, end)``; a redelivered copy counts once (``row_number()`` over
  ``prediction_id`` by ``stored_at``, the first stored kept, as :mod:`sml.archive.query` does);
- a numeric value's reference cell (:mod:`sml.monitoring.summaries`): ``w = width_bucket(x, grid)``,
  Trino's bin number over a sorted array, the count of grid values ``<= x`` (a binary search;
  Trino's ``MathFunctions.widthBucket``), then cell ``0`` when ``w = 0``, ``2·w − 1`` when
  ``grid[w] = x`` and ``2·w`` otherwise: the summariser's ``searchsorted(left) + searchsorted(right)``.
  The grid (the reference's distinct values) is written into the query as ``DOUBLE`` literals
  (``repr`` with an exponent, so Trino parses a correctly rounded double, never a DECIMAL), in
  ``ARRAY[...]`` constructors of at most 254 elements joined with ``||`` (Trino 405 to 445 refuse
  a longer constructor; so are the ``UNNEST``'s arrays of a model with hundreds of features);
- missing values: NULL, NaN and ±infinity (``is_nan``, ``is_infinite``; the operand of
  ``width_bucket`` must not be NaN), and a number in a text column through ``TRY_CAST``;
- per cell the count, sum, sum of squares, minimum and maximum (which give the summary's moments,
  and the sums below and above the reference's range); per category the count.

Each column of each reference is one entry of an ``UNNEST`` that turns a row into one row per
entry, so the table is scanned and deduplicated once and the aggregation is one ``GROUP BY``.
Athena refuses a query string over 262,144 bytes (a quota that cannot be raised): the entries
are packed into as few queries as fit, each scanning the window again; a single grid that does
not fit alone (``k`` near the 10,000 distinct values a reference may keep, with long decimals)
is refused with a message naming it.

**Where the text is not Athena's own.** Two places differ from DuckDB's dialect, chosen with
``dialect``: DuckDB's ``UNNEST`` takes one list (the entries are unnested in the select list),
and DuckDB has no ``width_bucket`` over an array, ``is_nan`` or ``is_infinite``, which the tests
define as macros with Trino's documented semantics; everything else runs as written on both.

**Columns.** The feature columns must be in the Glue table (Athena maps Parquet columns by name,
and a column the table does not declare cannot be read): the columns and their types are read
first from ``information_schema.columns``, and a missing one is refused with the ``ALTER TABLE
... ADD COLUMNS`` that adds it. A categorical feature counts by the ``str()`` of its value as the
other sources do: a text column's value as it is, a number column's value as an integer when it
is integral (``3``, not ``3.0``) unless the reference counted integral numbers as floats
(:func:`~sml.archive.layout.integral_floats`), a text as JSON where that gives a category the
reference knows (booleans and mixed values are archived as JSON text;
:func:`~sml.archive.layout.text_category`); the prediction is decoded from its JSON text.

**Time.** Athena (engine v3) reads Parquet timestamps in milliseconds: a prediction made in the
same millisecond as a window's bound, off a whole millisecond, can fall on the other side. The
weekly run's bounds are whole seconds.

**Refusals and versions** are counted in SQL too (:func:`refusals_query`, :func:`versions_query`):
the window's refusals summed per field and reason, and per model version its predictions with the
first and last (to the millisecond, as Athena reads them). **Model quality** (labels joined to
predictions) still comes from the database (:mod:`sml.monitoring.sources`): with this source a
window whose predictions the database's retention dropped loses it; the DuckDB source reads it
from the archive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import msgspec

from sml.archive.layout import PREDICTIONS_TABLE, REFUSALS_TABLE, feature_column, integral_floats, number_category, text_category
from sml.archive.query import AthenaTarget, athena_rows
from sml.core.errors import SmlError
from sml.lifecycle.manifest import FeatureSpec, ModelManifest
from sml.monitoring.data_quality.checks import RefusedCounts
from sml.monitoring.sources import SourceWindow
from sml.monitoring.summaries import (
    CategoricalGrid,
    CategoricalSummary,
    ColumnGrid,
    NumericGrid,
    NumericSummary,
    SummaryReference,
    WindowSummary,
)
from sml.monitoring.windows import TimeWindow, VersionRows

MAX_QUERY_BYTES = 262_144
"""Athena's largest query string (UTF-8 bytes), a quota AWS cannot raise."""
MAX_ARRAY_ELEMENTS = 254
"""The most elements one ``ARRAY[...]`` constructor may have in Trino 405 to 445 ("Too many arguments
for array constructor", trinodb/trino#16033, constants or not; lifted for constants only by #21566):
longer arrays are written as constructors of at most this many joined with ``||``."""
RESULT_COLUMNS = ("entry_index", "cell_index", "text_key", "number_key", "n", "total", "total_squares", "minimum", "maximum")
NUMBER_TYPES = ("double", "float", "real", "bigint", "integer", "int", "smallint", "tinyint")
TEXT_TYPES = ("varchar", "string", "char")
Dialect = Literal["athena", "duckdb"]
_DECODE = msgspec.json.Decoder()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Entry:
    """One column counted by a query: ``kind`` ``rows`` (the row count), ``numeric`` (cells of
    ``grid``, reference ``reference``), ``text`` or ``number`` (categories), or ``prediction``
    (categories of the decoded JSON text). ``feature`` is None for the prediction and the rows."""

    kind: Literal["rows", "numeric", "text", "number", "prediction"]
    feature: str | None = None
    reference: int = 0
    grid: NumericGrid | None = None


@dataclass(frozen=True)
class WindowQuery:
    """One query's text and the entries its ``entry`` column numbers (entry ``i`` is ``entries[i]``)."""

    sql: str
    entries: tuple[Entry, ...]


def column_types_query(database: str) -> str:
    """The query of the prediction table's columns and types (``column_name``, ``data_type``)."""
    return (
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = {_text(database)} AND table_name = {_text(PREDICTIONS_TABLE)}"
    )


def window_queries(
    database: str,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    column_types: dict[str, str],
    *,
    version: str | None = None,
    dialect: Dialect = "athena",
    max_bytes: int = MAX_QUERY_BYTES,
) -> list[WindowQuery]:
    """The queries that count the window (see the module doc), as few as fit in ``max_bytes`` each.

    :param column_types: the Glue table's columns -> type (``information_schema.columns``, any case).
    :raises SmlError: a feature column the table does not declare (naming the DDL that adds it) or of
        a type that is neither number nor text; a grid too large for one query.
    """
    types = {name: kind.lower() for name, kind in column_types.items()}
    _check_columns(database, features, types)
    entries: list[Entry] = []
    for spec in features:
        column = feature_column(spec.name)
        if spec.kind == "numeric":
            entries += [Entry("numeric", spec.name, index, reference.features[spec.name]) for index, reference in enumerate(references)]  # type: ignore[arg-type]
        else:
            entries.append(Entry("number" if _is_number(types[column]) else "text", spec.name))
    predictions = [reference.prediction for reference in references]
    if any(isinstance(grid, CategoricalGrid) for grid in predictions):
        entries.append(Entry("prediction"))
    entries += [Entry("numeric", None, index, grid) for index, grid in enumerate(predictions) if isinstance(grid, NumericGrid)]

    queries: list[WindowQuery] = []
    pending: list[Entry] = []
    for entry in entries:
        trial = [Entry("rows"), *pending, entry]
        if len(_sql(database, model_name, window, trial, version, dialect).encode()) <= max_bytes:
            pending.append(entry)
            continue
        if not pending:
            name = entry.feature or "the prediction"
            raise SmlError(f"Athena window source: the reference grid of {name!r} does not fit in one query of {max_bytes:,} bytes")
        queries.append(_query(database, model_name, window, [Entry("rows"), *pending], version, dialect))
        pending = [entry]
        if len(_sql(database, model_name, window, [Entry("rows"), entry], version, dialect).encode()) > max_bytes:
            name = entry.feature or "the prediction"
            raise SmlError(f"Athena window source: the reference grid of {name!r} does not fit in one query of {max_bytes:,} bytes")
    queries.append(_query(database, model_name, window, [Entry("rows"), *pending], version, dialect))
    return queries


def summaries_from_rows(
    queries: Sequence[WindowQuery], results: Sequence[Iterable[Sequence[Any]]], features: Sequence[FeatureSpec], references: Sequence[SummaryReference]
) -> list[WindowSummary]:
    """One summary per reference from each query's result rows (in :data:`RESULT_COLUMNS` order).

    Every query counts the window's rows; the first one's count is taken.
    """
    numeric: dict[tuple[str | None, int], NumericSummary] = {}
    categories: dict[str | None, tuple[dict[str | float | tuple[str], int], list[int]]] = {}
    n_rows = 0
    for number, (query, rows) in enumerate(zip(queries, results)):
        for row in rows:
            entry_index, cell, text_key, number_key, count, total, squares, minimum, maximum = row
            entry = query.entries[int(entry_index)]
            count = int(count)
            if entry.kind == "rows":
                n_rows = count if number == 0 else n_rows
            elif entry.kind == "numeric":
                assert entry.grid is not None
                summary = numeric.setdefault((entry.feature, entry.reference), NumericSummary.empty(entry.grid))
                _add_cell(summary, entry.grid, cell, count, total, squares, minimum, maximum)
            else:
                counts, missing = categories.setdefault(entry.feature, ({}, [0]))
                key = _category(entry.kind, text_key, number_key)
                if key is None:
                    missing[0] += count
                else:
                    counts[key] = counts.get(key, 0) + count
    summaries = []
    for index, reference in enumerate(references):
        columns: dict[str, Any] = {}
        for spec in features:
            grid = reference.features[spec.name]
            if isinstance(grid, NumericGrid):
                columns[spec.name] = numeric.get((spec.name, index)) or NumericSummary.empty(grid)
            else:
                columns[spec.name] = _categorical(grid, categories.get(spec.name))
        prediction: Any = None
        if isinstance(reference.prediction, NumericGrid):
            prediction = numeric.get((None, index)) or NumericSummary.empty(reference.prediction)
        elif isinstance(reference.prediction, CategoricalGrid):
            prediction = _categorical(reference.prediction, categories.get(None))
        summaries.append(WindowSummary(n_rows=n_rows, features=columns, prediction=prediction))
    return summaries


def athena_window_summaries(
    run: Callable[[str], Iterable[Sequence[Any]]],
    database: str,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    *,
    version: str | None = None,
    dialect: Dialect = "athena",
    max_bytes: int = MAX_QUERY_BYTES,
) -> list[WindowSummary]:
    """The window's summaries, one per reference, with ``run`` answering each query (its rows in order).

    :param run: a query's text -> its rows; :class:`AthenaWindowSource` runs them on Athena.
    :raises SmlError: as :func:`window_queries`, or as ``run`` raises (a failed query).
    """
    column_types = {str(name): str(kind) for name, kind in run(column_types_query(database))}
    queries = window_queries(database, model_name, window, features, references, column_types, version=version, dialect=dialect, max_bytes=max_bytes)
    return summaries_from_rows(queries, [list(run(query.sql)) for query in queries], features, references)


def refusals_query(database: str, model_name: str, window: TimeWindow) -> str:
    """The query of the window's refusals of ``model_name``: ``field_name``, ``reason``, ``refused`` (the sum),
    each refusal event's row of a field and reason counted once (a redelivered copy dropped, the first stored kept)."""
    return (
        "WITH numbered AS (SELECT field_name, reason, refused_count, "
        "row_number() OVER (PARTITION BY refusal_id, field_name, reason ORDER BY stored_at) AS archive_copy "
        f"FROM {_quoted(database)}.{_quoted(REFUSALS_TABLE)} WHERE {_in_window(model_name, window, 'refused_at')})\n"
        "SELECT field_name, reason, sum(refused_count) AS refused FROM numbered WHERE archive_copy = 1 GROUP BY field_name, reason"
    )


def versions_query(database: str, model_name: str, window: TimeWindow, *, dialect: Dialect = "athena") -> str:
    """The query of the window's predictions of ``model_name`` per version: ``model_version``, ``n``, and the first
    and last ``predicted_at`` as milliseconds since the epoch (``first_ms``, ``last_ms``), each prediction once."""
    # Trino: to_unixtime gives seconds as a double (exact to the millisecond Athena reads); DuckDB has epoch_ms.
    epoch_ms = "CAST(round(to_unixtime({}) * 1000) AS BIGINT)" if dialect == "athena" else "epoch_ms({})"
    return (
        "WITH numbered AS (SELECT model_version, predicted_at, row_number() OVER (PARTITION BY prediction_id ORDER BY stored_at) AS archive_copy "
        f"FROM {_quoted(database)}.{_quoted(PREDICTIONS_TABLE)} WHERE {_in_window(model_name, window, 'predicted_at')})\n"
        f"SELECT model_version, count(*) AS n, {epoch_ms.format('min(predicted_at)')} AS first_ms, {epoch_ms.format('max(predicted_at)')} AS last_ms "
        "FROM numbered WHERE archive_copy = 1 GROUP BY model_version"
    )


def athena_refusals_and_versions(
    run: Callable[[str], Iterable[Sequence[Any]]], database: str, model_name: str, window: TimeWindow, *, dialect: Dialect = "athena"
) -> tuple[RefusedCounts, list[VersionRows]]:
    """The window's refusals (:func:`refusals_query`) and rows per version, earliest first (:func:`versions_query`;
    first and last to the millisecond), with ``run`` answering each query."""
    refused = RefusedCounts.from_sums(run(refusals_query(database, model_name, window)))
    versions = [
        VersionRows(str(version), int(count), _EPOCH + timedelta(milliseconds=int(first)), _EPOCH + timedelta(milliseconds=int(last)))
        for version, count, first, last in run(versions_query(database, model_name, window, dialect=dialect))
    ]
    return refused, sorted(versions, key=lambda entry: (entry.first, entry.version))


@dataclass(frozen=True)
class AthenaWindowSource:
    """The window through Athena over the archive's Glue table (``SML_WINDOW_SOURCE=athena``).

    :param athena: a boto3 Athena client; the queries run in ``target.workgroup`` (its results
        location and scan limit) over the Glue database ``target.database``.
    """

    athena: Any
    target: AthenaTarget
    poll_seconds: float = 1.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    name: str = "athena"

    def read_summaries(
        self,
        model_name: str,
        window: TimeWindow,
        features: Sequence[FeatureSpec],
        references: Sequence[SummaryReference],
        *,
        version: str | None = None,
    ) -> list[WindowSummary]:
        return athena_window_summaries(self._run, self.target.database, model_name, window, features, references, version=version)

    def read_window(
        self, manifest: ModelManifest, window: TimeWindow, references: Sequence[SummaryReference], *, quality: bool = True
    ) -> SourceWindow:
        """The drift summaries (:meth:`read_summaries`), the refusals and the rows per version
        (:func:`athena_refusals_and_versions`); model quality comes from the database."""
        refused, versions = athena_refusals_and_versions(self._run, self.target.database, manifest.model_name, window)
        summaries = self.read_summaries(manifest.model_name, window, manifest.features, references, version=manifest.version)
        return SourceWindow(summaries, refused=refused, versions=tuple(versions))

    def _run(self, query: str) -> Iterable[Sequence[Any]]:
        return athena_rows(self.athena, self.target, query, poll_seconds=self.poll_seconds, sleep=self.sleep)[1]


# --------------------------------------------------------------------------------------------
# The SQL


def _query(database: str, model_name: str, window: TimeWindow, entries: list[Entry], version: str | None, dialect: Dialect) -> WindowQuery:
    return WindowQuery(_sql(database, model_name, window, entries, version, dialect), tuple(entries))


def _sql(database: str, model_name: str, window: TimeWindow, entries: list[Entry], version: str | None, dialect: Dialect) -> str:
    grids: dict[int, str] = {}  # entry index -> array literal, for grids with values
    values: dict[str, str] = {}  # value column -> expression over the window's row
    cells: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if entry.kind == "numeric":
            source = "prediction" if entry.feature is None else _quoted(feature_column(entry.feature))
            value = f"v_{index}"
            values[value] = _finite(f"TRY_CAST({source} AS DOUBLE)")
            assert entry.grid is not None
            if entry.grid.values.size:
                grids[index] = _array([_double(float(number)) for number in entry.grid.values], ",")
                cells[index] = (
                    f"CASE WHEN {value} IS NULL THEN NULL WHEN w_{index} = 0 THEN 0 "
                    f"WHEN g_{index}[w_{index}] = {value} THEN 2 * w_{index} - 1 ELSE 2 * w_{index} END"
                )
            else:
                cells[index] = f"CASE WHEN {value} IS NULL THEN NULL ELSE 0 END"
        elif entry.kind == "number":
            values[f"v_{index}"] = _finite(f"CAST({_quoted(feature_column(entry.feature or ''))} AS DOUBLE)")
        elif entry.kind == "text":
            values[f"v_{index}"] = f"CAST({_quoted(feature_column(entry.feature or ''))} AS VARCHAR)"
        elif entry.kind == "prediction":
            values[f"v_{index}"] = "prediction"

    where = _in_window(model_name, window, "predicted_at", version)
    needed = sorted({"prediction"} | {_quoted(feature_column(entry.feature)) for entry in entries if entry.feature is not None})
    parts = []
    if grids:
        parts.append("grids AS (SELECT " + ", ".join(f"{literal} AS g_{index}" for index, literal in grids.items()) + ")")
    parts.append(
        f"numbered AS (SELECT {', '.join(needed)}, row_number() OVER (PARTITION BY prediction_id ORDER BY stored_at) AS archive_copy "
        f'FROM {_quoted(database)}.{_quoted(PREDICTIONS_TABLE)} WHERE {where})'
    )
    value_list = ", ".join(f"{expression} AS {name}" for name, expression in values.items()) or "1 AS v_none"
    parts.append(f"window_values AS (SELECT {value_list} FROM numbered WHERE archive_copy = 1)")
    if grids:
        buckets = ", ".join(f"width_bucket(v_{index}, g_{index}) AS w_{index}" for index in grids)
        parts.append(f"placed AS (SELECT window_values.*, grids.*, {buckets} FROM window_values CROSS JOIN grids)")
    source = "placed" if grids else "window_values"
    cell_list = ", ".join(f"{expression} AS c_{index}" for index, expression in cells.items())
    parts.append(f"window_cells AS (SELECT {source}.*{', ' + cell_list if cell_list else ''} FROM {source})")

    arrays = {
        "entry_index": [str(index) for index in range(len(entries))],
        "cell_index": [f"c_{index}" if entry.kind == "numeric" else "CAST(NULL AS BIGINT)" for index, entry in enumerate(entries)],
        "text_key": [f"v_{index}" if entry.kind in ("text", "prediction") else "CAST(NULL AS VARCHAR)" for index, entry in enumerate(entries)],
        "number_key": [f"v_{index}" if entry.kind == "number" else "CAST(NULL AS DOUBLE)" for index, entry in enumerate(entries)],
        "entry_value": [f"v_{index}" if entry.kind == "numeric" else "CAST(NULL AS DOUBLE)" for index, entry in enumerate(entries)],
    }
    literal = {name: _array(items) for name, items in arrays.items()}
    if dialect == "athena":
        unnested = f"SELECT * FROM window_cells CROSS JOIN UNNEST({', '.join(literal.values())}) AS unnested({', '.join(arrays)})"
    else:  # DuckDB's UNNEST takes one list; several in the select list are zipped
        unnested = "SELECT " + ", ".join(f"unnest({items}) AS {name}" for name, items in literal.items()) + " FROM window_cells"
    parts.append(f"entries AS ({unnested})")
    return (
        "WITH " + ",\n".join(parts) + "\nSELECT entry_index, cell_index, text_key, number_key, count(*) AS n, sum(entry_value) AS total, "
        "sum(entry_value * entry_value) AS total_squares, min(entry_value) AS minimum, max(entry_value) AS maximum "
        "FROM entries GROUP BY entry_index, cell_index, text_key, number_key"
    )


def _in_window(model_name: str, window: TimeWindow, moment: str, version: str | None = None) -> str:
    """The filter of a model's rows (of ``version``) whose ``moment`` is in ``window``: partition pruning on
    ``model`` and ``date`` (the window's days), then the columns themselves."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    of_version = "" if version is None else f" AND model_version = {_text(version)}"
    return (
        f"model = {_text(model_name)} AND \"date\" >= '{window.start.date().isoformat()}' AND \"date\" <= '{last_day.isoformat()}' "
        f"AND model_name = {_text(model_name)}{of_version} AND {moment} >= {_timestamp(window.start)} AND {moment} < {_timestamp(window.end)}"
    )


def _array(items: Sequence[str], separator: str = ", ") -> str:
    """An array of the SQL expressions ``items``: constructors of at most :data:`MAX_ARRAY_ELEMENTS`
    joined with ``||`` (array concatenation in Trino and DuckDB), so a grid of thousands of values or
    an ``UNNEST`` over hundreds of columns stays within Trino's limit."""
    chunks = [items[start : start + MAX_ARRAY_ELEMENTS] for start in range(0, len(items), MAX_ARRAY_ELEMENTS)] or [items]
    return " || ".join("ARRAY[" + separator.join(chunk) + "]" for chunk in chunks)


def _check_columns(database: str, features: Sequence[FeatureSpec], types: dict[str, str]) -> None:
    missing = [spec for spec in features if feature_column(spec.name) not in types]
    if missing:
        columns = ", ".join(f"{feature_column(spec.name)} {'double' if spec.kind == 'numeric' else 'string'}" for spec in missing)
        raise SmlError(
            f"Athena window source: the Glue table {database}.{PREDICTIONS_TABLE} has no column for feature(s) "
            f"{', '.join(repr(spec.name) for spec in missing)}; add them (a categorical feature archived as numbers is double): "
            f"ALTER TABLE {database}.{PREDICTIONS_TABLE} ADD COLUMNS ({columns})"
        )
    for spec in features:
        kind = types[feature_column(spec.name)]
        if not (_is_number(kind) or _is_text(kind)):
            raise SmlError(f"Athena window source: column {feature_column(spec.name)} of feature {spec.name!r} is {kind}, neither a number nor text")


def _is_number(kind: str) -> bool:
    return kind.split("(")[0] in NUMBER_TYPES or kind.startswith("decimal")


def _is_text(kind: str) -> bool:
    return kind.split("(")[0] in TEXT_TYPES


def _finite(expression: str) -> str:
    """``expression`` (a double), NULL where it is NaN or infinite: what the other sources count as missing."""
    return f"CASE WHEN is_nan({expression}) OR is_infinite({expression}) THEN NULL ELSE {expression} END"


def _double(number: float) -> str:
    """A DOUBLE literal that reads back as ``number`` exactly: ``repr`` with an exponent (a literal
    without one is a DECIMAL in Trino, converted to double by a division that may round otherwise)."""
    text = repr(number)
    return text if "e" in text else text + "e0"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


# --------------------------------------------------------------------------------------------
# Rows back into summaries


def _add_cell(summary: NumericSummary, grid: NumericGrid, cell: Any, count: int, total: Any, squares: Any, minimum: Any, maximum: Any) -> None:
    if cell is None:
        summary.missing += count
        return
    index = int(cell)
    summary.cells[index] += count
    summary.total += float(total)
    summary.total_squares += float(squares)
    summary.minimum = min(summary.minimum, float(minimum))
    summary.maximum = max(summary.maximum, float(maximum))
    if grid.values.size and index == 0:
        summary.below_total += float(total)
    if grid.values.size and index == grid.n_cells - 1:
        summary.above_total += float(total)


def _category(kind: str, text_key: Any, number_key: Any) -> str | float | tuple[str] | None:
    """A category's ``str()`` form as the other sources count it, None for a missing value, or, as
    their texts depend on the reference, a number column's value as the float it is
    (:func:`~sml.archive.layout.number_category`) and a text column's value in a 1-tuple
    (:func:`~sml.archive.layout.text_category`)."""
    if kind == "text":
        return None if text_key is None else (str(text_key),)
    if kind == "number":
        return None if number_key is None else float(number_key)
    if text_key is None:
        return None
    try:
        value = _DECODE.decode(text_key)
    except msgspec.DecodeError:
        return str(text_key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _categorical(grid: ColumnGrid, counted: tuple[dict[str | float | tuple[str], int], list[int]] | None) -> CategoricalSummary:
    assert isinstance(grid, CategoricalGrid)
    summary = CategoricalSummary.empty(grid)
    if counted is not None:
        as_float = integral_floats(grid.known)
        known = frozenset(grid.known)
        counts: dict[str, int] = {}
        for key, count in counted[0].items():
            if isinstance(key, tuple):
                text = text_category(key[0], known)
            else:
                text = key if isinstance(key, str) else number_category(key, as_float)
            counts[text] = counts.get(text, 0) + count
        summary.add_counts(counts, counted[1][0])
    return summary

