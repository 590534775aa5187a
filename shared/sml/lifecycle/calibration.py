"""Label-free performance estimators, fitted at registration on held-out data, stored as plain JSON.

The weekly run estimates a model's performance on predictions that have no label yet with the
estimator in the manifest's ``extra["calibration"]`` (:data:`LABEL_FREE_KEY`), fitted by
:func:`fit_label_free_estimator` on the held-out split:

- classifiers (binary, multiclass): CBPE's calibrator (:class:`Calibrator`), isotonic maps from
  each class's probability to a calibrated one (one-vs-rest for multiclass);
- regression: Direct Loss Estimation (:class:`DirectLossEstimator`), as NannyML describes it
  ("Direct Loss Estimation", NannyML docs, how it works): a model of the absolute error (for MAE)
  and one of the squared error (for RMSE) given the features and the model's prediction, fitted on
  held-out data; the mean of their predictions over a window estimates its MAE and MSE.
  NannyML fits LightGBM; here :class:`sklearn.ensemble.GradientBoostingRegressor` (shallow trees,
  shrinkage, fixed seed), whose trees are plain arrays.

Nothing is pickled: an isotonic regression is the piecewise-linear function through its
thresholds, clipped at the ends, which is how :meth:`sklearn.isotonic.IsotonicRegression.predict`
evaluates it (``out_of_bounds="clip"``), so :func:`numpy.interp` on the stored thresholds
reproduces it; a gradient-boosted model is its initial constant plus the learning rate times the
leaf values its trees reach, and the stored arrays (feature, threshold, children, value) are
evaluated with numpy to the leaves scikit-learn reaches (inputs as float32, ``x <= threshold``
goes left). The monitoring run therefore needs no unpickling (hence no sha256 check) to use either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sml.lifecycle.manifest import FeatureSpec, Task

LABEL_FREE_KEY = "calibration"


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


# --------------------------------------------------------------------------------------------
# Direct Loss Estimation (regression)

DLE_TREES = 100
DLE_DEPTH = 3
DLE_LEARNING_RATE = 0.05
DLE_SEED = 20_161
DLE_MAX_ROWS = 20_000
# Each level of a loss tree compares every row against every node of the level (2**level of
# them), so a tree's cost doubles with each level; ours are DLE_DEPTH deep.
MAX_LOSS_TREE_DEPTH = 10
PREDICTION_INPUT = "__prediction__"


@dataclass(frozen=True)
class LossInput:
    """One input column of a loss model: a numeric feature (NaN filled with ``fill``), a
    categorical one (the index of its value in ``categories``; -1 for any other or missing), or
    the model's prediction (:data:`PREDICTION_INPUT`)."""

    name: str
    kind: str
    fill: float = 0.0
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossModel:
    """A fitted :class:`sklearn.ensemble.GradientBoostingRegressor` as arrays: ``init`` plus
    ``learning_rate`` times the leaf value each tree reaches.

    :param trees: per tree ``(feature, threshold, left, right, value)``, node arrays as in
        :attr:`sklearn.tree.DecisionTreeRegressor.tree_` (a leaf has ``left == -1``).
    """

    init: float
    learning_rate: float
    trees: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The model's prediction for each row of the ``(n, inputs)`` matrix (as scikit-learn's, inputs as float32).

        Level by level for all rows at once (:func:`_complete_tree`): at each level every input
        column a node of the level splits on is compared whole with that node's threshold, and
        each row picks the comparison of the node it is at. A column compared whole costs far
        less than gathering each row's own feature and threshold (3.5× faster for 100 trees of
        depth 3 over 20,000 rows).
        """
        inputs = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32).astype(np.float64).T)
        rows = np.arange(inputs.shape[1])
        total = np.full(inputs.shape[1], self.init)
        for features, thresholds, values in self._complete_trees:
            position = np.zeros(inputs.shape[1], dtype=np.intp)
            for level in range(values.size.bit_length() - 1):
                nodes = slice(2**level - 1, 2 ** (level + 1) - 1)
                goes_left = inputs[features[nodes]] <= thresholds[nodes, None]
                position = 2 * position + 1 - goes_left[position, rows]
            total += self.learning_rate * values[position]
        return total

    @cached_property
    def _complete_trees(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
        return tuple(_complete_tree(*tree) for tree in self.trees)

    def to_json(self) -> dict[str, Any]:
        return {
            "init": self.init,
            "learning_rate": self.learning_rate,
            "trees": [
                {"feature": f.tolist(), "threshold": t.tolist(), "left": lo.tolist(), "right": hi.tolist(), "value": v.tolist()}
                for f, t, lo, hi, v in self.trees
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], n_inputs: int) -> LossModel:
        """Parse :meth:`to_json`'s object; :raises ValueError: arrays of unequal length, or children/features out of range."""
        trees = []
        for tree in data["trees"]:
            feature = np.asarray(tree["feature"], dtype=np.int64)
            threshold = np.asarray(tree["threshold"], dtype=np.float64)
            left, right = np.asarray(tree["left"], dtype=np.int64), np.asarray(tree["right"], dtype=np.int64)
            value = np.asarray(tree["value"], dtype=np.float64)
            size = feature.size
            if not size or any(array.shape != (size,) for array in (threshold, left, right, value)):
                raise ValueError("a loss model tree's arrays differ in length")
            inner = left >= 0
            nodes = np.arange(size)
            # Children after their parent: the walk always ends (scikit-learn numbers nodes depth first).
            if (inner != (right >= 0)).any() or (left[inner] <= nodes[inner]).any() or (right[inner] <= nodes[inner]).any():
                raise ValueError("a loss model tree's children do not follow their parents")
            if (left >= size).any() or (right >= size).any() or (inner & ((feature < 0) | (feature >= n_inputs))).any():
                raise ValueError("a loss model tree names a node or input that does not exist")
            if not np.isfinite(value).all():
                raise ValueError("a loss model tree has a value that is not finite")
            if _depth(left, right) > MAX_LOSS_TREE_DEPTH:
                raise ValueError(f"a loss model tree is deeper than {MAX_LOSS_TREE_DEPTH} levels")
            trees.append((feature, threshold, left, right, value))
        return cls(init=float(data["init"]), learning_rate=float(data["learning_rate"]), trees=tuple(trees))


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """The number of steps from the root to the deepest leaf (a leaf has ``left == -1``; children follow their parents)."""
    depth = np.zeros(left.size, dtype=np.int64)
    for node in np.flatnonzero(left >= 0).tolist():
        depth[left[node]] = depth[right[node]] = depth[node] + 1
    return int(depth.max())


