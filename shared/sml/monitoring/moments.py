"""Mergeable central moments of several variables, numerically stable whatever their offset.

Power sums such as Σy and Σy² merge by adding, but the variance they give, Σy²/n − ȳ², loses
every digit the values share: labels 10⁹ from the point they are summed around with a spread of 1
leave nothing of the spread. :class:`MomentSums` keeps instead, for ``d`` variables, the count, a
reference point near their mean and the sums of products of powers of the deviations from it,
``S_p = Σ Π_j (x_j − r_j)^{p_j}`` for the multi-indices ``p`` asked for (with every lower one).
Two sums merge by moving both to a common reference ``r'`` (``(x − r − δ)^p`` expanded by the
binomial theorem, δ = r' − r) and adding: for ``p = 2`` that is Chan, Golub & LeVeque's pairwise
update, ``M₂ = M₂ᵃ + M₂ᵇ + δ²·nₐn_b/n`` (Chan, Golub & LeVeque 1979, "Updating formulae and a
pairwise algorithm for computing sample variances", Stanford CS report STAN-CS-79-773), and for
higher and mixed orders its generalisation (Pébay 2008, "Formulas for robust, one-pass parallel
computation of covariances and arbitrary-order statistical moments", Sandia SAND2008-6212).

The first-order sums are kept too: a reference rounded to a float near 10⁹ is off the mean by up
to half a unit in the last place, and the central sums are taken as ``S₂ − S₁²/n`` (the
corrected two-pass algorithm of Chan, Golub & LeVeque 1983, "Algorithms for computing the sample
variance: analysis and recommendations", Am. Stat. 37:242-247), so that rounding is not lost
either. A slice's reference is its value nearest its mean, so a constant slice has deviations of
exactly 0. Merged slice by slice, the central moments agree with numpy's on all the values at once
to ~1e-13 relative (tested for offsets up to 10⁹).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

Exponents = tuple[tuple[int, ...], ...]


@cache
def _shift_terms(exponents: Exponents) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each pair (p, k ≤ p) of ``exponents``: p's index, k's index, Π C(p_j, k_j) and p − k."""
    index = {p: i for i, p in enumerate(exponents)}
    targets, sources, coefficients, powers = [], [], [], []
    for p in exponents:
        for k in exponents:
            if all(kj <= pj for kj, pj in zip(k, p)):
                targets.append(index[p])
                sources.append(index[k])
                coefficients.append(math.prod(math.comb(pj, kj) for pj, kj in zip(p, k)))
                powers.append([pj - kj for pj, kj in zip(p, k)])
    return np.array(targets), np.array(sources), np.array(coefficients, dtype=float), np.array(powers, dtype=float).reshape(len(targets), len(exponents[0]))


def _check_exponents(exponents: Exponents) -> Exponents:
    exponents = tuple(tuple(int(e) for e in p) for p in exponents)
    d = len(exponents[0]) if exponents else 0
    known = set(exponents)
    if not d or any(len(p) != d or min(p) < 0 for p in exponents) or len(known) != len(exponents):
        raise ValueError("moment exponents must be distinct tuples of one length of non-negative integers")
    for p in exponents:
        for j, pj in enumerate(p):
            if pj and p[:j] + (pj - 1,) + p[j + 1 :] not in known:
                raise ValueError(f"moment exponents must hold every lower one: {p} without {p[:j] + (pj - 1,) + p[j + 1 :]}")
    if (0,) * d not in known:
        raise ValueError("moment exponents must hold the count's, all zeros")
    return exponents


