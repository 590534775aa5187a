"""Realistic request traffic for the demo and the benchmarks: rows drawn from the data set, optionally shifted.

Baseline rows are drawn with replacement from every row of the breast cancer data set (both
splits), so they follow the training distribution. A :class:`TrafficShift` changes named
features the way production data drifts: a numeric feature's scale, a categorical feature's mix,
and a feature that starts arriving empty. Every other feature is left as drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

Row = dict[str, Any]


@dataclass(frozen=True)
class TrafficShift:
    """How shifted traffic differs from the training data.

    :param scale: numeric feature -> factor its values are multiplied by (a mean and spread shift).
    :param category_mix: categorical feature -> (category, share of rows forced to it).
    :param null_rate: feature -> share of rows where it arrives as ``null``.
    :param out_of_range: numeric feature -> (share of rows, factor): a burst of values far outside
        the training range (after ``scale``), what data quality must flag.
    """

    scale: Mapping[str, float] = field(default_factory=dict)
    category_mix: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    null_rate: Mapping[str, float] = field(default_factory=dict)
    out_of_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def features(self) -> set[str]:
        """The features this shift changes (what a correct drift job flags, and nothing else)."""
        return set(self.scale) | set(self.category_mix) | set(self.null_rate)


DEMO_SHIFT = TrafficShift(
    scale={"mean_texture": 1.25},
    category_mix={"concavity_grade": ("high", 0.6)},
    null_rate={"mean_symmetry": 0.3},
    out_of_range={"mean_texture": (0.05, 2.0)},
)


@cache
def dataset_rows() -> tuple[Row, ...]:
    """Every row of the data set as a request-shaped feature dict (train and test splits)."""
    from sml.lifecycle.training import load_dataset_split

    split = load_dataset_split()
    return tuple(split.train_rows + split.test_rows)


@cache
def dataset_labels() -> tuple[str, ...]:
    """The true label of each row of :func:`dataset_rows`, in the same order."""
    from sml.lifecycle.training import load_dataset_split

    split = load_dataset_split()
    return tuple(split.train_labels + split.test_labels)


def draw_rows(count: int, rng: np.random.Generator, shift: TrafficShift | None = None) -> list[Row]:
    """``count`` rows drawn with replacement from the data set, with ``shift`` applied when given."""
    return draw_labelled_rows(count, rng, shift)[0]


def draw_labelled_rows(count: int, rng: np.random.Generator, shift: TrafficShift | None = None) -> tuple[list[Row], list[str]]:
    """:func:`draw_rows` with each row's true label (a shift moves the inputs, never the label)."""
    pool, labels = dataset_rows(), dataset_labels()
    chosen = rng.integers(0, len(pool), size=count)
    rows = [dict(pool[index]) for index in chosen]
    truth = [labels[index] for index in chosen]
    if shift is None:
        return rows, truth
    for row in rows:
        for name, factor in shift.scale.items():
            if row[name] is not None:
                row[name] = round(float(row[name]) * factor, 6)
        for name, (category, share) in shift.category_mix.items():
            if rng.random() < share:
                row[name] = category
        for name, (share, factor) in shift.out_of_range.items():
            if row[name] is not None and rng.random() < share:
                row[name] = round(float(row[name]) * factor, 6)
        for name, rate in shift.null_rate.items():
            if rng.random() < rate:
                row[name] = None
    return rows, truth
