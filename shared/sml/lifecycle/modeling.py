"""Request rows to the model's input: the one conversion registration, training and predict share.

A model takes its rows in the manifest's ``input_format``:

* ``array``: a 2-D numpy object array whose columns are the manifest's features in manifest
  order (:func:`rows_to_matrix`); the pipelines ``sml train`` fits select columns by index, so
  predict needs neither pandas nor scikit-learn to build their input;
* ``dataframe``: a pandas DataFrame with the features as columns, in manifest order, each with
  the dtype its ``FeatureSpec.dtype`` names (:class:`FrameBuilder`), for models fitted on a
  DataFrame (``feature_names_in_``; a ``ColumnTransformer`` selecting columns by name raises
  "Specifying the columns using strings is only supported for dataframes" on an array).

:func:`model_input` picks one by the format (registration calls it on the reference rows; predict
prepares one with :func:`model_input_builder` per loaded model and calls that for every request);
:func:`model_outputs` calls the model the way predict does (``predict_proba`` when the model has
it, the label being the most probable class). This module imports numpy only; pandas only when a
DataFrame is built, and predict's loader keeps pandas out of a process that serves array models
(:func:`hide_pandas_from_array_models`).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sml.lifecycle.manifest import FeatureSpec, InputFormat

# Strings a boolean feature's value may arrive as (CSV files and older clients send them).
_BOOLEAN_STRINGS = {"true": True, "false": False}


def model_input(rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec], input_format: InputFormat = "array") -> Any:
    """The model's input for ``rows`` in the manifest's ``input_format``.

    Raises:
        ValueError: as :func:`rows_to_matrix` or :class:`FrameBuilder` (names the row and feature),
            or an unknown ``input_format``.
    """
    return model_input_builder(features, input_format)(rows)


def model_input_builder(
    features: Sequence[FeatureSpec], input_format: InputFormat = "array"
) -> Callable[[Sequence[Mapping[str, object]]], Any]:
    """:func:`model_input` for one schema, prepared once: call it with the rows.

    An ``array`` builder imports nothing more; a ``dataframe`` one imports pandas here.

    Raises:
        ValueError: an unknown ``input_format``.
    """
    if input_format == "array":
        schema = tuple(features)
        return lambda rows: rows_to_matrix(rows, schema)
    if input_format == "dataframe":
        return FrameBuilder(features)
    raise ValueError(f"input_format {input_format!r} is not array or dataframe")


class _PandasHidden(importlib.abc.MetaPathFinder):
    """A finder, first on ``sys.meta_path``, under which ``import pandas`` fails as if pandas were not installed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden while an array model is served)", name=fullname)
        return None


_PANDAS_HIDDEN = _PandasHidden()


def hide_pandas_from_array_models(input_format: InputFormat) -> None:
    """Serve ``array`` models without importing pandas, even where pandas is installed.

    scikit-learn imports pandas whenever it is installed (``sklearn.utils.fixes``, imported with
    most estimators), which would add pandas' import time to the cold start of every model. For
    an ``array`` model this puts a finder first on ``sys.meta_path`` that makes ``import pandas``
    raise ``ModuleNotFoundError`` before the model is unpickled, and scikit-learn then runs as it
    does where pandas is not installed. For a ``dataframe`` model it removes the finder. Nothing
    changes once pandas is imported. Predict's loader only: a process that reads files with
    pandas must not call it.
    """
    if input_format == "dataframe":
        allow_pandas()
    elif "pandas" not in sys.modules and _PANDAS_HIDDEN not in sys.meta_path:
        sys.meta_path.insert(0, _PANDAS_HIDDEN)


def allow_pandas() -> None:
    """Undo :func:`hide_pandas_from_array_models` (a DataFrame model, or an array model whose pickle needs pandas)."""
    if _PANDAS_HIDDEN in sys.meta_path:
        sys.meta_path.remove(_PANDAS_HIDDEN)


