"""Drift statistics: two-sample tests, their bounds, and the three-way verdicts of a run.

Pure functions on numpy arrays and counts (numpy and scipy only, no I/O). The registered drift
methods (:mod:`sml.monitoring.drift.methods`) compute from window summaries with these; the
defaults per column:

- ``numeric``: two-sample Kolmogorov–Smirnov test on the non-missing values. The effect size is
  the statistic D itself (largest gap between the two empirical CDFs).
- ``categorical``: chi-square test on the 2×k table reference/current × category. Categories
  seen in the reference whose expected count is below 5 are pooled into ``__other__``; values
  never seen in the reference form their own ``__unseen__`` bucket so that a new category shows
  up as a shift instead of vanishing into a pool (with only a handful of unseen values its tiny
  expected count makes the p-value optimistic; the effect floor keeps such a column from DRIFT).
  If ``__other__`` itself stays below 5 it absorbs the smallest remaining category. The effect
  size is Cramér's V of that table with both rows normalised to proportions: it equals the usual
  Cramér's V when the samples have equal size and, unlike it, does not shrink towards 0 when the
  reference is much larger than the current window.
- ``label`` (the predicted label): tested exactly like a categorical feature; it gets no
  missing-rate test because every prediction has a label.
- every feature that is not the label: a test on the missing-value rate (Pearson chi-square on
  the 2×2 table, Fisher's exact test when an expected count is below 5). The effect size is
  Cohen's h, ``|2·asin√p₁ − 2·asin√p₀|`` (Cohen 1988, ch. 6): on the arcsine scale a complete
  column starting to arrive 2% empty (h 0.28) is a larger change than 10% → 15% (h 0.15),
  which an absolute difference of rates gets the wrong way round.

Verdicts (:func:`decide_all`, for every method alike) follow equivalence testing: a test can say a shift is there,
say it is not there (as large as the floor), or say honestly that the data cannot tell.

- The p-values of all tests of a run are adjusted with Benjamini–Hochberg. **DRIFT** when the
  adjusted p-value is below the false discovery rate *and* the effect size reaches the floor, so
  large samples do not flag trivial shifts.
- **NO_DRIFT** when the one-sided 95% upper confidence bound of the effect is below the floor:
  the data rule out a shift as large as the floor. This is the confidence-interval form of the
  two one-sided tests procedure (Schuirmann 1987, "A comparison of the two one-sided tests
  procedure and the power approach for assessing the equivalence of average bioavailability";
  Lakens 2017, "Equivalence tests", Social Psychological and Personality Science 8(4)) with an
  effect that cannot be negative, so only the upper side is tested. Every NO_DRIFT of a run is
  an equivalence claim at 5%; the run's "no feature drifted" is their intersection, which needs
  no multiplicity correction (intersection–union principle, Berger 1982).
- **INCONCLUSIVE** otherwise, with the upper bound (``effect_upper``: the smallest shift the data
  could have ruled out) and ``detail["reason"]``: ``near_floor`` when the test was significant
  but the effect sits under the floor and the bound above it (a shift was seen, too close to the
  floor to call), ``underpowered`` when the test did not reject and the bound is above the floor,
  ``below_min_samples`` or ``empty_sample`` when a sample is too small to test.

The upper bounds (:func:`ks_upper_bound`, :func:`cramers_v_upper_bound`,
:func:`cohens_h_upper_bound`) are one-sided 95% bounds from the large-sample distributions of the
estimates. A test whose effect reaches the floor without being significant is INCONCLUSIVE
(``underpowered``): the bound is then above the floor by construction. The smallest effect the
test could *detect* (power 0.8 at the BH threshold of a lone shifted column) is still reported as
``detail["min_detectable_effect"]``: it is known before any data arrive and says whether a
reference is large enough to ever certify a shift. The run's verdict (:func:`overall_verdict`)
is DRIFT when any test drifts, INCONCLUSIVE only when more than half of the main tests
(every method but the missing-rate one) could not decide, NO_DRIFT otherwise; :func:`verdict_summary` says how many
features could not decide and why. Tests whose p-value cannot vary (no missing value on either
side, a single category overall) stay out of the correction: they can never reject, and counting
them would only weaken the others.

Degenerate inputs never produce NaN: a test with an empty sample reports statistic 0, p-value 1
and effect 0 with verdict INCONCLUSIVE (``detail["reason"] == "empty_sample"``); constant
columns are ordinary inputs (equal constants give D = 0 and p = 1, different ones D = 1).

Example (the run itself is :func:`sml.monitoring.drift.run.run_drift_methods`)::

    outcome = ks_two_sample(np.sort(reference_values), np.sort(window_values))
    bound = ks_upper_bound(outcome.statistic, len(reference_values), len(window_values))
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cache
from typing import Any, Protocol

import numpy as np
from scipy import optimize, stats

OTHER_BUCKET = "__other__"
UNSEEN_BUCKET = "__unseen__"
MIN_EXPECTED_COUNT = 5.0
DETECTION_POWER = 0.8
# scipy's own bound for method="auto": exact p-values up to this sample size take milliseconds.
EXACT_KS_MAX_SAMPLE = 10_000
# kstwo.sf(d, n) costs ~0.1 s at n = 100k and grows with n; beyond 10k the limiting distribution
# kstwobign differs from it by under 1.5% (relative) where p-values matter.
KSTWO_MAX_N = 10_000


# One-sided level of the equivalence bounds: NO_DRIFT is claimed with 95% confidence.
EQUIVALENCE_ALPHA = 0.05
# A run is INCONCLUSIVE only when more than this share of its main tests could not decide.
MAX_INCONCLUSIVE_SHARE = 0.5


class DriftVerdict(StrEnum):
    """Outcome of one test or of a whole run.

    Runs stored before issue 18 say ``INSUFFICIENT_DATA``; ``DriftVerdict("INSUFFICIENT_DATA")``
    reads them as :attr:`INCONCLUSIVE`, which replaced it.
    """

    DRIFT = "DRIFT"
    NO_DRIFT = "NO_DRIFT"
    INCONCLUSIVE = "INCONCLUSIVE"

    @classmethod
    def _missing_(cls, value: object) -> DriftVerdict | None:
        return cls.INCONCLUSIVE if value == "INSUFFICIENT_DATA" else None


@dataclass(frozen=True, eq=False)
class NumericReference:
    """Reference values of a numeric feature: non-missing values in ascending order, plus the missing count."""

    sorted_values: np.ndarray
    missing: int = 0

    @classmethod
    def from_values(cls, values: Sequence[float | None] | np.ndarray) -> NumericReference:
        """Build from raw values (NaN or None = missing)."""
        array = np.asarray(values, dtype=float)
        finite = array[~np.isnan(array)]
        return cls(sorted_values=np.sort(finite), missing=int(array.size - finite.size))


@dataclass(frozen=True)
class CategoricalReference:
    """Reference category counts (keys are ``str()`` of the values), plus the missing count."""

    counts: Mapping[str, int]
    missing: int = 0

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> CategoricalReference:
        """Build from raw values (None or NaN = missing)."""
        counts, missing = count_categories(values)
        return cls(counts=dict(counts), missing=missing)


class NumericReferenceLike(Protocol):
    @property
    def sorted_values(self) -> Sequence[float] | np.ndarray: ...
    @property
    def missing(self) -> int: ...


class CategoricalReferenceLike(Protocol):
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def missing(self) -> int: ...


ReferenceData = Mapping[str, NumericReferenceLike | CategoricalReferenceLike]


@dataclass(frozen=True)
class FeatureTestResult:
    """One test on one feature, as a run records it.

    ``test`` is the registered method's name; ``kind`` the column's kind (``numeric``,
    ``categorical``) or ``label`` for the model's prediction.
    ``n_reference``/``n_current`` count the values the test used: non-missing values for ``ks``
    and ``chi2``, all rows for ``missing_rate``. ``effect_size`` is KS D, Cramér's V, Cohen's h or another method's effect;
    ``effect_upper`` its one-sided 95% upper bound (the smallest shift the data rule out; ``None``
    when a sample is empty). ``detail`` holds JSON-friendly extras: ``method``,
    ``min_detectable_effect`` and ``power_alpha`` (when the test ran), ``reason`` (why a verdict
    is INCONCLUSIVE), chi-square buckets and counts, missing rates.
    """

    feature: str
    test: str
    kind: str
    statistic: float
    p_value: float
    p_adjusted: float
    effect_size: float
    effect_floor: float
    n_reference: int
    n_current: int
    verdict: DriftVerdict
    detail: dict[str, Any] = field(default_factory=dict)
    effect_upper: float | None = None


@dataclass(frozen=True)
class KSResult:
    """Two-sided two-sample KS: ``method`` is ``exact``, ``kstwo``, ``kstwobign`` or ``empty``."""

    statistic: float
    p_value: float
    method: str


@dataclass(frozen=True)
class ChiSquareResult:
    """Chi-square on the pooled 2×k table (row 0 reference, row 1 current), one entry per bucket."""

    statistic: float
    p_value: float
    df: int
    cramers_v: float
    table_cramers_v: float
    buckets: tuple[str, ...]
    reference_counts: tuple[int, ...]
    current_counts: tuple[int, ...]


@dataclass(frozen=True)
class MissingRateResult:
    """Two-proportion test on missing-value rates: ``method`` is ``chi2``, ``fisher`` or ``degenerate``."""

    statistic: float
    p_value: float
    method: str
    reference_rate: float
    current_rate: float

    @property
    def difference(self) -> float:
        return abs(self.current_rate - self.reference_rate)

    @property
    def cohens_h(self) -> float:
        """Cohen's h between the two rates, ``|2·asin√current − 2·asin√reference|`` (Cohen 1988, §6.2)."""
        return abs(2 * math.asin(math.sqrt(self.current_rate)) - 2 * math.asin(math.sqrt(self.reference_rate)))


