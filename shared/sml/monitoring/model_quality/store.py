"""Model quality I/O: the window's predictions joined with their labels, and the stored quality of a run.

:func:`read_window_with_quality` reads, for every prediction of a model in a window, the drift
columns and the predicted class, the probabilities, and the label of ``ground_truth`` with
``labelled_at - predicted_at`` (the join is by ``prediction_id``; a label whose prediction is not
in the window is not read, and a prediction labelled after this run counts in the next run of the
same window), in the single pass of :func:`sml.monitoring.windows.read_window` (the quality columns
are its :class:`~sml.monitoring.windows.WindowExtension`): each row of a time slice's JSON text is
``[features, "prediction", probabilities, "label", delay µs]``, one msgspec call typed for the
model's features and classes decodes it; a slice the typed decoder rejects is read again row by
row, leniently (a probabilities text that is not a JSON object of numbers counts as no
probabilities). Reading the window a second time for quality cost as much as the drift read
itself (bench/quality_bench.py); joining the labels in the same pass costs little more.

:func:`save_quality` stores a :class:`~sml.monitoring.model_quality.metrics.QualityResult` in ``quality_runs`` and
``quality_metrics`` under the drift run's ``run_id``; both go when the drift run is replaced
(``ON DELETE CASCADE``), so a rerun of the same window replaces its quality too.

Example::

    current, sample = read_window_with_quality(engine, "breast-cancer", window, manifest.features, manifest.classes)
    save_quality(engine, run.run_id, result)
    stored = load_quality(engine, run.run_id)
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import msgspec
import msgspec.structs
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sml.core.db import DRIFT_RUNS, GROUND_TRUTH, PREDICTIONS, QUALITY_METRICS, QUALITY_RUNS, to_db_timestamp
from sml.core.errors import SmlError
from sml.lifecycle.calibration import DLE_MAX_ROWS, DLE_SEED, LABEL_FREE_KEY, Calibrator, DirectLossEstimator, label_free_estimator_from_json
from sml.lifecycle.manifest import FeatureSpec, ModelManifest, Task, task_from_classes
from sml.monitoring.model_quality.metrics import (
    LABEL_OUTSIDE_CLASSES,
    PREDICTION_BINS,
    UNLABELLED,
    ClassificationAggregate,
    MetricValue,
    QualityAggregate,
    QualityConfig,
    QualityResult,
    RegressionAggregate,
    add_direct_loss_estimate,
    assess_aggregate,
)
from sml.monitoring.summaries import SummaryReference, WindowSummary, summarise
from sml.monitoring.windows import TimeWindow, WindowSample, latest_window_first, read_window, read_window_summaries

# In a slice row of sml.monitoring.windows, ``label`` is the predicted label and ``truth`` the ground truth.
_PREDICTION, _TRUTH, _DELAY = operator.attrgetter("label"), operator.attrgetter("truth"), operator.attrgetter("delay")
_STRUCT_KEY = re.compile(r'^[^"\\\x00-\x1f]*$')


@dataclass(frozen=True)
class QualitySample:
    """A window's predictions as aligned arrays, one entry per prediction (order unspecified).

    :param predicted_index: class index of the prediction (``-1``: not one of ``classes``).
    :param probabilities: ``(n, K)`` in class order; a NaN row where the prediction had none,
        a NaN cell where it lacked that class.
    :param true_index: the label's class index, ``UNLABELLED`` or ``LABEL_OUTSIDE_CLASSES``.
    :param delay_seconds: labelled_at − predicted_at (NaN when unlabelled).
    :param aggregate: the window counted as it was read (:func:`quality_aggregate`), when asked for;
        the window's rows are then in the aggregate only: the three arrays above are empty and
        ``delay_seconds`` holds the labelled predictions' delays alone.
    """

    n_rows: int
    predicted_index: np.ndarray
    probabilities: np.ndarray
    true_index: np.ndarray
    delay_seconds: np.ndarray
    aggregate: ClassificationAggregate | None = None


@dataclass(frozen=True)
class RegressionSample:
    """A regression model's window as aligned arrays, one entry per prediction (order unspecified).

    :param predictions: the predicted values (NaN: a stored prediction that is not a number).
    :param truth: the labels (NaN: unlabelled, or a label that is not a finite number).
    :param n_labels_not_numbers: labels that are not finite numbers (counted, not scored).
    :param delay_seconds: labelled_at − predicted_at (NaN when unlabelled).
    :param columns: the window's feature columns by name (aligned), for DLE; empty when not read.
    :param aggregate: the window counted as it was read (:func:`quality_aggregate`), when asked for.
        When the rows were counted into it and dropped (the weekly run's read,
        :func:`read_window_summaries_with_quality`), ``predictions`` and ``truth`` are empty and
        ``delay_seconds`` holds the labelled predictions' delays alone, as :class:`QualitySample`'s.
    """

    n_rows: int
    predictions: np.ndarray
    truth: np.ndarray
    n_labels_not_numbers: int
    delay_seconds: np.ndarray
    columns: dict[str, Any]
    aggregate: RegressionAggregate | None = None


def read_quality_window(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    classes: Sequence[str | int],
    *,
    task: Task | None = None,
    features: Sequence[FeatureSpec] = (),
    version: str | None = None,
) -> QualitySample | RegressionSample:
    """Read the predictions of ``model_name`` in ``window`` with their labels (see the module's docstring).

    :param classes: the model's classes (manifest order); labels and predictions are matched by their text.
    :param task: the model's task (by default the one its classes imply: none, regression).
    :param features: the features a regression model's DLE reads (none: no estimate).
    :param version: only this model version's predictions (and so their labels); ``None``: every version's.
    """
    return read_window_with_quality(engine, model_name, window, features, classes, task=task, version=version)[1]


def read_window_with_quality(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    classes: Sequence[str | int],
    *,
    task: Task | None = None,
    aggregate: QualityAggregate | None = None,
    version: str | None = None,
) -> tuple[WindowSample, QualitySample | RegressionSample]:
    """The drift columns of ``features`` and the quality sample of the window, in one pass over it.

    :func:`~sml.monitoring.windows.read_window` with the quality columns as its extension: each row of
    a slice also carries the probabilities, the label and its delay, so the weekly run reads the
    window once for data drift and model quality together. A regression model's sample
    (``task`` regression, or no classes) holds numbers and the window's feature columns.
    ``aggregate`` (:func:`quality_aggregate` of the model) is filled slice by slice as the window is read
    (a classifier's rows are then dropped; a regression model's are kept, aligned with the columns read whole for DLE).
    ``version`` keeps only that model version's predictions, so their labels are that version's.
    """
    if (task or task_from_classes(tuple(classes))) == "regression":
        numbers = RegressionColumns(aggregate if isinstance(aggregate, RegressionAggregate) else None, keep_rows=True)
        sample = read_window(engine, model_name, window, features, extension=numbers, version=version)
        return sample, numbers.sample(sample.columns())
    quality = QualityColumns(classes, aggregate if isinstance(aggregate, ClassificationAggregate) else None)
    sample = read_window(engine, model_name, window, features, extension=quality, version=version)
    return sample, quality.sample()


def read_window_summaries_with_quality(
    engine: Engine,
    model_name: str,
    window: TimeWindow,
    features: Sequence[FeatureSpec],
    classes: Sequence[str | int],
    references: Sequence[SummaryReference],
    *,
    task: Task | None = None,
    manifest: ModelManifest | None = None,
    version: str | None = None,
) -> tuple[list[WindowSummary], QualitySample | RegressionSample]:
    """:func:`read_window_with_quality`, with the drift columns counted into summaries
    (:func:`~sml.monitoring.windows.read_window_summaries`) instead of kept.

    With ``manifest``, the window is also counted into the model's quality aggregate
    (:func:`quality_aggregate`) as it is read, and each summary carries it in its ``quality``
    hook, so a day's stored summary holds its quality too and days merge into a week.
    A regression model's label-free estimate (DLE) predicts each row's error from its features:
    with ``manifest`` it walks a uniform sample of at most ``DLE_MAX_ROWS`` rows kept as the window
    is read (:class:`LossSample`), and each slice's numbers are counted into the aggregate and
    dropped (only the labels' delays are kept, whose percentiles do not merge: 8 bytes a label), so
    nothing else grows with the window; without, the window's columns are read whole and then summarised.
    """
    aggregate = quality_aggregate(manifest) if manifest is not None else None
    if isinstance(aggregate, RegressionAggregate):
        assert manifest is not None
        columns = quality_columns(manifest, aggregate)
        summaries = read_window_summaries(engine, model_name, window, features, references, extension=columns, version=version)
        numbers = columns.finished_sample()
    elif (task or task_from_classes(tuple(classes))) == "regression":
        sample, numbers = read_window_with_quality(
            engine, model_name, window, features, classes, task="regression", aggregate=aggregate, version=version
        )
        summaries = [summarise(sample.columns(), reference, sample.labels) for reference in references]
    else:
        quality = QualityColumns(classes, aggregate if isinstance(aggregate, ClassificationAggregate) else None)
        summaries = read_window_summaries(engine, model_name, window, features, references, extension=quality, version=version)
        numbers = quality.sample()
    if aggregate is not None:
        for summary in summaries:
            summary.quality[aggregate.name] = aggregate
    return summaries, numbers


def _delay_microseconds(connection: Connection) -> Any:
    if connection.dialect.name == "sqlite":
        days = sa.func.julianday(GROUND_TRUTH.c.labelled_at) - sa.func.julianday(PREDICTIONS.c.predicted_at)
        return sa.cast(sa.func.round(days * 86_400_000_000), sa.Integer)
    return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), PREDICTIONS.c.predicted_at, GROUND_TRUTH.c.labelled_at)


class QualityColumns:
    """Collects predicted classes, probabilities, labels and delays, as a :class:`~sml.monitoring.windows.WindowExtension`.

    Each row of a slice gets ``probabilities, "label", delay µs`` after its prediction; a
    ``ground_truth`` row is joined by ``prediction_id`` (its primary key, so one row per prediction).
    """

    def __init__(self, classes: Sequence[str | int], aggregate: ClassificationAggregate | None = None) -> None:
        self.aggregate = aggregate
        self.names = [str(label) for label in classes]
        self.k = len(self.names)
        # Text per row in a slice: the probabilities object (~40 bytes a class), the quoted label and the delay.
        self.row_bytes = 40 + 40 * self.k
        self.prediction_index: dict[str, int] = {}
        self.label_index: dict[str | None, int] = {None: UNLABELLED}
        self.predicted: list[np.ndarray] = []
        self.probabilities: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []
        self.delays: list[np.ndarray] = []
        self.n_rows = 0
        self._fields: list[tuple[str, Any]] | None = None
        if all(_STRUCT_KEY.match(name) for name in self.names) and len(set(self.names)) == self.k:
            fields = [f"p{index}" for index in range(self.k)]
            # A class missing from a row's probabilities is NaN; a null among them fails the slice (read again leniently).
            probabilities = msgspec.defstruct("Probabilities", [(field, float, math.nan) for field in fields], rename=dict(zip(fields, self.names)), gc=False)
            self._fields = [("probabilities", probabilities | None), ("truth", str | None), ("delay", float)]

    @property
    def slice_fields(self) -> list[tuple[str, Any]] | None:
        return self._fields

    def join(self, predictions: sa.Table) -> Any:
        return predictions.outerjoin(GROUND_TRUTH, GROUND_TRUTH.c.prediction_id == predictions.c.prediction_id)

    def slice_values(self, connection: Connection) -> list[Any]:
        null = sa.literal("null")
        return [
            sa.func.coalesce(PREDICTIONS.c.probabilities, null),
            sa.func.coalesce(sa.func.json_quote(GROUND_TRUTH.c.label), null),
            # An unlabelled row's delay is never read (its label is null); 0 keeps the field a plain number.
            sa.func.coalesce(sa.cast(_delay_microseconds(connection), sa.String), sa.literal("0")),
        ]

    def row_columns(self, connection: Connection) -> list[Any]:
        return [PREDICTIONS.c.prediction, PREDICTIONS.c.probabilities, GROUND_TRUTH.c.label, _delay_microseconds(connection)]

    def add_slice_rows(self, decoded: Sequence[Any]) -> None:
        nan_row = (math.nan,) * self.k
        astuple = msgspec.structs.astuple
        probabilities = (nan_row if row.probabilities is None else astuple(row.probabilities) for row in decoded)
        self._add(
            list(map(_PREDICTION, decoded)),
            self._matrix(probabilities, len(decoded)),
            list(map(_TRUTH, decoded)),
            np.fromiter(map(_DELAY, decoded), dtype=float, count=len(decoded)),
        )

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        self._add(
            [row[0] for row in rows],
            self._matrix((self._lenient_probabilities(row[1]) for row in rows), len(rows)),
            [row[2] for row in rows],
            np.array([0.0 if row[3] is None else float(row[3]) for row in rows], dtype=float),
        )

    def add_columns(self, predictions: list[str], probabilities: np.ndarray, labels: list[str | None], delays: np.ndarray) -> None:
        """Count a batch of rows given as columns, as a slice's rows are counted.

        :param predictions: each row's predicted label as its stored JSON text.
        :param probabilities: ``(n, K)`` float, class order of the model (NaN: no probability for that class).
        :param labels: each row's ground-truth label as its stored JSON text, None where unlabelled.
        :param delays: ``labelled_at - predicted_at`` in microseconds (any number where unlabelled).
        """
        self._add(predictions, np.asarray(probabilities, dtype=float).reshape(len(predictions), self.k), labels, np.asarray(delays, dtype=float))

    def finished_sample(self) -> QualitySample:
        """The sample of the rows counted (:meth:`sample`: a classifier has no estimate to finish)."""
        return self.sample()

    def _matrix(self, rows: Iterable[tuple[float, ...]], count: int) -> np.ndarray:
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=float, count=count * self.k).reshape(count, self.k)

    def _lenient_probabilities(self, text: str | None) -> tuple[float, ...]:
        try:
            values = json.loads(text) if text is not None else None
        except ValueError:
            values = None
        if not isinstance(values, dict):
            return (math.nan,) * self.k
        return tuple(_as_probability(values.get(name)) for name in self.names)

    def _add(self, predictions: list[str], values: np.ndarray, labels: list[str | None], delays: np.ndarray) -> None:
        """Append rows; ``values`` their ``(n, K)`` probabilities, ``delays`` in microseconds (any number where the label is null)."""
        count = len(predictions)
        for text in set(predictions).difference(self.prediction_index):
            self.prediction_index[text] = self._class_index(text)
        for text in set(labels).difference(self.label_index):
            index = self._class_index(text)
            self.label_index[text] = index if index >= 0 else LABEL_OUTSIDE_CLASSES
        predicted = np.fromiter(map(self.prediction_index.__getitem__, predictions), dtype=np.int64, count=count)
        truth = np.fromiter(map(self.label_index.__getitem__, labels), dtype=np.int64, count=count)
        delay = delays / 1e6
        delay[truth == UNLABELLED] = np.nan
        self.n_rows += count
        if self.aggregate is not None:
            # Counted into the aggregate, the slice's rows are dropped: only the labels' delays
            # (whose percentiles do not merge) are kept, so memory follows the labels, not the window.
            self.aggregate.add(predicted, values, truth)
            self.delays.append(delay[truth != UNLABELLED])
            return
        self.predicted.append(predicted)
        self.probabilities.append(values)
        self.truth.append(truth)
        self.delays.append(delay)

    def _class_index(self, text: str) -> int:
        """The class index of a stored JSON label text; ``-1`` when it names no class."""
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            value = text
        try:
            return self.names.index(str(value))
        except ValueError:
            return -1

    def sample(self) -> QualitySample:
        def joined(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(parts) if parts else empty

        return QualitySample(
            n_rows=self.n_rows,
            predicted_index=joined(self.predicted, np.empty(0, dtype=np.int64)),
            probabilities=joined(self.probabilities, np.empty((0, self.k))),
            true_index=joined(self.truth, np.empty(0, dtype=np.int64)),
            delay_seconds=joined(self.delays, np.empty(0)),
            aggregate=self.aggregate,
        )


class RegressionColumns:
    """Collects a regression model's predictions, labels and delays as numbers, as a :class:`~sml.monitoring.windows.WindowExtension`.

    The same slice values as :class:`QualityColumns` (probabilities, the quoted label, the delay);
    the prediction and label texts are parsed as JSON numbers, a text that is none counting as NaN.

    With ``aggregate`` and not ``keep_rows`` (the default when there is an aggregate), each slice
    is counted into the aggregate (whose sums give every regression metric and interval exactly,
    see :mod:`sml.monitoring.model_quality.metrics`) and its numbers dropped: only the labels'
    delays are kept, so memory follows the labels, not the window. ``keep_rows`` keeps every row's
    numbers as well (aligned with feature columns read whole).
    """

    row_bytes = 80

    def __init__(
        self,
        aggregate: RegressionAggregate | None = None,
        loss_sample: LossSample | None = None,
        estimator: DirectLossEstimator | None = None,
        *,
        keep_rows: bool | None = None,
    ) -> None:
        self.aggregate = aggregate
        self.loss_sample = loss_sample
        self.estimator = estimator
        self.keep_rows = aggregate is None if keep_rows is None else keep_rows
        if not self.keep_rows and aggregate is None:
            raise ValueError("rows can be dropped only when they are counted into an aggregate")
        self.predictions: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []
        self.delays: list[np.ndarray] = []
        self.n_rows = 0
        self.n_numbers = 0  # predictions that are finite numbers (DLE estimates these)
        self.n_not_numbers = 0

    @property
    def slice_fields(self) -> list[tuple[str, Any]]:
        return [("probabilities", Any), ("truth", str | None), ("delay", float)]

    def join(self, predictions: sa.Table) -> Any:
        return predictions.outerjoin(GROUND_TRUTH, GROUND_TRUTH.c.prediction_id == predictions.c.prediction_id)

    slice_values = QualityColumns.slice_values
    row_columns = QualityColumns.row_columns

    def add_slice_rows(self, decoded: Sequence[Any]) -> None:
        predicted = self._add(list(map(_PREDICTION, decoded)), list(map(_TRUTH, decoded)), np.fromiter(map(_DELAY, decoded), dtype=float, count=len(decoded)))
        if self.loss_sample is not None and decoded:
            self.loss_sample.add(predicted, [row.features for row in decoded])

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        delays = np.array([0.0 if row[3] is None else float(row[3]) for row in rows], dtype=float)
        self._add([row[0] for row in rows], [row[2] for row in rows], delays)

    def add_columns(self, predictions: list[str], labels: list[str | None], delays: np.ndarray, features: Mapping[str, Sequence[Any]] | None = None) -> None:
        """Count a batch of rows given as columns (as :meth:`QualityColumns.add_columns`); ``features``
        (name -> values, aligned) are offered to DLE's sample when there is one."""
        predicted = self._add(predictions, labels, np.asarray(delays, dtype=float))
        if self.loss_sample is not None and features is not None and predictions:
            self.loss_sample.add_columns(predicted, features)

    def finished_sample(self) -> RegressionSample:
        """The sample of the rows counted, with DLE's estimate from the rows sampled added to the aggregate
        (when this counts into an aggregate with a DLE estimator): it stands for every prediction that is a number."""
        numbers = self.sample({})
        if self.loss_sample is not None and self.estimator is not None and self.aggregate is not None:
            self.loss_sample.finish()
            mae, rmse, evaluated = self.estimator.estimate(self.loss_sample.columns(), self.loss_sample.predictions, max_rows=self.loss_sample.size)
            self.aggregate.add_estimate(mae, rmse, self.n_numbers, evaluated)
        return numbers

    def _add(self, predictions: list[str], labels: list[str | None], delays: np.ndarray) -> np.ndarray:
        """Count or keep a slice's rows; ``delays`` in microseconds (any number where the label is null). Returns the predictions as numbers."""
        predicted, _ = _numbers(predictions)
        truth, not_numbers = _numbers(labels)
        # Every label that is a number is finite: the NaNs are the unlabelled rows.
        unlabelled = np.isnan(truth) if not not_numbers else np.array([label is None for label in labels], dtype=bool)
        delay = delays / 1e6
        self.n_not_numbers += not_numbers
        self.n_rows += len(predictions)
        self.n_numbers += int(np.isfinite(predicted).sum())
        if self.aggregate is not None:
            self.aggregate.add(predicted, truth, not_numbers)
        if not self.keep_rows:
            self.delays.append(delay[~unlabelled])
            return predicted
        delay[unlabelled] = np.nan
        self.predictions.append(predicted)
        self.truth.append(truth)
        self.delays.append(delay)
        return predicted

    def sample(self, columns: dict[str, Any]) -> RegressionSample:
        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.empty(0)

        return RegressionSample(self.n_rows, joined(self.predictions), joined(self.truth), self.n_not_numbers, joined(self.delays), columns, self.aggregate)


class LossSample:
    """A uniform sample, without replacement, of up to ``size`` of a window's rows for DLE: the
    rows with the smallest random keys (fixed seed), kept as the window is read, slice by slice.

    Rows come as the window read's feature structs (``msgspec`` structs, of the one type of that
    read's decoder, whose fields encode to the feature names), or as columns
    (:meth:`add_columns`, the event archive's batches). Only rows of slices decoded whole
    are sampled: a slice read again row by row (one the typed decoder refused) is left out of
    DLE's sample, never out of the metrics. The structs themselves are kept (they are created
    untracked by the garbage collector, see :class:`sml.monitoring.windows._WindowColumns`) and
    their values read once, at the end, for the rows that stay: reading every candidate row's
    values as it came cost more than evaluating DLE's trees. Candidates are trimmed back to
    ``size`` once a quarter more have come (``slack``), so at most 1.25 × ``size`` structs are held;
    the rows kept are the ``size`` smallest keys whenever it trims.
    """

    def __init__(self, names: Sequence[str], size: int = DLE_MAX_ROWS, seed: int = DLE_SEED) -> None:
        self.names = list(names)
        self.size = size
        self.slack = max(size // 4, 1)
        self.rng = np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.predictions = np.empty(0)
        self.rows: list[Any] = []
        # A row whose key is not below the cut cannot be among the ``size`` smallest: +inf until
        # the first trim, then the largest key kept by the last trim (an upper bound since: the
        # keys added after it only lower the ``size``-th smallest).
        self._cut = math.inf

    def add(self, predictions: np.ndarray, structs: Sequence[Any]) -> None:
        keys = self.rng.random(len(structs))
        chosen = np.flatnonzero((keys < self._cut) & np.isfinite(predictions))
        if not chosen.size:
            return
        self.rows.extend(map(structs.__getitem__, chosen.tolist()))
        self.keys = np.concatenate([self.keys, keys[chosen]])
        self.predictions = np.concatenate([self.predictions, predictions[chosen]])
        if self.keys.size >= self.size + self.slack:
            self._trim()

    def add_columns(self, predictions: np.ndarray, columns: Mapping[str, Sequence[Any]]) -> None:
        """:meth:`add` for rows given as columns (name -> values aligned with ``predictions``; a
        name missing from ``columns`` is None in every row): each row kept as a tuple in :attr:`names` order."""
        missing = [None] * len(predictions)
        rows = list(zip(*(columns.get(name, missing) for name in self.names))) if self.names else [()] * len(predictions)
        self.add(predictions, rows)

    def _trim(self) -> None:
        if self.keys.size > self.size:
            keep = np.argpartition(self.keys, self.size - 1)[: self.size]
            self.keys, self.predictions = self.keys[keep], self.predictions[keep]
            self.rows = list(map(self.rows.__getitem__, keep.tolist()))
            self._cut = float(self.keys.max())

    def columns(self) -> dict[str, list[Any]]:
        """The sampled rows' feature values by name, aligned with :attr:`predictions` (after :meth:`finish`); None for a name the rows lack."""
        if not self.rows:
            return {name: [] for name in self.names}
        if isinstance(self.rows[0], tuple):
            return {name: [row[index] for row in self.rows] for index, name in enumerate(self.names)}
        fields = {field.encode_name: field.name for field in msgspec.structs.fields(type(self.rows[0]))}
        return {name: list(map(operator.attrgetter(fields[name]), self.rows)) if name in fields else [None] * len(self.rows) for name in self.names}

    def finish(self) -> LossSample:
        """Keep only the ``size`` rows of smallest keys; returns itself."""
        self._trim()
        return self


_JSON_NUMBERS = msgspec.json.Decoder(list[float | None])


def _numbers(texts: list[str | None]) -> tuple[np.ndarray, int]:
    """JSON number texts as floats (NaN for None and for a text that is not a finite number), and how many texts were not numbers.

    The texts are decoded as one JSON array of numbers (msgspec refuses a number out of the
    float range, so every one decoded is finite). A text that is not exactly one number (a
    string, ``true``, ``null``, ``1, 2``, an empty text) changes the array's length or its
    nulls, or breaks it; then each text is decoded alone.
    """
    try:
        values = _JSON_NUMBERS.decode("[" + ",".join(["null" if text is None else text for text in texts]) + "]")
    except msgspec.DecodeError:
        values = None
    if values is not None and len(values) == len(texts) and values.count(None) == texts.count(None):
        return np.fromiter(values, dtype=np.float64, count=len(values)), 0
    values = np.array([_number(text) for text in texts], dtype=np.float64)
    return values, int(sum(text is not None for text in texts) - np.isfinite(values).sum())


def _number(text: str | None) -> float:
    if text is None:
        return math.nan
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _as_probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


# --------------------------------------------------------------------------------------------
# Stored quality


def save_quality(engine: Engine, run_id: str, result: QualityResult) -> None:
    """Store ``result`` as the model quality of drift run ``run_id`` (replacing any), in one transaction."""
    with engine.begin() as connection:
        insert_quality(connection, run_id, result)


def insert_quality(connection: Connection, run_id: str, result: QualityResult) -> None:
    """Replace the quality of drift run ``run_id`` in the caller's transaction (the drift run's row must exist)."""
    connection.execute(QUALITY_METRICS.delete().where(QUALITY_METRICS.c.run_id == run_id))
    connection.execute(QUALITY_RUNS.delete().where(QUALITY_RUNS.c.run_id == run_id))
    connection.execute(QUALITY_RUNS.insert().values(_quality_row(run_id, result)))
    rows = [_metric_row(run_id, "realized", metric) for metric in (result.realized.metrics if result.realized else ())]
    rows += [_metric_row(run_id, "estimated", metric) for metric in (result.estimated.metrics if result.estimated else ())]
    rows += [_metric_row(run_id, "reference", MetricValue(name, value)) for name, value in sorted(result.reference_metrics.items())]
    if rows:
        connection.execute(QUALITY_METRICS.insert(), rows)


def _label_free_estimator(manifest: ModelManifest) -> Calibrator | DirectLossEstimator | None:
    """The manifest's label-free estimator; :raises SmlError: malformed (names the manifest)."""
    if manifest.extra.get(LABEL_FREE_KEY) is None:
        return None
    try:
        return label_free_estimator_from_json(manifest.extra[LABEL_FREE_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise SmlError(f"manifest of {manifest.model_name} {manifest.version}: extra.{LABEL_FREE_KEY} is malformed ({exc})") from None


def _positive_class(manifest: ModelManifest) -> str | None:
    """A binary model's positive class: ``extra["positive_class"]``, else its second class."""
    if manifest.task != "binary":
        return None
    positive = manifest.extra.get("positive_class", manifest.classes[1])
    return str(positive)


def _regression_bins(manifest: ModelManifest) -> tuple[float, float, np.ndarray]:
    """A regression aggregate's centre, residual scale and prediction edges, fixed by the manifest so that windows merge."""
    predictions = manifest.reference.predictions
    values = np.asarray(predictions.sorted_values if predictions is not None else (), dtype=float)
    edges = np.quantile(values, np.linspace(0, 1, PREDICTION_BINS + 1)[1:-1]) if values.size else np.empty(0)
    return (float(values.mean()) if values.size else 0.0), manifest.metrics.get("rmse", math.nan), edges


def quality_aggregate(manifest: ModelManifest) -> QualityAggregate:
    """An empty quality aggregate of ``manifest``'s model, to count its windows into (they merge by adding).

    A classifier's holds CBPE's expected confusion when the manifest has a calibrator.
    :raises SmlError: the manifest's label-free estimator is malformed.
    """
    if manifest.task == "regression":
        centre, scale, edges = _regression_bins(manifest)
        return RegressionAggregate.for_reference(centre, scale, edges)
    classes = [str(label) for label in manifest.classes]
    positive = _positive_class(manifest)
    estimator = _label_free_estimator(manifest)
    calibrator = estimator if isinstance(estimator, Calibrator) and list(estimator.classes) == classes else None
    return ClassificationAggregate(len(classes), classes.index(positive) if positive in classes else None, calibrator=calibrator)


def quality_columns(manifest: ModelManifest, aggregate: QualityAggregate | None = None) -> QualityColumns | RegressionColumns:
    """What a window's rows are counted into for ``manifest``'s quality: the model's aggregate
    (``aggregate``, by default an empty :func:`quality_aggregate`), with, for a regression model
    whose manifest has DLE, the uniform sample of rows DLE estimates from (:class:`LossSample`).

    Feed it a window's rows (:meth:`QualityColumns.add_columns`, :meth:`RegressionColumns.add_columns`,
    or as a :class:`~sml.monitoring.windows.WindowExtension`), then take
    :meth:`~QualityColumns.finished_sample`.

    :raises SmlError: the manifest's label-free estimator is malformed.
    """
    aggregate = aggregate if aggregate is not None else quality_aggregate(manifest)
    if isinstance(aggregate, RegressionAggregate):
        estimator = _label_free_estimator(manifest)
        if not isinstance(estimator, DirectLossEstimator):
            return RegressionColumns(aggregate)
        return RegressionColumns(aggregate, LossSample([spec.name for spec in manifest.features]), estimator)
    return QualityColumns(manifest.classes, aggregate)


def assess_window_quality(
    engine: Engine,
    manifest: ModelManifest,
    window: TimeWindow,
    config: QualityConfig,
    sample: QualitySample | RegressionSample | None = None,
    *,
    unmatched_labels: int | None = None,
) -> QualityResult:
    """The model quality of ``manifest``'s model in ``window``: read, then assess per the manifest's task.

    :param sample: the window's quality sample when already read (:func:`read_window_with_quality`,
        as the weekly run does); ``None`` reads it, the predictions of the manifest's version only. A sample with its aggregate is assessed from
        the aggregate (the arrays then give only the label delays and DLE's rows).

    The positive class is the manifest's ``extra["positive_class"]`` (binary models), the
    reference its held-out ``metrics``, the label-free estimator its ``extra["calibration"]``
    (CBPE's calibrator, or DLE for regression; a model registered without one gets no estimate).
    A verdict metric that is not one of the task's (a deployment-wide ``SML_QUALITY_METRIC``)
    gives way to the task's default, and the reason says so.

    :param unmatched_labels: the window's labels without a prediction when counted already (from
        the event archive); ``None`` counts them in the database (:func:`count_unmatched_labels`).

    :raises SmlError: the manifest's label-free estimator is malformed (names the manifest).
    """
    task = manifest.task
    note = ""
    try:
        config = config.for_task(task)
    except ValueError:
        note = f" (quality metric {config.metric!r} is not one of a {task} model's; its default is used)"
        config = replace(config, metric=None).for_task(task)
    estimator = _label_free_estimator(manifest)
    if sample is None:
        sample = read_quality_window(
            engine, manifest.model_name, window, manifest.classes, task=task, features=manifest.features, version=manifest.version
        )
    classes = tuple(str(label) for label in manifest.classes)
    positive = _positive_class(manifest)
    if isinstance(sample, RegressionSample):
        aggregate = sample.aggregate or quality_aggregate(manifest)
        if sample.aggregate is None:
            aggregate.add(sample.predictions, sample.truth, sample.n_labels_not_numbers)
        if isinstance(estimator, DirectLossEstimator) and sample.columns and not aggregate.n_estimated:
            add_direct_loss_estimate(aggregate, estimator, sample.predictions, sample.columns)
    else:
        aggregate = sample.aggregate
        if aggregate is None:
            aggregate = quality_aggregate(manifest)
            aggregate.add(sample.predicted_index, sample.probabilities, sample.true_index)
    delays = sample.delay_seconds[~np.isnan(sample.delay_seconds)]
    result = assess_aggregate(
        task, aggregate, classes=classes, positive_class=positive, delay_seconds=delays, reference_metrics=manifest.metrics, config=config
    )
    if unmatched_labels is None:
        unmatched_labels = count_unmatched_labels(engine, window)
    return replace(result, reason=result.reason + note, n_unmatched_labels=unmatched_labels)


def count_unmatched_labels(engine: Engine, window: TimeWindow) -> int:
    """Labels whose ``labelled_at`` is in ``window`` and whose prediction is not in ``predictions`` (of any model).

    Such a label is kept (its prediction may arrive later, e.g. from the DLQ) and counted here,
    so that ids that never match (a client sending wrong ids) show up week by week.
    """
    start, end = to_db_timestamp(window.start), to_db_timestamp(window.end)
    unmatched = (
        sa.select(sa.func.count())
        .select_from(GROUND_TRUTH.outerjoin(PREDICTIONS, PREDICTIONS.c.prediction_id == GROUND_TRUTH.c.prediction_id))
        .where(GROUND_TRUTH.c.labelled_at >= start, GROUND_TRUTH.c.labelled_at < end, PREDICTIONS.c.prediction_id.is_(None))
    )
    with engine.connect() as connection:
        return int(connection.execute(unmatched).scalar_one())


@dataclass(frozen=True)
class StoredQuality:
    """A run's quality as read back: the ``quality_runs`` row and its ``quality_metrics`` rows, as dicts."""

    run: dict[str, Any]
    metrics: list[dict[str, Any]]

    def value(self, source: str, metric: str, class_label: str = "") -> dict[str, Any] | None:
        """The ``quality_metrics`` row of ``source`` (realized, estimated, reference) and ``metric``."""
        return next((row for row in self.metrics if (row["source"], row["metric"], row["class_label"]) == (source, metric, class_label)), None)


def load_quality(engine: Engine, run_id: str) -> StoredQuality | None:
    """The stored quality of drift run ``run_id``, or ``None`` (a run from before issue 16 has none)."""
    with engine.connect() as connection:
        run = connection.execute(sa.select(QUALITY_RUNS).where(QUALITY_RUNS.c.run_id == run_id)).mappings().first()
        if run is None:
            return None
        metrics = connection.execute(
            sa.select(QUALITY_METRICS).where(QUALITY_METRICS.c.run_id == run_id).order_by(QUALITY_METRICS.c.source, QUALITY_METRICS.c.metric, QUALITY_METRICS.c.class_label)
        ).mappings().all()
    return StoredQuality(run=dict(run), metrics=[dict(row) for row in metrics])


def latest_quality(
    engine: Engine, model_name: str, window_end: datetime | None = None, *, version: str | None = None
) -> tuple[dict[str, Any], StoredQuality | None] | None:
    """The latest stored drift run of ``model_name`` (or the one ending at ``window_end``; of
    ``version`` when given, else of any version) and its quality.

    Latest is by window end among windows that have ended (:func:`~sml.monitoring.windows.latest_window_first`),
    then by when the run was made (runs of several versions can share a window end).

    :returns: ``None`` when no run is stored; the quality part is ``None`` for a run without one.
    """
    with engine.connect() as connection:
        query = sa.select(DRIFT_RUNS).where(DRIFT_RUNS.c.model_name == model_name)
        if window_end is not None:
            query = query.where(DRIFT_RUNS.c.window_end == to_db_timestamp(window_end))
        if version is not None:
            query = query.where(DRIFT_RUNS.c.model_version == version)
        query = query.order_by(*latest_window_first(DRIFT_RUNS.c.window_end), DRIFT_RUNS.c.created_at.desc())
        run = connection.execute(query.limit(1)).mappings().first()
    if run is None:
        return None
    return dict(run), load_quality(engine, run["run_id"])


def _quality_row(run_id: str, result: QualityResult) -> dict[str, Any]:
    delay = result.delay
    reliability = [vars(bin_) for bin_ in result.realized.reliability] if result.realized else []
    return {
        "run_id": run_id,
        "status": result.status.value,
        "reason": result.reason[:512],
        "metric": result.config.metric,
        "reference_value": _finite_or_none(result.reference_value),
        "tolerance": result.config.tolerance,
        "n_predictions": result.n_predictions,
        "n_labelled": result.n_labelled,
        "n_labels_outside_classes": result.n_labels_outside_classes,
        "n_unmatched_labels": result.n_unmatched_labels,
        "n_estimated": result.estimated.n_predictions if result.estimated else None,
        "delay_p50_seconds": _finite_or_none(delay.p50) if delay else None,
        "delay_p90_seconds": _finite_or_none(delay.p90) if delay else None,
        "delay_p99_seconds": _finite_or_none(delay.p99) if delay else None,
        "delay_max_seconds": _finite_or_none(delay.maximum) if delay else None,
        "reliability": json.dumps(reliability, separators=(",", ":")),
        "expected_confusion": json.dumps(result.estimated.expected_confusion) if result.estimated and result.estimated.expected_confusion else None,
        "parameters": json.dumps(
            {
                **result.config.parameters(), "task": result.task, "classes": list(result.classes), "positive_class": result.positive_class,
                # A count, kept with the run's parameters so that no migration is needed for it.
                "labels_before_prediction": delay.before_prediction if delay else 0,
            },
            sort_keys=True,
        ),
    }


def _metric_row(run_id: str, source: str, metric: MetricValue) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "source": source,
        "metric": metric.metric,
        "class_label": metric.class_label or "",
        "value": _finite_or_none(metric.value),
        "ci_low": _finite_or_none(metric.low),
        "ci_high": _finite_or_none(metric.high),
        "interval_method": metric.interval,
    }


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
