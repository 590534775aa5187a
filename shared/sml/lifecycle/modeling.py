"""Request rows to the model's input matrix: the one conversion training and predict share.

The registered pipeline takes a 2-D numpy object array whose columns are the manifest's features
in manifest order (its ``ColumnTransformer`` selects columns by index), so predict needs neither
pandas nor scikit-learn to build its input. Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sml.lifecycle.manifest import FeatureSpec


def rows_to_matrix(rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec]) -> np.ndarray:
    """Build the pipeline's input from feature mappings, one row per mapping.

    Args:
        rows: one mapping per prediction, feature name -> value (``None`` for a missing value).
        features: the model's feature schema, in manifest order.

    Returns:
        An object array of shape ``(len(rows), len(features))``: numeric values as ``float``
        (``None`` becomes ``np.nan``, which the numeric imputer fills), categorical values as
        ``str`` (``None`` stays ``None``, which the categorical imputer fills).

    Raises:
        ValueError: a row lacks a feature, or a numeric value is not a number; the message names
            the row index and the feature.
    """
    matrix = np.empty((len(rows), len(features)), dtype=object)
    for row_index, row in enumerate(rows):
        for column, spec in enumerate(features):
            if spec.name not in row:
                raise ValueError(f"row {row_index}: missing feature {spec.name!r}")
            value = row[spec.name]
            if spec.kind == "numeric":
                matrix[row_index, column] = np.nan if value is None else _as_float(value, row_index, spec.name)
            else:
                matrix[row_index, column] = None if value is None else str(value)
    return matrix


def _as_float(value: object, row_index: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"row {row_index}: feature {name!r} must be a number, got {type(value).__name__}")
    return float(value)
