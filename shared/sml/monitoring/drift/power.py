"""Which floors a reference can ever certify: the power check behind promotion's warnings.

A test says NO_DRIFT when the one-sided 95% upper bound of its effect is below its floor
(:mod:`sml.monitoring.drift.stats`). That bound depends on the observed effect and on the two sample sizes
only, so a training reference and a window size fix, before any production data arrive, the
smallest shift a test can certify as absent. With an unlimited window the reference alone sets
it: a floor below that can never give NO_DRIFT, however much traffic the model serves.

Here the observed effect is taken at its *median when nothing changed*, so a floor at the
returned value is certified in about half of the windows without any shift, and a floor well
above it in almost all of them (a floor below it in few):

- KS (numeric): ``D·√(n·m/(n+m))`` follows Kolmogorov's limiting distribution when both samples
  come from one continuous distribution (Smirnov 1948, "Table for estimating the goodness of fit
  of empirical distributions"), whose median is ``q = kstwobign.ppf(0.5) ≈ 0.828``; with the bound
  of :func:`sml.monitoring.drift.stats.ks_upper_bound` that gives ``(q + z₀.₉₅/2)·√(1/n + 1/m)``. Tied values
  make the true median smaller, so this errs on the cautious side.
- chi-square (categorical, the predicted label): the statistic follows χ²(df) with no shift
  (Pearson 1900); its median goes into :func:`sml.monitoring.drift.stats.cramers_v_upper_bound`. ``df`` is
  that of the table the test would build from the reference's shares (rare categories pooled).
- missing rate: ``h`` is ``|N(0, 1/n + 1/m)|`` on the arcsine scale (Cohen 1988, §6.2), median
  ``0.674·√(1/n + 1/m)``, into :func:`sml.monitoring.drift.stats.cohens_h_upper_bound`; exactly 0 when the
  reference has no missing value (a window like it has none either).

``n`` counts the values a test uses (non-missing ones for KS and chi-square) and a window of
``m`` rows is taken to miss values at the reference's rate. Fewer than ``min_samples`` values on
either side make a test INCONCLUSIVE whatever its bound, so the result is then infinite. Numeric results are converted to a
normal location shift in standard deviations (:func:`sml.monitoring.drift.stats.location_shift_for_ks_d`).

Example::

    shifts = certifiable_shifts(reference, schema, floors, window_rows=1000)
    for shift in shifts:
        if not shift.certifiable:
            print(shift.warning(n_reference_rows=426))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from scipy import stats

from sml.monitoring.drift.methods import drift_method
from sml.monitoring.drift.run import PREDICTION_KIND, prediction_phrase
from sml.monitoring.drift.stats import (
    EQUIVALENCE_ALPHA,
    cohens_h_upper_bound,
    cramers_v_upper_bound,
    ks_upper_bound,
    pooled_contingency_table,
)

# The median of |N(0, 1)|: the typical size of a difference of two estimates in its own standard errors.
HALF_NORMAL_MEDIAN = float(stats.norm.ppf(0.75))
# The median of Kolmogorov's limiting distribution (of D·√(n·m/(n+m)) with no shift).
KOLMOGOROV_MEDIAN = float(stats.kstwobign.ppf(0.5))
MAX_WINDOW_ROWS = 10**9


@dataclass(frozen=True)
class CertifiableShift:
    """The smallest shift one test can certify as absent, against the test's floor.

    ``floor``, ``at_window`` and ``unlimited`` are effects (KS D, Cramér's V, Cohen's h);
    :meth:`in_units` gives them in the unit a user reads (``unit``: standard deviations for KS).
    ``min_window_rows`` is the smallest window whose typical bound is under the floor, ``None``
    when no window is large enough (``unlimited`` is not under the floor). A test that cannot
    decide at all (fewer values than the run's minimum sample) has infinite values.
    """

    feature: str
    test: str
    kind: str
    floor: float
    n_reference: int
    window_rows: int
    at_window: float
    unlimited: float
    min_window_rows: int | None
    floor_setting: str = ""

    @property
    def unit(self) -> str:
        return drift_method(self.test).unit

    @property
    def certifiable(self) -> bool:
        """Whether a typical window of ``window_rows`` rows with no shift gets NO_DRIFT."""
        return self.at_window < self.floor

    def in_units(self, effect: float) -> float:
        return drift_method(self.test).in_units(effect)

    def warning(self) -> str:
        """One line saying what cannot be certified and what would help."""
        bound = self.unlimited if self.min_window_rows is None else self.at_window
        # Enough decimals that a bound just above its floor is not printed equal to it.
        decimals = drift_method(self.test).shown_decimals
        while decimals < 6 and math.isfinite(bound) and self._shown(bound, decimals) == self._shown(self.floor, decimals):
            decimals += 1
        floor = f"floor {self._shown(self.floor, decimals)}" + (f" from {self.floor_setting}" if self.floor_setting else "")
        subject = f"{self.feature}: the {_test_name(self)}"
        if math.isinf(self.unlimited):
            return f"{subject} cannot certify NO_DRIFT at all: the reference has only {self.n_reference} values to test"
        if self.min_window_rows is None:
            return (
                f"{subject} cannot certify NO_DRIFT below {self._shown(bound, decimals)} with any window ({floor}): "
                f"the reference has {self.n_reference} values; raise the floor or train on more rows"
            )
        return (
            f"{subject} cannot certify NO_DRIFT below {self._shown(bound, decimals)} with {self.window_rows:,}-row windows "
            f"({floor}); windows of {self.min_window_rows:,} rows or more can"
        )

    def _shown(self, effect: float, decimals: int) -> str:
        return drift_method(self.test).shown(effect, decimals)


def certifiable_ks(n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA) -> float:
    """Typical smallest KS D a no-shift window certifies: ``(q + z/2)·√(1/n + 1/m)`` (module doc).

    :param n_reference: non-missing reference values (≥ 1).
    :param n_current: non-missing window values, ``None`` for an unlimited window.
    """
    typical = KOLMOGOROV_MEDIAN * math.sqrt(1 / n_reference + (0 if n_current is None else 1 / n_current))
    return ks_upper_bound(typical, n_reference, n_current, alpha)


def certifiable_cramers_v(df: int, n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA) -> float:
    """Typical smallest Cramér's V a no-shift window certifies: the bound at the median of χ²(df).

    ``df`` 0 (a single category) gives 0: the statistic is then always 0.
    """
    statistic = float(stats.chi2.ppf(0.5, df)) if df > 0 else 0.0
    return cramers_v_upper_bound(statistic, df, n_reference, n_current, alpha)


def certifiable_cohens_h(reference_rate: float, n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA) -> float:
    """Typical smallest Cohen's h of the missing rate a no-shift window certifies.

    :param reference_rate: the reference's missing rate; 0 or 1 make the typical observed h 0.
    :param n_reference, n_current: rows (missing or not); ``n_current=None`` for an unlimited window.
    """
    spread = math.sqrt(1 / n_reference + (0 if n_current is None else 1 / n_current))
    observed = 0.0 if reference_rate in (0.0, 1.0) else HALF_NORMAL_MEDIAN * spread
    return cohens_h_upper_bound(observed, n_reference, n_current, alpha)


def certifiable_shifts(
    reference: Any,
    columns: Sequence[Any],
    floors: Mapping[tuple[str, str], float],
    *,
    window_rows: int,
    min_samples: int = 30,
    alpha: float = EQUIVALENCE_ALPHA,
) -> list[CertifiableShift]:
    """For every test a run would make, the smallest shift it can certify as absent.

    :param reference: the run's reference grids (:class:`sml.monitoring.summaries.SummaryReference`).
    :param columns: the columns the run tests, each with its methods (:class:`sml.monitoring.drift.run.DriftColumn`).
    :param floors: per (column, method), the floor as an effect in the method's unit, e.g. the
        values of :func:`sml.monitoring.config.resolve_floors`.
    :param window_rows: rows of a typical window (at least 1).
    :param min_samples: the run's minimum sample (``DriftJobConfig.min_samples``): a test with fewer
        values on a side cannot decide, so its results are infinite there.
    :returns: per column in order, its main test then its missing-rate test (each when the
        reference has values for it), from each method's :meth:`~sml.monitoring.drift.methods.DriftMethod.certifiable`.
    :raises ValueError: ``window_rows`` below 1, or a test without a floor.
    """
    if window_rows < 1:
        raise ValueError(f"window_rows must be at least 1, got {window_rows}")
    shifts = []
    for column in columns:
        grid = reference.prediction if column.prediction else reference.features[column.name]
        if grid is None:
            continue
        for method in column.methods():
            n_reference = method.reference_size(grid)
            if not n_reference:
                continue
            try:
                floor = floors[column.name, method.name]
            except KeyError:
                raise ValueError(f"no floor for the {method.name} test of feature {column.name!r}") from None
            bound = partial(_certifiable, method, column, grid, alpha=alpha)
            shifts.append(
                _shift(column.name, method.name, column.result_kind, floor, n_reference, method.present_share(grid), window_rows, min_samples, bound)
            )
    return shifts


def _certifiable(method: Any, column: Any, grid: Any, n_current: int | None, *, alpha: float) -> float:
    return method.certifiable(column, grid, n_current, alpha)


def _shift(
    feature: str,
    test: str,
    kind: str,
    floor: float,
    n_reference: int,
    present_share: float,
    window_rows: int,
    min_samples: int,
    bound: Callable[[int | None], float],
) -> CertifiableShift:
    def at(rows: int | None) -> float:
        values = None if rows is None else round(rows * present_share)
        if n_reference < min_samples or (values is not None and values < min_samples):
            return math.inf
        return bound(values)

    unlimited = at(None)
    return CertifiableShift(
        feature=feature,
        test=test,
        kind=kind,
        floor=floor,
        n_reference=n_reference,
        window_rows=window_rows,
        at_window=at(window_rows),
        unlimited=unlimited,
        min_window_rows=_smallest_window(at, floor) if unlimited < floor else None,
    )


def _smallest_window(at: Callable[[int | None], float], floor: float) -> int | None:
    # The bound falls as the window grows: double until under the floor, then bisect.
    high = 1
    while at(high) >= floor:
        if high >= MAX_WINDOW_ROWS:
            return None
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle) < floor:
            high = middle
        else:
            low = middle
    return high


def degrees_of_freedom(counts: Mapping[str, int], n_current: int | None, order: tuple[str, ...]) -> int:
    """The degrees of freedom of the chi-square table a window of ``n_current`` values with the
    reference's shares would give; pooling depends on the smaller side, so an unlimited window
    (``None``) pools like one as large as the reference."""
    total = sum(counts.values())
    current = counts if n_current is None or n_current >= total else {key: round(count * n_current / total) for key, count in counts.items()}
    buckets, _ = pooled_contingency_table(counts, current, order)
    return max(len(buckets) - 1, 0)


def _test_name(shift: CertifiableShift) -> str:
    if shift.kind == PREDICTION_KIND:
        return prediction_phrase(shift.feature).replace(" ", "-") + " test"
    return drift_method(shift.test).title