def sorted_finite_columns(columns: np.ndarray | Sequence[Sequence[float | None] | np.ndarray]) -> list[np.ndarray]:
    """Sort each column once, dropping missing values.

    :param columns: a 2-D array (rows × columns) or a sequence of 1-D columns; NaN or None = missing.
    :returns: one ascending float array per column, without NaN.
    """
    if isinstance(columns, np.ndarray) and columns.ndim == 2:
        columns = list(columns.T)
    sorted_columns = []
    for column in columns:
        values = np.asarray(column, dtype=float)
        sorted_columns.append(np.sort(values[~np.isnan(values)]))
    return sorted_columns


def ks_two_sample(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> KSResult:
    """Two-sided two-sample KS test on ascending, NaN-free samples.

    D is computed like ``scipy.stats.ks_2samp`` (ties handled on the union of values). The p-value
    is scipy's exact one when both samples have at most 10,000 values, scipy's ``asymp`` one
    (``kstwo``) while ``round(n*m/(n+m)) <= 10,000``, and the limiting Kolmogorov distribution
    ``kstwobign.sf(D * sqrt(n*m/(n+m)))`` beyond, where it is close and ``kstwo`` is slow.

    :returns: :class:`KSResult`; an empty sample gives D = 0, p = 1, method ``empty``.
    """
    n, m = len(reference_sorted), len(current_sorted)
    if n == 0 or m == 0:
        return KSResult(statistic=0.0, p_value=1.0, method="empty")
    if n >= m:
        statistic = _ks_statistic(larger=reference_sorted, smaller=current_sorted)
    else:
        statistic = _ks_statistic(larger=current_sorted, smaller=reference_sorted)
    if max(n, m) <= EXACT_KS_MAX_SAMPLE:
        p_value = stats.ks_2samp(reference_sorted, current_sorted, method="exact").pvalue
        return KSResult(statistic=statistic, p_value=float(p_value), method="exact")
    return _ks_asymptotic(statistic, n, m)


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """The asymptotic two-sided p-value of KS D between samples of ``n`` and ``m`` values (as :func:`ks_two_sample` beyond the exact sizes)."""
    return _ks_asymptotic(statistic, n, m).p_value


def _ks_asymptotic(statistic: float, n: int, m: int) -> KSResult:
    effective_n = n * m / (n + m)
    if round(effective_n) <= KSTWO_MAX_N:
        p_value = stats.kstwo.sf(statistic, round(effective_n))
        return KSResult(statistic=statistic, p_value=float(np.clip(p_value, 0.0, 1.0)), method="kstwo")
    p_value = stats.kstwobign.sf(statistic * math.sqrt(effective_n))
    return KSResult(statistic=statistic, p_value=float(p_value), method="kstwobign")


def ks_two_sample_cells(reference_cells: np.ndarray, current_cells: np.ndarray, representatives: np.ndarray) -> KSResult:
    """:func:`ks_two_sample` from counts in the cells a reference's distinct values cut the line into.

    ``reference_cells`` and ``current_cells`` count each sample's values per cell (the layout of
    :class:`sml.monitoring.summaries.NumericGrid`); ``representatives`` holds one value inside
    each cell. Both ECDFs are step functions constant inside a cell except at the reference's
    values, which are cells of their own, so the largest gap is reached at a cell's end and the
    cumulated counts give D exactly (the same integer counts divided as ``ks_2samp`` divides
    them). The p-value depends on D, n and m only; for the exact method, scipy gets a sample
    rebuilt from the cells (one representative per value), whose D is the same.
    """
    n, m = int(reference_cells.sum()), int(current_cells.sum())
    if n == 0 or m == 0:
        return KSResult(statistic=0.0, p_value=1.0, method="empty")
    statistic = float(np.max(np.abs(np.cumsum(reference_cells) / n - np.cumsum(current_cells) / m)))
    if max(n, m) <= EXACT_KS_MAX_SAMPLE:
        p_value = stats.ks_2samp(
            np.repeat(representatives, reference_cells), np.repeat(representatives, current_cells), method="exact"
        ).pvalue
        return KSResult(statistic=statistic, p_value=float(p_value), method="exact")
    return _ks_asymptotic(statistic, n, m)


def ks_two_sample_columns(
    reference_sorted: Sequence[np.ndarray], current_sorted: Sequence[np.ndarray]
) -> list[KSResult]:
    """:func:`ks_two_sample` for many columns (e.g. the output of :func:`sorted_finite_columns`)."""
    if len(reference_sorted) != len(current_sorted):
        raise ValueError(f"{len(reference_sorted)} reference columns but {len(current_sorted)} current columns")
    return [ks_two_sample(reference, current) for reference, current in zip(reference_sorted, current_sorted)]


def _ks_statistic(larger: np.ndarray, smaller: np.ndarray) -> float:
    # Only the smaller sample's distinct values are searched in the larger one: between two of
    # them the smaller ECDF is flat, so the widest gap there sits just below the next value
    # (``side="left"``) and the other direction peaks at the values themselves.
    n, m = len(larger), len(smaller)
    group_ends = _tie_group_ends(smaller)
    keys = smaller[group_ends]
    smaller_cdf = (group_ends + 1) / m
    gap_at_keys = np.abs(np.searchsorted(larger, keys, side="right") / n - smaller_cdf)
    previous_cdf = np.concatenate(([0.0], smaller_cdf[:-1]))
    gap_below_keys = np.searchsorted(larger, keys, side="left") / n - previous_cdf
    return float(max(gap_at_keys.max(), gap_below_keys.max()))


def _tie_group_ends(sorted_values: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.append(sorted_values[1:] != sorted_values[:-1], True))


def count_categories(values: Iterable[Any]) -> tuple[Counter[str], int]:
    """Count categories by each value's own ``str()`` form; None and float NaN are missing.

    Values that are equal under Python's hashing but print differently (``1``, ``1.0``, ``True``;
    ``0.0`` and ``-0.0``) are separate categories, so the counts never depend on row order.

    :returns: (counts, missing count).
    """
    # Count the raw values first (one C-level pass), then fold the few distinct keys by text.
    # Counter merges equal values under the first one seen (1, 1.0 and True are one key), which is
    # exact only when no key can equal a value of another text: true when every key is a str, None
    # or NaN. Otherwise count again by (type, value), still one C-level pass; within one type only
    # a signed zero (0.0 == -0.0) has two texts, and those few values are recounted by text.
    values = values if isinstance(values, (list, tuple, np.ndarray)) else list(values)
    raw = Counter(values)
    if all(type(value) is str or value is None or _is_nan(value) for value in raw):
        keyed: Iterable[tuple[tuple[type, Any], int]] = (((type(value), value), count) for value, count in raw.items())
    else:
        typed = Counter(zip(map(type, values), values))
        for kind, value in [key for key in typed if key[1] == 0 and key[0] not in (int, bool)]:
            del typed[kind, value]
            typed.update((kind, text) for text in (str(item) for item in values if type(item) is kind and item == 0))
        keyed = typed.items()
    counts: Counter[str] = Counter()
    missing = 0
    for (kind, value), count in keyed:
        if value is None or _is_nan(value):
            missing += count
        else:
            counts[str(value)] += count
    return counts, missing


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def pooled_contingency_table(
    reference_counts: Mapping[str, int], current_counts: Mapping[str, int], order: Sequence[str] = (), unseen: int = 0
) -> tuple[tuple[str, ...], np.ndarray]:
    """Build the 2×k table the chi-square test runs on.

    Categories seen in the reference are columns, in ``order`` first and then alphabetically.
    Those whose smallest expected count is below 5 go into ``__other__``; if ``__other__`` is still
    below 5 it absorbs the smallest remaining category. Current values absent from the reference
    form ``__unseen__``, with ``unseen`` more current values counted there already (a window
    summary's unseen total).

    :returns: (bucket names, int array of shape (2, k): row 0 reference, row 1 current).
    """
    seen = {category for category, count in reference_counts.items() if count > 0}
    ordered = [category for category in dict.fromkeys(order) if category in seen]
    ordered += sorted(seen.difference(ordered))
    reference_total = sum(reference_counts[category] for category in ordered)
    current_total = sum(current_counts.values()) + unseen
    unseen += sum(count for category, count in current_counts.items() if category not in seen)
    smaller_total = min(reference_total, current_total)
    grand_total = reference_total + current_total

    def is_rare(column_total: int) -> bool:
        return smaller_total * column_total / grand_total < MIN_EXPECTED_COUNT

    kept: list[tuple[str, int, int]] = []
    other_reference = other_current = 0
    for category in ordered:
        in_reference, in_current = reference_counts[category], current_counts.get(category, 0)
        if is_rare(in_reference + in_current):
            other_reference += in_reference
            other_current += in_current
        else:
            kept.append((category, in_reference, in_current))
    if other_reference + other_current > 0:
        if is_rare(other_reference + other_current) and kept:
            smallest = min(range(len(kept)), key=lambda index: kept[index][1] + kept[index][2])
            _, in_reference, in_current = kept.pop(smallest)
            other_reference += in_reference
            other_current += in_current
        kept.append((OTHER_BUCKET, other_reference, other_current))
    if unseen > 0:
        kept.append((UNSEEN_BUCKET, 0, unseen))
    buckets = tuple(name for name, _, _ in kept)
    table = np.array([[row[1] for row in kept], [row[2] for row in kept]], dtype=np.int64).reshape(2, len(kept))
    return buckets, table


def chi_square_test(
    reference_counts: Mapping[str, int], current_counts: Mapping[str, int], order: Sequence[str] = (), unseen: int = 0
) -> ChiSquareResult:
    """Chi-square test of homogeneity on :func:`pooled_contingency_table` (no continuity correction).

    The statistic and p-value are those of ``scipy.stats.chi2_contingency(table, correction=False)``.
    ``cramers_v`` is the effect size (Cramér's V of the row-normalised table, see the module doc);
    ``table_cramers_v`` is the usual ``sqrt(chi2 / N)``. A table with fewer than two buckets (one
    category overall) gives statistic 0, p 1, df 0.

    :param reference_counts: non-empty counts per category of the reference.
    :param current_counts: non-empty counts per category of the current window.
    :param unseen: more current values in categories the reference does not have.
    """
    buckets, table = pooled_contingency_table(reference_counts, current_counts, order, unseen)
    row_totals = table.sum(axis=1)
    if row_totals.min() == 0:
        raise ValueError("chi-square needs at least one value on each side")
    if table.shape[1] < 2:
        statistic, p_value, df = 0.0, 1.0, 0
    else:
        outcome = stats.chi2_contingency(table, correction=False)
        statistic, p_value, df = float(outcome.statistic), float(outcome.pvalue), int(outcome.dof)
    reference_share, current_share = table / row_totals[:, np.newaxis]
    balanced = 0.5 * np.sum((reference_share - current_share) ** 2 / (reference_share + current_share))
    return ChiSquareResult(
        statistic=statistic,
        p_value=p_value,
        df=df,
        cramers_v=float(math.sqrt(balanced)),
        table_cramers_v=math.sqrt(statistic / table.sum()),
        buckets=buckets,
        reference_counts=tuple(int(count) for count in table[0]),
        current_counts=tuple(int(count) for count in table[1]),
    )


def missing_rate_test(
    reference_missing: int, reference_total: int, current_missing: int, current_total: int
) -> MissingRateResult:
    """Compare missing-value rates: Pearson chi-square on the 2×2 table, Fisher's exact p-value
    when an expected count is below 5.

    The statistic is always the Pearson chi-square. No missing value at all, or nothing but
    missing values, on both sides gives statistic 0 and p 1 (method ``degenerate``), as does an
    empty side (its rate is reported as 0).
    """
    sides = (("reference", reference_missing, reference_total), ("current", current_missing, current_total))
    for side, missing, total in sides:
        if not 0 <= missing <= total:
            raise ValueError(f"{side} missing count {missing} is not between 0 and the row count {total}")
    reference_rate = reference_missing / reference_total if reference_total else 0.0
    current_rate = current_missing / current_total if current_total else 0.0
    table = np.array(
        [[reference_missing, reference_total - reference_missing], [current_missing, current_total - current_missing]]
    )
    if table.sum(axis=0).min() == 0 or table.sum(axis=1).min() == 0:
        return MissingRateResult(0.0, 1.0, "degenerate", reference_rate, current_rate)
    outcome = stats.chi2_contingency(table, correction=False)
    if outcome.expected_freq.min() < MIN_EXPECTED_COUNT:
        p_value, method = float(stats.fisher_exact(table).pvalue), "fisher"
    else:
        p_value, method = float(outcome.pvalue), "chi2"
    return MissingRateResult(float(outcome.statistic), p_value, method, reference_rate, current_rate)


def min_detectable_ks_statistic(n_reference: int, n_current: int, alpha: float) -> float:
    """Smallest true ECDF gap D that the KS test detects at level ``alpha``.

    This is the asymptotic critical value ``kstwobign.isf(alpha) * sqrt(1/n + 1/m)``. Because the
    observed D is a maximum over many points it sits above the true gap, so simulated power at
    this D is about 0.8 for a location shift of a normal and above 0.95 for a scale change.
    """
    return float(stats.kstwobign.isf(alpha) * math.sqrt(1 / n_reference + 1 / n_current))


def min_detectable_cramers_v(
    n_reference: int, n_current: int, df: int, alpha: float, power: float = DETECTION_POWER
) -> float:
    """Smallest effect (row-normalised Cramér's V) the chi-square test detects with ``power``.

    Solves the noncentral chi-square for the noncentrality giving ``power`` at level ``alpha``.
    Rows whose proportions are V apart reach a noncentrality of at least ``2 * V**2 * n_eff / s``,
    with ``n_eff = n*m/(n+m)`` and ``s = max(n, m)/(n+m)``: ``N * V**2`` for equal samples, and
    only half of that per effective observation when one sample dwarfs the other and the shift
    drains rare categories. ``df`` below 1 is treated as 1.
    """
    noncentrality = noncentrality_for_power(max(df, 1), alpha, power)
    total = n_reference + n_current
    effective_n = n_reference * n_current / total
    larger_share = max(n_reference, n_current) / total
    return math.sqrt(noncentrality * larger_share / (2 * effective_n))


@cache
def noncentrality_for_power(df: int, alpha: float, power: float) -> float:
    """The noncentrality at which a χ²(df) test at level ``alpha`` rejects with probability ``power``."""
    critical = stats.chi2.isf(alpha, df)

    def shortfall(noncentrality: float) -> float:
        return float(stats.ncx2.sf(critical, df, noncentrality)) - power

    upper = 1.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper))


