"""Production windows: the predictions of one model in a time range, read for drift.

:func:`read_window_summaries` reads only the ``features`` and ``prediction`` texts of the
window's rows and counts each slice into mergeable summaries (:mod:`sml.monitoring.summaries`),
so memory does not grow with the window; :func:`read_window` keeps the values instead, one numpy
array per numeric feature and one list of values per categorical feature (without pandas).

Moving and parsing the texts is the cost that matters: pymysql takes a result apart row by row in
Python (about 2 µs a row), as long as msgspec takes to decode the row's JSON. So the database does
the row-by-row part: it splits the window into time slices of about a megabyte of text and sends
each slice as one JSON text ``[[features, "prediction"], ...]`` (``GROUP_CONCAT``; the prediction
is quoted as a JSON string, so no stored text can break the slice's JSON), streamed, so that it
builds the next slice while the client decodes this one. One msgspec call typed for the model's
feature schema decodes a slice, reading only the keys drift needs. A slice that typed decoding
rejects (a numeric feature holding a string, a text that is not JSON), or that the server cannot
send whole (longer than ``max_allowed_packet``), is read again row by row and decoded leniently,
so every row counts once and by the same rules.

A :class:`WindowExtension` reads more of each row in the same pass (model quality: the
probabilities and the row's ``ground_truth`` label, :mod:`sml.monitoring.model_quality.store`): it joins its
tables, appends its JSON values to each row of the slice and its typed fields to the slice's row
struct, and receives the decoded rows, so the window is read once however much is read of it.

Example::

    window = TimeWindow.ending_at(datetime.now(timezone.utc), timedelta(days=7))
    sample = read_window(engine, "breast-cancer", window, manifest.features)
    sample.numeric["mean radius"]  # float64 array, NaN where the value was missing
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import msgspec
import msgspec.structs
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sml.core.db import PREDICTIONS, to_db_timestamp
from sml.core.errors import SmlError
from sml.lifecycle.manifest import FeatureSpec
from sml.monitoring.summaries import SummaryReference, WindowSummariser, WindowSummary

SLICE_BYTES = 1 << 20
MAX_CACHED_LABELS = 10_000
ROWS_PER_FETCH = 10_000
# The index the window query must range over; MariaDB otherwise prefers scanning every entry of
# the model (a ``ref`` on model_name), which also reads all of a long history.
_WINDOW_INDEX_HINT = "FORCE INDEX (ix_predictions_model_time)"
_LENGTH_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_LENGTH_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_STRUCT_KEY = re.compile(r'^[^"\\\x00-\x1f]*$')
# How far a window may end after the clock of the host that runs or reads it: a scheduled run's
# time can be a little ahead of the function's clock, a window that has not ended cannot be judged.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# No window can be longer than the calendar before it: from 0001-01-01 to 9999-12-31.
MAX_WINDOW_LENGTH = datetime(9999, 12, 31) - datetime(1, 1, 1)


@dataclass(frozen=True)
class TimeWindow:
    """The half-open time range ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"window {name} must carry a UTC offset, got {value.isoformat()}")
            object.__setattr__(self, name, value.astimezone(timezone.utc))
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")

    @classmethod
    def ending_at(cls, end: datetime, length: timedelta) -> TimeWindow:
        """The window of ``length`` that ends (exclusively) at ``end``.

        :raises SmlError: the window would start before year 1.
        """
        try:
            return cls(start=end - length, end=end)
        except OverflowError:
            raise SmlError(f"a window of {_days(length)} ending at {end.isoformat()} would start before 0001-01-01") from None

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> TimeWindow:
        """The window of the same length that ends where this one starts.

        :raises SmlError: it would start before year 1.
        """
        return TimeWindow.ending_at(self.start, self.length)