def needs_pandas(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is an import of pandas that failed, e.g. while pandas was hidden."""
    cause = error if isinstance(error, ModuleNotFoundError) else error.__cause__
    return isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] == "pandas"


def rows_to_matrix(rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec]) -> np.ndarray:
    """Build an ``array`` model's input, one row per mapping.

    Returns:
        An object array of shape ``(len(rows), len(features))``: ``float`` features as ``float``
        and ``integer`` ones as ``int`` (``None`` becomes ``np.nan``, which the numeric imputer
        fills), ``boolean`` ones as ``bool`` and ``string`` ones as ``str`` (``None`` stays
        ``None``, which the categorical imputer of ``sml train``'s pipelines fills).

    Raises:
        ValueError: a row lacks a feature, or a value does not fit its feature's dtype; the
            message names the row index and the feature.
    """
    matrix = np.empty((len(rows), len(features)), dtype=object)
    convert = [_CONVERTERS[spec.dtype] for spec in features]
    for row_index, row in enumerate(rows):
        for column, spec in enumerate(features):
            value = _value(row, spec.name, row_index)
            if value is None:
                matrix[row_index, column] = np.nan if spec.kind == "numeric" else None
            else:
                matrix[row_index, column] = convert[column](value, row_index, spec.name)
    return matrix


class FrameBuilder:
    """Builds a DataFrame model's input: one column per feature, in manifest order, typed by ``dtype``.

    Compiled once per feature schema (predict keeps one per loaded model), so a request pays for
    converting its values and for the frame, never for working out labels and dtypes again.

    Column dtypes are those pandas gives the training data read from a file (what the model was
    most likely fitted on), and depend on the schema only, never on which values a batch holds:
    ``float`` is float64; ``integer`` is int64, or float64 when the feature is ``nullable``
    (pandas' reading of an integer column with missing values); ``boolean`` is bool, or object
    holding ``True``/``False`` when ``nullable`` (booleans may also arrive as the strings
    ``"true"``/``"false"``, any case); ``string`` is the dtype pandas infers for a column of text
    (``str``, pandas' string dtype, since pandas 3; object before), also when every value of the
    batch is missing. A missing value is NaN in every column, as pandas reads an empty cell (what
    scikit-learn's imputers and encoders count as missing); pandas' ``Int64``/``boolean`` dtypes
    are avoided because scikit-learn pipelines raise on their ``pd.NA``.

    The column labels are an object-dtype Index built once: scikit-learn reads them only as names
    (``feature_names_in_``, columns selected by name), and pandas 3's own ``str`` Index costs the
    pipeline a conversion and a new lookup table on every call (about 10% of a one-row
    ``predict_proba`` of a ``ColumnTransformer`` pipeline, ``bench/results.md``). Object labels are
    what pandas before 3 gave every frame.

    :param features: the manifest's feature specs, in manifest order.
    """

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        import pandas as pd

        self._pandas = pd
        self._features = tuple(features)
        self._labels = pd.Index([spec.name for spec in self._features], dtype=object)
        text_dtype = pd.Series(np.array(["text"], dtype=object)).dtype
        self._text_dtype = None if text_dtype == np.dtype(object) else text_dtype

    def __call__(self, rows: Sequence[Mapping[str, object]]) -> Any:
        """The DataFrame of ``rows``.

        Returns:
            A ``pandas.DataFrame`` of shape ``(len(rows), len(features))`` with a default index.

        Raises:
            ValueError: a row lacks a feature, a value does not fit its feature's dtype (a number
                that is not whole for an integer, an integer beyond 64 bits), or an integer or
                boolean feature that is not ``nullable`` is missing; the message names the row
                index (or the feature alone) and the feature.
        """
        columns: dict[int, Any] = {}
        for position, spec in enumerate(self._features):
            column = _frame_column([_value(row, spec.name, row_index) for row_index, row in enumerate(rows)], spec)
            if spec.dtype == "string" and self._text_dtype is not None:
                column = self._pandas.array(column, dtype=self._text_dtype)
            columns[position] = column
        # Positions as keys give the constructor a RangeIndex of columns to start from (no labels to
        # convert); the labels built once replace it.
        frame = self._pandas.DataFrame(columns, index=self._pandas.RangeIndex(len(rows)))
        frame.columns = self._labels
        return frame


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
    dtype = _FRAME_DTYPES[spec.dtype, spec.nullable]
    if dtype in (np.int64, np.bool_) and None in values:
        raise ValueError(f"row {values.index(None)}: feature {spec.name!r} is missing, but its schema says it never is")
    convert = _CONVERTERS[spec.dtype]
    cells = [np.nan if value is None else convert(value, index, spec.name) for index, value in enumerate(values)]
    if dtype is object:
        column = np.empty(len(cells), dtype=object)
        column[:] = cells
        return column
    try:
        return np.array(cells, dtype=dtype)
    except OverflowError:
        raise ValueError(f"feature {spec.name!r}: a value is beyond the 64-bit integers pandas holds") from None


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


def _as_string(value: object, row_index: int, name: str) -> str:
    return str(value)


_CONVERTERS = {"float": _as_float, "integer": _as_integer, "boolean": _as_boolean, "string": _as_string}
_FRAME_DTYPES: dict[tuple[str | None, bool], Any] = {
    ("float", False): np.float64,
    ("float", True): np.float64,
    ("integer", False): np.int64,
    ("integer", True): np.float64,
    ("boolean", False): np.bool_,
    ("boolean", True): object,
    ("string", False): object,
    ("string", True): object,
}
