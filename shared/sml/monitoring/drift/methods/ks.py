"""The two-sample Kolmogorov–Smirnov test for numeric columns (the default).

Statistic and effect: KS D, the largest gap between the two ECDFs, computed exactly from the
window's counts per reference cell (:func:`sml.monitoring.drift.stats.ks_two_sample_cells`);
p-value exact up to 10,000 values a side, else asymptotic. Upper bound
:func:`~sml.monitoring.drift.stats.ks_upper_bound`; power check
:func:`~sml.monitoring.drift.power.certifiable_ks`. Floors may be written as ``"<x>sd"``, a
normal location shift of x standard deviations, and warnings print them that way.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sml.monitoring.drift.methods import DriftMethod, MethodOutcome, register_method
from sml.monitoring.drift.sketch import SketchedNumericGrid, ks_against_sketch
from sml.monitoring.drift.stats import (
    ks_p_value,
    ks_two_sample_cells,
    ks_upper_bound,
    location_shift_for_ks_d,
    min_detectable_ks_statistic,
    parse_effect_floor,
)


@register_method
class KolmogorovSmirnov(DriftMethod):
    name = "ks"
    kinds = ("numeric",)
    effect_name = "KS D"
    floor_key = "numeric"
    default_floor = 0.1
    deployment_setting = "min_ks_d"
    title = "KS test"
    shown_decimals = 2
    sketched_reference = True

    def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
        if isinstance(reference, SketchedNumericGrid):
            return _against_sketch(reference, current)
        n, m = reference.n_present, current.n_present
        outcome = ks_two_sample_cells(reference.reference_cells(), current.cells, reference.representatives())
        tested = min(n, m) > 0
        return MethodOutcome(
            statistic=outcome.statistic, p_value=outcome.p_value, effect=outcome.statistic, n_reference=n, n_current=m,
            effect_upper=ks_upper_bound(outcome.statistic, n, m) if tested else None,
            min_detectable=partial(min_detectable_ks_statistic, n, m) if tested else None,
            corrected=tested, detail={"method": outcome.method},
        )

    def certifiable(self, column: Any, reference: Any, n_current: int | None, alpha: float) -> float:
        from sml.monitoring.drift.power import certifiable_ks

        return certifiable_ks(reference.n_present, n_current, alpha)

    def parse_floor(self, where: str, value: Any) -> float:
        return parse_effect_floor(where, value)

    def in_units(self, effect: float) -> float:
        return location_shift_for_ks_d(effect)

    @property
    def unit(self) -> str:
        return "sd"

    def shown(self, effect: float, decimals: int = 2) -> str:
        return f"{self.in_units(effect):.{decimals}f} sd"


def _against_sketch(reference: SketchedNumericGrid, current: Any) -> MethodOutcome:
    """KS against a KLL-sketched reference (the ``previous`` window): D̂ reported, the p-value
    bounded at D̂ − ε, DRIFT needing D̂ − ε over the floor and NO_DRIFT the upper bound + ε + r
    under it (:mod:`sml.monitoring.drift.sketch`)."""
    n, m = reference.n_present, current.n_present
    if min(n, m) == 0:
        return MethodOutcome(
            statistic=0.0, p_value=1.0, effect=0.0, n_reference=n, n_current=m, effect_upper=None, min_detectable=None,
            corrected=False, detail={"method": "empty"},
        )
    sketched = ks_against_sketch(reference, current.cells)
    bound = ks_p_value(sketched.lower, n, m)
    return MethodOutcome(
        statistic=sketched.statistic, p_value=bound, effect=sketched.statistic, n_reference=n, n_current=m,
        effect_upper=min(1.0, ks_upper_bound(sketched.statistic, n, m) + (sketched.upper - sketched.statistic)),
        min_detectable=partial(min_detectable_ks_statistic, n, m), corrected=True,
        detail={"method": "kll_sketch", "k": reference.k, "rank_error": reference.rank_error, "cell_mass": reference.cell_mass,
                "p_value": "bound: the p-value of D - rank_error"},
        effect_margin=sketched.statistic - sketched.lower,
    )