@dataclass(frozen=True)
class WindowSample:
    """The values of one window, column by column.

    ``numeric`` holds a float array per numeric feature (NaN = missing or not a number);
    ``categorical`` a list per categorical feature (None = missing); ``labels`` the predicted
    labels as they were stored (a string or a number). Columns are aligned: the i-th value of
    every column comes from the same prediction. The order of the predictions is unspecified.
    """

    window: TimeWindow
    n_rows: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[Any]]
    labels: list[Any]

    def columns(self) -> dict[str, np.ndarray | list[Any]]:
        """Every feature's column by name (numeric and categorical together)."""
        return {**self.numeric, **self.categorical}


class WindowExtension(Protocol):
    """More columns of each prediction, read in :func:`read_window`'s single pass over the window.

    ``row_bytes`` is the extension's text per row in a slice (sizes the slices);
    ``join(table)`` the FROM clause (``predictions`` joined with the extension's tables, one row
    per prediction); ``slice_values(connection)`` SQL expressions, each a JSON text (never NULL),
    appended to the slice's ``[features, "prediction", ...]`` rows; ``slice_fields`` their msgspec
    ``(name, type)`` fields, or ``None`` when they cannot be typed (then the window is read row
    by row); ``row_columns(connection)`` the plain columns read for a row read again.
    ``add_slice_rows`` gets a decoded slice's row structs, ``add_rows`` the extension's columns of
    rows read one by one, always aligned with the window's own columns.
    """

    row_bytes: int

    def join(self, predictions: sa.Table) -> Any: ...
    def slice_values(self, connection: Connection) -> Sequence[Any]: ...
    @property
    def slice_fields(self) -> Sequence[tuple[str, Any]] | None: ...
    def row_columns(self, connection: Connection) -> Sequence[Any]: ...
    def add_slice_rows(self, rows: Sequence[Any]) -> None: ...
    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None: ...


def check_window_end(end: datetime, *, now: datetime | None = None, source: str = "window end") -> None:
    """Refuse a window that ends more than :data:`MAX_CLOCK_SKEW` after ``now`` (default: this
    host's clock): its rows have not all arrived, and a stored run with a future window end would be
    the model's "latest" run until that date, hiding every real one.

    :param source: what ``end`` came from (``--end``), named in the error.
    :raises SmlError: ``end`` is too far in the future.
    """
    now = now or datetime.now(timezone.utc)
    if end > now + MAX_CLOCK_SKEW:
        raise SmlError(
            f"{source}: {end.astimezone(timezone.utc).isoformat()} is in the future (now {now.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}); "
            f"a window must have ended, give or take {MAX_CLOCK_SKEW.total_seconds() / 60:.0f} minutes of clock skew"
        )


def latest_window_first(window_end: Any, *, now: datetime | None = None) -> tuple[Any, Any]:
    """``ORDER BY`` terms that list stored runs latest window first, where "latest" means windows
    that have ended (by ``now``, give or take :data:`MAX_CLOCK_SKEW`): a run stored with a window
    end in the future (before such ends were refused) comes after every real one instead of being
    the latest run until that date.

    :param window_end: the ``window_end`` column of the runs' table.
    """
    bound = to_db_timestamp((now or datetime.now(timezone.utc)) + MAX_CLOCK_SKEW)
    return sa.case((window_end > bound, 1), else_=0), window_end.desc()


def parse_window_length(text: str, *, option: str = "--window") -> timedelta:
    """Parse a window length such as ``7d``, ``12h``, ``90m`` or ``2w``.

    :param option: the option or variable the text came from, named in the error.
    :raises SmlError: the text is not a positive number followed by m, h, d or w.
    """
    match = _LENGTH_PATTERN.match(text)
    if not match or float(match[1]) <= 0:
        raise SmlError(f"{option}: {text!r} is not a window length such as 7d, 12h, 90m or 2w")
    try:
        length = float(match[1]) * _LENGTH_UNITS[match[2]]
    except OverflowError:
        length = timedelta.max
    if length > MAX_WINDOW_LENGTH:
        raise SmlError(f"{option}: {text!r} is longer than the {MAX_WINDOW_LENGTH.days} days from 0001-01-01 to 9999-12-31")
    return length


def _days(length: timedelta) -> str:
    return f"{length.total_seconds() / 86400:g} days"


