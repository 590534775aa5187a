"""The drift run as it was computed from the window's values (arrays), kept as the oracle the
summaries path is tested against: same statistics, p-values, bounds and verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from sml.monitoring.drift.stats import (
    FeatureTestResult,
    PendingTest,
    ReferenceData,
    chi_square_test,
    cohens_h_upper_bound,
    count_categories,
    cramers_v_upper_bound,
    decide_all,
    ks_two_sample,
    ks_upper_bound,
    min_detectable_cramers_v,
    min_detectable_ks_statistic,
    min_detectable_rate_change,
    missing_rate_test,
    sorted_finite_columns,
)

FeatureSpecLike = Any
FeatureKind = str


def run_drift_tests_on_arrays(
    reference: ReferenceData,
    current: Mapping[str, np.ndarray | Sequence[Any]],
    schema: Sequence[Any],
    *,
    fdr: float = 0.05,
    min_ks_d: float = 0.1,
    min_cramers_v: float = 0.1,
    min_missing_rate_h: float = 0.2,
    min_samples: int = 30,
) -> list[FeatureTestResult]:
    """The verdicts of every test from the window's values: per feature in ``schema`` order (kind
    ``numeric``, ``categorical`` or ``label``), the main test then ``missing_rate`` (not for the label).
    Inputs are assumed valid."""
    floors: dict[str, float] = {}
    missing_rate_floors: dict[str, float] = {}
    numeric_current = {spec.name: _numeric_column(spec.name, current) for spec in schema if spec.kind == "numeric"}
    sorted_current = dict(zip(numeric_current, sorted_finite_columns(list(numeric_current.values()))))

    pending: list[PendingTest] = []
    for spec in schema:
        if spec.kind == "numeric":
            reference_sorted, reference_missing = _numeric_reference(spec.name, reference)
            current_sorted = sorted_current[spec.name]
            current_missing = numeric_current[spec.name].size - current_sorted.size
            floor = floors.get(spec.name, min_ks_d)
            pending.append(_ks_pending(spec.name, reference_sorted, current_sorted, floor, min_samples))
            reference_present, current_present = reference_sorted.size, current_sorted.size
        else:
            reference_counts, reference_missing = _categorical_reference(spec.name, reference)
            current_counts, current_missing = count_categories(_column(spec.name, current))
            floor = floors.get(spec.name, min_cramers_v)
            pending.append(_chi2_pending(spec, reference_counts, current_counts, floor, min_samples))
            reference_present, current_present = sum(reference_counts.values()), sum(current_counts.values())
        if spec.kind != "label":
            pending.append(
                _missing_rate_pending(
                    spec,
                    reference_missing,
                    reference_present + reference_missing,
                    current_missing,
                    current_present + current_missing,
                    missing_rate_floors.get(spec.name, min_missing_rate_h),
                    min_samples,
                )
            )
    return decide_all(pending, fdr)



def _column(name: str, columns: Mapping[str, Any]) -> Any:
    return columns[name]


def _numeric_column(name: str, columns: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(columns[name], dtype=float)


def _numeric_reference(name: str, reference: ReferenceData) -> tuple[np.ndarray, int]:
    entry, missing = _reference_entry(name, reference)
    if not hasattr(entry, "sorted_values"):
        raise ValueError(f"reference for feature {name!r} is not numeric (no sorted_values)")
    values = np.asarray(entry.sorted_values, dtype=float)
    if values.ndim != 1 or not np.all(values[1:] >= values[:-1]) or (values.size and np.isnan(values[0])):
        raise ValueError(f"reference for feature {name!r}: sorted_values must be ascending without NaN")
    return values, missing


def _categorical_reference(name: str, reference: ReferenceData) -> tuple[Mapping[str, int], int]:
    entry, missing = _reference_entry(name, reference)
    if not hasattr(entry, "counts"):
        raise ValueError(f"reference for feature {name!r} is not categorical (no counts)")
    if any(count < 0 for count in entry.counts.values()):
        raise ValueError(f"reference for feature {name!r}: a category count is negative")
    return entry.counts, missing


def _reference_entry(name: str, reference: ReferenceData) -> tuple[Any, int]:
    try:
        entry = reference[name]
    except KeyError:
        raise ValueError(f"reference data has no feature {name!r}") from None
    missing = int(entry.missing)
    if missing < 0:
        raise ValueError(f"reference for feature {name!r}: missing count is negative")
    return entry, missing


def _ks_pending(
    name: str, reference_sorted: np.ndarray, current_sorted: np.ndarray, floor: float, min_samples: int
) -> PendingTest:
    n, m = reference_sorted.size, current_sorted.size
    outcome = ks_two_sample(reference_sorted, current_sorted)
    return PendingTest(
        feature=name, test="ks", kind="numeric", statistic=outcome.statistic, p_value=outcome.p_value,
        effect_size=outcome.statistic, effect_floor=floor, n_reference=n, n_current=m,
        detail={"method": outcome.method}, enough_samples=min(n, m) >= min_samples, corrected=min(n, m) > 0,
        min_detectable=partial(min_detectable_ks_statistic, n, m) if min(n, m) > 0 else None,
        effect_upper=ks_upper_bound(outcome.statistic, n, m) if min(n, m) > 0 else None,
    )


def _chi2_pending(
    spec: FeatureSpecLike, reference_counts: Mapping[str, int], current_counts: Mapping[str, int], floor: float,
    min_samples: int,
) -> PendingTest:
    n, m = sum(reference_counts.values()), sum(current_counts.values())
    kind: FeatureKind = "label" if spec.kind == "label" else "categorical"
    unseen = sum(count for category, count in current_counts.items() if reference_counts.get(category, 0) <= 0)
    detail: dict[str, Any] = {"method": "chi2", "unseen_current_count": unseen}
    if n == 0 or m == 0:
        return PendingTest(
            feature=spec.name, test="chi2", kind=kind, statistic=0.0, p_value=1.0, effect_size=0.0,
            effect_floor=floor, n_reference=n, n_current=m, detail=detail, enough_samples=False, corrected=False,
            min_detectable=None, effect_upper=None,
        )
    outcome = chi_square_test(reference_counts, current_counts, spec.categories or ())
    detail |= {
        "df": outcome.df,
        "table_cramers_v": outcome.table_cramers_v,
        "buckets": list(outcome.buckets),
        "reference_counts": list(outcome.reference_counts),
        "current_counts": list(outcome.current_counts),
    }
    return PendingTest(
        feature=spec.name, test="chi2", kind=kind, statistic=outcome.statistic, p_value=outcome.p_value,
        effect_size=outcome.cramers_v, effect_floor=floor, n_reference=n, n_current=m, detail=detail,
        enough_samples=min(n, m) >= min_samples, corrected=outcome.df > 0,
        min_detectable=lambda alpha: min_detectable_cramers_v(n, m, outcome.df, alpha),
        # The bound is on the noncentrality scale; never report it below the effect itself.
        effect_upper=max(outcome.cramers_v, cramers_v_upper_bound(outcome.statistic, outcome.df, n, m)),
    )


def _missing_rate_pending(
    spec: FeatureSpecLike, reference_missing: int, reference_rows: int, current_missing: int, current_rows: int,
    floor: float, min_samples: int,
) -> PendingTest:
    outcome = missing_rate_test(reference_missing, reference_rows, current_missing, current_rows)
    has_rows = reference_rows > 0 and current_rows > 0
    return PendingTest(
        feature=spec.name, test="missing_rate", kind="numeric" if spec.kind == "numeric" else "categorical",
        statistic=outcome.statistic, p_value=outcome.p_value, effect_size=outcome.cohens_h, effect_floor=floor,
        n_reference=reference_rows, n_current=current_rows,
        detail={
            "method": outcome.method,
            "reference_rate": outcome.reference_rate,
            "current_rate": outcome.current_rate,
        },
        enough_samples=min(reference_rows, current_rows) >= min_samples,
        corrected=has_rows and outcome.method != "degenerate",
        min_detectable=(
            partial(min_detectable_rate_change, reference_rows, current_rows, outcome.reference_rate)
            if has_rows
            else None
        ),
        effect_upper=cohens_h_upper_bound(outcome.cohens_h, reference_rows, current_rows) if has_rows else None,
    )


