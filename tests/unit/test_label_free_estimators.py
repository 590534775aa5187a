"""Label-free estimators fitted at registration: CBPE's calibrators and Direct Loss Estimation,
stored as plain JSON and evaluated without scikit-learn's objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from sml.lifecycle.calibration import (
    MAX_LOSS_TREE_DEPTH,
    Calibrator,
    DirectLossEstimator,
    LossModel,
    fit_label_free_estimator,
    label_free_estimator_from_json,
    loss_model_from_sklearn,
)
from sml.lifecycle.manifest import FeatureSpec
from sml.lifecycle.quality_metrics import check_verdict_metric, metrics_for, quality_metric, ranking_key


def _roundtrip(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))


def test_a_loss_model_as_json_predicts_what_scikit_learn_predicts() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(500, 4))
    matrix[:, 3] = rng.integers(-1, 3, size=500)
    target = np.abs(matrix[:, 0]) + (matrix[:, 3] == 2) + rng.normal(scale=0.1, size=500)
    model = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(matrix, target)
    stored = LossModel.from_json(_roundtrip(loss_model_from_sklearn(model).to_json()), n_inputs=4)
    probe = rng.normal(size=(2000, 4)) * 2
    probe[:, 3] = rng.integers(-1, 3, size=2000)
    np.testing.assert_allclose(stored.predict(probe), model.predict(probe), rtol=1e-12, atol=1e-12)


def test_a_loss_model_reaches_the_leaf_of_a_walk_from_the_root_on_uneven_trees_and_missing_inputs() -> None:
    # Root: x0 <= 0.5 goes to a leaf (1.0) one level up; else x1 <= 0.0 splits into leaves 2.0 / 3.0.
    uneven = {"feature": [0, -2, 1, -2, -2], "threshold": [0.5, -2.0, 0.0, -2.0, -2.0], "left": [1, -1, 3, -1, -1], "right": [2, -1, 4, -1, -1], "value": [0.0, 1.0, 0.0, 2.0, 3.0]}
    # A right-leaning chain three levels deep: x1 <= -1 -> 10; x0 <= 0 -> 20; x0 <= 2 -> 30 / 40.
    chain = {"feature": [1, -2, 0, -2, 0, -2, -2], "threshold": [-1.0, 0, 0.0, 0, 2.0, 0, 0], "left": [1, -1, 3, -1, 5, -1, -1], "right": [2, -1, 4, -1, 6, -1, -1], "value": [0, 10.0, 0, 20.0, 0, 30.0, 40.0]}
    stump = {"feature": [-2], "threshold": [-2.0], "left": [-1], "right": [-1], "value": [7.0]}
    model = LossModel.from_json({"init": 0.5, "learning_rate": 0.1, "trees": [uneven, chain, stump]}, n_inputs=2)
    nan = float("nan")
    rows = np.array([[0.0, 5.0], [1.0, -1.0], [1.0, 1.0], [nan, -1.0], [1.0, nan], [3.0, -2.0], [0.5, 0.0], [1.5, 0.0], [2.5, 0.0], [nan, nan]])
    # x <= threshold goes left, as scikit-learn compares; a missing input fails every comparison and goes right.
    uneven_leaf = [1.0, 2.0, 3.0, 2.0, 3.0, 2.0, 1.0, 2.0, 2.0, 3.0]
    chain_leaf = [20.0, 10.0, 30.0, 10.0, 30.0, 10.0, 30.0, 30.0, 40.0, 40.0]
    np.testing.assert_allclose(model.predict(rows), 0.5 + 0.1 * (np.array(uneven_leaf) + np.array(chain_leaf) + 7.0), rtol=1e-12)


def test_a_loss_model_tree_deeper_than_the_evaluation_allows_is_refused() -> None:
    def chain(depth: int) -> dict:
        """Node 2j splits (j < depth) into the leaf 2j + 1 and the node 2j + 2."""
        size = 2 * depth + 1
        splits = [node % 2 == 0 and node < 2 * depth for node in range(size)]
        left, right = [node + 1 if split else -1 for node, split in enumerate(splits)], [node + 2 if split else -1 for node, split in enumerate(splits)]
        return {"feature": [0] * size, "threshold": [float(node) for node in range(size)], "left": left, "right": right, "value": [float(node) for node in range(size)]}

    deepest = LossModel.from_json({"init": 0.0, "learning_rate": 1.0, "trees": [chain(MAX_LOSS_TREE_DEPTH)]}, n_inputs=1)
    # x goes right at every split below it: x = 5.5 passes splits 0, 2, 4 and reaches the leaf 7.
    np.testing.assert_allclose(deepest.predict(np.array([[5.5], [-1.0], [100.0]])), [7.0, 1.0, 2.0 * MAX_LOSS_TREE_DEPTH])
    with pytest.raises(ValueError, match=f"deeper than {MAX_LOSS_TREE_DEPTH} levels"):
        LossModel.from_json({"init": 0.0, "learning_rate": 0.1, "trees": [chain(MAX_LOSS_TREE_DEPTH + 1)]}, n_inputs=1)


def test_a_loss_model_whose_children_point_back_is_refused() -> None:
    tree = {"feature": [0, -2, -2], "threshold": [0.5, -2.0, -2.0], "left": [1, -1, -1], "right": [0, -1, -1], "value": [1.0, 0.0, 2.0]}
    with pytest.raises(ValueError, match="children do not follow"):
        LossModel.from_json({"init": 0.0, "learning_rate": 0.1, "trees": [tree]}, n_inputs=1)
    tree["right"] = [2, -1, -1]
    tree["feature"] = [5, -2, -2]
    with pytest.raises(ValueError, match="input that does not exist"):
        LossModel.from_json({"init": 0.0, "learning_rate": 0.1, "trees": [tree]}, n_inputs=1)


def _heteroscedastic(rng: np.random.Generator, n: int, shift: float) -> tuple[dict[str, np.ndarray | list], np.ndarray, np.ndarray]:
    """y = x + noise whose spread grows with |x|; the model predicts x, so its error grows with |x|."""
    x = rng.normal(loc=shift, size=n)
    kind = rng.choice(["calm", "wild"], size=n).tolist()
    scale = 0.2 + np.abs(x) + np.where(np.array(kind) == "wild", 1.0, 0.0)
    truth = x + rng.normal(size=n) * scale
    return {"x": x, "kind": kind}, x.copy(), truth


def test_direct_loss_estimation_follows_covariate_shift_into_regions_of_larger_error() -> None:
    rng = np.random.default_rng(7)
    features = [FeatureSpec("x", "numeric"), FeatureSpec("kind", "categorical", categories=("calm", "wild"))]
    columns, predictions, truth = _heteroscedastic(rng, 3000, 0.0)
    data = fit_label_free_estimator("regression", truth=truth, predictions=predictions, features=features, columns=columns)
    estimator = label_free_estimator_from_json(_roundtrip(data))
    assert isinstance(estimator, DirectLossEstimator)
    # Trees do not extrapolate: the shift stays within the held-out inputs (as NannyML notes for DLE).
    for shift in (0.0, 1.0):
        columns, predictions, truth = _heteroscedastic(rng, 20_000, shift)
        mae, rmse, used = estimator.estimate(columns, predictions)
        assert used == 20_000
        assert mae == pytest.approx(np.abs(predictions - truth).mean(), rel=0.1)
        assert rmse == pytest.approx(np.sqrt(((predictions - truth) ** 2).mean()), rel=0.1)
    assert mae > 1.2 * estimator.reference["mae"]


def test_direct_loss_estimation_samples_large_windows_with_a_fixed_seed() -> None:
    rng = np.random.default_rng(3)
    features = [FeatureSpec("x", "numeric"), FeatureSpec("kind", "categorical", categories=("calm", "wild"))]
    columns, predictions, truth = _heteroscedastic(rng, 1000, 0.0)
    estimator = DirectLossEstimator.from_json(fit_label_free_estimator("regression", truth=truth, predictions=predictions, features=features, columns=columns))
    columns, predictions, _ = _heteroscedastic(rng, 5000, 0.0)
    columns["x"][:10] = np.nan
    columns["kind"][:5] = [None, "unseen", None, "wild", "calm"]
    first = estimator.estimate(columns, predictions, max_rows=1000)
    assert first == estimator.estimate(columns, predictions, max_rows=1000)
    assert first[2] == 1000
    absolute, _ = estimator.expected_losses(columns, predictions)
    assert first[0] == pytest.approx(absolute.mean(), rel=0.05)
    assert estimator.estimate({"x": np.empty(0), "kind": []}, np.empty(0))[2] == 0


def test_multiclass_calibration_is_one_vs_rest_on_every_class() -> None:
    rng = np.random.default_rng(5)
    classes = ("class_0", "class_1", "class_2")
    truth_index = rng.integers(0, 3, size=3000)
    raw = rng.dirichlet(np.ones(3), size=3000)
    raw[np.arange(3000), truth_index] += 0.5
    raw /= raw.sum(axis=1, keepdims=True)
    data = fit_label_free_estimator("multiclass", truth=[classes[i] for i in truth_index], predictions=[], probabilities=raw, classes=classes)
    calibrator = label_free_estimator_from_json(_roundtrip(data))
    assert isinstance(calibrator, Calibrator) and set(calibrator.maps) == set(classes)
    calibrated = calibrator.calibrate(raw)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    # Calibrated on the data it was fitted on: the mean calibrated probability of each class is its frequency.
    np.testing.assert_allclose(calibrated.mean(axis=0), np.bincount(truth_index) / 3000, atol=0.02)


def test_binary_calibration_maps_the_positive_class_only() -> None:
    data = fit_label_free_estimator("binary", truth=["a", "b", "b", "a"], predictions=[], probabilities=np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]), classes=("a", "b"))
    assert list(data["maps"]) == ["b"]


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        ("multiclass", {"truth": ["a"], "predictions": ["a"], "classes": ("a", "b", "c")}, "needs its held-out probabilities"),
        ("multiclass", {"truth": ["z"], "predictions": ["a"], "classes": ("a", "b", "c"), "probabilities": np.ones((1, 3)) / 3}, "not one of the classes"),
        ("binary", {"truth": ["a"], "predictions": ["a"], "classes": ("a", "b"), "probabilities": np.ones((1, 3)) / 3}, "expected \\(1, 2\\)"),
        ("regression", {"truth": [1.0], "predictions": [1.0]}, "feature columns"),
        ("regression", {"truth": [float("nan")], "predictions": [1.0], "columns": {}}, "finite numbers"),
    ],
)
def test_label_free_estimator_inputs_that_do_not_fit_the_task_are_refused(task: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_label_free_estimator(task, **kwargs)


def test_metric_directions_rank_versions_and_guard_verdicts() -> None:
    assert max([0.3, 0.1, 0.2], key=lambda value: ranking_key("rmse", value)) == 0.1
    assert max([0.3, 0.1, 0.2], key=lambda value: ranking_key("f1_macro", value)) == 0.3
    assert max([-0.3, 0.2, -0.1], key=lambda value: ranking_key("mean_error", value)) == -0.1
    assert quality_metric("mae").tolerance == "relative"
    assert "mean_error" in metrics_for("regression") and "mean_error" not in metrics_for("regression", verdict_only=True)
    assert "f1" not in metrics_for("multiclass")
    with pytest.raises(ValueError, match="not a verdict metric of a multiclass model; choose one of accuracy"):
        check_verdict_metric("f1", "multiclass")
    with pytest.raises(ValueError, match="is not a quality metric"):
        ranking_key("auc", 0.5)
