"""Registration derives the manifest from a user's model and data, and refuses what predict could not serve."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from sml.core.errors import SmlError
from sml.lifecycle.calibration import Calibrator, DirectLossEstimator, label_free_estimator_from_json
from sml.lifecycle.manifest import MAX_REFERENCE_ROWS, FeatureSpec, ModelManifest
from sml.lifecycle.modeling import model_input
from sml.lifecycle.quality_metrics import metrics_for
from sml.lifecycle.registration import (
    column_dtype,
    frame_rows,
    prepare_version,
    schema_differences,
)

NUMERIC = ["Monthly Charges", "Tenure Months"]


def churn_data(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A churn table as a user has it: float with gaps, integer, boolean, string with gaps; names with spaces and capitals."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "Monthly Charges": rng.normal(70, 20, n).round(2),
            "Tenure Months": rng.integers(0, 72, n),
            "Paperless Billing": rng.random(n) < 0.5,
            "Contract Type": rng.choice(["month", "year", "two year"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "Monthly Charges"] = np.nan
    frame.loc[rng.random(n) < 0.1, "Contract Type"] = np.nan
    churned = (frame["Tenure Months"] < 20) & (frame["Contract Type"] == "month")
    labels = np.where(churned | (rng.random(n) < 0.15), "yes", "no")
    return frame, labels


def churn_pipeline(encoder: Any = None) -> Any:
    categorical = make_pipeline(SimpleImputer(strategy="most_frequent"), encoder or OneHotEncoder(handle_unknown="ignore"))
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), NUMERIC),
            ("flag", "passthrough", ["Paperless Billing"]),
            ("contract", categorical, ["Contract Type"]),
        ]
    )
    return make_pipeline(preprocess, HistGradientBoostingClassifier(max_iter=30, random_state=0))


@cache
def churn() -> tuple[Any, pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    frame, labels = churn_data()
    train, test = frame.iloc[:450], frame.iloc[450:]
    return churn_pipeline().fit(train, labels[:450]), train, labels[:450], test, labels[450:]


def test_a_dataframe_pipeline_gets_its_schema_task_metrics_and_calibrator_from_the_data() -> None:
    model, train, y_train, test, y_test = churn()
    prepared = prepare_version(model, train, y_train, X_test=test, y_test=y_test, model_name="churn")
    manifest = prepared.manifest

    assert manifest.task == "binary" and manifest.input_format == "dataframe" and manifest.classes == ("no", "yes")
    specs = {spec.name: spec for spec in manifest.features}
    assert [spec.name for spec in manifest.features] == ["Monthly Charges", "Tenure Months", "Paperless Billing", "Contract Type"]
    assert (specs["Monthly Charges"].dtype, specs["Monthly Charges"].nullable) == ("float", True)
    assert (specs["Tenure Months"].dtype, specs["Tenure Months"].nullable) == ("integer", False)
    assert (specs["Tenure Months"].minimum, specs["Tenure Months"].maximum) == (
        float(min(train["Tenure Months"].min(), test["Tenure Months"].min())),
        float(max(train["Tenure Months"].max(), test["Tenure Months"].max())),
    )
    assert (specs["Paperless Billing"].dtype, specs["Paperless Billing"].categories) == ("boolean", ("False", "True"))
    assert (specs["Contract Type"].dtype, specs["Contract Type"].nullable) == ("string", True)
    assert specs["Contract Type"].categories == ("month", "two year", "year")

    assert set(manifest.metrics) == set(metrics_for("binary"))
    assert manifest.extra["positive_class"] == "yes" and manifest.extra["n_test"] == 150
    calibrator = Calibrator.from_json(manifest.extra["calibration"])
    assert calibrator.classes == ("no", "yes") and set(calibrator.maps) == {"yes"} and calibrator.n == 150 and calibrator.fitted_on == "held-out rows (test)"
    assert manifest.reference.n_rows == 450 and sum(manifest.reference.label_counts.values()) == 450
    assert manifest.reference.features["Contract Type"].missing == int(train["Contract Type"].isna().sum())
    assert manifest.library_versions["pandas"] == pd.__version__
    assert manifest.estimator == "HistGradientBoostingClassifier"
    assert "task: binary (inferred from the model and the target; --task to set it)" in prepared.notes
    assert ModelManifest.from_json(manifest.to_json()) == manifest


def test_rows_as_predict_holds_them_give_the_model_what_the_users_dataframe_gave_it() -> None:
    model, train, y_train, test, y_test = churn()
    manifest = prepare_version(model, train, y_train, X_test=test, y_test=y_test, model_name="churn").manifest
    rows = frame_rows(test, manifest.features)
    assert rows[0]["Tenure Months"] == int(test["Tenure Months"].iloc[0]) and isinstance(rows[0]["Paperless Billing"], bool)
    served = model.predict_proba(model_input(rows, manifest.features, manifest.input_format))
    np.testing.assert_allclose(served, model.predict_proba(test))


def test_a_model_fitted_on_an_array_keeps_the_array_input() -> None:
    frame, labels = churn_data()
    numbers = frame[NUMERIC].fillna(0.0)
    model = LogisticRegression(max_iter=500).fit(numbers.to_numpy(), labels)
    manifest = prepare_version(model, numbers.to_numpy(), labels, feature_names=NUMERIC, test_size=0.25, model_name="churn").manifest
    assert manifest.input_format == "array" and manifest.feature_names == NUMERIC
    assert [spec.dtype for spec in manifest.features] == ["float", "float"]
    assert "pandas" not in manifest.library_versions


def test_wine_registers_as_multiclass_with_macro_metrics_and_a_map_per_class() -> None:
    data = load_wine(as_frame=True)
    x, y = data.data, data.target
    model = LogisticRegression(max_iter=5000).fit(x.iloc[::2], y.iloc[::2])
    manifest = prepare_version(model, x.iloc[::2], y.iloc[::2], X_test=x.iloc[1::2], y_test=y.iloc[1::2], model_name="wine").manifest
    assert manifest.task == "multiclass" and manifest.classes == (0, 1, 2)
    assert set(metrics_for("multiclass")) == set(manifest.metrics)
    assert set(Calibrator.from_json(manifest.extra["calibration"]).maps) == {"0", "1", "2"}
    assert "positive_class" not in manifest.extra


def test_a_drift_config_whose_quality_metric_is_of_another_task_is_refused(tmp_path) -> None:
    from sml.monitoring.config import read_model_drift_config

    data = load_wine(as_frame=True)
    model = LogisticRegression(max_iter=5000).fit(data.data, data.target)
    path = tmp_path / "drift.toml"
    path.write_text("[quality]\nmetric = 'rmse'\n")
    with pytest.raises(SmlError, match=r"drift.toml: quality.metric: 'rmse' is not a verdict metric of a multiclass model; choose one of accuracy"):
        prepare_version(model, data.data, data.target, test_size=0.3, model_name="wine", drift_config=read_model_drift_config(path).for_manifest)


def test_diabetes_registers_as_regression_with_errors_and_no_classes_or_calibrator() -> None:
    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    model = LinearRegression().fit(x.iloc[:300], y.iloc[:300])
    manifest = prepare_version(model, x.iloc[:300], y.iloc[:300], X_test=x.iloc[300:], y_test=y.iloc[300:], model_name="diabetes").manifest
    assert manifest.task == "regression" and manifest.classes == () and manifest.reference.label_counts == {}
    predictions = manifest.reference.predictions
    assert predictions is not None and np.allclose(predictions.sorted_values, np.sort(model.predict(x.iloc[:300])), rtol=1e-12)
    assert set(manifest.metrics) == set(metrics_for("regression")) and manifest.metrics["rmse"] >= manifest.metrics["mae"] > 0
    estimator = label_free_estimator_from_json(manifest.extra["calibration"])
    assert isinstance(estimator, DirectLossEstimator) and estimator.n == len(x) - 300
    assert ModelManifest.from_json(manifest.to_json()).task == "regression"


def test_a_reference_beyond_the_cap_is_sampled() -> None:
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(size=MAX_REFERENCE_ROWS + 500), "b": rng.normal(size=MAX_REFERENCE_ROWS + 500)})
    y = (x["a"] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    manifest = prepare_version(model, x, y, model_name="big").manifest
    assert manifest.reference.n_rows == MAX_REFERENCE_ROWS
    assert len(manifest.reference.features["a"].sorted_values) == MAX_REFERENCE_ROWS
    assert manifest.extra["n_reference"] == MAX_REFERENCE_ROWS + 500 and manifest.metrics == {}


def test_a_row_the_model_cannot_predict_is_refused_naming_row_and_column() -> None:
    frame, labels = churn_data()
    strict_encoder = OrdinalEncoder()  # refuses a category it did not see in fit
    model = churn_pipeline(strict_encoder).fit(frame.iloc[:450], labels[:450])
    test = frame.iloc[450:].reset_index(drop=True).copy()
    test.loc[7, "Contract Type"] = "weekly"
    with pytest.raises(SmlError, match=r"^test: the model cannot predict row 7, column 'Contract Type' \(value 'weekly'\) .*ValueError: .*unknown categor"):
        prepare_version(model, frame.iloc[:450], labels[:450], X_test=test, y_test=labels[450:], model_name="churn", test_name="test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y: (x, np.where(y == "yes", "1", "0")), r"^reference: target value '0' in row 0 is not one of the model's classes \['no', 'yes'\]$"),
        (lambda x, y: (x, [None, *y[1:]]), r"^reference: target is missing in 1 row\(s\) \(row 0\)$"),
        (lambda x, y: (x, ["no"] * len(y)), r"^reference: target is constant \('no' in all 450 rows\)"),
        (lambda x, y: (x.drop(columns=["Tenure Months"]), y), r"^reference: no column 'Tenure Months', which the model was fitted on$"),
        (
            lambda x, y: (x.assign(**{"Tenure Months": [1, "two", *x["Tenure Months"].tolist()[2:]]}), y),
            r"^reference: column 'Tenure Months' holds values of more than one type \(int, str\); convert it to one type$",
        ),
    ],
)
def test_bad_data_is_refused_naming_the_cause(change: Any, message: str) -> None:
    model, train, y_train, _, _ = churn()
    x, y = change(train.copy(), y_train)
    with pytest.raises(SmlError, match=message):
        prepare_version(model, x, y, model_name="churn")


def test_classes_of_another_type_are_refused_before_predict_would_meet_them() -> None:
    x = pd.DataFrame({"a": np.arange(40.0)})
    model = LogisticRegression().fit(x, np.arange(40) % 2)
    with pytest.raises(SmlError, match=r"target value '0' in row 0 is a str, the model's class 0 is a int; give the target the classes' type"):
        prepare_version(model, x, [str(value) for value in np.arange(40) % 2], model_name="m")


def test_a_classifier_with_boolean_classes_is_refused_saying_how_to_refit() -> None:
    _, train, y_train, _, _ = churn()
    churned = np.asarray(y_train) == "yes"
    flag_model = churn_pipeline().fit(train, churned)
    with pytest.raises(SmlError, match=r"^the model's classes are booleans \[False, True\]; classes must be strings or integers: refit"):
        prepare_version(flag_model, train, churned, model_name="churn")


def test_a_classifier_with_float_classes_is_refused_since_labels_are_strings_or_integers() -> None:
    x = pd.DataFrame({"a": np.arange(40.0)})
    target = (np.arange(40) % 2).astype(float)
    model = LogisticRegression().fit(x, target)
    with pytest.raises(SmlError, match=r"^the model's classes are float values \[0\.0, 1\.0\]; classes must be strings or integers"):
        prepare_version(model, x, target, model_name="m")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "regression"}, r"^task regression: the model is a classifier"),
        ({"task": "multiclass"}, r"^task multiclass: the model has 2 classes, so it is binary$"),
        ({"task": "ranking"}, r"^task 'ranking' is not one of binary, multiclass, regression$"),
        ({"positive_class": "maybe"}, r"^positive class 'maybe' is not one of the model's classes \['no', 'yes'\]$"),
        ({"test_size": 0.9}, r"^test_size 0.9: must be between 0.05 and 0.5$"),
    ],
)
def test_options_that_do_not_fit_the_model_are_refused(options: dict[str, Any], message: str) -> None:
    model, train, y_train, _, _ = churn()
    with pytest.raises(SmlError, match=message):
        prepare_version(model, train, y_train, model_name="churn", **options)


def test_something_without_predict_is_not_an_estimator() -> None:
    with pytest.raises(SmlError, match=r"^the model is a builtins.dict, not an estimator with predict\(\)$"):
        prepare_version({"weights": [1, 2]}, pd.DataFrame({"a": [1.0, 2.0]}), [0, 1], model_name="m")


def test_the_positive_class_given_as_text_matches_an_integer_class() -> None:
    x = pd.DataFrame({"a": np.arange(40.0)})
    model = LogisticRegression().fit(x, np.arange(40) % 2)
    manifest = prepare_version(model, x, np.arange(40) % 2, positive_class="0", test_size=0.25, model_name="m").manifest
    assert manifest.extra["positive_class"] == 0


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (pd.Series([1.5, None]), "float"),
        (pd.Series([1, 2], dtype="Int64"), "integer"),
        (pd.Series([True, None], dtype=object), "boolean"),
        (pd.Series(["a", None]), "string"),
        (pd.Series(["a", "b"], dtype="category"), "string"),
        (pd.Series([1, 2.5], dtype=object), "float"),
        (pd.Series([None, None], dtype=object), "float"),
    ],
)
def test_column_dtypes(values: pd.Series, dtype: str) -> None:
    assert column_dtype(values, "x") == dtype


def test_a_date_column_is_refused_naming_it() -> None:
    with pytest.raises(SmlError, match=r"^data: column 'signed' has dtype datetime64\[.*\], which a model input cannot be"):
        column_dtype(pd.Series(pd.to_datetime(["2026-01-01"])), "signed")


def test_schema_differences_name_added_removed_and_retyped_features_and_classes() -> None:
    model, train, y_train, _, _ = churn()
    old = prepare_version(model, train, y_train, model_name="churn").manifest
    features = (
        FeatureSpec(name="Monthly Charges", kind="numeric", dtype="float", nullable=True),
        FeatureSpec(name="Tenure Months", kind="categorical", dtype="string"),
        FeatureSpec(name="Region", kind="categorical", dtype="string"),
    )
    reference = old.reference
    new = ModelManifest(**{**old.__dict__, "features": features, "classes": (0, 1), "reference": reference})
    assert schema_differences(old, new) == [
        "added feature 'Region' (string)",
        "removed feature 'Paperless Billing' (boolean)",
        "removed feature 'Contract Type' (string)",
        "retyped feature 'Tenure Months': integer -> string",
        "classes: ['no', 'yes'] -> [0, 1]",
    ]
    assert schema_differences(old, old) == []
