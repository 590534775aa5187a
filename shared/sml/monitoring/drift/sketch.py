"""A window as the reference of a numeric column: a KLL quantile sketch, and KS against it with its rank error.

The ``previous`` reference is the window before the current one, not a finite training sample,
so its values are not kept: each numeric column's values go into a KLL sketch (Apache
DataSketches ``kll_doubles_sketch``, k ≥ :data:`MIN_K`), which merges (a week is its days'
sketches merged) and whose size depends on k only (~18 KB at k = 1000, whatever the rows). Its
CDF at any set of points is within ε of the true one, ε = ``normalized_rank_error(True)`` (the
bound DataSketches gives for ``get_cdf``, 99 % confidence; 0.36 % at k = 1000).

The window is then counted against a grid made of the sketch's retained values
(:class:`SketchedNumericGrid`, a :class:`~sml.monitoring.summaries.NumericGrid`), exactly, as
against a training reference; the reference's cells are the sketch's estimates. KS from these
cells (:func:`ks_against_sketch`) gives D̂, the largest gap at a cell's end. The true D lies in
``[D̂ − ε, D̂ + ε + r]``: at a cell's end the window's ECDF is exact and the sketch's within ε;
inside an open cell the reference's ECDF moves by at most its estimated mass there, ``r`` (0 when
the grid holds every value the sketch retains, as built here), plus ε. The verdict never takes
D̂ as exact (whylogs issue 684: p-values from a sketched D spread from 2.7e-07 to 0.74 over runs
of the same data):

- the p-value is a bound: KS's p-value at D̂ − ε (p falls as D grows, so the true p is lower);
- DRIFT needs D̂ − ε to clear the floor (and that p-value bound to survive the correction);
- NO_DRIFT needs the effect's upper bound plus ε + r under the floor.

``datasketches.ks_test`` is not used: it answers a boolean whose threshold counts the items the
sketches retain, not the rows (SCALE-NOTES.md, "Sketches").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from sml.monitoring.summaries import NumericGrid

MIN_K = 1000
DEFAULT_K = 1000


def new_sketch(k: int = DEFAULT_K) -> kll_doubles_sketch:
    """An empty KLL sketch of doubles.

    :raises ValueError: ``k`` below :data:`MIN_K` (the rank error would pass ~0.4 %).
    """
    if k < MIN_K:
        raise ValueError(f"KLL k must be at least {MIN_K} (rank error ~0.36 % at 1000), got {k}")
    return kll_doubles_sketch(k)


def add_values(sketch: kll_doubles_sketch, values: Any) -> int:
    """Add the finite values of ``values`` to ``sketch``; returns how many were missing (None, NaN, infinite)."""
    array = np.asarray([np.nan if value is None else value for value in values] if not isinstance(values, np.ndarray) else values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size:
        sketch.update(np.ascontiguousarray(finite))
    return int(array.size - finite.size)


def merged(sketches: Iterable[kll_doubles_sketch], k: int = DEFAULT_K) -> kll_doubles_sketch:
    """One sketch of the union of the sketches' streams (days into a week)."""
    result = new_sketch(k)
    for sketch in sketches:
        result.merge(sketch)
    return result


def rank_error(sketch: kll_doubles_sketch) -> float:
    """ε of ``sketch``'s CDF (99 % confidence), the bound DataSketches states for ``get_cdf``."""
    return float(sketch.normalized_rank_error(True))


@dataclass(frozen=True, eq=False)
class SketchedNumericGrid(NumericGrid):
    """A grid whose reference is a KLL sketch: ``values`` are the sketch's retained values, the
    reference's cells (:meth:`reference_cells`) the sketch's estimates (floats), ``rank_error`` ε
    and ``cell_mass`` the largest estimated reference mass inside an open cell (``r``)."""

    estimated_cells: np.ndarray | None = None
    rank_error: float = 0.0
    cell_mass: float = 0.0
    k: int = DEFAULT_K

    @classmethod
    def from_sketch(cls, sketch: kll_doubles_sketch, missing: int = 0) -> SketchedNumericGrid:
        """The grid of ``sketch``: its retained values (quantiles at 4 ranks per retained item reach every one)."""
        if sketch.is_empty():
            return cls(values=np.empty(0), counts=np.empty(0, dtype=np.int64), missing=int(missing), digest="kll-empty",
                       estimated_cells=np.zeros(1), rank_error=0.0, k=int(sketch.k))
        points = 4 * int(sketch.num_retained)
        values = np.unique(np.asarray(sketch.get_quantiles((np.arange(points) + 0.5) / points), dtype=float))
        n = float(sketch.n)
        at_or_below = np.asarray(sketch.get_cdf(values, inclusive=True)[:-1]) * n
        below = np.asarray(sketch.get_cdf(values, inclusive=False)[:-1]) * n
        cells = np.zeros(2 * values.size + 1)
        cells[1::2] = at_or_below - below
        cells[0] = below[0]
        cells[2:-1:2] = below[1:] - at_or_below[:-1]
        cells[-1] = n - at_or_below[-1]
        counts = np.maximum(np.rint(cells[1::2]), 0).astype(np.int64)
        digest = "kll-" + hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]
        return cls(
            values=values, counts=counts, missing=int(missing), digest=digest, estimated_cells=cells,
            rank_error=rank_error(sketch), cell_mass=float(np.max(cells[0::2]) / n), k=int(sketch.k),
        )

    @property
    def n_present(self) -> int:
        return int(round(float(self.estimated_cells.sum()))) if self.estimated_cells is not None else 0

    def reference_cells(self) -> np.ndarray:
        return self.estimated_cells if self.estimated_cells is not None else np.zeros(self.n_cells)


@dataclass(frozen=True)
class SketchedKS:
    """KS of a window counted against a :class:`SketchedNumericGrid`: D̂ and the interval of the true D."""

    statistic: float
    lower: float
    upper: float


def ks_against_sketch(grid: SketchedNumericGrid, current_cells: np.ndarray) -> SketchedKS:
    """D̂ from the sketch's estimated cells and the window's exact cells, with ``[D̂ − ε, D̂ + ε + r]``.

    :raises ValueError: an empty sample on either side.
    """
    n, m = float(grid.reference_cells().sum()), float(current_cells.sum())
    if n <= 0 or m <= 0:
        raise ValueError("KS against a sketch needs values on both sides")
    statistic = float(np.max(np.abs(np.cumsum(grid.reference_cells()) / n - np.cumsum(current_cells) / m)))
    return SketchedKS(
        statistic=statistic,
        lower=max(0.0, statistic - grid.rank_error),
        upper=min(1.0, statistic + grid.rank_error + grid.cell_mass),
    )