def read_window(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    *,
    slice_rows: int | None = None,
    extension: WindowExtension | None = None,
    version: str | None = None,
) -> WindowSample:
    """Read the predictions of ``model_name`` made in ``window`` as columns of ``features``.

    The window arrives in slices of about ``slice_rows`` rows, so memory holds the columns and
    one slice, never the whole result set. A feature absent from a row, or a numeric feature
    holding something other than a number, counts as missing.

    :param engine: the database holding ``predictions`` (MySQL/MariaDB or SQLite).
    :param features: the model's feature schema (from its manifest); other keys are ignored.
    :param slice_rows: rows per slice on average; by default about a megabyte of text.
    :param extension: more columns to read in the same pass (see :class:`WindowExtension`).
    :param version: only the predictions this model version made (``model_version``); ``None``
        reads every version's, which is only right while the window holds one feature schema.
    :returns: a :class:`WindowSample`; ``n_rows`` is 0 when the window has no predictions.
    :raises SmlError: a stored ``features`` text is not a JSON object.
    """
    columns = _WindowColumns(features, extension)
    _read(engine, model_name, window, columns, slice_rows, version)
    return columns.sample(window)


def read_window_summaries(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    *,
    slice_rows: int | None = None,
    extension: WindowExtension | None = None,
    version: str | None = None,
    expected_rows: int | None = None,
) -> list[WindowSummary]:
    """Read the predictions of ``model_name`` made in ``window`` into one summary per reference.

    The same pass as :func:`read_window`, but each slice is counted into the summaries
    (:mod:`sml.monitoring.summaries`) and dropped, so memory holds the summaries and one slice
    whatever the window's size. Values are taken exactly as :func:`read_window` takes them.

    :param references: what to count against, e.g. the training reference, and the previous
        window's as a second one; every summary sees every row.
    :param version: only this model version's predictions (see :func:`read_window`).
    :param expected_rows: the window's rows as known already (the writer's day counts), which
        only size the slices: a figure that is off makes them uneven, never changes what is
        counted. ``None`` or 0: counted first (a ``COUNT(*)`` over the window's index range).
    :returns: a :class:`~sml.monitoring.summaries.WindowSummary` per reference, in order.
    :raises SmlError: a stored ``features`` text is not a JSON object.
    """
    summarisers = [WindowSummariser(reference) for reference in references]
    _read(engine, model_name, window, _WindowColumns(features, extension, summarisers), slice_rows, version, expected_rows)
    return [summariser.summary() for summariser in summarisers]


def read_windows_summaries(
    engine: Engine,
    model_name: str,
    windows: Sequence[TimeWindow],
    features: Sequence[FeatureSpec],
    references: Sequence[SummaryReference],
    *,
    version: str | None = None,
    expected_rows: Sequence[int | None] | None = None,
) -> Iterator[tuple[TimeWindow, list[WindowSummary]]]:
    """:func:`read_window_summaries` of each of ``windows`` in turn, yielded as each is read, with
    the database preparing the next window's slices while this one's are decoded.

    The slices of a window come from one grouped query, which the database answers only once it
    has built them all, and decoding them is the client's work: read one after the other, the two
    add up. Here the next window's query is sent on a second connection (from a worker thread)
    before this window is decoded, so on two cores they overlap; the database holds that answer
    until it is read, so memory still holds one slice at a time. Each window is read in its own
    transaction, as :func:`read_window_summaries` reads it.

    :param expected_rows: per window, as :func:`read_window_summaries` takes it.
    :returns: an iterator of ``(window, one summary per reference)``, in the order of ``windows``.
    """
    expected = list(expected_rows) if expected_rows is not None else [None] * len(windows)

    def start(index: int) -> tuple[_WindowRead, list[WindowSummariser]]:
        summarisers = [WindowSummariser(reference) for reference in references]
        columns = _WindowColumns(features, None, summarisers)
        return _WindowRead(engine, model_name, windows[index], columns, None, version, expected[index]), summarisers

    if not windows:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sml-window-read") as worker:
        pending: Future[tuple[_WindowRead, list[WindowSummariser]]] | None = worker.submit(start, 0)
        try:
            for index, window in enumerate(windows):
                assert pending is not None
                read, summarisers = pending.result()
                pending = worker.submit(start, index + 1) if index + 1 < len(windows) else None
                read.finish()
                yield window, [summariser.summary() for summariser in summarisers]
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    pending.result()[0].close()