def _complete_tree(
    feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tree as a complete binary tree of its depth ``d``, breadth first: ``(features, thresholds)``
    of its ``2**d - 1`` splits (node ``k``'s children are ``2k + 1`` and ``2k + 2``) and the values
    of its ``2**d`` leaves, in order.

    A leaf above the last level becomes a split on input 0 at +inf whose children are copies of
    itself: every row reaches its value, whichever way the split sends it (NaN goes right).
    """
    depth = _depth(left, right)
    features, thresholds = np.zeros(2**depth - 1, dtype=np.intp), np.full(2**depth - 1, np.inf)
    level_nodes = np.zeros(1, dtype=np.int64)
    for level in range(depth):
        leaf = left[level_nodes] < 0
        nodes = slice(2**level - 1, 2 ** (level + 1) - 1)
        features[nodes] = np.where(leaf, 0, feature[level_nodes])
        thresholds[nodes] = np.where(leaf, np.inf, threshold[level_nodes])
        level_nodes = np.column_stack([np.where(leaf, level_nodes, left[level_nodes]), np.where(leaf, level_nodes, right[level_nodes])]).ravel()
    return features, thresholds, value[level_nodes]


@dataclass(frozen=True)
class DirectLossEstimator:
    """DLE of a regression model: expected absolute and squared errors per prediction.

    Direct Loss Estimation as NannyML describes it (NannyML docs, "How it works: Performance
    estimation", Direct Loss Estimation,
    https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html): a second
    ("nanny") model, fitted on held-out data where the labels are known, predicts the loss of the
    monitored model for each observation from its features and prediction; since MAE and MSE are
    means of per-row losses, the mean of the predicted losses over a window estimates the window's
    MAE and MSE without labels. It only sees the loss change where the features or predictions
    move into regions whose held-out loss differed (covariate shift); a change in how labels
    follow the features (concept drift) is invisible to it, as NannyML notes.

    :param inputs: the loss models' input columns, in matrix order.
    :param absolute_error, squared_error: loss models of ``|prediction - label|`` and its square.
    :param fitted_on, n: what data they were fitted on, and its size.
    :param reference: the held-out MAE and RMSE of the model, which the estimates reproduce on held-out-like data.
    """

    inputs: tuple[LossInput, ...]
    absolute_error: LossModel
    squared_error: LossModel
    fitted_on: str
    n: int
    reference: Mapping[str, float]

    def expected_losses(self, columns: Mapping[str, Any], predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per prediction, the expected absolute error and squared error (both clipped at 0).

        :param columns: each feature's values by name (a float array or a list of categories), aligned with ``predictions``.
        """
        matrix = loss_inputs(self.inputs, columns, predictions)
        return np.maximum(self.absolute_error.predict(matrix), 0.0), np.maximum(self.squared_error.predict(matrix), 0.0)

    def estimate(self, columns: Mapping[str, Any], predictions: np.ndarray, *, max_rows: int = DLE_MAX_ROWS, seed: int = DLE_SEED) -> tuple[float, float, int]:
        """The estimated MAE and RMSE of the predictions, and how many rows the estimate used.

        Both are means over rows, so beyond ``max_rows`` predictions a uniform sample of
        ``max_rows`` (fixed seed) stands for the window: the 200 trees cost ~7 µs a row,
        and the sample's standard error (sd of the expected losses / √20,000) is well below the
        loss models' own error. ``(nan, nan, 0)`` without predictions.
        """
        n = predictions.size
        if n == 0:
            return math.nan, math.nan, 0
        chosen = None
        if n > max_rows:
            chosen = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
            predictions = predictions[chosen]
            columns = {name: _take(values, chosen) for name, values in columns.items()}
        absolute, squared = self.expected_losses(columns, predictions)
        return float(absolute.mean()), float(math.sqrt(squared.mean())), int(predictions.size)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``extra["calibration"]`` object of a regression model."""
        return {
            "method": "dle",
            "fitted_on": self.fitted_on,
            "n": self.n,
            "reference": dict(self.reference),
            "inputs": [{"name": spec.name, "kind": spec.kind, "fill": spec.fill, "categories": list(spec.categories)} for spec in self.inputs],
            "absolute_error": self.absolute_error.to_json(),
            "squared_error": self.squared_error.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DirectLossEstimator:
        """Parse :meth:`to_json`'s object; :raises ValueError: not that shape (see :meth:`LossModel.from_json`)."""
        if data.get("method") != "dle":
            raise ValueError(f"label-free estimator method {data.get('method')!r} is not 'dle'")
        inputs = tuple(
            LossInput(str(item["name"]), str(item["kind"]), float(item.get("fill", 0.0)), tuple(str(value) for value in item.get("categories", ())))
            for item in data["inputs"]
        )
        if any(spec.kind not in ("numeric", "categorical", "prediction") for spec in inputs):
            raise ValueError("a loss model input's kind is not numeric, categorical or prediction")
        return cls(
            inputs=inputs,
            absolute_error=LossModel.from_json(data["absolute_error"], len(inputs)),
            squared_error=LossModel.from_json(data["squared_error"], len(inputs)),
            fitted_on=str(data.get("fitted_on", "")),
            n=int(data.get("n", 0)),
            reference={str(key): float(value) for key, value in data.get("reference", {}).items()},
        )


def _take(values: Any, rows: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[rows]
    return [values[row] for row in rows.tolist()]


def loss_inputs(inputs: Sequence[LossInput], columns: Mapping[str, Any], predictions: np.ndarray) -> np.ndarray:
    """The ``(n, inputs)`` matrix of a loss model from feature columns (name -> values) and the predictions."""
    matrix = np.empty((predictions.size, len(inputs)))
    for index, spec in enumerate(inputs):
        if spec.kind == "prediction":
            matrix[:, index] = predictions
        elif spec.kind == "numeric":
            column = np.asarray(columns[spec.name], dtype=float)
            matrix[:, index] = np.where(np.isnan(column), spec.fill, column)
        else:
            position = {category: code for code, category in enumerate(spec.categories)}
            matrix[:, index] = [-1 if value is None else position.get(str(value), -1) for value in columns[spec.name]]
    return matrix


def _fit_loss_model(matrix: np.ndarray, target: np.ndarray) -> LossModel:
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(
        n_estimators=DLE_TREES,
        max_depth=DLE_DEPTH,
        learning_rate=DLE_LEARNING_RATE,
        subsample=0.8,
        min_samples_leaf=max(5, target.size // 50),
        random_state=DLE_SEED,
    )
    return loss_model_from_sklearn(model.fit(matrix, target))


def loss_model_from_sklearn(model: Any) -> LossModel:
    """The arrays of a fitted :class:`sklearn.ensemble.GradientBoostingRegressor` with the default
    (squared error) loss and a constant initial estimator (its default)."""
    trees = tuple(
        (
            tree.tree_.feature.astype(np.int64),
            tree.tree_.threshold.astype(np.float64),
            tree.tree_.children_left.astype(np.int64),
            tree.tree_.children_right.astype(np.int64),
            tree.tree_.value[:, 0, 0].astype(np.float64),
        )
        for tree in model.estimators_[:, 0]
    )
    return LossModel(init=float(np.ravel(model.init_.constant_)[0]), learning_rate=float(model.learning_rate), trees=trees)


def fit_direct_loss_estimator(
    features: Sequence[FeatureSpec], columns: Mapping[str, Sequence[Any]], predictions: np.ndarray, truth: np.ndarray, *, fitted_on: str
) -> DirectLossEstimator:
    """Fit DLE's two loss models on held-out data (see the module's docstring).

    :param columns: each feature's held-out values by name (numbers or NaN/None; categories as text).
    :param predictions, truth: the model's predictions and the labels, float arrays of the same length.
    """
    inputs = []
    for spec in features:
        if spec.kind == "numeric":
            column = np.asarray(columns[spec.name], dtype=float)
            finite = column[np.isfinite(column)]
            inputs.append(LossInput(spec.name, "numeric", float(np.median(finite)) if finite.size else 0.0))
        else:
            seen = sorted({str(value) for value in columns[spec.name] if value is not None})
            inputs.append(LossInput(spec.name, "categorical", categories=tuple(spec.categories or seen)))
    inputs.append(LossInput(PREDICTION_INPUT, "prediction"))
    matrix = loss_inputs(inputs, columns, predictions)
    errors = np.abs(predictions - truth)
    return DirectLossEstimator(
        inputs=tuple(inputs),
        absolute_error=_fit_loss_model(matrix, errors),
        squared_error=_fit_loss_model(matrix, errors**2),
        fitted_on=fitted_on,
        n=int(truth.size),
        reference={"mae": float(errors.mean()), "rmse": float(math.sqrt((errors**2).mean()))},
    )


# --------------------------------------------------------------------------------------------
# One entry point per task

LabelFreeEstimator = Calibrator | DirectLossEstimator


def fit_label_free_estimator(
    task: Task,
    *,
    truth: Sequence[Any],
    predictions: Sequence[Any],
    probabilities: np.ndarray | None = None,
    classes: Sequence[str | int] = (),
    positive_class: str | int | None = None,
    features: Sequence[FeatureSpec] = (),
    columns: Mapping[str, Sequence[Any]] | None = None,
    fitted_on: str = "held-out split",
) -> dict[str, Any]:
    """The label-free estimator of a model, fitted on held-out data, as the manifest stores it.

    Store the result under ``manifest.extra[LABEL_FREE_KEY]``.

    :param task: the manifest's task.
    :param truth: held-out labels (classes as the manifest lists them, or numbers for regression).
    :param predictions: the model's predictions on the same rows (regression: numbers).
    :param probabilities: classifiers: ``(n, K)`` ``predict_proba`` in ``classes`` order.
    :param positive_class: binary: the class whose probability gets the map (default: the second class).
    :param features, columns: regression: the feature schema and each feature's held-out values by name.
    :raises ValueError: inputs that do not fit the task (no probabilities for a classifier, a
        label that is not a class, no columns or a non-finite label for regression, unequal lengths).
    """
    if task == "regression":
        if columns is None:
            raise ValueError("a regression model's label-free estimator needs the held-out feature columns")
        truth_values, predicted = np.asarray(truth, dtype=float), np.asarray(predictions, dtype=float)
        if truth_values.shape != predicted.shape or not truth_values.size:
            raise ValueError(f"truth and predictions differ in length or are empty ({truth_values.size}, {predicted.size})")
        if not (np.isfinite(truth_values).all() and np.isfinite(predicted).all()):
            raise ValueError("held-out labels and predictions of a regression model must be finite numbers")
        return fit_direct_loss_estimator(features, columns, predicted, truth_values, fitted_on=fitted_on).to_json()
    if probabilities is None:
        raise ValueError(f"a {task} model's label-free estimator (CBPE) needs its held-out probabilities")
    names = [str(label) for label in classes]
    try:
        true_index = np.array([names.index(str(label)) for label in truth], dtype=np.int64)
    except ValueError:
        raise ValueError(f"a held-out label is not one of the classes {names}") from None
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (true_index.size, len(names)):
        raise ValueError(f"probabilities have shape {probabilities.shape}, expected ({true_index.size}, {len(names)})")
    positive = None
    if task == "binary":
        positive = str(positive_class) if positive_class is not None else names[1]
    return fit_calibrator(true_index, probabilities, names, positive, fitted_on=fitted_on).to_json()


def label_free_estimator_from_json(data: Mapping[str, Any]) -> LabelFreeEstimator:
    """The estimator of a manifest's ``extra["calibration"]``: a :class:`Calibrator` or a :class:`DirectLossEstimator`.

    :raises ValueError: an unknown method or a malformed object.
    """
    if data.get("method") == "dle":
        return DirectLossEstimator.from_json(data)
    return Calibrator.from_json(data)
