"""The CBPE calibrator: isotonic maps from the model's probabilities to calibrated ones.

Fitted at training on the held-out split (:func:`fit_calibrator`) and stored in the manifest
as JSON under ``extra["calibration"]`` (:meth:`Calibrator.to_json`); the weekly monitoring run
turns it back into a :class:`Calibrator` (:meth:`Calibrator.from_json`) to estimate
performance without labels (:mod:`sml.monitoring.model_quality.metrics`). Nothing is pickled: an isotonic
regression is the piecewise-linear function through its thresholds, clipped at the ends, which
is how :meth:`sklearn.isotonic.IsotonicRegression.predict` evaluates it (``out_of_bounds="clip"``),
so :func:`numpy.interp` on the stored thresholds reproduces it and the monitoring run needs no
unpickling (hence no sha256 check) to use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibrator:
    """Isotonic maps from a class's raw probability to its calibrated probability.

    Stored in the manifest as JSON (``extra["calibration"]``, :meth:`to_json`), not pickled: an
    isotonic regression is the piecewise-linear function through its thresholds, clipped at the
    ends, which is exactly how :meth:`sklearn.isotonic.IsotonicRegression.predict` evaluates it
    (``out_of_bounds="clip"``), so :func:`numpy.interp` on the stored thresholds reproduces it.

    :param classes: the model's classes, in probability-column order.
    :param maps: class -> (x thresholds, y thresholds). For a binary model only the positive
        class has a map and the other class gets one minus it; otherwise every class has one and
        the calibrated row is renormalised to sum to 1.
    :param fitted_on: what data the maps were fitted on, and ``n`` its size.
    """

    classes: tuple[str, ...]
    maps: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]
    fitted_on: str
    n: int

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated ``(n, K)`` probabilities for raw ``(n, K)`` ones (NaN rows stay NaN)."""
        calibrated = np.empty_like(probabilities, dtype=float)
        if len(self.classes) == 2 and len(self.maps) == 1:
            (label, (xs, ys)), = self.maps.items()
            positive = self.classes.index(label)
            calibrated[:, positive] = np.interp(probabilities[:, positive], xs, ys)
            calibrated[:, 1 - positive] = 1.0 - calibrated[:, positive]
            calibrated[np.isnan(probabilities[:, positive])] = np.nan
            return calibrated
        for index, label in enumerate(self.classes):
            xs, ys = self.maps[label]
            calibrated[:, index] = np.interp(probabilities[:, index], xs, ys)
        totals = calibrated.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = np.where(totals > 0, calibrated / totals, 1.0 / len(self.classes))
        normalised[np.isnan(probabilities).any(axis=1)] = np.nan
        return normalised

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``extra["calibration"]`` object."""
        return {
            "method": "isotonic",
            "fitted_on": self.fitted_on,
            "n": self.n,
            "classes": list(self.classes),
            "maps": {label: {"x": list(xs), "y": list(ys)} for label, (xs, ys) in self.maps.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibrator:
        """Parse :meth:`to_json`'s object.

        :raises ValueError: not that shape, a map that is not increasing in x, or y outside [0, 1].
        """
        if data.get("method") != "isotonic":
            raise ValueError(f"calibration method {data.get('method')!r} is not 'isotonic'")
        classes = tuple(str(label) for label in data["classes"])
        maps = {}
        for label, points in data["maps"].items():
            xs, ys = tuple(float(x) for x in points["x"]), tuple(float(y) for y in points["y"])
            if label not in classes or not xs or len(xs) != len(ys) or list(xs) != sorted(xs) or not all(0 <= y <= 1 for y in ys):
                raise ValueError(f"calibration map of {label!r} is not an increasing map into [0, 1] of a model class")
            maps[label] = (xs, ys)
        return cls(classes=classes, maps=maps, fitted_on=str(data.get("fitted_on", "")), n=int(data.get("n", 0)))


def fit_calibrator(true_index: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], positive_class: str | None, *, fitted_on: str) -> Calibrator:
    """Fit :class:`sklearn.isotonic.IsotonicRegression` (clipped to [0, 1]) of each class's indicator on its probability.

    :param true_index, probabilities: held-out labels (class indices) and the model's ``(n, K)`` probabilities.
    :param positive_class: for a binary model, the one class that gets a map.
    """
    from sklearn.isotonic import IsotonicRegression

    classes = tuple(classes)
    targets = [positive_class] if len(classes) == 2 and positive_class in classes else list(classes)
    maps = {}
    for label in targets:
        index = classes.index(label)
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probabilities[:, index], (true_index == index).astype(float))
        maps[label] = (tuple(float(x) for x in model.X_thresholds_), tuple(float(y) for y in model.y_thresholds_))
    return Calibrator(classes=classes, maps=maps, fitted_on=fitted_on, n=int(true_index.size))
