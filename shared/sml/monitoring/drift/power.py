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

from scipy import stats

from sml.monitoring.drift.stats import (
    EQUIVALENCE_ALPHA,
    FeatureSpecLike,
    ReferenceData,
    cohens_h_upper_bound,
    cramers_v_upper_bound,
    ks_upper_bound,
    location_shift_for_ks_d,
    pooled_contingency_table,
)

# The median of |N(0, 1)|: the typical size of a difference of two estimates in its own standard errors.
HALF_NORMAL_MEDIAN = float(stats.norm.ppf(0.75))
# The median of Kolmogorov's limiting distribution (of D·√(n·m/(n+m)) with no shift).
KOLMOGOROV_MEDIAN = float(stats.kstwobign.ppf(0.5))
MAX_WINDOW_ROWS = 10**9
UNITS = {"ks": "sd", "chi2": "Cramér's V", "missing_rate": "Cohen's h"}


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
        return UNITS[self.test]

    @property
    def certifiable(self) -> bool:
        """Whether a typical window of ``window_rows`` rows with no shift gets NO_DRIFT."""
        return self.at_window < self.floor

    def in_units(self, effect: float) -> float:
        return location_shift_for_ks_d(effect) if self.test == "ks" else effect

    def warning(self) -> str:
        """One line saying what cannot be certified and what would help."""
        bound = self.unlimited if self.min_window_rows is None else self.at_window
        # Enough decimals that a bound just above its floor is not printed equal to it.
        decimals = 2 if self.test == "ks" else 3
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
        value = self.in_units(effect)
        return f"{value:.{decimals}f} sd" if self.test == "ks" else f"{self.unit} {value:.{decimals}f}"


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
    reference: ReferenceData,
    schema: Sequence[FeatureSpecLike],
    floors: Mapping[tuple[str, str], float],
    *,
    window_rows: int,
    min_samples: int = 30,
    alpha: float = EQUIVALENCE_ALPHA,
) -> list[CertifiableShift]:
    """For every test a run would make, the smallest shift it can certify as absent.

    :param reference: per feature of ``schema``, the reference (``sorted_values``/``counts``, ``missing``).
    :param schema: the features and the predicted label (kind ``label``) as the drift run tests them.
    :param floors: per (feature, test), the floor as an effect (KS D, Cramér's V, Cohen's h), e.g.
        the values of :func:`sml.monitoring.config.resolve_floors`.
    :param window_rows: rows of a typical window (at least 1).
    :param min_samples: the run's minimum sample (``DriftJobConfig.min_samples``): a test with fewer
        values on a side cannot decide, so its results are infinite there.
    :returns: per feature in schema order, the main test then ``missing_rate`` (not for the label).
    :raises ValueError: ``window_rows`` below 1, or a test without a floor.
    """
    if window_rows < 1:
        raise ValueError(f"window_rows must be at least 1, got {window_rows}")
    shifts = []
    for spec in schema:
        entry = reference[spec.name]
        missing = int(entry.missing)
        if spec.kind == "numeric":
            present = len(entry.sorted_values)
            test = "ks"
        else:
            present = sum(entry.counts.values())
            test = "chi2"
        rows = present + missing
        present_share = present / rows if rows else 0.0
        if present:
            if test == "ks":
                bound = lambda m: certifiable_ks(present, m, alpha)  # noqa: E731
            else:
                counts = dict(entry.counts)
                order = tuple(spec.categories or ())
                bound = lambda m: certifiable_cramers_v(_degrees_of_freedom(counts, m, order), present, m, alpha)  # noqa: E731
            shifts.append(_shift(spec, test, floors, present, present_share, window_rows, min_samples, bound))
        if spec.kind != "label" and rows:
            rate = missing / rows
            bound = lambda m: certifiable_cohens_h(rate, rows, m, alpha)  # noqa: E731
            shifts.append(_shift(spec, "missing_rate", floors, rows, 1.0, window_rows, min_samples, bound))
    return shifts


def _shift(
    spec: FeatureSpecLike,
    test: str,
    floors: Mapping[tuple[str, str], float],
    n_reference: int,
    present_share: float,
    window_rows: int,
    min_samples: int,
    bound: Callable[[int | None], float],
) -> CertifiableShift:
    try:
        floor = floors[spec.name, test]
    except KeyError:
        raise ValueError(f"no floor for the {test} test of feature {spec.name!r}") from None

    def at(rows: int | None) -> float:
        values = None if rows is None else round(rows * present_share)
        if n_reference < min_samples or (values is not None and values < min_samples):
            return math.inf
        return bound(values)

    unlimited = at(None)
    return CertifiableShift(
        feature=spec.name,
        test=test,
        kind=spec.kind,
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


def _degrees_of_freedom(counts: Mapping[str, int], n_current: int | None, order: tuple[str, ...]) -> int:
    # The table a window with the reference's shares would give; pooling depends on the smaller
    # side, so an unlimited window pools like one as large as the reference.
    total = sum(counts.values())
    current = counts if n_current is None or n_current >= total else {key: round(count * n_current / total) for key, count in counts.items()}
    buckets, _ = pooled_contingency_table(counts, current, order)
    return max(len(buckets) - 1, 0)


def _test_name(shift: CertifiableShift) -> str:
    if shift.kind == "label":
        return "predicted-label test"
    return {"ks": "KS test", "chi2": "chi-square test", "missing_rate": "missing-rate test"}[shift.test]
