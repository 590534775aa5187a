"""The weekly run's window read from the archive: DuckDB streams a window's rows into the same summaries as the database read.

:func:`archive_window_summaries` gives, for the predictions of one model made in a window, the
:class:`~sml.monitoring.summaries.WindowSummary` per reference that
:func:`sml.monitoring.windows.read_window_summaries` gives from the database: the same
summariser counts the same values, so a window gives the same verdicts from either source. The
objects of the window's days are downloaded (:mod:`sml.archive.query` says why), DuckDB selects
the window's rows (a redelivered copy counts once: the first stored) and hands them over in
Arrow record batches of ``batch_rows``, each counted and dropped, so memory holds the summaries
and one batch whatever the window's size; DuckDB spills past ``memory_limit``.

Values are taken as the database read takes them: a numeric feature's missing, non-finite or
non-numeric value counts as missing; a categorical value is counted by its ``str()``, where the
archive gives an integral float of a numeric category back as the integer it was (``3``, not
``3.0``) unless the reference counted integral numbers as floats
(:func:`sml.archive.layout.integral_floats`), and a text as JSON where that gives a category the
reference knows (:func:`sml.archive.layout.text_category`: booleans and mixed values are archived
as JSON text); the prediction is the decoded JSON text. Where the two can differ: a numeric feature sent as the string ``"1.5"`` is missing in the database read
but a number here, since the archive cannot tell it from a column that changed type between
model versions; an integral category sent as ``3`` to a model trained on ``3.0`` (or the reverse).
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sml.archive import window_events
from sml.archive.layout import (
    GROUND_TRUTH_TABLE,
    PREDICTIONS_TABLE,
    REFUSALS_TABLE,
    feature_column,
    key_part,
    integral_floats,
    number_category,
    text_category,
)
from sml.archive.query import download_days, duckdb_connection, duckdb_errors_named, read_parquet_source
from sml.archive.store import ArchivedObject, ArchiveLocation, download, list_table
from sml.lifecycle.manifest import FeatureSpec, ModelManifest
from sml.monitoring.sources import SourceWindow
from sml.monitoring.summaries import SummaryReference, WindowSummariser, WindowSummary
from sml.monitoring.windows import TimeWindow

# Rows per batch counted at once. Measured on the drift read of 20 numeric features in a fresh process:
# 100,000 peaked at 425 MiB for 1M rows and 464 MiB for 10M, 20,000 at 392 and 438 MiB, in about the same time.
BATCH_ROWS = 20_000
DEFAULT_LABEL_HORIZON = timedelta(days=7)
"""``SML_LABEL_HORIZON_DAYS``'s default."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DECODE = msgspec.json.Decoder()


def archive_window_summaries(
    s3: Any,
    location: ArchiveLocation,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    *,
    memory_limit: str = "256MB",
    batch_rows: int = BATCH_ROWS,
    version: str | None = None,
) -> list[WindowSummary]:
    """Read the archived predictions of ``model_name`` made in ``window`` into one summary per reference.

    :param version: only the predictions of this model version (``model_version``); ``None``: every version's.

    :returns: a summary per reference, in order (``n_rows`` 0 when nothing is archived there).
    """
    with tempfile.TemporaryDirectory(prefix="sml-window-") as work:
        copy = download_days(s3, location, Path(work) / "archive", window.start.date(), _last_day(window), tables=[PREDICTIONS_TABLE], models=[model_name])
        paths = copy.files[PREDICTIONS_TABLE]
        if not paths:
            return [WindowSummariser(reference).summary() for reference in references]
        connection = _connection(Path(work), memory_limit)
        try:
            with duckdb_errors_named(location, Path(work), "reading the window from the archive"):
                return _summaries(connection, paths, model_name, window, features, references, batch_rows, version)
        finally:
            connection.close()