def _read(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    columns: _WindowColumns,
    slice_rows: int | None,
    version: str | None = None,
    expected_rows: int | None = None,
) -> None:
    _WindowRead(engine, model_name, window, columns, slice_rows, version, expected_rows).finish()


class _WindowRead:
    """One window's read, in one transaction of its own connection: created, it has sent the
    slices' query (the database builds them meanwhile); :meth:`finish` decodes them into the
    columns, reads again row by row any slice that does not decode, and closes the connection.

    On InnoDB the count, the slices and any slice read again see one snapshot. Where rows can
    arrive in between, a slice read again had added nothing, so no row counts twice.
    """

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        window: TimeWindow,
        columns: _WindowColumns,
        slice_rows: int | None,
        version: str | None,
        expected_rows: int | None,
    ) -> None:
        self.columns = columns
        self.in_window = _in_window(model_name, window, version)
        self.connection = engine.connect()
        self.result: Any = None
        try:
            # Summaries need the count only to size the slices; columns fill arrays of that size.
            self.rows = (expected_rows if columns.summarisers is not None else None) or self.connection.execute(
                _hinted(sa.select(sa.func.count()).select_from(PREDICTIONS).where(*self.in_window))
            ).scalar_one()
            if self.rows:
                columns.reserve(self.rows)
                slices = math.ceil(self.rows / (slice_rows or columns.default_slice_rows))
                slice_microseconds = math.ceil(window.length / timedelta(microseconds=1) / slices)
                self.slice_number = _slice_number(self.connection, to_db_timestamp(window.start), slice_microseconds)
                if columns.decodes_slices:
                    self.result = _slices_result(self.connection, self.in_window, self.slice_number, columns)
        except BaseException:
            self.connection.close()
            raise

    def finish(self) -> None:
        try:
            if not self.rows:
                return
            if self.result is None:
                _read_rows(self.connection, self.in_window, self.columns)
            elif unread := _add_slices(self.result, self.columns):
                _read_rows(self.connection, (*self.in_window, self.slice_number.in_(unread)), self.columns)
        finally:
            self.connection.close()

    def close(self) -> None:
        self.connection.close()


def _in_window(model_name: str, window: TimeWindow, version: str | None = None) -> tuple[Any, ...]:
    """The conditions of the rows of ``model_name`` (and ``version``) in ``window``.

    The version is checked on the rows the index range ``(model_name, predicted_at)`` yields: the
    window's rows of other versions are read from the table and dropped, so the cost stays that of
    the window's rows of every version, as before, and no index on the version is needed.
    """
    start, end = to_db_timestamp(window.start), to_db_timestamp(window.end)
    conditions = (PREDICTIONS.c.model_name == model_name, PREDICTIONS.c.predicted_at >= start, PREDICTIONS.c.predicted_at < end)
    return conditions if version is None else (*conditions, PREDICTIONS.c.model_version == version)


@dataclass(frozen=True)
class VersionRows:
    """The predictions one model version made in a window: how many, the first and the last (aware UTC)."""

    version: str
    rows: int
    first: datetime
    last: datetime


def window_versions(engine: Engine, model_name: str, window: TimeWindow) -> list[VersionRows]:
    """Per model version, the predictions of ``model_name`` made in ``window``, earliest first.

    One grouped query over the window's index range. A version whose first row comes after
    another version's rows took over inside the window (a promotion or a rollback).
    """
    predicted_at = PREDICTIONS.c.predicted_at
    statement = (
        sa.select(PREDICTIONS.c.model_version, sa.func.count(), sa.func.min(predicted_at), sa.func.max(predicted_at))
        .where(*_in_window(model_name, window))
        .group_by(PREDICTIONS.c.model_version)
    )
    with engine.connect() as connection:
        rows = connection.execute(_hinted(statement)).all()
    versions = [VersionRows(version, int(count), _utc(first), _utc(last)) for version, count, first, last in rows]
    return sorted(versions, key=lambda entry: (entry.first, entry.version))


