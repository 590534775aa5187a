"""Mergeable window summaries: what the weekly run keeps of a window instead of its values.

A window's values are counted against the model version's training reference, once, as they
stream out of the database (or a day's store, or an archive); everything drift, data quality and
model quality compute is computed from these counts. Summaries of two disjoint sets of rows
against the same reference merge by adding (:meth:`WindowSummary.merge`), so seven stored days
make a week, and they round-trip through plain JSON-able data (:meth:`WindowSummary.to_json`,
:meth:`WindowSummary.from_json`) for a store.

Per numeric column (a numeric feature; a regression model's prediction) — :class:`NumericSummary`:

- ``cells``: the counts of the window's values in the ``2·k + 1`` cells that the reference's
  ``k`` distinct sorted values cut the number line into: cell ``2·j`` holds the values strictly
  between distinct values ``j − 1`` and ``j`` (cell 0 those below the smallest, cell ``2·k``
  those above the largest) and cell ``2·j + 1`` the values equal to distinct value ``j``. A value's
  cell is ``searchsorted(left) + searchsorted(right)``. Between two reference values the
  reference ECDF is flat and the window's is monotone, so the largest ECDF gap is reached at a
  cell's end: the two-sample KS statistic computed from the cumulated cells equals
  ``scipy.stats.ks_2samp``'s on the values, bit for bit (same integer counts, same divisions).
  Cells 0 and ``2·k`` are the out-of-range counts of data quality;
- ``missing`` (None, NaN, infinite or not a number), and the sum, sum of squares, minimum and
  maximum of the non-missing values (for moments and the report's axis), and the sums of the
  values below and above the reference's range (``below_total``, ``above_total``: with them a
  distance such as Wasserstein's is exact beyond the reference's range).

Per categorical column (a categorical feature; a classifier's predicted label) —
:class:`CategoricalSummary`: the counts of the categories the reference knows (its counted
categories and the schema's), by each value's ``str()`` form; ``unseen``, the count of all other
values; ``unseen_top``, the most frequent of them with their counts, at most ``MAX_UNSEEN_KEPT``
(exact for a single summary; after merges a value can drop out of the list, the total never
does); and ``missing``.

Model quality adds its aggregates (confusion cells, score histograms, sums for log loss and
Brier, error moments, ...) under a name in :attr:`WindowSummary.quality`: any class registered with
:func:`register_quality_aggregate` that merges (adding counts; moments by
:class:`sml.monitoring.moments.MomentSums`) and serialises to plain data.

Cost: counting a numeric value is two binary searches and an increment (~0.2 µs); a summary
holds ``2·k + 1`` integers per numeric column whatever the window's size (``k`` ≤ 10,000 distinct
values of a manifest's reference).

Example::

    reference = SummaryReference.from_manifest(manifest)
    summariser = WindowSummariser(reference)
    for features, predictions in slices:          # any split of the window's rows
        summariser.add_columns(features, predictions)
    week = summariser.summary().merge(other_days)  # against the same reference
    stored = json.dumps(week.to_json())
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self

import numpy as np

from sml.monitoring.drift.stats import count_categories

SUMMARY_FORMAT = 1
MAX_UNSEEN_KEPT = 50
ColumnKind = Literal["numeric", "categorical"]


class SummaryError(ValueError):
    """Summaries that cannot be merged or read: the message names the column and the mismatch."""


@dataclass(frozen=True, eq=False)
class NumericGrid:
    """A numeric column's reference as the cells' edges: its distinct sorted values and their counts.

    ``digest`` identifies the grid (a SHA-256 of its values), so that summaries counted against
    another reference are never merged.
    """

    values: np.ndarray
    counts: np.ndarray
    missing: int = 0
    digest: str = ""

    @classmethod
    def from_sorted(cls, sorted_values: Sequence[float] | np.ndarray, missing: int = 0) -> NumericGrid:
        """From a reference's ascending, finite values (e.g. ``NumericReference.sorted_values``)."""
        array = np.asarray(sorted_values, dtype=np.float64)
        if array.ndim != 1 or (array.size and (not np.all(np.isfinite(array)) or np.any(array[1:] < array[:-1]))):
            raise SummaryError("sorted_values must be ascending, finite and one-dimensional")
        values, counts = np.unique(array, return_counts=True)
        digest = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]
        return cls(values=values, counts=counts.astype(np.int64), missing=int(missing), digest=digest)

    @property
    def n_cells(self) -> int:
        return 2 * self.values.size + 1

    @property
    def n_present(self) -> int:
        return int(self.counts.sum())

    def reference_cells(self) -> np.ndarray:
        """The reference's own values as cells: its counts at the odd (equal-to-value) cells."""
        cells = np.zeros(self.n_cells, dtype=np.int64)
        cells[1::2] = self.counts
        return cells

    def cells_of(self, values: np.ndarray) -> np.ndarray:
        """The cell index of each finite value (see the module doc)."""
        # left + right insertion points, from one binary search: right = left + 1 on a reference value.
        below = np.searchsorted(self.values, values, side="left")
        if not self.values.size:
            return below
        return 2 * below + (self.values[np.minimum(below, self.values.size - 1)] == values)

    def representatives(self) -> np.ndarray:
        """One value inside each cell: the distinct value for an odd cell, the next float above the
        lower edge for an even one (below the smallest value for cell 0). A sample rebuilt from
        cells with these values has the same cell counts, so the same KS statistic."""
        if not self.values.size:
            return np.zeros(1)
        with np.errstate(over="ignore"):  # next to ±max float the next float is ±inf, still inside the cell
            lower = np.concatenate(([np.nextafter(self.values[0], -np.inf)], np.nextafter(self.values, np.inf)))
        result = np.empty(self.n_cells)
        result[0::2] = lower
        result[1::2] = self.values
        return result


