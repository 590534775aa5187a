"""Training without AWS or W&B: the data set, the schema, the pipeline, metrics and reference data."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from sml.core.errors import SmlError
from sml.lifecycle.manifest import CategoricalReference, ModelManifest, NumericReference
from sml.lifecycle.modeling import rows_to_matrix
from sml.lifecycle.quality_metrics import metrics_for
from sml.lifecycle.tracking import tracked_run, tracking_options
from sml.lifecycle.training import (
    GRADE_FEATURE,
    GRADE_LEVELS,
    TrainedModel,
    TrainingConfig,
    build_manifest,
    build_reference,
    load_dataset_split,
    new_version,
    parse_params,
    save_artifact,
    train_model,
)


@cache
def trained_model() -> TrainedModel:
    return train_model(TrainingConfig(model_name="breast-cancer"))


def test_split_is_stratified_and_request_shaped() -> None:
    split = load_dataset_split(test_size=0.25, seed=7)
    assert len(split.train_rows) + len(split.test_rows) == 569
    assert len(split.test_rows) == 143
    train_share = Counter(split.train_labels)["malignant"] / len(split.train_labels)
    test_share = Counter(split.test_labels)["malignant"] / len(split.test_labels)
    assert set(split.train_labels) == {"benign", "malignant"}
    assert abs(train_share - test_share) < 0.01
    assert "mean_radius" in split.train_rows[0] and "mean radius" not in split.train_rows[0]
    assert {row[GRADE_FEATURE] for row in split.test_rows} <= set(GRADE_LEVELS)


def test_grade_cut_points_are_tertiles_of_the_training_split() -> None:
    split = load_dataset_split(test_size=0.25, seed=7)
    counts = Counter(row[GRADE_FEATURE] for row in split.train_rows)
    assert set(counts) == set(GRADE_LEVELS)
    assert max(counts.values()) - min(counts.values()) <= 2
    low, high = split.grade_cut_points
    assert low < high


def test_same_seed_same_split_other_seed_other_split() -> None:
    assert load_dataset_split(seed=1).test_rows == load_dataset_split(seed=1).test_rows
    assert load_dataset_split(seed=1).test_rows != load_dataset_split(seed=2).test_rows


def test_unknown_estimator_names_the_option() -> None:
    with pytest.raises(SmlError, match="--estimator 'svm'"):
        TrainingConfig(model_name="breast-cancer", estimator="svm")


@pytest.mark.parametrize("test_size", [0.0, 0.01, 0.9])
def test_unusable_test_size_names_the_option(test_size: float) -> None:
    with pytest.raises(SmlError, match="--test-size"):
        TrainingConfig(model_name="breast-cancer", test_size=test_size)


def test_schema_has_ten_numeric_features_and_the_derived_grade() -> None:
    model = trained_model()
    numeric = [spec for spec in model.features if spec.kind == "numeric"]
    categorical = [spec for spec in model.features if spec.kind == "categorical"]
    assert len(numeric) == 10 and all(spec.name.startswith("mean_") and " " not in spec.name for spec in numeric)
    assert [(spec.name, spec.categories) for spec in categorical] == [(GRADE_FEATURE, GRADE_LEVELS)]
    radius = next(spec for spec in numeric if spec.name == "mean_radius")
    reference = model.reference.features["mean_radius"]
    assert isinstance(reference, NumericReference)
    assert (radius.minimum, radius.maximum) == (reference.sorted_values[0], reference.sorted_values[-1])


def test_metrics_are_held_out_scores_of_a_useful_model() -> None:
    model = trained_model()
    assert set(model.metrics) == set(metrics_for("binary"))
    assert all(0.0 <= value <= 1.0 for value in model.metrics.values())
    assert model.metrics["roc_auc"] > 0.9
    assert model.classes == ("benign", "malignant")
    assert model.extra["n_train"] == 426 and model.extra["n_test"] == 143


def test_the_manifest_carries_a_cbpe_calibrator_fitted_on_the_held_out_split() -> None:
    from sklearn.isotonic import IsotonicRegression

    from sml.lifecycle.calibration import Calibrator

    model = trained_model()
    calibrator = Calibrator.from_json(model.extra["calibration"])
    assert calibrator.classes == model.classes and list(calibrator.maps) == ["malignant"]
    assert calibrator.n == 143 and calibrator.fitted_on == "held-out test split"
    split = load_dataset_split()
    raw = model.pipeline.predict_proba(rows_to_matrix(split.test_rows, model.features))
    expected = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw[:, 1], np.array(split.test_labels) == "malignant")
    np.testing.assert_allclose(calibrator.calibrate(raw)[:, 1], expected.predict(raw[:, 1]), atol=1e-12)
    # JSON all the way: the manifest round-trips it unchanged.
    manifest = build_manifest(model, version="v1", sha256="0" * 64, wandb_run_path=None, created_at=datetime.now(timezone.utc))
    assert ModelManifest.from_json(manifest.to_json()).extra["calibration"] == model.extra["calibration"]


def test_pipeline_takes_missing_values_and_unseen_categories() -> None:
    model = trained_model()
    row = {spec.name: None for spec in model.features}
    unseen = {**{spec.name: 14.0 for spec in model.features if spec.kind == "numeric"}, GRADE_FEATURE: "unheard-of"}
    probabilities = model.pipeline.predict_proba(rows_to_matrix([row, unseen], model.features))
    assert probabilities.shape == (2, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_reference_summarises_the_training_split_and_the_predicted_labels() -> None:
    model = trained_model()
    reference = model.reference
    assert reference.n_rows == 426
    assert set(reference.features) == {spec.name for spec in model.features}
    numeric = reference.features["mean_area"]
    assert isinstance(numeric, NumericReference)
    assert len(numeric.sorted_values) == 426 and list(numeric.sorted_values) == sorted(numeric.sorted_values)
    grade = reference.features[GRADE_FEATURE]
    assert isinstance(grade, CategoricalReference) and sum(grade.counts.values()) == 426
    assert set(reference.label_counts) == {"benign", "malignant"} and sum(reference.label_counts.values()) == 426


def test_reference_beyond_the_cap_is_a_uniform_sample_of_whole_rows() -> None:
    model = trained_model()
    rows = load_dataset_split().train_rows
    rows[0] = {**rows[0], "mean_area": None, GRADE_FEATURE: None}
    reference = build_reference(model.pipeline, rows, model.features, seed=3, max_rows=100)
    area = reference.features["mean_area"]
    assert isinstance(area, NumericReference)
    assert reference.n_rows == 100 and len(area.sorted_values) + area.missing == 100
    assert set(area.sorted_values) <= {row["mean_area"] for row in rows}
    assert sum(reference.label_counts.values()) == 100
    full = build_reference(model.pipeline, rows, model.features, seed=3)
    assert full.features["mean_area"].missing == 1 and full.features[GRADE_FEATURE].missing == 1


def test_a_regressors_reference_keeps_its_sorted_predictions_instead_of_label_counts() -> None:
    model = trained_model()
    rows = load_dataset_split().train_rows[:200]

    class Regressor:  # what matters is that predict() returns numbers and there is no classes_
        def predict(self, matrix: np.ndarray) -> np.ndarray:
            return np.linspace(5.0, -5.0, len(matrix))

    reference = build_reference(Regressor(), rows, model.features, seed=3)
    assert reference.label_counts == {}
    assert reference.predictions is not None and len(reference.predictions.sorted_values) == 200
    assert list(reference.predictions.sorted_values) == sorted(reference.predictions.sorted_values)


@pytest.mark.parametrize(
    ("estimator", "assignment", "expected"),
    [
        ("logistic_regression", "C=1", {"C": 1.0}),
        ("logistic_regression", "class_weight=balanced", {"class_weight": "balanced"}),
        ("random_forest", "max_depth=4", {"max_depth": 4}),
        ("random_forest", "max_depth=none", {"max_depth": None}),
        ("random_forest", "max_features=0.5", {"max_features": 0.5}),
        ("random_forest", "bootstrap=false", {"bootstrap": False}),
        ("gradient_boosting", "learning_rate=0.05", {"learning_rate": 0.05}),
    ],
)
def test_params_are_typed_by_literal_and_by_the_estimators_defaults(estimator: str, assignment: str, expected: dict[str, object]) -> None:
    parsed = parse_params(estimator, [assignment])
    assert parsed == expected
    assert [type(value) for value in parsed.values()] == [type(value) for value in expected.values()]


@pytest.mark.parametrize(
    ("estimator", "assignment", "message"),
    [
        ("logistic_regression", "C", "--param 'C': expected KEY=VALUE"),
        ("logistic_regression", "=3", "--param '=3': expected KEY=VALUE"),
        ("logistic_regression", "n_estimators=3", "--param n_estimators: LogisticRegression has no such parameter"),
        ("svm", "C=1", "--estimator 'svm': for a binary model choose one of logistic_regression, random_forest, gradient_boosting"),
    ],
)
def test_bad_params_name_the_option(estimator: str, assignment: str, message: str) -> None:
    with pytest.raises(SmlError) as caught:
        parse_params(estimator, [assignment])
    assert str(caught.value).startswith(message)


def test_a_value_scikit_learn_rejects_fails_before_anything_is_registered() -> None:
    with pytest.raises(SmlError, match=r"--estimator logistic_regression with --param \{'C': -1.0\}: The 'C' parameter"):
        train_model(TrainingConfig(model_name="breast-cancer", params={"C": -1.0}))


def test_versions_are_unique_and_sort_by_time() -> None:
    earlier = new_version(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    later = new_version(datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc))
    assert re.fullmatch(r"v20260102-030405-[0-9a-f]{6}", earlier)
    assert earlier < later
    assert len({new_version() for _ in range(20)}) == 20


def test_manifest_of_a_trained_model_survives_json(tmp_path: Path) -> None:
    model = trained_model()
    sha256 = save_artifact(model.pipeline, tmp_path / "model.joblib")
    manifest = build_manifest(model, version="v1", sha256=sha256, wandb_run_path=None, created_at=datetime(2026, 5, 1, tzinfo=timezone.utc))
    assert ModelManifest.from_json(manifest.to_json()) == manifest
    assert manifest.created_at == "2026-05-01T00:00:00+00:00"
    assert set(manifest.library_versions) == {"python", "scikit-learn", "numpy", "joblib"}
    assert manifest.params["max_iter"] == 1000 and manifest.params["random_state"] == 42
    assert manifest.extra["derived_features"][GRADE_FEATURE]["source"] == "worst concavity"


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, "offline"),
        ({"WANDB_API_KEY": "k"}, "online"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
        ({"WANDB_MODE": "online"}, "offline"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "disabled"}, "disabled"),
    ],
)
def test_tracking_is_offline_unless_a_key_is_set(environ: dict[str, str], mode: str, tmp_path: Path) -> None:
    options = tracking_options(tmp_path / "state", environ)
    assert options.mode == mode
    assert options.root == (tmp_path / "state" / "wandb")
    assert options.project == "serverless-ml"


def test_disabled_tracking_records_nothing_and_writes_nothing(tmp_path: Path) -> None:
    options = tracking_options(tmp_path / "state", {"WANDB_MODE": "disabled"})
    with tracked_run(options, name="v1", config={"estimator": "logistic_regression"}) as run:
        run.log_metrics({"f1": 0.9})
        run.log_model(tmp_path / "model.joblib", name="breast-cancer", version="v1", metadata={})
    assert run.path is None
    assert list(tmp_path.iterdir()) == []
