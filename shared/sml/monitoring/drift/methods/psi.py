"""Population Stability Index (PSI) for numeric and categorical columns.

``PSI = Σ (c_i − r_i) · ln(c_i / r_i)`` over shared bins (:func:`sml.monitoring.drift.resampling.binned_counts`:
reference deciles for a numeric column, reference categories plus one bin of unseen values for a
categorical one), shares under ``1e-4`` raised to it as Evidently does. Rule of thumb (Siddiqi 2006,
"Credit Risk Scorecards"): under 0.1 stable, 0.1–0.25 moderate, above 0.25 a significant shift;
the default floor is 0.1, Evidently's default threshold.

p-value: PSI is the symmetric Kullback–Leibler (Jeffreys) divergence, so with no shift
``PSI / (1/n + 1/m)`` follows χ²(bins − 1) asymptotically (Yurdakul 2018, "Statistical Properties
of Population Stability Index"). Upper bound: the basic bootstrap of the bin counts
(:func:`~sml.monitoring.drift.resampling.bootstrap_upper_bound`, 1,000 resamples, milliseconds).
Power check and smallest detectable PSI: the noncentral χ² of the same approximation
(:class:`~sml.monitoring.drift.resampling.BinnedDistance`).
"""

from __future__ import annotations

import math

import numpy as np

from sml.monitoring.drift.methods import register_method
from sml.monitoring.drift.resampling import BinnedDistance, reciprocal_sum

SMALLEST_SHARE = 1e-4


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """PSI of count vectors (the last axis is the bins; any leading axes are resamples)."""
    reference_share = np.maximum(reference / reference.sum(axis=-1, keepdims=True), SMALLEST_SHARE)
    current_share = np.maximum(current / current.sum(axis=-1, keepdims=True), SMALLEST_SHARE)
    return np.sum((current_share - reference_share) * np.log(current_share / reference_share), axis=-1)


@register_method
class PopulationStabilityIndex(BinnedDistance):
    name = "psi"
    effect_name = "PSI"
    floor_key = "psi"
    default_floor = 0.1
    floor_range = (0.0, math.inf)
    title = "PSI test"

    def distance(self, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
        return population_stability_index(reference, current)

    def to_chi2(self, distance: float, n: int, m: int | None) -> float:
        return distance / reciprocal_sum(n, m)

    def from_chi2(self, statistic: float, n: int, m: int | None) -> float:
        return statistic * reciprocal_sum(n, m)
