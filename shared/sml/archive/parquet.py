"""Stored rows into Arrow tables for the archive, and archived tables back into rows (pure).

The writer hands over the rows it committed, built by :mod:`sml.writer.batch` (features and
probabilities as JSON text, naive UTC timestamps); the archive holds them column by column:

- ``predictions``: ``prediction_id``, ``schema_version``, ``model_name``, ``model_version``,
  ``predicted_at``, ``prediction`` (the label as JSON text, as in the table, so
  ``ground_truth.label = predictions.prediction`` is still a correct prediction), ``stored_at``,
  one ``p_<class>`` column (float64) per class probability and one ``f_<feature>`` column per
  feature (:mod:`sml.archive.layout` names them): float64 for numbers, string for text. A
  feature whose values mix numbers and text in one file is kept as JSON text and listed in the
  file's metadata, so it reads back exactly.
- ``ground_truth``: ``prediction_id``, ``label`` (JSON text), ``labelled_at``, ``source``, ``stored_at``.
- ``predict_refusals``: the table's columns as they are.

Timestamps are ``timestamp[us, tz=UTC]``; every file is written with zstd.

Reading back, numbers come back as floats: an integer feature value ``3`` is stored as ``3.0``
(exact up to 2**53). A feature column present in a file gives every row of the file that key
(None where the value is null): the writer puts one model version's rows in a file of their
own, and predict sends every feature of that version's schema. A feature that is null in every
row of a file has no column there (a column needs a type, and a guessed one would clash with the
type other files and Athena's table give the feature: a text feature's column read as a double
fails the whole Athena query); the file's metadata lists it under ``null_columns``, so its rows
read it back as null, after the features that have columns.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from sml.archive.layout import (
    FEATURE_PREFIX,
    GROUND_TRUTH_TABLE,
    PREDICTIONS_TABLE,
    PROBABILITY_PREFIX,
    REFUSALS_TABLE,
    escape_name,
    feature_column,
    probability_column,
    unescape_name,
)

if TYPE_CHECKING:
    from sml.writer.batch import PredictionValues

Row = dict[str, Any]
METADATA_KEY = b"sml.archive"
FORMAT_VERSION = 1
COMPRESSION = "zstd"
TIMESTAMP = pa.timestamp("us", tz="UTC")
_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()

PREDICTION_COLUMNS = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("schema_version", pa.int16()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("predicted_at", TIMESTAMP),
        ("prediction", pa.string()),
        ("stored_at", TIMESTAMP),
    ]
)
GROUND_TRUTH_COLUMNS = pa.schema(
    [("prediction_id", pa.string()), ("label", pa.string()), ("labelled_at", TIMESTAMP), ("source", pa.string()), ("stored_at", TIMESTAMP)]
)
REFUSAL_COLUMNS = pa.schema(
    [
        ("refusal_id", pa.string()),
        ("field_name", pa.string()),
        ("reason", pa.string()),
        ("refused_count", pa.int32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("refused_at", TIMESTAMP),
        ("stored_at", TIMESTAMP),
    ]
)
FIXED_COLUMNS = {PREDICTIONS_TABLE: PREDICTION_COLUMNS, GROUND_TRUTH_TABLE: GROUND_TRUTH_COLUMNS, REFUSALS_TABLE: REFUSAL_COLUMNS}
EVENT_TIME = {PREDICTIONS_TABLE: "predicted_at", GROUND_TRUTH_TABLE: "labelled_at", REFUSALS_TABLE: "refused_at"}
EVENT_ID = {PREDICTIONS_TABLE: "prediction_id", GROUND_TRUTH_TABLE: "prediction_id", REFUSALS_TABLE: "refusal_id"}
DEDUPLICATION_KEY = {
    PREDICTIONS_TABLE: ("prediction_id",),
    GROUND_TRUTH_TABLE: ("prediction_id", "labelled_at", "label"),
    REFUSALS_TABLE: ("refusal_id", "field_name", "reason"),
}
"""The columns that identify one event's row: a copy with the same values is a redelivery."""
_EVENT_ID_COLUMNS = frozenset(EVENT_ID.values())


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def prediction_table(rows: Sequence[Row], decoded: Sequence[PredictionValues] | None = None) -> pa.Table:
    """The archive table of ``predictions`` rows (as :func:`sml.writer.batch.prediction_row` builds them).

    :param decoded: per row, its features and probabilities as the writer parsed them (the
        values its JSON text encodes), so they are not decoded again; by default they are decoded
        from the rows' JSON text.
    """
    arrays = [_column([row[name] for row in rows], field.type) for name, field in zip(PREDICTION_COLUMNS.names, PREDICTION_COLUMNS)]
    names = list(PREDICTION_COLUMNS.names)
    if decoded is None:
        # One decode per batch (a JSON array of the rows' texts), not one per row.
        features = _DECODE.decode("[" + ",".join(row["features"] for row in rows) + "]")
        probabilities = _DECODE.decode("[" + ",".join(row["probabilities"] or "{}" for row in rows) + "]")
    else:
        features = [values for values, _ in decoded]
        probabilities = [values or {} for _, values in decoded]
    for name, values in _columns_of(probabilities):
        names.append(probability_column(name))
        arrays.append(pa.array(values, type=pa.float64()))
    json_columns, null_columns = [], []
    for name, values in _columns_of(features):
        column = feature_column(name)
        array, as_json = _feature_array(values)
        if array.null_count == len(array):
            null_columns.append(column)  # no value to take a type from; see the module docstring
            continue
        names.append(column)
        arrays.append(array)
        if as_json:
            json_columns.append(column)
    return pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(_metadata(json_columns, null_columns))


def _columns_of(rows: list[dict[str, Any]]) -> list[tuple[str, Sequence[Any]]]:
    """Every key of ``rows`` (first-seen order) with its values, one per row (None where a row lacks it).

    Rows whose keys come in the first row's order (the usual case: predict sends a version's
    schema in its order) are transposed in one ``zip`` instead of one lookup per key and row.
    """
    if not rows:
        return []
    first = list(rows[0])
    if all(list(values) == first for values in rows):
        return list(zip(first, zip(*(values.values() for values in rows)))) if first else []
    return [(name, [values.get(name) for values in rows]) for name in _keys(rows)]


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of ``rows`` in first-seen order; rows with the first row's keys (the usual case) cost one comparison."""
    if not rows:
        return []
    first = rows[0].keys()
    keys = dict.fromkeys(first)
    for values in rows:
        if values.keys() != first:
            keys.update(dict.fromkeys(values))
    return list(keys)


def _column(values: list[Any], type_: pa.DataType) -> pa.Array:
    if type_ != TIMESTAMP:
        return pa.array(values, type=type_)
    if {value.tzinfo for value in values} == {None}:  # the writer's naive UTC: read as UTC, no per-value conversion
        return pa.array(values, type=pa.timestamp("us")).cast(TIMESTAMP)
    return pa.array([_utc(value) for value in values], type=TIMESTAMP)


def _feature_array(values: list[Any]) -> tuple[pa.Array, bool]:
    """Numbers as float64, text as string; anything else (booleans, a mix, integers a double cannot hold exactly) as JSON text."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is not None and (pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_null(array.type)):
        try:
            return array.cast(pa.float64()), False  # a safe cast: an integer a double cannot hold exactly raises
        except pa.ArrowInvalid:
            array = None
    if array is not None and pa.types.is_string(array.type):
        return array, False
    return pa.array([None if value is None else _ENCODE.encode(value).decode() for value in values], type=pa.string()), True


def json_columns_of(schema: pa.Schema) -> list[str]:
    """The feature columns of an archive file's ``schema`` that hold JSON text (from its metadata)."""
    return list(json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}")).get("json_columns", ()))


def null_columns_of(schema: pa.Schema) -> list[str]:
    """The feature columns an archive file leaves out because every row's value is null (from its metadata)."""
    return list(json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}")).get("null_columns", ()))


def with_json_columns(table: pa.Table, columns: Collection[str]) -> pa.Table:
    """``table`` (one archive file) with its feature ``columns`` as JSON text, listed as such in its metadata.

    The writer types a feature per object: the batch of a nullable boolean whose values were all
    null holds a double column where another batch of the same version holds JSON text, an
    integer beyond 2**53 makes its batch's column JSON. Read as JSON, a double ``3.0`` is ``3.0``
    and a text ``"a"`` is ``"a"``, so the values read back the same; columns the table lacks stay absent.
    """
    kept = set(json_columns_of(table.schema))
    for name in columns:
        if name in kept or name not in table.column_names:
            continue
        values = table.column(name).to_pylist()
        array = pa.array([None if value is None else _ENCODE.encode(value).decode() for value in values], type=pa.string())
        table = table.set_column(table.column_names.index(name), name, array)
        kept.add(name)
    return table.replace_schema_metadata(_metadata([name for name in table.column_names if name in kept], null_columns_of(table.schema)))


def archive_metadata(json_columns: Sequence[str], null_columns: Sequence[str] = ()) -> str:
    """The text of an archive file's metadata (under :data:`METADATA_KEY`)."""
    content: dict[str, Any] = {"format": FORMAT_VERSION, "json_columns": list(json_columns)}
    if null_columns:
        content["null_columns"] = list(null_columns)
    return json.dumps(content)


def _metadata(json_columns: Sequence[str], null_columns: Sequence[str] = ()) -> dict[bytes, bytes]:
    return {METADATA_KEY: archive_metadata(json_columns, null_columns).encode()}


def ground_truth_table(rows: Sequence[Row]) -> pa.Table:
    """The archive table of ``ground_truth`` rows (as :func:`sml.writer.batch.ground_truth_row` builds them)."""
    return _fixed_table(GROUND_TRUTH_COLUMNS, rows)


def refusal_table(rows: Sequence[Row]) -> pa.Table:
    """The archive table of ``predict_refusals`` rows (as :func:`sml.writer.batch.refusal_rows` builds them)."""
    return _fixed_table(REFUSAL_COLUMNS, rows)


def _fixed_table(schema: pa.Schema, rows: Sequence[Row]) -> pa.Table:
    arrays = [_column([row[name] for row in rows], field.type) for name, field in zip(schema.names, schema)]
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(_metadata([])))


TABLE_BUILDERS = {PREDICTIONS_TABLE: prediction_table, GROUND_TRUTH_TABLE: ground_truth_table, REFUSALS_TABLE: refusal_table}


def to_parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as one Parquet file (zstd), its metadata kept.

    Written for the writer's small per-batch objects, which compaction rewrites: dictionary
    encoding only for the columns whose values repeat within a batch (names, versions, labels,
    text features; not the event id nor float columns, whose distinct values only make the
    dictionary a second copy that Parquet then abandons), and min/max statistics only for the
    table's own columns (readers prune by event time; nothing filters feature or probability
    columns of an uncompacted object). Both halve the time to write 500 rows of 30 float
    features and shrink the file; readers see the same values and types.
    """
    sink = io.BytesIO()
    own = set(table.schema.names) - {name for name in table.schema.names if name.startswith((FEATURE_PREFIX, PROBABILITY_PREFIX))}
    repeated = [field.name for field in table.schema if field.name not in _EVENT_ID_COLUMNS and not pa.types.is_floating(field.type)]
    pq.write_table(table, sink, compression=COMPRESSION, use_dictionary=repeated, write_statistics=sorted(own))
    return sink.getvalue()


def read_parquet_bytes(data: bytes) -> pa.Table:
    """The table of one archive file."""
    return pq.read_table(io.BytesIO(data))


# --------------------------------------------------------------------------------------------
# Back into table rows


def table_rows(table_name: str, table: pa.Table) -> list[Row]:
    """The rows of the database table ``table_name`` that ``table`` (one archive file, or several
    of one schema) holds, as the writer builds them: naive UTC timestamps, JSON text where the
    table keeps JSON.

    :raises ValueError: a column name is not one the archive writes.
    """
    if table_name == PREDICTIONS_TABLE:
        return _prediction_rows(table)
    fixed = FIXED_COLUMNS[table_name]
    rows = table.select(fixed.names).to_pylist()
    for row in rows:
        for name in (EVENT_TIME[table_name], "stored_at"):
            row[name] = row[name].astimezone(timezone.utc).replace(tzinfo=None)
    return rows


def _prediction_rows(table: pa.Table) -> list[Row]:
    json_columns = set(json_columns_of(table.schema))
    features: list[tuple[str, bool, list[Any]]] = []
    probabilities: list[tuple[str, list[Any]]] = []
    for column in table.column_names:
        if column.startswith(FEATURE_PREFIX):
            features.append((unescape_name(column[len(FEATURE_PREFIX) :]), column in json_columns, table.column(column).to_pylist()))
        elif column.startswith(PROBABILITY_PREFIX):
            probabilities.append((unescape_name(column[len(PROBABILITY_PREFIX) :]), table.column(column).to_pylist()))
        elif column not in PREDICTION_COLUMNS.names:
            raise ValueError(f"archive column {column!r} is not one the archive writes")
    for column in null_columns_of(table.schema):
        if column not in table.column_names:
            features.append((unescape_name(column[len(FEATURE_PREFIX) :]), False, [None] * table.num_rows))
    rows = table.select(PREDICTION_COLUMNS.names).to_pylist()
    for index, row in enumerate(rows):
        row["predicted_at"] = row["predicted_at"].astimezone(timezone.utc).replace(tzinfo=None)
        row["stored_at"] = row["stored_at"].astimezone(timezone.utc).replace(tzinfo=None)
        values = {name: (None if values[index] is None else _DECODE.decode(values[index])) if as_json else values[index] for name, as_json, values in features}
        row["features"] = _ENCODE.encode(values).decode()
        row_probabilities = {name: values[index] for name, values in probabilities if values[index] is not None}
        row["probabilities"] = _ENCODE.encode(row_probabilities).decode() if row_probabilities else None
    return rows