def min_detectable_rate_change(
    n_reference: int, n_current: int, reference_rate: float, alpha: float, power: float = DETECTION_POWER
) -> float:
    """Smallest change of the missing rate, away from ``reference_rate``, that the test detects.

    The larger of two standard approximations: Cohen's h (arcsine scale) and Fleiss' normal
    approximation with continuity correction. Each alone is optimistic in one small-count regime
    (a rate near 0 with equal samples, resp. with a much larger reference); together they keep the
    simulated power at or above ``power``. The change is taken towards 0.5, where a given change is
    hardest to detect. Returns 1.0 when no rate in [0, 1] would be detectable.
    """
    # Missing and present are symmetric, so measure the rate from the nearer end.
    base_rate = min(reference_rate, 1 - reference_rate)
    return max(
        _rate_change_by_arcsine(n_reference, n_current, base_rate, alpha, power),
        _rate_change_by_fleiss(n_reference, n_current, base_rate, alpha, power),
    )


def _rate_change_by_arcsine(n_reference: int, n_current: int, base_rate: float, alpha: float, power: float) -> float:
    detectable_h = (stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * math.sqrt(1 / n_reference + 1 / n_current)
    moved = math.asin(math.sqrt(base_rate)) + detectable_h / 2
    return 1.0 if moved >= math.pi / 2 else math.sin(moved) ** 2 - base_rate


def _rate_change_by_fleiss(n_reference: int, n_current: int, base_rate: float, alpha: float, power: float) -> float:
    z_alpha, z_power = stats.norm.isf(alpha / 2), stats.norm.ppf(power)
    continuity = (1 / n_reference + 1 / n_current) / 2

    def surplus(change: float) -> float:
        rate = base_rate + change
        pooled = (n_current * rate + n_reference * base_rate) / (n_current + n_reference)
        null_spread = math.sqrt(pooled * (1 - pooled) * (1 / n_current + 1 / n_reference))
        alternative_spread = math.sqrt(rate * (1 - rate) / n_current + base_rate * (1 - base_rate) / n_reference)
        return change - continuity - z_alpha * null_spread - z_power * alternative_spread

    largest_change = 1 - base_rate
    if surplus(largest_change) < 0:
        return 1.0
    return float(optimize.brentq(surplus, 1e-12, largest_change))


def ks_upper_bound(statistic: float, n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA) -> float:
    """One-sided ``1 - alpha`` upper confidence bound of the true ECDF gap, from an observed KS D.

    ``D + z(1-alpha) · ½ · √(1/n + 1/m)``, capped at 1. Why it holds: the true gap sits at some
    point x*, and the observed D is at least the observed gap there, whose standard error is
    ``√(F(1-F)/n + G(1-G)/m) ≤ ½·√(1/n + 1/m)``; so by the normal approximation to the two
    binomial proportions at x* the true gap exceeds the bound with probability at most ``alpha``
    (conservative, because D is a maximum over all points and sits above the gap at x*).
    ``n_current=None`` is the limit of an unlimited window (as for the other bounds).
    """
    spread = 0.5 * math.sqrt(_reciprocal_sum(n_reference, n_current))
    return min(1.0, statistic + float(stats.norm.isf(alpha)) * spread)


def cramers_v_upper_bound(
    chi2_statistic: float, df: int, n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA
) -> float:
    """One-sided ``1 - alpha`` upper bound of Cramér's V from the chi-square statistic of the table.

    Inverts the noncentral chi-square distribution for its noncentrality λ (the confidence
    interval for an effect size measured by a noncentrality parameter: Steiger & Fouladi 1997,
    "Noncentrality interval estimation and the evaluation of statistical models"; Smithson 2003,
    "Confidence Intervals", ch. 4): λ_U solves ``ncx2.cdf(chi2, df, λ_U) = alpha`` (0 when the
    central chi-square already leaves less than ``alpha`` below the statistic). Near no shift the
    noncentrality of rows whose proportions are V apart is ``4 · n_eff · V²`` with
    ``n_eff = n·m/(n+m)`` (``N·V²`` for equal samples), so ``V_U = √(λ_U / (4·n_eff))``. For one
    degree of freedom this is about ``V + z(1-alpha) · ½ · √(1/n + 1/m)``; with many categories it
    accounts for the upward bias of V, which a fixed margin does not.
    """
    df = max(df, 1)
    effective_n = 1 / _reciprocal_sum(n_reference, n_current)
    return min(1.0, math.sqrt(noncentrality_upper_bound(chi2_statistic, df, alpha) / (4 * effective_n)))


def noncentrality_upper_bound(statistic: float, df: int, alpha: float) -> float:
    """λ_U with ``ncx2.cdf(statistic, df, λ_U) = alpha`` (0 when the central χ² already leaves less than ``alpha`` below)."""
    if stats.chi2.cdf(statistic, df) <= alpha:
        return 0.0

    def excess(noncentrality: float) -> float:
        return float(stats.ncx2.cdf(statistic, df, noncentrality)) - alpha

    upper = max(1.0, 2 * statistic)
    while excess(upper) > 0:
        upper *= 2
    return float(optimize.brentq(excess, 0.0, upper))


def cohens_h_upper_bound(h: float, n_reference: int, n_current: int | None, alpha: float = EQUIVALENCE_ALPHA) -> float:
    """One-sided ``1 - alpha`` upper bound of Cohen's h between two rates: ``h + z(1-alpha)·√(1/n + 1/m)``,
    capped at π, the largest h there is (``2·asin√p`` runs from 0 to π).

    ``2·asin√p̂`` has variance about ``1/n`` whatever the rate (the variance-stabilising arcsine
    transformation; Cohen 1988, §6.2), so the difference of two has standard error ``√(1/n + 1/m)``.
    """
    return min(math.pi, h + float(stats.norm.isf(alpha)) * math.sqrt(_reciprocal_sum(n_reference, n_current)))


def _reciprocal_sum(n_reference: int, n_current: int | None) -> float:
    # 1/n + 1/m, the variance factor of every two-sample effect here; an unlimited window adds nothing.
    return 1 / n_reference + (0.0 if n_current is None else 1 / n_current)


def ks_d_for_location_shift(standard_deviations: float) -> float:
    """KS D between a normal distribution and the same one moved by ``standard_deviations``: ``2·Φ(δ/2) − 1``.

    Translates a floor a user thinks of in standard deviations into KS D: 0.25 sd ≈ D 0.10,
    0.2 sd ≈ D 0.08, 0.1 sd ≈ D 0.04 (two normals cross halfway, where the CDF gap is largest).
    """
    return float(2 * stats.norm.cdf(abs(standard_deviations) / 2) - 1)


def location_shift_for_ks_d(statistic: float) -> float:
    """The inverse of :func:`ks_d_for_location_shift`: the normal location shift, in standard
    deviations, whose KS D is ``statistic`` (``2·Φ⁻¹((1 + D)/2)``; infinite for D ≥ 1)."""
    if statistic >= 1:
        return math.inf
    return float(2 * stats.norm.ppf((1 + max(statistic, 0.0)) / 2))


def parse_effect_floor(feature: str, value: float | str) -> float:
    """A per-feature floor from a settings value: a number (KS D or Cramér's V) or ``"<x>sd"``.

    ``"0.2sd"`` means "a location shift of 0.2 standard deviations" and becomes
    :func:`ks_d_for_location_shift` of it (numeric features only; the caller checks the kind).

    :raises ValueError: naming ``feature`` when the value is not a number in (0, 1) or ``<x>sd``.
    """
    if isinstance(value, str) and value.strip().lower().endswith("sd"):
        try:
            deviations = float(value.strip()[:-2])
        except ValueError:
            raise ValueError(f"floor of feature {feature!r}: {value!r} is not a number of standard deviations such as '0.2sd'") from None
        if not deviations > 0:
            # ks_d_for_location_shift takes the shift's size, so "-0.1sd" would pass as 0.1 sd unseen.
            raise ValueError(f"floor of feature {feature!r}: {value!r} must be a positive number of standard deviations")
        floor = ks_d_for_location_shift(deviations)
    else:
        try:
            floor = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"floor of feature {feature!r}: {value!r} is not a number or '<x>sd'") from None
        except OverflowError:  # an int beyond a float's range, e.g. from a JSON or TOML file
            raise ValueError(f"floor of feature {feature!r}: {Decimal(value):.3e} must give an effect in (0, 1)") from None
    if not 0 < floor < 1:
        raise ValueError(f"floor of feature {feature!r}: {value!r} must give an effect in (0, 1), got {floor:.4g}")
    return floor