def archive_window(
    s3: Any,
    location: ArchiveLocation,
    manifest: ModelManifest,
    window: TimeWindow,
    references: Sequence[SummaryReference],
    *,
    quality: bool = True,
    label_horizon: timedelta = DEFAULT_LABEL_HORIZON,
    memory_limit: str = "256MB",
    batch_rows: int = BATCH_ROWS,
) -> SourceWindow:
    """Everything the weekly run reads of ``window`` for ``manifest``'s version, from the archive,
    the objects downloaded once: the drift summaries (:func:`archive_window_summaries`), the quality
    sample with its aggregate (when ``quality``), the refusals, the versions and the unmatched
    labels (:mod:`sml.archive.window_events`, which says which label objects are read and why).

    :param label_horizon: how long after a prediction its label may arrive (``SML_LABEL_HORIZON_DAYS``).
    """
    first, last = window.start.date(), _last_day(window)
    model = manifest.model_name
    with tempfile.TemporaryDirectory(prefix="sml-window-") as work:
        directory = Path(work) / "archive"
        listed = list_table(s3, location, PREDICTIONS_TABLE, None if quality else [model])
        folder = f"{location.prefix}{PREDICTIONS_TABLE}/model={key_part(model)}/"
        own_objects = [item for item in listed if item.key.startswith(folder) and _day_in(item, first, last)]
        own = download(s3, location, own_objects, directory)
        refusals = download_days(s3, location, directory, first, last, tables=[REFUSALS_TABLE], models=[model]).files[REFUSALS_TABLE]
        labels = []
        if quality:
            labels = download_days(s3, location, directory, (window.start - label_horizon).date(), None, tables=[GROUND_TRUTH_TABLE]).files[GROUND_TRUTH_TABLE]
        connection = _connection(Path(work), memory_limit)
        try:
            with duckdb_errors_named(location, Path(work), "reading the window from the archive"):
                if own:
                    summaries = _summaries(connection, own, model, window, manifest.features, references, batch_rows, manifest.version)
                else:
                    summaries = [WindowSummariser(reference).summary() for reference in references]
                unmatched = None
                if quality:
                    # Where else a window's label may find its prediction: any model's objects from the label horizon before
                    # the window to the label horizon after it, fetched one at a time once the window's own have been looked in.
                    around = (window.start - label_horizon).date(), (window.end + label_horizon).date()
                    others = [item for item in listed if item not in own_objects and _day_in(item, *around)]
                    unmatched = window_events.count_unmatched_labels(
                        connection, labels, window, itertools.chain([own], _one_at_a_time(s3, location, others, Path(work) / "others"))
                    )
                return SourceWindow(
                    summaries=summaries,
                    quality_sample=window_events.read_quality(connection, own, labels, manifest, window, batch_rows=batch_rows) if quality else None,
                    refused=window_events.read_refused_counts(connection, refusals, model, window),
                    versions=tuple(window_events.read_versions(connection, own, model, window)),
                    unmatched_labels=unmatched,
                )
        finally:
            connection.close()


def _one_at_a_time(s3: Any, location: ArchiveLocation, objects: Sequence[ArchivedObject], directory: Path) -> Iterator[list[Path]]:
    """Each of ``objects`` downloaded when asked for, as a one-path list, and deleted once the next is asked for."""
    for item in objects:
        paths = download(s3, location, [item], directory)
        try:
            yield paths
        finally:
            for path in paths:
                path.unlink(missing_ok=True)


def _connection(work: Path, memory_limit: str) -> Any:
    # One thread: each thread holds a decoded row group (~120k rows × every column); measured on 300k rows
    # the process peaked at 395 MiB with one thread and 447 MiB with two.
    return duckdb_connection(work, memory_limit, threads=1)


def _summaries(
    connection: Any,
    paths: Sequence[Path],
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    batch_rows: int,
    version: str | None,
) -> list[WindowSummary]:
    summarisers = [WindowSummariser(reference) for reference in references]
    reader = connection.sql(window_sql(connection, paths, model_name, window, features, version)).to_arrow_reader(batch_rows)
    for batch in _gathered(reader, batch_rows):
        _count(batch, features, summarisers)
    return [summariser.summary() for summariser in summarisers]


def _last_day(window: TimeWindow) -> date:
    return (window.end - timedelta(microseconds=1)).date()


def _day_in(item: ArchivedObject, since: date, until: date) -> bool:
    return item.day is not None and since <= item.day <= until