def _utc(value: datetime | str) -> datetime:
    # SQLite hands an aggregate of a DATETIME column back as its text.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _slices_result(connection: Connection, in_window: Sequence[Any], slice_number: Any, columns: _WindowColumns) -> Any:
    """Send the query of the window's slices; returns its streamed result (one slice per fetch)."""
    if connection.dialect.name in ("mysql", "mariadb"):
        # The default (1 KiB on MySQL, 1 MiB on MariaDB) would cut slices short; longer than the packet limit, a slice is NULL.
        connection.exec_driver_sql("SET SESSION group_concat_max_len = @@max_allowed_packet")
    pair = sa.literal("[") + PREDICTIONS.c.features + sa.literal(",") + sa.func.json_quote(PREDICTIONS.c.prediction)
    for value in columns.extension.slice_values(connection) if columns.extension else ():
        pair = pair + sa.literal(",") + value
    pair = pair + sa.literal("]")
    statement = (
        sa.select(slice_number, sa.func.count(), sa.literal("[") + sa.func.aggregate_strings(pair, ",") + sa.literal("]"))
        .select_from(columns.from_clause())
        .where(*in_window)
        .group_by(slice_number)
        .order_by(slice_number)
    )
    # One slice per fetch: the server builds the next slice while this one is decoded.
    return connection.execution_options(stream_results=True, yield_per=1).execute(_hinted(statement))


def _add_slices(result: Any, columns: _WindowColumns) -> list[int]:
    """Add every slice of ``result`` the typed decoder accepts to ``columns``; return the numbers of the others."""
    failed = []
    for number, rows, text in result:
        if not columns.add_slice(text, rows):
            failed.append(number)
    return failed


def _read_rows(connection: Connection, conditions: Sequence[Any], columns: _WindowColumns) -> None:
    extra = columns.extension.row_columns(connection) if columns.extension else ()
    statement = sa.select(PREDICTIONS.c.features, PREDICTIONS.c.prediction, *extra).select_from(columns.from_clause()).where(*conditions)
    result = connection.execution_options(stream_results=True, yield_per=ROWS_PER_FETCH).execute(_hinted(statement))
    for batch in result.partitions():
        columns.add_rows(batch)


def _hinted(statement: sa.Select[Any]) -> sa.Select[Any]:
    return statement.with_hint(PREDICTIONS, _WINDOW_INDEX_HINT, "mysql").with_hint(PREDICTIONS, _WINDOW_INDEX_HINT, "mariadb")


def _slice_number(connection: Connection, start: datetime, slice_microseconds: int) -> Any:
    """The number of the time slice a row falls in, counted from ``start``.

    Any function of the row would split the window without overlap; time keeps slices even.
    """
    predicted_at, start_value = PREDICTIONS.c.predicted_at, sa.literal(start, PREDICTIONS.c.predicted_at.type)
    if connection.dialect.name == "sqlite":
        microseconds = (sa.func.julianday(predicted_at) - sa.func.julianday(start_value)) * 86_400_000_000
        return sa.cast(microseconds / slice_microseconds, sa.Integer)
    return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start_value, predicted_at).op("DIV")(slice_microseconds)


