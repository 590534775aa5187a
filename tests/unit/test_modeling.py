"""Request rows to the model's input (array or DataFrame), and what the predict image's code paths import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sml.lifecycle.manifest import FeatureSpec
from sml.lifecycle.modeling import rows_to_matrix, model_input, model_input_builder
from tests.byom_support import CHURN_FEATURES, churn_frame, churn_model, churn_rows

FEATURES = (
    FeatureSpec(name="mean_radius", kind="numeric", nullable=True),
    FeatureSpec(name="concavity_grade", kind="categorical", nullable=True, categories=("low", "high")),
    FeatureSpec(name="mean_area", kind="numeric"),
)


def test_columns_follow_the_schema_order_not_the_row_order() -> None:
    rows = [{"mean_area": 500, "concavity_grade": "low", "mean_radius": 12.5}]
    matrix = rows_to_matrix(rows, FEATURES)
    assert matrix.dtype == object and matrix.shape == (1, 3)
    assert matrix.tolist() == [[12.5, "low", 500.0]]
    assert isinstance(matrix[0, 2], float)


def test_missing_values_become_what_each_imputer_expects() -> None:
    matrix = rows_to_matrix([{"mean_radius": None, "concavity_grade": None, "mean_area": 1.0}], FEATURES)
    assert math.isnan(matrix[0, 0])
    assert matrix[0, 1] is None


def test_categorical_values_are_strings() -> None:
    matrix = rows_to_matrix([{"mean_radius": 1.0, "concavity_grade": 3, "mean_area": 1.0}], FEATURES)
    assert matrix[0, 1] == "3"


def test_no_rows_gives_an_empty_matrix_of_the_right_width() -> None:
    assert rows_to_matrix([], FEATURES).shape == (0, 3)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"mean_radius": 1.0, "concavity_grade": "low"}, "row 1: missing feature 'mean_area'"),
        ({"mean_radius": "12", "concavity_grade": "low", "mean_area": 1.0}, "row 1: feature 'mean_radius' must be a number, got str"),
        ({"mean_radius": True, "concavity_grade": "low", "mean_area": 1.0}, "row 1: feature 'mean_radius' must be a number, got bool"),
    ],
)
def test_bad_rows_are_named_by_index_and_feature(row: dict[str, object], message: str) -> None:
    good = {"mean_radius": 1.0, "concavity_grade": "low", "mean_area": 1.0}
    with pytest.raises(ValueError) as caught:
        rows_to_matrix([good, row], FEATURES)
    assert str(caught.value) == message


def test_numpy_scalars_are_accepted_as_numbers() -> None:
    matrix = rows_to_matrix([{"mean_radius": np.float32(2.5), "concavity_grade": "high", "mean_area": np.int64(7)}], FEATURES)
    assert matrix[0, 0] == 2.5 and matrix[0, 2] == 7.0


def test_predict_code_paths_do_not_import_training_or_database_libraries() -> None:
    script = "import json, sys; import sml.lifecycle.modeling, sml.lifecycle.registry; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout))
    assert "sml.lifecycle.registry" in loaded
    assert not {"wandb", "sqlalchemy", "pandas", "sml.lifecycle.training", "sml.lifecycle.tracking"} & loaded


def test_array_models_get_integers_as_int_and_booleans_as_bool() -> None:
    features = (FeatureSpec("n", "numeric", dtype="integer", nullable=True), FeatureSpec("b", "categorical", dtype="boolean", nullable=True))
    matrix = model_input([{"n": 3, "b": True}, {"n": None, "b": None}], features, "array")
    assert matrix.tolist()[0] == [3, True] and type(matrix[0, 0]) is int and type(matrix[0, 1]) is bool
    assert math.isnan(matrix[1, 0]) and matrix[1, 1] is None


def test_dataframe_models_get_the_manifest_columns_in_order_typed_as_pandas_reads_a_file() -> None:
    frame = model_input(churn_rows()[:12], CHURN_FEATURES, "dataframe")

    assert list(frame.columns) == [spec.name for spec in CHURN_FEATURES]
    assert frame.dtypes.to_dict() == churn_frame().drop(columns="churned").dtypes.to_dict()
    assert [str(dtype) for dtype in frame.dtypes] == ["float64", "int64", "float64", "bool", "object", "str"]
    # Missing values are NaN in every column, as read_csv gives an empty cell.
    assert frame["Support Calls"].isna().iloc[0] and frame["Contract"].isna().iloc[0] and frame["Paperless"].isna().iloc[0]
    assert all(isinstance(value, float) for value in frame["Contract"][frame["Contract"].isna()])


def test_frame_dtypes_follow_the_schema_even_when_a_batch_holds_only_missing_values() -> None:
    # pandas infers a column of None/NaN as object, not as the text dtype the model was fitted on.
    row = {**churn_rows()[1], "Contract": None, "Paperless": None, "Support Calls": None, "Monthly Charges": None}

    frame = model_input([row], CHURN_FEATURES, "dataframe")

    assert frame.dtypes.to_dict() == churn_frame().drop(columns="churned").dtypes.to_dict()
    assert frame["Contract"].isna().all()


def test_a_frame_builder_is_reused_across_batches_without_sharing_their_values() -> None:
    build = model_input_builder(CHURN_FEATURES, "dataframe")

    first, second = build(churn_rows()[:3]), build(churn_rows()[3:4])

    assert list(first.columns) == list(second.columns) == [spec.name for spec in CHURN_FEATURES]
    assert first.columns.dtype == object  # labels built once, as names (see FrameBuilder)
    assert first.shape == (3, 6) and second.shape == (1, 6)
    assert second.iloc[0].tolist() == model_input(churn_rows()[3:4], CHURN_FEATURES, "dataframe").iloc[0].tolist()
    assert first["Tenure Months"].tolist() == [row["Tenure Months"] for row in churn_rows()[:3]]


def test_a_pipeline_fitted_on_the_users_read_csv_frame_predicts_our_frame_exactly_as_its_own() -> None:
    model = churn_model()
    users_frame = churn_frame().drop(columns="churned")

    ours = model.predict_proba(model_input(churn_rows(), CHURN_FEATURES, "dataframe"))

    np.testing.assert_array_equal(ours, model.predict_proba(users_frame))


def test_the_same_pipeline_given_an_array_fails_as_the_field_notes_say() -> None:
    with pytest.raises(ValueError, match="Specifying the columns using strings is only supported for dataframes"):
        churn_model().predict(model_input(churn_rows()[:1], CHURN_FEATURES, "array"))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("Has Partner", None, "row 1: feature 'Has Partner' is missing, but its schema says it never is"),
        ("Tenure Months", None, "row 1: feature 'Tenure Months' is missing, but its schema says it never is"),
        ("Tenure Months", 2.5, "row 1: feature 'Tenure Months' must be a whole number, got 2.5"),
        ("Has Partner", "yes", "row 1: feature 'Has Partner' must be true or false, got 'yes'"),
        ("Tenure Months", 2**64, "feature 'Tenure Months': a value is beyond the 64-bit integers pandas holds"),
    ],
)
def test_dataframe_rows_that_do_not_fit_their_dtype_are_named(name: str, value: object, message: str) -> None:
    rows = churn_rows()[:2]
    rows[1] = {**rows[1], name: value}
    with pytest.raises(ValueError) as caught:
        model_input(rows, CHURN_FEATURES, "dataframe")
    assert str(caught.value) == message


def test_array_models_never_import_pandas() -> None:
    script = (
        "import json, sys; from sml.lifecycle.manifest import FeatureSpec; from sml.lifecycle.modeling import model_input; "
        "model_input([{'a': 1.0}], (FeatureSpec('a', 'numeric'),), 'array'); print(json.dumps('pandas' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.strip() == "false"


HIDDEN_PANDAS_SCRIPT = """
import io, json, sys, joblib
from sml.lifecycle.modeling import allow_pandas, hide_pandas_from_array_models, needs_pandas, model_input
artifact = sys.argv[1]
hide_pandas_from_array_models("array")
model = joblib.load(artifact)
rows = json.loads(sys.argv[2])
features = joblib.load(sys.argv[3])
model.predict_proba(model_input(rows, features, "array"))
report = {"served_without_pandas": "pandas" not in sys.modules}
try:
    import pandas
except ModuleNotFoundError as exc:
    report["needs_pandas"] = needs_pandas(exc)
allow_pandas()
import pandas
report["allowed"] = "pandas" in sys.modules
print(json.dumps(report))
"""


def test_an_array_model_is_served_with_pandas_installed_but_hidden_until_allowed(tmp_path) -> None:
    import joblib

    from tests.predict_support import trained_model, valid_row

    joblib.dump(trained_model().pipeline, tmp_path / "model.joblib")
    joblib.dump(trained_model().features, tmp_path / "features.joblib")
    completed = subprocess.run(
        [sys.executable, "-c", HIDDEN_PANDAS_SCRIPT, str(tmp_path / "model.joblib"), json.dumps([valid_row()]), str(tmp_path / "features.joblib")],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(completed.stdout) == {"served_without_pandas": True, "needs_pandas": True, "allowed": True}