@dataclass(frozen=True)
class ArchiveWindowSource:
    """The window from the event archive with DuckDB (``SML_WINDOW_SOURCE=duckdb``); see :func:`archive_window_summaries`."""

    s3: Any
    location: ArchiveLocation
    memory_limit: str = "256MB"
    label_horizon: timedelta = DEFAULT_LABEL_HORIZON
    name: str = "duckdb"

    def read_window(
        self, manifest: ModelManifest, window: TimeWindow, references: Sequence[SummaryReference], *, quality: bool = True
    ) -> SourceWindow:
        """:func:`archive_window`: drift, quality, refusals and versions of the window, all from the archive."""
        return archive_window(
            self.s3, self.location, manifest, window, references, quality=quality, label_horizon=self.label_horizon, memory_limit=self.memory_limit
        )

    def read_summaries(
        self,
        model_name: str,
        window: TimeWindow,
        features: Sequence[FeatureSpec],
        references: Sequence[SummaryReference],
        *,
        version: str | None = None,
    ) -> list[WindowSummary]:
        return archive_window_summaries(
            self.s3, self.location, model_name, window, features, references, memory_limit=self.memory_limit, version=version
        )


def window_sql(
    connection: Any, paths: Sequence[Path], model_name: str, window: TimeWindow, features: Sequence[FeatureSpec], version: str | None = None
) -> str:
    """The query of a window's rows: ``prediction`` and one column per feature, in ``features`` order
    (NULL for a feature no file has). Copies are dropped unless the objects are free of them (:func:`sml.archive.store.free_of_copies`)."""
    source = read_parquet_source(paths)
    available = {row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    table = window_events.deduplicated_predictions(paths, source)
    columns = ", ".join(f'"{feature_column(spec.name)}"' if feature_column(spec.name) in available else "NULL" for spec in features)
    start, end = _epoch_us(window.start), _epoch_us(window.end)
    name = model_name.replace("'", "''")
    of_version = "" if version is None else " AND model_version = '{}'".format(version.replace("'", "''"))
    return (
        f"SELECT prediction{', ' if columns else ''}{columns} FROM {table} "
        f"WHERE model_name = '{name}'{of_version} AND epoch_us(predicted_at) >= {start} AND epoch_us(predicted_at) < {end}"
    )


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _gathered(reader: pa.RecordBatchReader, rows: int) -> Any:
    """The reader's batches joined into batches of at least ``rows`` rows (DuckDB hands over a row
    group's worth at a time): the summariser pays a fixed cost per call and column."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _count(batch: pa.RecordBatch, features: Sequence[FeatureSpec], summarisers: Sequence[WindowSummariser]) -> None:
    columns: dict[str, Any] = {}
    numbers: list[str] = []  # categorical columns of numbers, and of text: their categories depend on the reference
    texts: list[str] = []
    for index, spec in enumerate(features, start=1):
        array = batch.column(index)
        columns[spec.name] = _numeric(array) if spec.kind == "numeric" else _categorical(array)
        if spec.kind != "numeric" and pa.types.is_floating(array.type):
            numbers.append(spec.name)
        elif spec.kind != "numeric" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            texts.append(spec.name)
    predictions = _decoded(batch.column(0))
    for summariser in summarisers:
        named = dict(columns)
        for name in numbers + texts:
            known = summariser.reference.features[name].known  # type: ignore[union-attr]
            if name in texts:
                seen = frozenset(known)
                category = {value: text_category(value, seen) for value in set(columns[name]) if value is not None}
            else:
                as_float = integral_floats(known)
                category = {value: number_category(value, as_float) for value in set(columns[name]) if value is not None}
            if any(text != value for value, text in category.items()):
                named[name] = [None if value is None else category[value] for value in columns[name]]
        summariser.add_columns(named, predictions, rows=batch.num_rows)


def _numeric(array: pa.Array) -> np.ndarray:
    if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_null(array.type):
        return np.full(len(array), np.nan)
    return np.array([_as_float(value) for value in _decoded(array)], dtype=np.float64)


def _categorical(array: pa.Array) -> list[Any]:
    if pa.types.is_floating(array.type):
        return [None if value is None or not math.isfinite(value) else value for value in array.to_pylist()]
    return array.to_pylist()


def _decoded(array: pa.Array) -> list[Any]:
    """JSON texts as values (a text that is not JSON stays as it is); one decode per distinct text."""
    texts = array.to_pylist()
    decoded: dict[Any, Any] = {}
    for text in set(texts):
        if text is None:
            decoded[text] = None
            continue
        try:
            decoded[text] = _DECODE.decode(text)
        except msgspec.DecodeError:
            decoded[text] = text
    return [decoded[text] for text in texts]


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan
