"""Request rows to the model's input: the one conversion registration, training and predict share.

A model takes its rows in the manifest's ``input_format``:

* ``array``: a 2-D numpy object array whose columns are the manifest's features in manifest
  order (:func:`rows_to_matrix`); the pipelines ``sml train`` fits select columns by index, so
  predict needs neither pandas nor scikit-learn to build their input;
* ``dataframe``: a pandas DataFrame with the features as columns, in manifest order, each with
  the dtype its ``FeatureSpec.dtype`` names (:func:`rows_to_frame`), for models fitted on a
  DataFrame (``feature_names_in_``; a ``ColumnTransformer`` selecting columns by name raises
  "Specifying the columns using strings is only supported for dataframes" on an array).

:func:`model_input` picks one by the format; :func:`model_outputs` calls the model the way
predict does (``predict_proba`` when the model has it, the label being the most probable
class). This module imports numpy only; pandas only when a DataFrame is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sml.lifecycle.manifest import FeatureSpec, InputFormat

# Strings a boolean feature's value may arrive as (CSV files and older clients send them).
_BOOLEAN_STRINGS = {"true": True, "false": False}


def model_input(rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec], input_format: InputFormat = "array") -> Any:
    """The model's input for ``rows`` in the manifest's ``input_format``.

    Raises:
        ValueError: as :func:`rows_to_matrix` or :func:`rows_to_frame` (names the row and feature),
            or an unknown ``input_format``.
    """
    if input_format == "array":
        return rows_to_matrix(rows, features)
    if input_format == "dataframe":
        return rows_to_frame(rows, features)
    raise ValueError(f"input_format {input_format!r} is not array or dataframe")


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
            value = _value(row, spec.name, row_index)
            if spec.kind == "numeric":
                matrix[row_index, column] = np.nan if value is None else _as_float(value, row_index, spec.name)
            else:
                matrix[row_index, column] = None if value is None else str(value)
    return matrix


def rows_to_frame(rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec]) -> Any:
    """Build a DataFrame model's input: one column per feature, in manifest order, typed by ``dtype``.

    Column dtypes are those pandas gives the same data read from a file (what the model was most
    likely fitted on): ``float`` is float64 (``None`` as NaN); ``integer`` is int64, or float64
    with NaN when a value is missing; ``boolean`` is bool, or object holding ``True``/``False``
    and NaN when a value is missing (booleans may also arrive as the strings ``"true"`` /
    ``"false"``, any case); ``string`` is pandas' string dtype with NaN for a missing value
    (what scikit-learn's imputers and encoders count as missing).

    Returns:
        A ``pandas.DataFrame`` of shape ``(len(rows), len(features))`` with a default index.

    Raises:
        ValueError: a row lacks a feature, or a value does not fit its feature's dtype (a number
            that is not whole for an integer); the message names the row index and the feature.
    """
    import pandas as pd

    columns: dict[str, Any] = {}
    for spec in features:
        values = [_value(row, spec.name, row_index) for row_index, row in enumerate(rows)]
        columns[spec.name] = _frame_column(values, spec)
    return pd.DataFrame(columns, columns=[spec.name for spec in features])


def model_outputs(model: Any, inputs: Any) -> tuple[list[Any], np.ndarray | None]:
    """Call the model as predict does: labels (or values) and, for a model with ``predict_proba``, probabilities.

    Returns:
        ``(labels, probabilities)``: with ``predict_proba`` the label of a row is the class of its
        highest probability (``model.classes_`` order, as scikit-learn's classifiers decide it)
        and ``probabilities`` is the ``(n, K)`` array; otherwise ``predict``'s output as a list
        and ``None``.

    Raises:
        whatever the model raises on ``inputs``.
    """
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        probabilities = np.asarray(model.predict_proba(inputs), dtype=float)
        classes = list(model.classes_.tolist() if hasattr(model.classes_, "tolist") else model.classes_)
        return [classes[index] for index in probabilities.argmax(axis=1).tolist()], probabilities
    predicted = model.predict(inputs)
    return (predicted.tolist() if hasattr(predicted, "tolist") else list(predicted)), None


def _value(row: Mapping[str, object], name: str, row_index: int) -> object:
    if name not in row:
        raise ValueError(f"row {row_index}: missing feature {name!r}")
    return row[name]


def _frame_column(values: list[object], spec: FeatureSpec) -> np.ndarray:
    missing = any(value is None for value in values)
    if spec.dtype == "float":
        return np.array([np.nan if value is None else _as_float(value, index, spec.name) for index, value in enumerate(values)], dtype=float)
    if spec.dtype == "integer":
        whole = [None if value is None else _as_integer(value, index, spec.name) for index, value in enumerate(values)]
        if missing:
            return np.array([np.nan if value is None else float(value) for value in whole], dtype=float)
        return np.array(whole, dtype=np.int64)
    if spec.dtype == "boolean":
        flags = [None if value is None else _as_boolean(value, index, spec.name) for index, value in enumerate(values)]
        if missing:
            return np.array([np.nan if flag is None else flag for flag in flags], dtype=object)
        return np.array(flags, dtype=bool)
    return np.array([np.nan if value is None else str(value) for value in values], dtype=object)


def _as_float(value: object, row_index: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"row {row_index}: feature {name!r} must be a number, got {type(value).__name__}")
    return float(value)


def _as_integer(value: object, row_index: int, name: str) -> int:
    number = _as_float(value, row_index, name) if not isinstance(value, (int, np.integer)) or isinstance(value, bool) else value
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"row {row_index}: feature {name!r} must be a whole number, got {number!r}")
    return int(number)


def _as_boolean(value: object, row_index: int, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in _BOOLEAN_STRINGS:
        return _BOOLEAN_STRINGS[value.lower()]
    raise ValueError(f"row {row_index}: feature {name!r} must be true or false, got {value!r}")
