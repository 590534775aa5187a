"""The rest of the weekly run's window from the archive with DuckDB: model quality, refusals, versions.

:mod:`sml.archive.sources` counts a window's archived predictions into drift summaries; the
functions here read, from the same downloaded objects, what the run takes from the database
otherwise, each equal to the database read of the same events:

- :func:`read_quality`: the window's predictions of one model version joined with their labels,
  counted into the model's quality aggregate as they stream (:func:`sml.monitoring.model_quality.store.quality_columns`:
  confusion cells, score histograms, reliability bins, log-loss and Brier sums, CBPE's expected
  confusion; a regression model's error sums and residual histogram, and DLE's uniform sample of
  rows), in Arrow batches, so memory holds the aggregate, the labels' delays and one batch;
- :func:`read_refused_counts`: the window's refusals summed per field and reason;
- :func:`read_versions`: per model version, its predictions in the window, first and last;
- :func:`count_unmatched_labels`: the window's labels whose prediction is not archived (the other
  objects it needs are looked at one at a time, and only while a label is still unmatched).

**Labels as the database joins them.** ``ground_truth`` keeps one row per prediction, the label
with the latest ``labelled_at`` (on a tie, the one stored first; within one batch, the first of
the batch), and the weekly run joins it to every prediction whatever its delay, a label dated
before its prediction included. The archive keeps every label event (and redelivered copies), so
the winner is chosen where it is read: per ``prediction_id``, ``labelled_at`` descending, then
``stored_at``, then the object and the row in it (an object keeps its batch's order). Label
objects are partitioned by the label's own day: those from ``label_horizon`` before the window's
start on are read, which finds every label of the window's predictions but one dated more than
the label horizon before its prediction (a clock that far off). An unmatched label is one with
``labelled_at`` in the window whose prediction no model archived from ``label_horizon`` before
the window to ``label_horizon`` after it.

Redelivered copies count once everywhere: predictions by ``prediction_id``, refusals by event,
field and reason (:data:`sml.archive.parquet.DEDUPLICATION_KEY`); a label copy is the same
winner. Times are compared as microseconds since the epoch, as the database compares them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sml.archive.layout import (
    PREDICTIONS_TABLE,
    REFUSALS_TABLE,
    feature_column,
    integral_floats,
    number_category,
    probability_column,
    text_category,
)
from sml.archive.query import archive_ctes, read_parquet_source
from sml.archive.store import free_of_copies
from sml.lifecycle.manifest import ModelManifest
from sml.monitoring.data_quality.checks import RefusedCounts
from sml.monitoring.model_quality.store import QualityColumns, QualitySample, RegressionColumns, RegressionSample, quality_columns
from sml.monitoring.windows import TimeWindow, VersionRows

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def read_quality(
    connection: Any,
    predictions: Sequence[Path],
    labels: Sequence[Path],
    manifest: ModelManifest,
    window: TimeWindow,
    *,
    batch_rows: int,
) -> QualitySample | RegressionSample:
    """The quality sample of ``manifest``'s version in ``window`` (with its aggregate), from the archive's files.

    :param connection: a DuckDB connection.
    :param predictions: the model's prediction objects of the window's days, downloaded.
    :param labels: the label objects that may hold the window's labels (see the module docstring).
    """
    columns = quality_columns(manifest)
    if not predictions:
        return columns.finished_sample()
    sql = quality_sql(connection, predictions, labels, manifest, window)
    classes = [str(label) for label in manifest.classes]
    for batch in _batches(connection.sql(sql).to_arrow_reader(batch_rows)):
        predicted = batch.column("prediction").to_pylist()
        truth = batch.column("label").to_pylist()
        delays = pc.fill_null(batch.column("delay_us"), 0).to_numpy(zero_copy_only=False).astype(float)
        if isinstance(columns, QualityColumns):
            probabilities = np.column_stack(
                [_floats(batch.column(f"probability_{index}")) for index in range(len(classes))]
            ) if classes else np.empty((batch.num_rows, 0))
            columns.add_columns(predicted, probabilities, truth, delays)
        else:
            columns.add_columns(predicted, truth, delays, _loss_features(batch, columns, manifest))
    return columns.finished_sample()


def quality_sql(connection: Any, predictions: Sequence[Path], labels: Sequence[Path], manifest: ModelManifest, window: TimeWindow) -> str:
    """The query of the window's predictions of ``manifest``'s version with their winning label:
    ``prediction``, ``label`` (JSON texts; NULL when unlabelled), ``delay_us`` (labelled_at −
    predicted_at in µs), then ``probability_<i>`` per class (classifiers) or the features DLE
    reads as ``feature_<i>`` (regression with DLE)."""
    source = read_parquet_source(predictions)
    available = _columns(connection, source)
    extra = []
    if manifest.task == "regression":
        extra = [_available(feature_column(spec.name), available) + f" AS feature_{index}" for index, spec in enumerate(manifest.features)]
    else:
        extra = [_available(probability_column(str(label)), available) + f" AS probability_{index}" for index, label in enumerate(manifest.classes)]
    own = deduplicated_predictions(predictions, source)
    in_window = _in_window("predicted_at", window)
    window_rows = (
        f"SELECT prediction_id, prediction, predicted_at{''.join(', ' + item for item in extra)} FROM {own} "
        f"WHERE model_name = {_text(manifest.model_name)} AND model_version = {_text(manifest.version)} AND {in_window}"
    )
    if labels:
        ranked = (
            "SELECT prediction_id, label, labelled_at, row_number() OVER (PARTITION BY prediction_id "
            "ORDER BY labelled_at DESC, stored_at, filename, file_row_number) AS label_rank "
            f"FROM {_labels_source(labels)} WHERE prediction_id IN (SELECT prediction_id FROM window_rows)"
        )
    else:
        ranked = "SELECT NULL::VARCHAR AS prediction_id, NULL::VARCHAR AS label, NULL::TIMESTAMPTZ AS labelled_at, 1 AS label_rank WHERE false"
    names = [item.rsplit(" AS ", 1)[1] for item in extra]
    return (
        f"WITH window_rows AS ({window_rows}),\nranked AS ({ranked})\n"
        "SELECT window_rows.prediction, ranked.label, epoch_us(ranked.labelled_at) - epoch_us(window_rows.predicted_at) AS delay_us"
        f"{''.join(', window_rows.' + name for name in names)} "
        "FROM window_rows LEFT JOIN ranked ON ranked.prediction_id = window_rows.prediction_id AND ranked.label_rank = 1"
    )


def read_refused_counts(connection: Any, refusals: Sequence[Path], model_name: str, window: TimeWindow) -> RefusedCounts:
    """The values predict refused for ``model_name`` in ``window``, per field and reason, from the
    model's refusal objects of the window's days (as :func:`sml.monitoring.data_quality.checks.read_refused_counts`)."""
    if not refusals:
        return RefusedCounts()
    table = f"(WITH {archive_ctes({REFUSALS_TABLE: read_parquet_source(refusals)}, None, None, dialect='duckdb')} SELECT * FROM {REFUSALS_TABLE})"
    rows = connection.execute(
        f"SELECT field_name, reason, sum(refused_count) FROM {table} "
        f"WHERE model_name = {_text(model_name)} AND {_in_window('refused_at', window)} GROUP BY field_name, reason"
    ).fetchall()
    return RefusedCounts.from_sums(rows)


def read_versions(connection: Any, predictions: Sequence[Path], model_name: str, window: TimeWindow) -> list[VersionRows]:
    """Per model version, the archived predictions of ``model_name`` in ``window``, earliest first
    (as :func:`sml.monitoring.windows.window_versions`)."""
    if not predictions:
        return []
    rows = connection.execute(
        f"SELECT model_version, count(*), epoch_us(min(predicted_at)), epoch_us(max(predicted_at)) "
        f"FROM {deduplicated_predictions(predictions, read_parquet_source(predictions))} "
        f"WHERE model_name = {_text(model_name)} AND {_in_window('predicted_at', window)} GROUP BY model_version"
    ).fetchall()
    versions = [VersionRows(version, int(count), _moment(first), _moment(last)) for version, count, first, last in rows]
    return sorted(versions, key=lambda entry: (entry.first, entry.version))


def count_unmatched_labels(connection: Any, labels: Sequence[Path], window: TimeWindow, predictions: Iterable[Sequence[Path]]) -> int:
    """The labels whose winning ``labelled_at`` is in ``window`` and whose prediction is in none of
    ``predictions`` (every model's objects around the window; see the module docstring).

    The window's label ids go into a DuckDB table (which spills past the connection's memory
    limit) and each group of ``predictions`` removes the ids it holds, reading only its
    ``prediction_id`` column; the groups are taken one at a time (each may be downloaded when
    asked for and deleted after) and no more once every label has found its prediction.
    """
    if not labels:
        return 0
    ranked = (
        "SELECT prediction_id, labelled_at, row_number() OVER (PARTITION BY prediction_id "
        f"ORDER BY labelled_at DESC, stored_at, filename, file_row_number) AS label_rank FROM {_labels_source(labels)}"
    )
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE window_label_ids AS WITH ranked AS ({ranked}) "
        f"SELECT prediction_id FROM ranked WHERE label_rank = 1 AND {_in_window('labelled_at', window)}"
    )
    try:
        remaining = _count(connection)
        for paths in predictions:
            if not remaining:
                break
            if paths:
                files = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
                connection.execute(
                    f"DELETE FROM window_label_ids WHERE prediction_id IN (SELECT prediction_id FROM read_parquet([{files}], union_by_name = true))"
                )
                remaining = _count(connection)
        return remaining
    finally:
        connection.execute("DROP TABLE IF EXISTS window_label_ids")


def _count(connection: Any) -> int:
    return int(connection.execute("SELECT count(*) FROM window_label_ids").fetchone()[0])


# --------------------------------------------------------------------------------------------
# Helpers


def _labels_source(paths: Sequence[Path]) -> str:
    files = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    return f"read_parquet([{files}], union_by_name = true, filename = true, file_row_number = true)"


def deduplicated_predictions(paths: Sequence[Path], source: str) -> str:
    """The predictions of ``source`` (reading ``paths``) with each event once: copies dropped unless the objects are free of them
    (:func:`sml.archive.store.free_of_copies`)."""
    if free_of_copies([str(path) for path in paths]):
        return source  # compaction kept one copy of each event, and an event lives in one partition
    return f"(WITH {archive_ctes({PREDICTIONS_TABLE: source}, None, None, dialect='duckdb')} SELECT * FROM {PREDICTIONS_TABLE})"


def _columns(connection: Any, source: str) -> set[str]:
    return {row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


def _available(column: str, available: set[str]) -> str:
    return f'"{column}"' if column in available else "NULL"


def _in_window(column: str, window: TimeWindow) -> str:
    return f"epoch_us({column}) >= {_epoch_us(window.start)} AND epoch_us({column}) < {_epoch_us(window.end)}"


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(epoch_us))


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _batches(reader: pa.RecordBatchReader) -> Any:
    for batch in reader:
        if batch.num_rows:
            yield batch


def _floats(array: pa.Array) -> np.ndarray:
    if pa.types.is_null(array.type):
        return np.full(len(array), np.nan)
    return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)


def _loss_features(batch: pa.RecordBatch, columns: RegressionColumns, manifest: ModelManifest) -> dict[str, list[Any]] | None:
    """A batch's feature values as DLE reads them from the database: numbers as floats (NaN where
    missing), a category by the ``str()`` the database read gives it (:mod:`sml.archive.sources`)."""
    if columns.loss_sample is None or columns.estimator is None:
        return None
    categories = {spec.name: spec.categories for spec in columns.estimator.inputs if spec.kind == "categorical"}
    values: dict[str, list[Any]] = {}
    for index, spec in enumerate(manifest.features):
        array = batch.column(f"feature_{index}")
        if spec.kind == "numeric":
            values[spec.name] = list(_numbers(array))
            continue
        known = categories.get(spec.name, ())
        items = array.to_pylist()
        if pa.types.is_floating(array.type):
            as_float = integral_floats(known)
            values[spec.name] = [None if value is None or not math.isfinite(value) else number_category(value, as_float) for value in items]
        elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            seen = frozenset(known)
            values[spec.name] = [None if value is None else text_category(value, seen) for value in items]
        else:
            values[spec.name] = items
    return values


def _numbers(array: pa.Array) -> np.ndarray:
    if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return np.where(np.isfinite(values), values, np.nan)
    return np.full(len(array), np.nan)
