"""The missing-value rate of an input feature, tested beside its main method.

Statistic: Pearson's chi-square on the 2×2 table missing/present × reference/current, with
Fisher's exact p-value when an expected count is below 5
(:func:`sml.monitoring.drift.stats.missing_rate_test`); effect: Cohen's h between the two rates
(arcsine scale, Cohen 1988 §6.2). Upper bound
:func:`~sml.monitoring.drift.stats.cohens_h_upper_bound`; power check
:func:`~sml.monitoring.drift.power.certifiable_cohens_h`. Counts rows, missing or not.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from sml.monitoring.drift.methods import DriftMethod, MethodOutcome, register_method
from sml.monitoring.drift.stats import cohens_h_upper_bound, min_detectable_rate_change, missing_rate_test


@register_method
class MissingRate(DriftMethod):
    name = "missing_rate"
    kinds = ("numeric", "categorical")
    effect_name = "Cohen's h"
    floor_key = "missing_rate"
    default_floor = 0.2
    floor_range = (0.0, math.pi)
    deployment_setting = "min_missing_rate_h"
    missing_rate = True
    title = "missing-rate test"

    def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
        reference_missing, reference_rows = int(reference.missing), self.reference_size(reference)
        outcome = missing_rate_test(reference_missing, reference_rows, current.missing, current.n_rows)
        has_rows = reference_rows > 0 and current.n_rows > 0
        return MethodOutcome(
            statistic=outcome.statistic, p_value=outcome.p_value, effect=outcome.cohens_h, n_reference=reference_rows,
            n_current=current.n_rows,
            effect_upper=cohens_h_upper_bound(outcome.cohens_h, reference_rows, current.n_rows) if has_rows else None,
            min_detectable=partial(min_detectable_rate_change, reference_rows, current.n_rows, outcome.reference_rate) if has_rows else None,
            corrected=has_rows and outcome.method != "degenerate",
            detail={"method": outcome.method, "reference_rate": outcome.reference_rate, "current_rate": outcome.current_rate},
        )

    def reference_size(self, reference: Any) -> int:
        present = reference.n_present if hasattr(reference, "n_present") else sum(reference.counts.values())
        return present + int(reference.missing)

    def present_share(self, reference: Any) -> float:
        return 1.0

    def certifiable(self, column: Any, reference: Any, n_current: int | None, alpha: float) -> float:
        from sml.monitoring.drift.power import certifiable_cohens_h

        rows = self.reference_size(reference)
        return certifiable_cohens_h(int(reference.missing) / rows if rows else 0.0, rows, n_current, alpha)