@dataclass(frozen=True)
class PendingTest:
    """A test's numbers before the run-wide correction decides its verdict."""

    feature: str
    test: str
    kind: str
    statistic: float
    p_value: float
    effect_size: float
    effect_floor: float
    n_reference: int
    n_current: int
    detail: dict[str, Any]
    enough_samples: bool
    corrected: bool
    """Whether the test takes part in Benjamini–Hochberg (it ran and its p-value could vary)."""
    min_detectable: Callable[[float], float] | None
    """Smallest detectable effect at a given alpha; None when a sample is empty."""
    effect_upper: float | None
    """One-sided 95% upper bound of the effect; None when a sample is empty."""
    effect_margin: float = 0.0
    """How far the true effect may lie below ``effect_size`` for a reason other than sampling (a
    sketch's rank error): DRIFT needs ``effect_size - effect_margin`` to clear the floor."""


def is_main_test(name: str) -> bool:
    """Whether results of test ``name`` are a column's main test (:func:`sml.monitoring.drift.methods.is_main_test`)."""
    from sml.monitoring.drift.methods import is_main_test as registered_main

    return registered_main(name)


def overall_verdict(results: Sequence[FeatureTestResult]) -> DriftVerdict:
    """The run's verdict, from the tests that could decide.

    DRIFT if any test drifts. Otherwise INCONCLUSIVE when nothing was tested or more than half
    of the main tests (``ks``/``chi2``, the label's included) are INCONCLUSIVE, and NO_DRIFT
    when most could decide; :func:`verdict_summary` then names those that could not. One
    feature the data cannot speak about does not silence the others.
    """
    if any(result.verdict is DriftVerdict.DRIFT for result in results):
        return DriftVerdict.DRIFT
    main = [result for result in results if is_main_test(result.test)]
    inconclusive = sum(result.verdict is DriftVerdict.INCONCLUSIVE for result in main)
    if not main or inconclusive > MAX_INCONCLUSIVE_SHARE * len(main):
        return DriftVerdict.INCONCLUSIVE
    return DriftVerdict.NO_DRIFT


