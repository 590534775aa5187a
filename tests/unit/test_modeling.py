"""Request rows to the model matrix, and what the predict image's code paths import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sml.lifecycle.manifest import FeatureSpec
from sml.lifecycle.modeling import rows_to_matrix

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