@dataclass(frozen=True)
class CategoricalGrid:
    """A categorical column's reference: its counts per category (by ``str()``) and the known categories.

    ``known`` is every category counted in the reference plus the schema's own list; values
    outside it count as unseen.
    """

    counts: Mapping[str, int]
    missing: int = 0
    known: tuple[str, ...] = ()

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], missing: int = 0, categories: Iterable[Any] | None = None) -> CategoricalGrid:
        known = tuple(dict.fromkeys([*(str(key) for key in counts), *(str(category) for category in categories or ())]))
        return cls(counts={str(key): int(value) for key, value in counts.items()}, missing=int(missing), known=known)


@dataclass
class NumericSummary:
    """A numeric column of a window counted against a :class:`NumericGrid` (see the module doc)."""

    cells: np.ndarray
    missing: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    digest: str = ""
    below_total: float = 0.0
    above_total: float = 0.0
    kind: ClassVar[ColumnKind] = "numeric"

    @classmethod
    def empty(cls, grid: NumericGrid) -> NumericSummary:
        return cls(cells=np.zeros(grid.n_cells, dtype=np.int64), digest=grid.digest)

    @property
    def n_present(self) -> int:
        return int(self.cells.sum())

    @property
    def n_rows(self) -> int:
        return self.n_present + self.missing

    @property
    def out_of_range(self) -> int:
        """Values below the reference's smallest or above its largest value."""
        return int(self.cells[0] + self.cells[-1]) if self.cells.size > 1 else 0

    def add(self, values: np.ndarray | Sequence[float | None], grid: NumericGrid) -> None:
        """Count ``values`` (NaN, None and ±inf count as missing)."""
        array = np.asarray(values, dtype=np.float64)
        # Sorted first: binary searches for ascending keys stay in cache, which halves the counting's cost.
        finite = np.sort(array[np.isfinite(array)])
        self.missing += int(array.size - finite.size)
        self.add_sorted(finite, grid)

    def add_sorted(self, finite: np.ndarray, grid: NumericGrid) -> None:
        """Count ``finite``: float64 values, all finite, ascending (what :meth:`add` makes of its values)."""
        if not finite.size:
            return
        cells = grid.cells_of(finite)
        self.cells += np.bincount(cells, minlength=grid.n_cells)
        with np.errstate(over="ignore"):  # values near the float limits: the sums become infinite, the counts stay exact
            self.total += float(finite.sum())
            self.total_squares += float(np.dot(finite, finite))
            if grid.values.size:
                self.below_total += float(finite[cells == 0].sum())
                self.above_total += float(finite[cells == grid.n_cells - 1].sum())
        self.minimum = min(self.minimum, float(finite[0]))
        self.maximum = max(self.maximum, float(finite[-1]))

    def merge(self, other: NumericSummary, *, column: str = "") -> NumericSummary:
        """The summary of both summaries' values (same grid), by adding."""
        if self.digest != other.digest or self.cells.size != other.cells.size:
            raise SummaryError(f"column {column!r}: summaries counted against different references ({self.digest} vs {other.digest})")
        return NumericSummary(
            cells=self.cells + other.cells, missing=self.missing + other.missing, total=self.total + other.total,
            total_squares=self.total_squares + other.total_squares, minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum), digest=self.digest,
            below_total=self.below_total + other.below_total, above_total=self.above_total + other.above_total,
        )

    def to_json(self) -> dict[str, Any]:
        # Sparse: tied or narrow data leave most cells empty.
        nonzero = np.flatnonzero(self.cells)
        present = self.n_present > 0
        return {
            "kind": "numeric", "n_cells": int(self.cells.size), "index": nonzero.tolist(), "count": self.cells[nonzero].tolist(),
            "missing": self.missing, "total": _plain(self.total), "total_squares": _plain(self.total_squares),
            "minimum": self.minimum if present else None, "maximum": self.maximum if present else None, "digest": self.digest,
            "below_total": _plain(self.below_total), "above_total": _plain(self.above_total),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, column: str = "") -> NumericSummary:
        try:
            cells = np.zeros(int(data["n_cells"]), dtype=np.int64)
            index, count = np.asarray(data["index"], dtype=np.int64), np.asarray(data["count"], dtype=np.int64)
            if index.shape != count.shape or (index.size and (index.min() < 0 or index.max() >= cells.size)) or np.any(count < 0):
                raise ValueError("cell indices and counts do not fit the cells")
            cells[index] = count
            present = cells.sum() > 0
            return cls(
                cells=cells, missing=_count(data["missing"]), total=float(data["total"]), total_squares=float(data["total_squares"]),
                minimum=float(data["minimum"]) if present else math.inf, maximum=float(data["maximum"]) if present else -math.inf,
                digest=str(data["digest"]), below_total=float(data["below_total"]), above_total=float(data["above_total"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SummaryError(f"column {column!r}: not a numeric summary ({type(exc).__name__}: {exc})") from None


@dataclass
class CategoricalSummary:
    """A categorical column of a window counted against a :class:`CategoricalGrid` (see the module doc)."""

    counts: dict[str, int] = field(default_factory=dict)
    unseen: int = 0
    unseen_top: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    kind: ClassVar[ColumnKind] = "categorical"

    @classmethod
    def empty(cls, grid: CategoricalGrid) -> CategoricalSummary:
        return cls(counts=dict.fromkeys(grid.known, 0))

    @property
    def n_present(self) -> int:
        return sum(self.counts.values()) + self.unseen

    @property
    def n_rows(self) -> int:
        return self.n_present + self.missing

    def all_counts(self) -> Counter[str]:
        """Known categories' counts and the kept unseen values' (the unseen total may be larger)."""
        return Counter({**{key: value for key, value in self.counts.items() if value}, **self.unseen_top})

    def add(self, values: Iterable[Any]) -> None:
        """Count ``values`` by their ``str()`` form; None and NaN count as missing."""
        counts, missing = count_categories(values)
        self.add_counts(counts, missing)

    def add_counts(self, counts: Mapping[str, int], missing: int = 0) -> None:
        """Count categories already counted (by ``str()``), e.g. a day's stored counts."""
        self.missing += int(missing)
        unseen: Counter[str] = Counter()
        for category, count in counts.items():
            if category in self.counts:
                self.counts[category] += int(count)
            else:
                unseen[category] += int(count)
        self._add_unseen(unseen)

    def merge(self, other: CategoricalSummary, *, column: str = "") -> CategoricalSummary:
        if self.counts.keys() != other.counts.keys():
            raise SummaryError(f"column {column!r}: summaries counted against different category lists")
        merged = CategoricalSummary(
            counts={key: value + other.counts[key] for key, value in self.counts.items()}, unseen=self.unseen,
            unseen_top=dict(self.unseen_top), missing=self.missing + other.missing,
        )
        merged.unseen += other.unseen - sum(other.unseen_top.values())
        merged._add_unseen(Counter(other.unseen_top))
        return merged

    def _add_unseen(self, unseen: Counter[str]) -> None:
        self.unseen += sum(unseen.values())
        combined = Counter(self.unseen_top) + unseen
        self.unseen_top = dict(sorted(combined.items(), key=lambda item: (-item[1], item[0]))[:MAX_UNSEEN_KEPT])

    def to_json(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": dict(self.counts), "unseen": self.unseen, "unseen_top": dict(self.unseen_top), "missing": self.missing}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, column: str = "") -> CategoricalSummary:
        try:
            summary = cls(
                counts={str(key): _count(value) for key, value in data["counts"].items()}, unseen=_count(data["unseen"]),
                unseen_top={str(key): _count(value) for key, value in data["unseen_top"].items()}, missing=_count(data["missing"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SummaryError(f"column {column!r}: not a categorical summary ({type(exc).__name__}: {exc})") from None
        if sum(summary.unseen_top.values()) > summary.unseen:
            raise SummaryError(f"column {column!r}: the kept unseen values count more than the unseen total")
        return summary


ColumnSummary = NumericSummary | CategoricalSummary
ColumnGrid = NumericGrid | CategoricalGrid


class QualityAggregate(Protocol):
    """A model-quality aggregate of a window (e.g. confusion cells): merges with another of disjoint rows, stores as plain data."""

    name: ClassVar[str]

    def merge(self, other: Self) -> Self: ...
    def to_json(self) -> Any: ...
    @classmethod
    def from_json(cls, data: Any) -> Self: ...


QUALITY_AGGREGATES: dict[str, type[QualityAggregate]] = {}


def register_quality_aggregate(cls: type[QualityAggregate]) -> type[QualityAggregate]:
    """Class decorator: make ``cls`` readable back by :meth:`WindowSummary.from_json` under ``cls.name``."""
    if cls.name in QUALITY_AGGREGATES and QUALITY_AGGREGATES[cls.name] is not cls:
        raise ValueError(f"a quality aggregate named {cls.name!r} is already registered")
    QUALITY_AGGREGATES[cls.name] = cls
    return cls


@dataclass(frozen=True)
class SummaryReference:
    """What a window is counted against: a grid per feature and one for the prediction.

    ``prediction`` is a :class:`CategoricalGrid` of the classes for a classifier and a
    :class:`NumericGrid` of the training predictions for a regression model (``None`` when the
    manifest has no reference of its predictions: the prediction is then not summarised).
    """

    features: Mapping[str, ColumnGrid]
    prediction: ColumnGrid | None

    @classmethod
    def from_manifest(cls, manifest: Any) -> SummaryReference:
        """From a :class:`sml.lifecycle.manifest.ModelManifest`'s features and training reference."""
        features: dict[str, ColumnGrid] = {}
        for spec in manifest.features:
            entry = manifest.reference.features[spec.name]
            features[spec.name] = column_grid(spec.kind, entry, spec.categories)
        prediction: ColumnGrid | None
        if manifest.task == "regression":
            predictions = manifest.reference.predictions
            prediction = None if predictions is None else NumericGrid.from_sorted(predictions.sorted_values, predictions.missing)
        else:
            prediction = CategoricalGrid.from_counts(manifest.reference.label_counts, 0, manifest.classes)
        return cls(features=features, prediction=prediction)


def reference_grids(reference: Mapping[str, Any], columns: Sequence[Any]) -> SummaryReference:
    """Grids for ``columns`` (each with ``name``, ``kind``, ``categories`` and, for the model's
    prediction, ``prediction=True``) from reference objects by column name (``sorted_values`` or
    ``counts``, and ``missing``: the manifest's, or :func:`sml.monitoring.drift.stats.reference_from_columns`'s).

    :raises ValueError: a column without a reference, or whose reference is not of its kind.
    """
    grids: dict[str, ColumnGrid] = {}
    prediction: ColumnGrid | None = None
    for column in columns:
        if column.name not in reference:
            raise ValueError(f"reference data has no feature {column.name!r}")
        try:
            grid = column_grid(column.kind, reference[column.name], column.categories)
        except AttributeError:
            raise ValueError(f"reference for feature {column.name!r} is not {column.kind}") from None
        except ValueError as exc:
            raise ValueError(f"reference for feature {column.name!r}: {exc}") from None
        if getattr(column, "prediction", False):
            prediction = grid
        else:
            grids[column.name] = grid
    return SummaryReference(features=grids, prediction=prediction)


def column_grid(kind: str, reference: Any, categories: Iterable[Any] | None = None) -> ColumnGrid:
    """The grid of one column from its reference (``sorted_values``/``counts`` and ``missing``)."""
    if kind == "numeric":
        return NumericGrid.from_sorted(reference.sorted_values, reference.missing)
    return CategoricalGrid.from_counts(reference.counts, reference.missing, categories)


def cell_positions(grid: NumericGrid, summary: NumericSummary) -> np.ndarray:
    """A position for each cell, where a chart or a distance places the window's values counted
    there: a reference value's own cell at that value, a cell between two reference values at their
    midpoint, the cells beyond the reference's range at the mean of the window's values there, and
    the cell of a window of one value at that value. Ascending. A distance that is linear in the
    positions of the values beyond the range (Wasserstein's) is exact there; inside, the window's
    values are off by at most half a gap between reference values."""
    values = grid.values
    positions = np.empty(grid.n_cells)
    positions[1::2] = values
    if values.size:
        positions[2:-1:2] = values[:-1] / 2 + values[1:] / 2
        positions[0] = summary.below_total / summary.cells[0] if summary.cells[0] else values[0]
        positions[-1] = summary.above_total / summary.cells[-1] if summary.cells[-1] else values[-1]
    else:
        positions[0] = summary.minimum / 2 + summary.maximum / 2 if summary.n_present else 0.0
    if summary.n_present and summary.minimum == summary.maximum:
        positions[grid.cells_of(np.array([summary.minimum]))[0]] = summary.minimum
    return positions


def empty_summary(grid: ColumnGrid) -> ColumnSummary:
    return NumericSummary.empty(grid) if isinstance(grid, NumericGrid) else CategoricalSummary.empty(grid)


@dataclass
class WindowSummary:
    """A window's rows summarised against one reference: per feature, the prediction, and quality aggregates.

    ``prediction`` is ``None`` when the reference has no grid for it (a regression manifest
    without training predictions).
    """

    n_rows: int
    features: dict[str, ColumnSummary]
    prediction: ColumnSummary | None = None
    quality: dict[str, QualityAggregate] = field(default_factory=dict)

    def merge(self, other: WindowSummary) -> WindowSummary:
        """The summary of both windows' rows (disjoint rows, same reference).

        :raises SummaryError: the two summarise different columns or were counted against different references.
        """
        if self.features.keys() != other.features.keys():
            raise SummaryError(f"summaries of different columns: {sorted(self.features)} vs {sorted(other.features)}")
        if (self.prediction is None) != (other.prediction is None) or self.quality.keys() != other.quality.keys():
            raise SummaryError("summaries of different predictions or quality aggregates")
        return WindowSummary(
            n_rows=self.n_rows + other.n_rows,
            features={name: _merge(summary, other.features[name], name) for name, summary in self.features.items()},
            prediction=None if self.prediction is None else _merge(self.prediction, other.prediction, "(prediction)"),
            quality={name: aggregate.merge(other.quality[name]) for name, aggregate in self.quality.items()},
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers, strings) for ``json.dumps``."""
        return {
            "format": SUMMARY_FORMAT,
            "n_rows": self.n_rows,
            "features": {name: summary.to_json() for name, summary in self.features.items()},
            "prediction": None if self.prediction is None else self.prediction.to_json(),
            "quality": {name: aggregate.to_json() for name, aggregate in self.quality.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WindowSummary:
        """Read :meth:`to_json`'s data back.

        :raises SummaryError: naming the column or aggregate that cannot be read.
        """
        if not isinstance(data, Mapping) or data.get("format") != SUMMARY_FORMAT:
            raise SummaryError(f"not a window summary of format {SUMMARY_FORMAT}")
        quality = {}
        for name, value in data.get("quality", {}).items():
            if name not in QUALITY_AGGREGATES:
                raise SummaryError(f"quality aggregate {name!r} is not registered (known: {', '.join(sorted(QUALITY_AGGREGATES)) or 'none'})")
            quality[name] = QUALITY_AGGREGATES[name].from_json(value)
        prediction = data.get("prediction")
        return cls(
            n_rows=_count(data.get("n_rows")),
            features={name: _column_from_json(name, value) for name, value in data.get("features", {}).items()},
            prediction=None if prediction is None else _column_from_json("(prediction)", prediction),
            quality=quality,
        )


class WindowSummariser:
    """Builds a :class:`WindowSummary` from a window's rows, slice by slice; memory stays the summary's.

    Each ``add_*`` call takes one slice of rows; call :meth:`add_rows` once per slice with its
    row count so that ``n_rows`` counts rows, not values.
    """

    def __init__(self, reference: SummaryReference) -> None:
        self.reference = reference
        self.n_rows = 0
        self.features = {name: empty_summary(grid) for name, grid in reference.features.items()}
        self.prediction = None if reference.prediction is None else empty_summary(reference.prediction)
        self.quality: dict[str, QualityAggregate] = {}

    def add_rows(self, rows: int) -> None:
        self.n_rows += rows

    def add_numeric(self, name: str, values: np.ndarray | Sequence[float | None]) -> None:
        summary = self.features[name]
        assert isinstance(summary, NumericSummary)
        summary.add(values, self.reference.features[name])  # type: ignore[arg-type]

    def add_numeric_rows(self, names: Sequence[str], matrix: np.ndarray) -> None:
        """Several numeric columns of one slice at once: ``matrix`` is float64, one row per name in
        ``names`` (features × rows), NaN and ±inf for missing. Counts as :meth:`add_numeric` of each
        row does, with one sort of the whole matrix instead of one per column."""
        if not len(names):
            return
        # Along each row: -inf first, then the finite values ascending, +inf, NaN last.
        ordered = np.sort(matrix, axis=1)
        finite = np.isfinite(ordered)
        present = finite.sum(axis=1)
        below = np.zeros(len(names), dtype=np.intp) if present.sum() == finite.size else (ordered == -np.inf).sum(axis=1)
        for index, name in enumerate(names):
            summary = self.features[name]
            assert isinstance(summary, NumericSummary)
            summary.missing += int(ordered.shape[1] - present[index])
            summary.add_sorted(ordered[index, below[index] : below[index] + present[index]], self.reference.features[name])  # type: ignore[arg-type]

    def add_categorical(self, name: str, values: Iterable[Any]) -> None:
        summary = self.features[name]
        assert isinstance(summary, CategoricalSummary)
        summary.add(values)

    def add_predictions(self, values: Iterable[Any] | np.ndarray) -> None:
        """The slice's predictions: labels for a classifier, numbers for a regression model."""
        if self.prediction is None:
            return
        if isinstance(self.prediction, NumericSummary):
            self.prediction.add(_floats(values), self.reference.prediction)  # type: ignore[arg-type]
        else:
            self.prediction.add(values)

    def add_prediction_counts(self, counts: Sequence[tuple[Any, int]]) -> None:
        """The slice's predictions given as ``(value, how many times it occurs)`` pairs: the same
        count as :meth:`add_predictions` of the values, without a list of them. A value may come
        in several pairs (pairs are not merged by equality: ``1``, ``1.0`` and ``True`` stay apart)."""
        if self.prediction is None or not counts:
            return
        if isinstance(self.prediction, NumericSummary):
            self.add_predictions(np.repeat(_floats([value for value, _ in counts]), [count for _, count in counts]))
            return
        folded: Counter[str] = Counter()
        missing = 0
        for value, count in counts:
            # One value at a time: a value's category and missingness never depend on the others.
            texts, missed = count_categories([value])
            for text in texts:
                folded[text] += count
            missing += missed * count
        self.prediction.add_counts(folded, missing)

    def add_slice(self, numeric_names: Sequence[str], matrix: np.ndarray, columns: Mapping[str, Any], predictions: Sequence[tuple[Any, int]], rows: int) -> None:
        """One slice as the window read decodes it: the numeric columns ``numeric_names`` as the rows
        of ``matrix`` (see :meth:`add_numeric_rows`), the other columns by name, the predictions as
        counts (see :meth:`add_prediction_counts`). Counts as :meth:`add_columns` of the same columns."""
        block = [name for name in numeric_names if isinstance(self.features.get(name), NumericSummary)]
        if block:
            positions = {name: index for index, name in enumerate(numeric_names)}
            rows_of_block = [positions[name] for name in block]
            self.add_numeric_rows(block, matrix if len(block) == len(numeric_names) else matrix[rows_of_block])
        counted = set(block)
        others = {**dict(zip(numeric_names, matrix)), **columns}
        for name, summary in self.features.items():
            if name in counted:
                continue
            if name not in others:
                raise SummaryError(f"no values for feature {name!r}")
            if isinstance(summary, NumericSummary):
                self.add_numeric(name, _floats(others[name]))
            else:
                self.add_categorical(name, others[name])
        self.add_prediction_counts(predictions)
        self.add_rows(rows)

    def add_columns(self, columns: Mapping[str, Any], predictions: Iterable[Any] | None = None, rows: int | None = None) -> None:
        """One slice given as columns by feature name (every feature of the reference), and its predictions."""
        for name, summary in self.features.items():
            if name not in columns:
                raise SummaryError(f"no values for feature {name!r}")
            if isinstance(summary, NumericSummary):
                self.add_numeric(name, _floats(columns[name]))
            else:
                self.add_categorical(name, columns[name])
        if predictions is not None:
            self.add_predictions(predictions)
        if rows is None:
            first = next(iter(columns.values()), None)
            rows = 0 if first is None else len(first)
        self.add_rows(rows)

    def summary(self) -> WindowSummary:
        return WindowSummary(n_rows=self.n_rows, features=self.features, prediction=self.prediction, quality=self.quality)


def summarise(
    columns: Mapping[str, Any], reference: SummaryReference, predictions: Iterable[Any] | None = None
) -> WindowSummary:
    """The summary of one slice (or a whole window) of rows given as columns: see :class:`WindowSummariser`."""
    summariser = WindowSummariser(reference)
    summariser.add_columns(columns, predictions)
    return summariser.summary()


def _floats(values: Any) -> np.ndarray:
    """Numbers as float64 with NaN for None, non-numbers and booleans (as the window read treats them)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_as_float(value) for value in values], dtype=np.float64)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _merge(first: Any, second: Any, column: str) -> ColumnSummary:
    if type(first) is not type(second):
        raise SummaryError(f"column {column!r}: a {first.kind} summary cannot merge with a {second.kind} one")
    return first.merge(second, column=column)


def _column_from_json(name: str, data: Any) -> ColumnSummary:
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind == "numeric":
        return NumericSummary.from_json(data, column=name)
    if kind == "categorical":
        return CategoricalSummary.from_json(data, column=name)
    raise SummaryError(f"column {name!r}: summary kind {kind!r} is not numeric or categorical")


def _plain(number: float) -> float | str:
    """A float JSON (and MySQL's JSON type) can hold: a non-finite sum as its text (``float()`` reads it back)."""
    return number if math.isfinite(number) else str(number)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count (a non-negative integer), got {value!r}")
    return value
