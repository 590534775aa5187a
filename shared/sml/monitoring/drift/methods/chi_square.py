"""The chi-square test of homogeneity for categorical columns and a classifier's predicted label (the default).

Statistic: Pearson's chi-square on the pooled 2×k table (rare reference categories pooled into
``__other__``, values the reference never saw into ``__unseen__``,
:func:`sml.monitoring.drift.stats.pooled_contingency_table`); effect: Cramér's V of the
row-normalised table. Upper bound :func:`~sml.monitoring.drift.stats.cramers_v_upper_bound`
(noncentral chi-square inversion); power check
:func:`~sml.monitoring.drift.power.certifiable_cramers_v`.
"""

from __future__ import annotations

from typing import Any

from sml.monitoring.drift.methods import DriftMethod, MethodOutcome, register_method
from sml.monitoring.drift.stats import chi_square_test, cramers_v_upper_bound, min_detectable_cramers_v, parse_effect_floor


@register_method
class ChiSquare(DriftMethod):
    name = "chi2"
    kinds = ("categorical",)
    effect_name = "Cramér's V"
    floor_key = "categorical"
    default_floor = 0.1
    deployment_setting = "min_cramers_v"
    title = "chi-square test"

    def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
        known = {category: count for category, count in current.counts.items() if count}
        n, m = sum(reference.counts.values()), current.n_present
        unseen = current.unseen + sum(count for category, count in known.items() if reference.counts.get(category, 0) <= 0)
        detail: dict[str, Any] = {"method": "chi2", "unseen_current_count": unseen}
        if n == 0 or m == 0:
            return MethodOutcome(0.0, 1.0, 0.0, n, m, effect_upper=None, min_detectable=None, corrected=False, detail=detail)
        outcome = chi_square_test(reference.counts, known, column.categories or (), unseen=current.unseen)
        detail |= {
            "df": outcome.df,
            "table_cramers_v": outcome.table_cramers_v,
            "buckets": list(outcome.buckets),
            "reference_counts": list(outcome.reference_counts),
            "current_counts": list(outcome.current_counts),
        }
        return MethodOutcome(
            statistic=outcome.statistic, p_value=outcome.p_value, effect=outcome.cramers_v, n_reference=n, n_current=m,
            # The bound is on the noncentrality scale; never report it below the effect itself.
            effect_upper=max(outcome.cramers_v, cramers_v_upper_bound(outcome.statistic, outcome.df, n, m)),
            min_detectable=lambda alpha: min_detectable_cramers_v(n, m, outcome.df, alpha),
            corrected=outcome.df > 0, detail=detail,
        )

    def parse_floor(self, feature: str, value: Any) -> float:
        if isinstance(value, str) and value.strip().lower().endswith("sd"):
            raise ValueError(f"floor of feature {feature!r}: give a Cramér's V (a number in (0, 1)), not {value!r}")
        return parse_effect_floor(feature, value)

    def certifiable(self, column: Any, reference: Any, n_current: int | None, alpha: float) -> float:
        from sml.monitoring.drift.power import certifiable_cramers_v, degrees_of_freedom

        counts = dict(reference.counts)
        df = degrees_of_freedom(counts, n_current, tuple(column.categories or ()))
        return certifiable_cramers_v(df, sum(counts.values()), n_current, alpha)