def feature_verdicts(results: Sequence[FeatureTestResult]) -> dict[str, tuple[DriftVerdict, list[FeatureTestResult]]]:
    """Per feature (and the label), in test order: DRIFT if any of its tests drifted, INCONCLUSIVE
    if any could not decide, else NO_DRIFT; with the tests behind that verdict."""
    by_feature: dict[str, list[FeatureTestResult]] = {}
    for result in results:
        by_feature.setdefault(result.feature, []).append(result)
    verdicts = {}
    for feature, tests in by_feature.items():
        for verdict in (DriftVerdict.DRIFT, DriftVerdict.INCONCLUSIVE, DriftVerdict.NO_DRIFT):
            deciding = [test for test in tests if test.verdict is verdict]
            if deciding:
                verdicts[feature] = (verdict, deciding)
                break
    return verdicts


def verdict_summary(results: Sequence[FeatureTestResult], *, max_named: int = 5) -> str:
    """One line a user can act on, e.g. ``NO_DRIFT on 18 of 20 features; 2 inconclusive:
    income (underpowered, could rule out only ≥ 0.13 vs floor 0.1), city (near_floor, …)``.

    Counts input features (the prediction, a classifier's predicted label or a regression model's
    number, is said separately when it drifted or could not decide); names at most ``max_named``
    features per outcome.
    """
    from sml.monitoring.drift.run import PREDICTION_KIND, prediction_phrase  # the run module builds on this one

    status = overall_verdict(results)
    per_feature = feature_verdicts(results)
    features = {name: value for name, value in per_feature.items() if value[1][0].kind != PREDICTION_KIND}
    total = len(features)
    by_verdict: dict[DriftVerdict, list[str]] = {verdict: [] for verdict in DriftVerdict}
    for name, (verdict, _) in features.items():
        by_verdict[verdict].append(name)

    def named(names: list[str], describe: Callable[[str], str]) -> str:
        shown = ", ".join(describe(name) for name in names[:max_named])
        return shown + (f" and {len(names) - max_named} more" if len(names) > max_named else "")

    def why(name: str) -> str:
        test = per_feature[name][1][0]
        reason = test.detail.get("reason", "undecided")
        test_name = "" if is_main_test(test.test) else f"{test.test} "
        if test.effect_upper is None:
            return f"{name} ({test_name}{reason})"
        return f"{name} ({test_name}{reason}: could rule out only ≥ {test.effect_upper:.3g}, floor {test.effect_floor:.3g})"

    parts = []
    if by_verdict[DriftVerdict.DRIFT]:
        parts.append(f"DRIFT on {len(by_verdict[DriftVerdict.DRIFT])} of {total} features: {named(by_verdict[DriftVerdict.DRIFT], str)}")
    if by_verdict[DriftVerdict.NO_DRIFT]:
        parts.append(f"NO_DRIFT on {len(by_verdict[DriftVerdict.NO_DRIFT])} of {total} features")
    if by_verdict[DriftVerdict.INCONCLUSIVE]:
        parts.append(f"{len(by_verdict[DriftVerdict.INCONCLUSIVE])} inconclusive: {named(by_verdict[DriftVerdict.INCONCLUSIVE], why)}")
    label = next(((name, value) for name, value in per_feature.items() if value[1][0].kind == PREDICTION_KIND), None)
    if label is not None and label[1][0] is not DriftVerdict.NO_DRIFT:
        name, (verdict, tests) = label
        parts.append(f"{prediction_phrase(name)} {verdict.value}" + (f" ({tests[0].detail['reason']})" if "reason" in tests[0].detail else ""))
    text = "; ".join(parts) or "nothing tested"
    return text if text.startswith(status.value) else f"{status.value}: {text}"


