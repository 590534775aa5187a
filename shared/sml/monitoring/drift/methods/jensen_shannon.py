"""Jensen–Shannon distance for numeric and categorical columns.

The square root of the Jensen–Shannon divergence (base 2, so it lies in [0, 1]) between the
reference's and the window's shares over shared bins (:func:`sml.monitoring.drift.resampling.binned_counts`),
as ``scipy.spatial.distance.jensenshannon(r, c, base=2)`` computes it and Evidently tests it
(default threshold 0.1, the default floor here).

p-value: near no shift the divergence (natural log) is ``Σ (c − r)² / (8·(c + r)/2)``, so
``8 · ln 2 · n·m/(n+m) · d²`` is Pearson's χ² of the same table and follows χ²(bins − 1). Upper
bound: the basic bootstrap of the bin counts (:func:`~sml.monitoring.drift.resampling.bootstrap_upper_bound`,
1,000 resamples). Power check and smallest detectable distance through the noncentral χ² of that
approximation (:class:`~sml.monitoring.drift.resampling.BinnedDistance`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from sml.monitoring.drift.methods import register_method
from sml.monitoring.drift.resampling import BinnedDistance, reciprocal_sum

# Pearson's χ² of the 2×k table ≈ CHI2_PER_DIVERGENCE · n·m/(n+m) · d² for a base-2 distance d.
CHI2_PER_DIVERGENCE = 8 * math.log(2)


def jensen_shannon_distance(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Base-2 Jensen–Shannon distance of count vectors (the last axis is the bins)."""
    reference_share = reference / reference.sum(axis=-1, keepdims=True)
    current_share = current / current.sum(axis=-1, keepdims=True)
    middle = (reference_share + current_share) / 2
    divergence = (special.rel_entr(reference_share, middle).sum(axis=-1) + special.rel_entr(current_share, middle).sum(axis=-1)) / 2
    return np.sqrt(np.maximum(divergence, 0.0) / math.log(2))


@register_method
class JensenShannon(BinnedDistance):
    name = "jensen_shannon"
    effect_name = "Jensen–Shannon distance"
    floor_key = "jensen_shannon"
    default_floor = 0.1
    title = "Jensen–Shannon test"

    def distance(self, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
        return jensen_shannon_distance(reference, current)

    def to_chi2(self, distance: float, n: int, m: int | None) -> float:
        return CHI2_PER_DIVERGENCE * distance**2 / reciprocal_sum(n, m)

    def from_chi2(self, statistic: float, n: int, m: int | None) -> float:
        return math.sqrt(statistic * reciprocal_sum(n, m) / CHI2_PER_DIVERGENCE)