@dataclass
class MomentSums:
    """Count, reference point and deviation power sums of ``d`` variables (see the module's docstring).

    :param exponents: the multi-indices ``p`` (tuples of ``d`` non-negative integers), holding
        every lower one (so the count's ``(0, …, 0)`` and the first-order ones).
    :param reference: ``(d,)``, the point the sums are taken around.
    :param sums: ``(len(exponents),)``, ``S_p`` in the order of ``exponents``; ``S_0`` is the count.
    """

    exponents: Exponents
    reference: np.ndarray
    sums: np.ndarray

    @classmethod
    def empty(cls, exponents: Exponents) -> MomentSums:
        exponents = _check_exponents(exponents)
        return cls(exponents, np.zeros(len(exponents[0])), np.zeros(len(exponents)))

    @classmethod
    def of(cls, exponents: Exponents, values: np.ndarray) -> MomentSums:
        """The sums of ``values``, ``(n, d)`` finite floats, around each column's value nearest its mean."""
        exponents = _check_exponents(exponents)
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(exponents[0]))
        if not values.shape[0]:
            return cls.empty(exponents)
        columns = np.arange(values.shape[1])
        reference = values[np.abs(values - values.mean(axis=0)).argmin(axis=0), columns]
        deviations = values - reference
        powers: list[list[np.ndarray]] = []
        for j in range(values.shape[1]):
            column = [np.ones(0), deviations[:, j]]
            for _ in range(2, max(p[j] for p in exponents) + 1):
                column.append(column[-1] * deviations[:, j])
            powers.append(column)
        sums = np.empty(len(exponents))
        for i, p in enumerate(exponents):
            factors = [powers[j][pj] for j, pj in enumerate(p) if pj]
            sums[i] = values.shape[0] if not factors else math.prod(factors[1:], start=factors[0]).sum()
        return cls(exponents, reference, sums)

    @property
    def count(self) -> int:
        return int(self.sums[self.exponents.index((0,) * len(self.reference))])

    @property
    def mean(self) -> np.ndarray:
        """``(d,)``: the variables' means (NaN when empty)."""
        n = self.count
        if not n:
            return np.full(self.reference.shape, math.nan)
        return self.reference + self._first_order() / n

    def _first_order(self) -> np.ndarray:
        d = len(self.reference)
        return np.array([self.sums[self.exponents.index(tuple(int(i == j) for i in range(d)))] for j in range(d)])

    def shifted(self, reference: np.ndarray) -> np.ndarray:
        """The sums around ``reference`` instead, ``(len(exponents),)``."""
        return self._shifted_by(np.asarray(reference, dtype=np.float64) - self.reference)

    def _shifted_by(self, delta: np.ndarray) -> np.ndarray:
        targets, sources, coefficients, powers = _shift_terms(self.exponents)
        terms = coefficients * np.prod((-delta) ** powers, axis=1) * self.sums[sources]
        return np.bincount(targets, weights=terms, minlength=len(self.exponents))

    def central(self) -> dict[tuple[int, ...], float]:
        """The central sums ``Σ Π_j (x_j − x̄_j)^{p_j}`` by exponent (``n·`` the central moment; all 0 when empty)."""
        n = self.count
        if not n:
            return {p: 0.0 for p in self.exponents}
        # The mean's distance from the reference, S₁/n, is small and exact to rounding: moving by it
        # gives S₂ − S₁²/n, the corrected two-pass sum, where moving to the rounded mean would not.
        return dict(zip(self.exponents, self._shifted_by(self._first_order() / n).tolist()))

    def merge(self, other: MomentSums) -> MomentSums:
        """The sums of both sets of values (Chan, Golub & LeVeque's pairwise update, all orders).

        :raises ValueError: the two hold different exponents.
        """
        if self.exponents != other.exponents:
            raise ValueError("moment sums with different exponents cannot merge")
        n_self, n_other = self.count, other.count
        if not n_other:
            return MomentSums(self.exponents, self.reference.copy(), self.sums.copy())
        if not n_self:
            return MomentSums(other.exponents, other.reference.copy(), other.sums.copy())
        mean_self, mean_other = self.mean, other.mean
        reference = mean_self + (mean_other - mean_self) * (n_other / (n_self + n_other))
        return MomentSums(self.exponents, reference, self.shifted(reference) + other.shifted(reference))

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference.tolist(), "sums": self.sums.tolist()}

    @classmethod
    def from_json(cls, exponents: Exponents, data: Mapping[str, Any]) -> MomentSums:
        """:raises ValueError: a reference or sums of the wrong length."""
        exponents = _check_exponents(exponents)
        return cls.from_sums(exponents, data["reference"], data["sums"])

    @classmethod
    def from_sums(cls, exponents: Exponents, reference: Sequence[float], sums: Sequence[float]) -> MomentSums:
        """Sums taken around ``reference`` elsewhere, e.g. plain power sums (``reference`` 0).

        :raises ValueError: a reference or sums of the wrong length.
        """
        exponents = _check_exponents(exponents)
        reference_array, sums_array = np.asarray(reference, dtype=np.float64), np.asarray(sums, dtype=np.float64)
        if reference_array.shape != (len(exponents[0]),) or sums_array.shape != (len(exponents),):
            raise ValueError(f"moment sums need a reference of {len(exponents[0])} and {len(exponents)} sums, got {reference_array.shape} and {sums_array.shape}")
        return cls(exponents, reference_array, sums_array)