class _WindowColumns:
    """Collects a window's columns for one feature schema, from slices or from rows.

    Slices are decoded by msgspec into structs typed for the schema (only its keys are read).
    Neither the structs nor per-row tuples count towards the garbage collector's thresholds (the
    structs are untracked, the tuples freed as soon as they are read), so that reading a million
    rows does not set off full collections of the process's heap (0.1 s of a 0.35 s read of 100k rows
    in a process that had imported boto3 and scipy).
    Rows are decoded into plain dicts and converted value by value: the fallback for slices the
    structs reject, and the only way when a feature name cannot be a struct key (it contains
    ``"``, ``\\`` or a control character).
    """

    def __init__(
        self, features: Sequence[FeatureSpec], extension: WindowExtension | None = None, summarisers: Sequence[WindowSummariser] | None = None
    ) -> None:
        self.extension = extension
        # With summarisers, each slice is counted into them and dropped instead of kept.
        self.summarisers = summarisers
        self.numeric = [spec.name for spec in features if spec.kind == "numeric"]
        self.categorical = [spec.name for spec in features if spec.kind != "numeric"]
        # About 32 bytes of JSON per value (key and number) plus the row's own brackets and label.
        self.default_slice_rows = max(1, SLICE_BYTES // (64 + 32 * len(features) + (extension.row_bytes if extension else 0)))
        self.n_rows = 0
        # Feature-major, so that each feature's column is a contiguous row of one array.
        self._numeric = np.empty((len(self.numeric), 0))
        self._categorical: dict[str, list[Any]] = {name: [] for name in self.categorical}
        self._labels: list[Any] = []
        self._label_by_text: dict[str, Any] = {}
        # Struct fields need identifiers; ``rename`` maps them to the JSON keys.
        numeric_fields = [f"n{index}" for index in range(len(self.numeric))]
        self._categorical_fields = [f"c{index}" for index in range(len(self.categorical))]
        # The numeric fields come first, so without categorical ones astuple (the fastest way out of a struct) fits.
        self._numeric_values = _getter(numeric_fields) if self.categorical else msgspec.structs.astuple
        self._slice_decoder: msgspec.json.Decoder | None = None
        extra_fields = extension.slice_fields if extension else ()
        if extra_fields is not None and all(_STRUCT_KEY.match(name) for name in self.numeric + self.categorical):
            features_type = msgspec.defstruct(
                "FeatureRow",
                [(field, float | None, None) for field in numeric_fields] + [(field, Any, None) for field in self._categorical_fields],
                rename=dict(zip(numeric_fields + self._categorical_fields, self.numeric + self.categorical)),
                gc=False,
            )
            # ``[features, "prediction", extension values...]``, exactly that many elements.
            row_type = msgspec.defstruct(
                "SliceRow", [("features", features_type), ("label", str), *extra_fields], array_like=True, forbid_unknown_fields=True, gc=False
            )
            self._slice_decoder = msgspec.json.Decoder(list[row_type])

    def from_clause(self) -> Any:
        return self.extension.join(PREDICTIONS) if self.extension else PREDICTIONS

    @property
    def decodes_slices(self) -> bool:
        return self._slice_decoder is not None

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` more rows (as the database counted them), so columns fill in place."""
        if self.summarisers is None:
            self._grow(self.n_rows + rows)

    def add_slice(self, text: str | bytes | None, rows: int) -> bool:
        """Add a slice's ``[[features, "prediction"], ...]`` text of ``rows`` rows; False (nothing added) if it does not decode."""
        if text is None or self._slice_decoder is None:
            return False
        try:
            slice_rows = self._slice_decoder.decode(text)
        except msgspec.DecodeError:
            return False
        if len(slice_rows) != rows:
            return False
        structs = [row.features for row in slice_rows]
        categorical = {name: map(operator.attrgetter(field), structs) for name, field in zip(self.categorical, self._categorical_fields)}
        self._add_slice(self._numeric_matrix(structs, self._numeric_values), categorical, [row.label for row in slice_rows])
        if self.extension:
            self.extension.add_slice_rows(slice_rows)
        return True

    def add_rows(self, rows: Sequence[Sequence[str]]) -> None:
        """Add ``(features, prediction, extension columns...)`` rows one by one.

        :raises SmlError: a ``features`` text is not a JSON object.
        """
        parsed = []
        for features_text, *_ in rows:
            try:
                features = msgspec.json.decode(features_text)
            except msgspec.DecodeError as exc:
                raise SmlError(f"predictions.features holds a row that is not valid JSON ({exc})") from None
            if not isinstance(features, dict):
                raise SmlError(f"predictions.features holds a row that is not a JSON object: {features_text[:80]!r}")
            parsed.append(features)
        matrix = self._numeric_matrix(parsed, lambda features: [_as_float(features.get(name)) for name in self.numeric])
        categorical = {name: [features.get(name) for features in parsed] for name in self.categorical}
        self._add_slice(matrix, categorical, [row[1] for row in rows])
        if self.extension:
            self.extension.add_rows([row[2:] for row in rows])

    def sample(self, window: TimeWindow) -> WindowSample:
        """The columns collected so far, as the sample of ``window``."""
        numeric = dict(zip(self.numeric, self._numeric[:, : self.n_rows]))
        return WindowSample(window=window, n_rows=self.n_rows, numeric=numeric, categorical=self._categorical, labels=self._labels)

    def _add_slice(self, numeric: np.ndarray, categorical: dict[str, Iterable[Any]], labels: list[str]) -> None:
        """Add one slice: its numeric values (features × rows), categorical values and label texts."""
        count = len(labels)
        if self.summarisers is not None:
            columns = {name: list(values) for name, values in categorical.items()}
            # Counted by text, each distinct text decoded once: no list of the slice's decoded labels.
            texts = collections.Counter(labels)
            predictions = list(zip(self._decoded_labels(list(texts)), texts.values()))
            for summariser in self.summarisers:
                summariser.add_slice(self.numeric, numeric, columns, predictions, count)
        else:
            if self.numeric:
                self._grow(self.n_rows + count)
                self._numeric[:, self.n_rows : self.n_rows + count] = numeric
            for name, values in categorical.items():
                self._add_categorical(name, values)
            self._labels.extend(self._decoded_labels(labels))
        self.n_rows += count

    def _numeric_matrix(self, rows: Sequence[Any], values_of: Callable[[Any], Sequence[float | None]]) -> np.ndarray:
        """The numeric values of ``rows`` (``values_of`` a row, in feature order), features × rows, NaN for None."""
        count, width = len(rows), len(self.numeric)
        if not width:
            return np.empty((0, count))
        try:
            # Each row's values are consumed as they are produced: no list of per-row tuples.
            matrix = np.fromiter(itertools.chain.from_iterable(map(values_of, rows)), dtype=np.float64, count=count * width)
        except TypeError:  # a None among the values: the slower conversion that maps it to NaN
            matrix = np.array(list(map(values_of, rows)), dtype=np.float64)
        return matrix.reshape(count, width).T

    def _add_categorical(self, name: str, values: Iterable[Any]) -> None:
        interned: dict[str, str] = {}
        self._categorical[name].extend(interned.setdefault(value, value) if isinstance(value, str) else value for value in values)

    def _decoded_labels(self, texts: list[str]) -> list[Any]:
        """The stored predictions as values: a JSON text decoded (a label or a number), else the text itself."""
        if len(self._label_by_text) > MAX_CACHED_LABELS:
            # A regression model's predictions rarely repeat: a cache would only grow with the window.
            self._label_by_text.clear()
        # Labels repeat a handful of texts; decoding each once also shares one object per label.
        for text in set(texts).difference(self._label_by_text):
            try:
                self._label_by_text[text] = msgspec.json.decode(text)
            except msgspec.DecodeError:
                self._label_by_text[text] = text
        return list(map(self._label_by_text.__getitem__, texts))

    def _grow(self, rows: int) -> None:
        if rows > self._numeric.shape[1]:
            grown = np.empty((len(self.numeric), max(rows, 2 * self._numeric.shape[1])))
            grown[:, : self.n_rows] = self._numeric[:, : self.n_rows]
            self._numeric = grown


def _getter(fields: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function from a struct to the tuple of its ``fields`` (``()`` for none: a model without numeric features)."""
    if not fields:
        return lambda struct: ()
    if len(fields) == 1:
        get_one = operator.attrgetter(fields[0])
        return lambda struct: (get_one(struct),)
    return operator.attrgetter(*fields)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