def reference_from_columns(
    columns: Mapping[str, np.ndarray | Sequence[Any]], schema: Sequence[Any]
) -> dict[str, NumericReference | CategoricalReference]:
    """Summarise raw columns (training data or a previous window) into reference data for ``schema``."""
    reference: dict[str, NumericReference | CategoricalReference] = {}
    for spec in schema:
        if spec.kind == "numeric":
            reference[spec.name] = NumericReference.from_values(_numeric_column(spec.name, columns))
        else:
            reference[spec.name] = CategoricalReference.from_values(_column(spec.name, columns))
    return reference


def _column(name: str, columns: Mapping[str, np.ndarray | Sequence[Any]]) -> np.ndarray | Sequence[Any]:
    try:
        return columns[name]
    except KeyError:
        raise ValueError(f"no values for feature {name!r}") from None


def _numeric_column(name: str, columns: Mapping[str, np.ndarray | Sequence[Any]]) -> np.ndarray:
    try:
        values = np.asarray(_column(name, columns), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature {name!r} is numeric but has a non-numeric value: {exc}") from None
    if values.ndim != 1:
        raise ValueError(f"feature {name!r}: expected a 1-D column of values, got shape {values.shape}")
    return values


def decide_all(pending: Sequence[PendingTest], fdr: float) -> list[FeatureTestResult]:
    """Adjust the p-values of a run's tests together (Benjamini–Hochberg, over those that can
    vary) and decide each test's verdict by the rule of the module doc."""
    corrected = [index for index, test in enumerate(pending) if test.corrected]
    p_adjusted = [1.0] * len(pending)
    if corrected:
        adjusted = stats.false_discovery_control([pending[index].p_value for index in corrected], method="bh")
        for index, value in zip(corrected, adjusted):
            p_adjusted[index] = float(value)
    # A lone shifted column must beat the smallest BH threshold, fdr / number of tests.
    power_alpha = fdr / max(len(corrected), 1)
    return [_decide(test, adjusted, fdr, power_alpha) for test, adjusted in zip(pending, p_adjusted)]


def _decide(test: PendingTest, p_adjusted: float, fdr: float, power_alpha: float) -> FeatureTestResult:
    detail = dict(test.detail)
    if test.min_detectable is None or test.effect_upper is None:
        verdict, detail["reason"] = DriftVerdict.INCONCLUSIVE, "empty_sample"
    else:
        detail |= {"min_detectable_effect": test.min_detectable(power_alpha), "power_alpha": power_alpha}
        significant = p_adjusted < fdr
        if not test.enough_samples:
            verdict, detail["reason"] = DriftVerdict.INCONCLUSIVE, "below_min_samples"
        elif significant and test.effect_size - test.effect_margin >= test.effect_floor:
            verdict = DriftVerdict.DRIFT
        elif test.effect_upper < test.effect_floor:
            verdict = DriftVerdict.NO_DRIFT
        elif significant:
            verdict, detail["reason"] = DriftVerdict.INCONCLUSIVE, "near_floor"
        else:
            verdict, detail["reason"] = DriftVerdict.INCONCLUSIVE, "underpowered"
    return FeatureTestResult(
        feature=test.feature, test=test.test, kind=test.kind, statistic=test.statistic, p_value=test.p_value,
        p_adjusted=p_adjusted, effect_size=test.effect_size, effect_floor=test.effect_floor,
        n_reference=test.n_reference, n_current=test.n_current, verdict=verdict, detail=detail,
        effect_upper=test.effect_upper,
    )
