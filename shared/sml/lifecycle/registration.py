"""Bring your own model: a fitted estimator and the user's data in, a registered version out.

:func:`register` (``sml.register``, and ``sml register`` on the command line) takes any fitted
estimator with ``predict`` (a scikit-learn estimator or pipeline, or one with scikit-learn's API)
and the data it was trained on (the *reference*: a pandas DataFrame, or a 2-D array with
``feature_names``) with its target, plus optional held-out rows, and derives everything the
manifest holds:

* the feature schema: the model's input columns (``feature_names_in_`` when it was fitted on a
  DataFrame, else every column but the target), each typed ``float``, ``integer``, ``boolean``
  or ``string`` from the data (:func:`column_dtype`), ``nullable`` where the data has a missing
  value, numeric ranges and string categories as seen in the data;
* ``input_format``: ``dataframe`` for a model fitted on a DataFrame, ``array`` otherwise;
* the task (``binary``, ``multiclass``, ``regression``) from the model and the target
  (:func:`infer_task`), the classes from ``model.classes_``;
* the drift reference (:func:`build_reference`, sampled at ``MAX_REFERENCE_ROWS``), the held-out
  metrics (:func:`sml.lifecycle.evaluation.held_out_metrics`), the label-free estimator fitted on
  the held-out rows (CBPE's calibrator for a classifier, Direct Loss Estimation for a regression
  model: :func:`sml.lifecycle.calibration.fit_label_free_estimator`), library versions and the
  artifact's sha256.

Before anything is uploaded the reference rows (the sample the manifest keeps, at most
``MAX_REFERENCE_ROWS``) and every held-out row go through predict's own conversion
(:func:`sml.lifecycle.modeling.model_input`) into the model; registration is refused, naming the
column, row or cause, when the model cannot predict them, when the target does not fit the
model's classes (types included: ``'0'`` is not ``0``), or when the target is missing or constant.
Every refusal is a :class:`sml.core.errors.SmlError`; nothing is registered.

``sml train`` uses the same functions for the models it fits. Needs pandas (the ``train`` extra).
"""

from __future__ import annotations

import math
import platform
import secrets
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, packages_distributions
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.lifecycle.calibration import LABEL_FREE_KEY, fit_label_free_estimator
from sml.lifecycle.manifest import (
    MAX_REFERENCE_ROWS,
    TASKS,
    CategoricalReference,
    FeatureSpec,
    ModelManifest,
    NumericReference,
    ReferenceData,
)
from sml.lifecycle.evaluation import held_out_metrics
from sml.lifecycle.modeling import model_input, model_outputs
from sml.lifecycle.registry import ModelRegistry, file_sha256

# A string column with more distinct values than this gets no closed category list (an ID, free
# text): predict then accepts any string and the model's encoder decides.
MAX_CATEGORIES = 256
# Held-out fractions ``test_size`` accepts (as ``sml train --test-size``).
MIN_TEST_SIZE, MAX_TEST_SIZE = 0.05, 0.5
# Rows the refusal search tries one at a time before naming a column (the rest is bisected).
_SINGLE_ROW_SEARCH = 64

Row = dict[str, object]


@dataclass(frozen=True)
class PreparedVersion:
    """A model checked against its data, with the manifest registration derived (``sha256`` and
    ``artifact_key`` still empty: the registry fills them in when it uploads)."""

    model: Any
    manifest: ModelManifest
    notes: tuple[str, ...] = field(default=())


def register(
    model: Any,
    X_reference: Any,
    y_reference: Any,
    *,
    X_test: Any = None,
    y_test: Any = None,
    test_size: float | None = None,
    task: str | None = None,
    positive_class: Any = None,
    drift_config: str | Path | None = None,
    model_name: str | None = None,
    feature_names: Sequence[str] | None = None,
    target_name: str = "target",
    strict: bool = False,
    registry: ModelRegistry | None = None,
    seed: int = 42,
    dataset: str = "",
    on_step: Callable[[str], None] = print,
) -> ModelManifest:
    """Register a fitted model with the data it was trained on; returns the stored manifest.

    Args:
        model: a fitted estimator with ``predict`` (and ``predict_proba``, ``classes_`` for a classifier).
        X_reference: the training rows: a pandas DataFrame, or a 2-D array with ``feature_names``.
        y_reference: their target (a Series, array or list), one value per row.
        X_test, y_test: held-out rows and target for the metrics and the CBPE calibrator.
        test_size: instead of ``X_test``, hold out this fraction (0.05 to 0.5) of the reference
            rows, seeded and stratified by class (only meaningful if the model was not fitted on them).
            Without either, the version has no metrics and no calibrator.
        task: ``binary``, ``multiclass`` or ``regression``; inferred from the model and target when omitted.
        positive_class: the class F1, precision, recall and ROC AUC are about (binary; default the
            second of ``model.classes_``); matched by value or by its string.
        drift_config: a ``.toml``/``.json`` drift config file, checked against the features and stored.
        model_name: the registry's model (default ``SML_MODEL_NAME``).
        feature_names: column names of an array ``X_reference`` / ``X_test``.
        target_name: how messages name the target.
        strict: refuse when the features, classes or task differ from the current champion's.
        registry: where to register (default: the one the settings name, as the CLI uses).
        seed: for the held-out split and the reference sample.
        dataset: a description of the data stored in the manifest.
        on_step: receives one line per inference and step (``print`` by default).

    Raises:
        SmlError: a refusal (see the module docstring), naming the column, row, option or cause.
    """
    if registry is None:
        from sml.core.settings import LocalSettings, load_model_settings
        from sml.lifecycle.registry import registry_for

        registry = registry_for(load_model_settings(LocalSettings, model_name))
    elif model_name is not None and model_name != registry.model_name:
        raise SmlError(f"model_name {model_name!r} differs from the registry's model {registry.model_name!r}")
    drift_config_reader = None
    if drift_config is not None:
        from sml.monitoring.config import read_model_drift_config

        # Read now, so a broken file fails before the data is; its features are checked once they are known.
        drift_config_reader = read_model_drift_config(Path(drift_config)).for_manifest
    prepared = prepare_version(
        model,
        X_reference,
        y_reference,
        X_test=X_test,
        y_test=y_test,
        test_size=test_size,
        task=task,
        positive_class=positive_class,
        model_name=registry.model_name,
        feature_names=feature_names,
        target_name=target_name,
        seed=seed,
        dataset=dataset,
        drift_config=drift_config_reader,
    )
    for note in prepared.notes:
        on_step(note)
    check_against_champion(registry, prepared.manifest, strict=strict, on_step=on_step)
    return upload_version(registry, prepared.model, prepared.manifest, on_step=on_step)


def prepare_version(
    model: Any,
    X_reference: Any,
    y_reference: Any,
    *,
    X_test: Any = None,
    y_test: Any = None,
    test_size: float | None = None,
    task: str | None = None,
    positive_class: Any = None,
    model_name: str,
    feature_names: Sequence[str] | None = None,
    target_name: str = "target",
    reference_name: str = "reference",
    test_name: str = "test",
    seed: int = 42,
    dataset: str = "",
    estimator: str | None = None,
    params: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    drift_config: Callable[[tuple[FeatureSpec, ...]], dict[str, Any]] | None = None,
    features: tuple[FeatureSpec, ...] | None = None,
) -> PreparedVersion:
    """Everything :func:`register` does before it uploads: derive the manifest and check the model on the data.

    ``reference_name`` / ``test_name`` name the data in messages (the CLI passes file names);
    ``estimator``, ``params`` and ``extra`` override what is derived from the model (``sml train``);
    ``features`` replaces the derived schema (``sml train``'s bundled data set declares its own).

    Raises:
        SmlError: as :func:`register`.
    """
    if not hasattr(model, "predict"):
        raise SmlError(f"the model is a {type(model).__module__}.{type(model).__qualname__}, not an estimator with predict()")
    notes: list[str] = []
    reference = as_frame(X_reference, feature_names, model, reference_name)
    y_ref = as_target(y_reference, len(reference), reference_name, target_name)
    if X_test is not None or y_test is not None:
        if test_size is not None:
            raise SmlError("give held-out rows (X_test, y_test / --test) or test_size (--test-size), not both")
        if X_test is None or y_test is None:
            raise SmlError("held-out rows need both X_test and y_test")
        test = as_frame(X_test, feature_names, model, test_name)
        y_held = as_target(y_test, len(test), test_name, target_name)
    elif test_size is not None:
        reference, y_ref, test, y_held = split_rows(reference, y_ref, test_size, seed, classify=_predicts_classes(model))
        notes.append(f"held out {len(test)} of {len(test) + len(reference)} {reference_name} rows for metrics (test size {test_size})")
    else:
        test, y_held = None, None
        notes.append("no held-out rows: the version gets no metrics and no label-free performance estimate")
    columns = model_columns(model, reference, reference_name, target_name, notes)
    if test is not None:
        _check_columns(test, columns, test_name)
    resolved_task = infer_task(model, y_ref, task, target_name)
    notes.append(f"task: {resolved_task}{'' if task else ' (inferred from the model and the target; --task to set it)'}")
    input_format = "dataframe" if hasattr(model, "feature_names_in_") else "array"
    notes.append(
        f"input: {'a DataFrame (the model was fitted on one)' if input_format == 'dataframe' else 'an array in feature order'}"
    )
    if features is None:
        frames = [reference[columns]] + ([test[columns]] if test is not None else [])
        sources = [reference_name, test_name][: len(frames)]
        features = tuple(feature_spec(name, [frame[name] for frame in frames], sources) for name in columns)
    classes: tuple[Any, ...] = ()
    positive: Any = None
    if resolved_task != "regression":
        classes = model_classes(model)
        check_target_classes(y_ref, classes, reference_name, target_name)
        if y_held is not None:
            check_target_classes(y_held, classes, test_name, target_name)
        if resolved_task == "binary":
            positive = resolve_positive_class(classes, positive_class)
            notes.append(f"positive class: {positive!r}{'' if positive_class is not None else ' (the second class; --positive-class to choose)'}")
        elif positive_class is not None:
            raise SmlError(f"positive_class {positive_class!r}: only a binary model has a positive class, this one is {resolved_task}")
    elif positive_class is not None:
        raise SmlError(f"positive_class {positive_class!r}: a regression model has no classes")
    # Only the sampled rows become dicts: a reference of a million rows would not fit as them.
    sample = frame_rows(reference.iloc[sample_positions(len(reference), seed=seed)], features)
    reference_labels, _ = check_predicts(model, sample, features, input_format, reference_name)
    metrics: dict[str, float] = {}
    manifest_extra: dict[str, Any] = {"seed": seed, "n_reference": len(reference)}
    if positive is not None:
        manifest_extra["positive_class"] = positive
    if test is not None and y_held is not None:
        test_rows = frame_rows(test, features)
        labels, probabilities = check_predicts(model, test_rows, features, input_format, test_name)
        truth = list(y_held)
        if resolved_task == "regression":
            _check_numeric_target(truth, test_name, target_name)
        metrics = held_out_metrics(resolved_task, truth, labels, probabilities, classes, positive)
        manifest_extra["n_test"] = len(test_rows)
        if probabilities is not None or resolved_task == "regression":
            manifest_extra[LABEL_FREE_KEY] = fit_label_free_estimator(
                resolved_task,  # type: ignore[arg-type]
                truth=truth,
                predictions=labels,
                probabilities=probabilities,
                classes=classes,
                positive_class=positive,
                features=features,
                columns={spec.name: [row[spec.name] for row in test_rows] for spec in features},
                fitted_on=f"held-out rows ({test_name})",
            )
    manifest_drift_config = drift_config(features) if drift_config is not None else None
    if manifest_drift_config is not None:
        from sml.monitoring.config import ModelDriftConfig

        # The quality metric must be one of this task's (rmse means nothing to a classifier).
        tables = {name: value for name, value in manifest_drift_config.items() if name != "source"}
        ModelDriftConfig.from_mapping(tables, source=str(manifest_drift_config.get("source") or "drift config")).check_task(resolved_task)
    created_at = datetime.now(timezone.utc)
    manifest = ModelManifest(
        model_name=model_name,
        version=new_version(created_at),
        created_at=created_at.isoformat(),
        sha256="",
        artifact_key="",
        estimator=estimator or estimator_name(model),
        metrics=metrics,
        params=dict(params) if params is not None else model_params(model),
        classes=classes,
        features=features,
        reference=summarise_reference(sample, features, reference_labels, regression=resolved_task == "regression"),
        library_versions=library_versions(model, input_format),
        dataset=dataset,
        extra={**manifest_extra, **(extra or {})},
        drift_config=manifest_drift_config,
        task=resolved_task,  # type: ignore[arg-type]
        input_format=input_format,
    )
    return PreparedVersion(model=model, manifest=manifest, notes=tuple(notes))


def upload_version(registry: ModelRegistry, model: Any, manifest: ModelManifest, *, on_step: Callable[[str], None] = print, work_dir: Path | None = None) -> ModelManifest:
    """Write the model with joblib and register it with ``manifest``; returns the stored manifest."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="register-") as folder:
        artifact = Path(folder) / "model.joblib"
        save_artifact(model, artifact)
        on_step(f"registering {manifest.model_name} {manifest.version} in s3://{registry.bucket}/{registry.prefix}")
        return registry.register(artifact, manifest)


def check_against_champion(registry: ModelRegistry, manifest: ModelManifest, *, strict: bool, on_step: Callable[[str], None] = print) -> list[str]:
    """Print how ``manifest`` differs from the current champion's (features, classes, task); returns the lines.

    Raises:
        SmlError: ``strict`` and there is a difference (nothing is registered or promoted).
    """
    champion = registry.find_champion_version()
    if champion is None or champion == manifest.version:
        return []
    differences = schema_differences(registry.manifest(champion), manifest)
    for line in differences:
        on_step(f"differs from champion {champion}: {line}")
    if differences and strict:
        raise SmlError(
            f"{manifest.model_name} {manifest.version} differs from champion {champion} in {len(differences)} way(s) and --strict is set"
        )
    return differences


def schema_differences(old: ModelManifest, new: ModelManifest) -> list[str]:
    """What a client of ``old`` would notice in ``new``: added, removed and retyped features, classes, task.

    Each line is one difference, e.g. ``added feature 'tenure months' (integer)``, ``retyped
    feature 'plan': string -> integer``, ``classes: ['no', 'yes'] -> [0, 1]``.
    """
    before = {spec.name: spec for spec in old.features}
    after = {spec.name: spec for spec in new.features}
    lines = [f"added feature {name!r} ({after[name].dtype})" for name in after if name not in before]
    lines += [f"removed feature {name!r} ({before[name].dtype})" for name in before if name not in after]
    for name in after:
        if name in before and before[name].dtype != after[name].dtype:
            lines.append(f"retyped feature {name!r}: {before[name].dtype} -> {after[name].dtype}")
        elif name in before and before[name].nullable and not after[name].nullable:
            lines.append(f"feature {name!r} no longer accepts null")
    if old.task != new.task:
        lines.append(f"task: {old.task} -> {new.task}")
    if list(old.classes) != list(new.classes):
        lines.append(f"classes: {list(old.classes)!r} -> {list(new.classes)!r}")
    return lines


def as_frame(data: Any, feature_names: Sequence[str] | None, model: Any, source: str) -> Any:
    """``data`` as a pandas DataFrame: a DataFrame as it is, a 2-D array with ``feature_names``
    (or the model's ``feature_names_in_``) as its columns.

    Raises:
        SmlError: not 2-D, no rows, no column names, names of the wrong count or repeated.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data.reset_index(drop=True)
    else:
        array = np.asarray(data, dtype=object) if not isinstance(data, np.ndarray) else data
        if array.ndim != 2:
            raise SmlError(f"{source}: expected a DataFrame or a 2-D array, got {array.ndim} dimension(s)")
        names = list(feature_names) if feature_names is not None else _names_in(model)
        if names is None:
            raise SmlError(f"{source}: an array has no column names; pass a DataFrame or feature_names=[...]")
        if len(names) != array.shape[1]:
            raise SmlError(f"{source}: {array.shape[1]} columns but {len(names)} feature names")
        frame = pd.DataFrame(array, columns=names).infer_objects()
    repeated = [name for name, count in Counter(map(str, frame.columns)).items() if count > 1]
    if repeated:
        raise SmlError(f"{source}: column {repeated[0]!r} appears more than once")
    if not all(isinstance(name, str) for name in frame.columns):
        frame.columns = [str(name) for name in frame.columns]
    if len(frame) == 0:
        raise SmlError(f"{source}: no rows")
    return frame


def as_target(values: Any, n_rows: int, source: str, target_name: str) -> list[Any]:
    """The target as a list of plain Python values, one per row.

    Raises:
        SmlError: a different number of values than rows, or a missing value (names the first rows).
    """
    target = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(target) != n_rows:
        raise SmlError(f"{source}: {n_rows} rows but {len(target)} {target_name} values")
    import pandas as pd

    missing = np.flatnonzero(pd.isna(pd.Series(target, dtype=object)).to_numpy()).tolist()
    if missing:
        shown = ", ".join(str(index) for index in missing[:5])
        raise SmlError(f"{source}: {target_name} is missing in {len(missing)} row(s) (row {shown}{', ...' if len(missing) > 5 else ''})")
    if len(set(map(_typed, target))) < 2:
        raise SmlError(f"{source}: {target_name} is constant ({target[0]!r} in all {n_rows} rows); a model needs at least two values to be scored")
    return target


def model_columns(model: Any, frame: Any, source: str, target_name: str, notes: list[str]) -> list[str]:
    """The model's input columns, in the order it takes them: ``feature_names_in_``, else every column of ``frame``.

    Raises:
        SmlError: a column the model was fitted on is absent, the target is among them, or the
            column count differs from the model's ``n_features_in_``.
    """
    names = _names_in(model)
    if names is None:
        columns = list(frame.columns)
        expected = getattr(model, "n_features_in_", None)
        if expected is not None and int(expected) != len(columns):
            raise SmlError(f"{source}: {len(columns)} feature columns ({', '.join(map(repr, columns[:8]))}...) but the model takes {expected}")
        return columns
    _check_columns(frame, names, source)
    if target_name in names:
        raise SmlError(f"{source}: the model takes {target_name!r} as an input; the target cannot be a feature")
    ignored = [name for name in frame.columns if name not in names]
    if ignored:
        notes.append(f"{source}: column(s) {', '.join(map(repr, ignored))} are not inputs of the model and are left out")
    return names


def column_dtype(values: Any, name: str, source: str = "data") -> str:
    """The manifest dtype of a column: ``float``, ``integer``, ``boolean`` or ``string``.

    From the pandas dtype (bool, integer and float dtypes; string, categorical and object columns
    of strings), or for an object column from its non-missing values (all ``bool``, all ``int``,
    numbers, all ``str``). A column of only missing values is ``float``.

    Raises:
        SmlError: values of no single type (``1`` beside ``"a"``), or a dtype the manifest has no
            type for (dates, complex numbers); names the column and the types found.
    """
    import pandas as pd
    from pandas.api import types

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if types.is_bool_dtype(series.dtype):
        return "boolean"
    if types.is_integer_dtype(series.dtype):
        return "integer"
    if types.is_float_dtype(series.dtype):
        return "float"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return column_dtype(series.astype(object), name, source)
    if types.is_string_dtype(series.dtype) or series.dtype == object:
        present = series.dropna().tolist()
        kinds = {_value_kind(value) for value in present}
        if not kinds or kinds == {"float"} or kinds == {"integer", "float"}:
            return "float"
        if len(kinds) == 1 and next(iter(kinds)) in ("integer", "boolean", "string"):
            return next(iter(kinds))
        found = ", ".join(sorted({type(value).__name__ for value in present}))
        raise SmlError(f"{source}: column {name!r} holds values of more than one type ({found}); convert it to one type")
    raise SmlError(f"{source}: column {name!r} has dtype {series.dtype}, which a model input cannot be; convert it to numbers or strings")


def feature_spec(name: str, columns: Sequence[Any], sources: Sequence[str] = ("reference", "test")) -> FeatureSpec:
    """A feature's schema from its column in each data set (reference first, then held-out), named by ``sources``.

    Numeric features get their observed ``minimum``/``maximum``; a string feature with at most
    ``MAX_CATEGORIES`` distinct values gets them (sorted) as its closed ``categories``; a boolean
    feature ``("False", "True")``. ``nullable`` when any value is missing.

    Raises:
        SmlError: as :func:`column_dtype`, or the data sets type the column differently.
    """
    found = {source: column_dtype(column, name, source) for column, source in zip(columns, sources)}
    dtypes = set(found.values())
    if len(dtypes) > 1:
        if dtypes == {"integer", "float"}:
            dtypes = {"float"}
        else:
            shown = " but ".join(f"{dtype} in {source}" for source, dtype in found.items())
            raise SmlError(f"column {name!r} is {shown}; give it one type")
    dtype = dtypes.pop()
    import pandas as pd

    present = pd.concat([pd.Series(column).dropna() for column in columns], ignore_index=True)
    nullable = sum(len(column) for column in columns) > len(present)
    if dtype in ("float", "integer"):
        numbers = present.astype(float).to_numpy()
        if not np.isfinite(numbers).all():
            raise SmlError(f"column {name!r} holds an infinite value; a model input must be finite or missing")
        return FeatureSpec(
            name=name,
            kind="numeric",
            dtype=dtype,  # type: ignore[arg-type]
            nullable=nullable,
            minimum=float(numbers.min()) if numbers.size else None,
            maximum=float(numbers.max()) if numbers.size else None,
        )
    if dtype == "boolean":
        return FeatureSpec(name=name, kind="categorical", dtype="boolean", nullable=nullable, categories=("False", "True"))
    distinct = sorted({str(value) for value in present.unique().tolist()})
    categories = tuple(distinct) if len(distinct) <= MAX_CATEGORIES else None
    return FeatureSpec(name=name, kind="categorical", dtype="string", nullable=nullable, categories=categories)


def frame_rows(frame: Any, features: Sequence[FeatureSpec]) -> list[Row]:
    """The rows of ``frame`` as predict holds them after validation: feature name -> plain value.

    ``float`` as ``float``, ``integer`` as ``int``, ``boolean`` as ``bool``, ``string`` as ``str``,
    a missing value as ``None``.
    """
    convert = {"float": float, "integer": int, "boolean": bool, "string": str}
    columns = {
        spec.name: [None if _is_missing(value) else convert[spec.dtype](value) for value in frame[spec.name].tolist()]  # type: ignore[index]
        for spec in features
    }
    return [{spec.name: columns[spec.name][index] for spec in features} for index in range(len(frame))]


def sample_positions(n_rows: int, *, seed: int, max_rows: int = MAX_REFERENCE_ROWS) -> np.ndarray:
    """Positions of ``n_rows`` rows to keep: all of them, or beyond ``max_rows`` a uniform sample
    (without replacement, seeded), in row order."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=max_rows, replace=False))


def sample_rows(rows: Sequence[Row], *, seed: int, max_rows: int = MAX_REFERENCE_ROWS) -> list[Row]:
    """``rows``, or beyond ``max_rows`` a uniform sample of them (:func:`sample_positions`)."""
    return [rows[index] for index in sample_positions(len(rows), seed=seed, max_rows=max_rows)]


def build_reference(
    model: Any,
    rows: Sequence[Mapping[str, object]],
    features: Sequence[FeatureSpec],
    *,
    seed: int,
    max_rows: int = MAX_REFERENCE_ROWS,
    input_format: str = "array",
) -> ReferenceData:
    """Drift reference from the training rows: sorted numeric values, category counts, label counts.

    Beyond ``max_rows`` rows a uniform sample (without replacement, seeded) stands in for them.
    The labels are the model's, computed as predict computes them (:func:`model_outputs`).
    """
    sample = sample_rows(rows, seed=seed, max_rows=max_rows)
    labels, _ = model_outputs(model, model_input(sample, features, input_format))  # type: ignore[arg-type]
    return summarise_reference(sample, features, labels, regression=not hasattr(model, "classes_"))


def summarise_reference(
    rows: Sequence[Mapping[str, object]], features: Sequence[FeatureSpec], predictions: Sequence[Any], *, regression: bool
) -> ReferenceData:
    """The manifest's reference of ``rows`` (already sampled) and the model's ``predictions`` for them:
    a classifier's label counts, or a regression model's predicted numbers, sorted."""
    summaries: dict[str, NumericReference | CategoricalReference] = {}
    for spec in features:
        values = [row.get(spec.name) for row in rows]
        if spec.kind == "numeric":
            numbers = np.array([np.nan if value is None else value for value in values], dtype=float)
            present = np.sort(numbers[~np.isnan(numbers)])
            summaries[spec.name] = NumericReference(sorted_values=tuple(present.tolist()), missing=int(numbers.size - present.size))
        else:
            counts = Counter(str(value) for value in values if value is not None)
            summaries[spec.name] = CategoricalReference(counts=dict(counts), missing=len(values) - sum(counts.values()))
    if regression:
        numbers = np.sort(np.asarray(predictions, dtype=float))
        finite = numbers[np.isfinite(numbers)]
        predicted = NumericReference(sorted_values=tuple(finite.tolist()), missing=int(numbers.size - finite.size))
        return ReferenceData(n_rows=len(rows), features=summaries, label_counts={}, predictions=predicted)
    return ReferenceData(n_rows=len(rows), features=summaries, label_counts=dict(Counter(str(label) for label in predictions)))


def check_predicts(model: Any, rows: Sequence[Row], features: Sequence[FeatureSpec], input_format: str, source: str) -> tuple[list[Any], np.ndarray | None]:
    """Run ``rows`` through predict's conversion into the model; its labels (values) and probabilities.

    Raises:
        SmlError: the model raises on the rows, or gives a probability or value that is not
            finite; names the first such row and, where replacing one value with a typical one
            makes the row predictable, that column.
    """
    outputs, problem = _predict_or_problem(model, rows, features, input_format)
    if outputs is not None:
        return outputs
    index = _first_failing_row(model, rows, features, input_format)
    row_problem = _prediction_problem(model, [rows[index]], features, input_format) or problem
    column = _culprit(model, rows, index, features, input_format)
    where = f"row {index}" + (f", column {column!r} (value {rows[index][column]!r})" if column else "")
    raise SmlError(f"{source}: the model cannot predict {where} as predict would call it ({input_format} input): {row_problem}")


def model_classes(model: Any) -> tuple[Any, ...]:
    """The model's classes as plain Python values, in probability-column order.

    Raises:
        SmlError: a classifier without ``classes_``, or with classes other than strings and
            integers (booleans, floats): a class travels as a JSON string or integer (answers,
            prediction events, labels, stored predicted labels), so ``True`` or ``1.0`` would come
            back as another value or be refused as a label; the message says to refit on strings
            or integers.
    """
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise SmlError("the model has no classes_: a classifier must be fitted and expose its classes (scikit-learn API)")
    values = tuple(classes.tolist() if hasattr(classes, "tolist") else classes)
    odd = [value for value in values if isinstance(value, bool) or not isinstance(value, (str, int))]
    if odd:
        kind = "booleans" if isinstance(odd[0], bool) else f"{type(odd[0]).__name__} values"
        raise SmlError(
            f"the model's classes are {kind} {list(values)!r}; classes must be strings or integers: "
            "refit with the target as text (e.g. 'yes'/'no') or as integers (0/1)"
        )
    return values


def check_target_classes(target: Sequence[Any], classes: Sequence[Any], source: str, target_name: str) -> None:
    """Refuse a target value that is not one of the model's classes, by value and type (``'0'`` is not ``0``)."""
    known = {_typed(label) for label in classes}
    for index, value in enumerate(target):
        if _typed(value) in known:
            continue
        same_text = [label for label in classes if str(label) == str(value)]
        if same_text:
            raise SmlError(
                f"{source}: {target_name} value {value!r} in row {index} is a {type(value).__name__}, the model's class "
                f"{same_text[0]!r} is a {type(same_text[0]).__name__}; give the target the classes' type"
            )
        raise SmlError(f"{source}: {target_name} value {value!r} in row {index} is not one of the model's classes {list(classes)!r}")


def resolve_positive_class(classes: Sequence[Any], requested: Any) -> Any:
    """The binary model's positive class: ``requested`` (matched by value, then by its string), else the second class.

    Raises:
        SmlError: ``requested`` is not a class (lists them).
    """
    if requested is None:
        return classes[1]
    for label in classes:
        if _typed(label) == _typed(requested):
            return label
    for label in classes:
        if str(label) == str(requested):
            return label
    raise SmlError(f"positive class {requested!r} is not one of the model's classes {list(classes)!r}")


def infer_task(model: Any, target: Sequence[Any], task: str | None, target_name: str = "target") -> str:
    """The task: ``task`` when given (checked against the model), else a classifier's ``binary``
    (two classes) or ``multiclass``, and ``regression`` for any other model.

    A classifier is a model with ``classes_`` and ``predict_proba``, or one scikit-learn calls a
    classifier (:func:`sklearn.base.is_classifier`).

    Raises:
        SmlError: an unknown ``task``, or one the model or target cannot be (a regressor called
            ``binary``, a regression target that is not numeric).
    """
    if task is not None and task not in TASKS:
        raise SmlError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if _predicts_classes(model):
        n_classes = len(model_classes(model))
        inferred = "binary" if n_classes == 2 else "multiclass"
        if task == "regression":
            raise SmlError("task regression: the model is a classifier (it has classes_ and predict_proba)")
        if task is not None and task != inferred:
            raise SmlError(f"task {task}: the model has {n_classes} classes, so it is {inferred}")
        return inferred
    if task in ("binary", "multiclass"):
        raise SmlError(f"task {task}: the model has no classes_, so it cannot be a classifier")
    _check_numeric_target(target, "reference", target_name)
    return "regression"


def new_version(now: datetime | None = None) -> str:
    """A unique, time-sortable version name: ``v<UTC yyyymmdd-hhmmss>-<6 hex>``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"v{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def save_artifact(model: Any, path: Path) -> str:
    """Write the model with joblib to ``path``; returns the file's sha256."""
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return file_sha256(path)


def library_versions(model: Any = None, input_format: str = "array") -> dict[str, str]:
    """The versions that must match at load time, as the manifest records them: Python,
    scikit-learn, numpy, joblib, pandas for a DataFrame model, and the distribution of the
    model's own class when it is not scikit-learn's (xgboost, lightgbm)."""
    versions = {
        "python": platform.python_version(),
        "scikit-learn": installed_version("scikit-learn"),
        "numpy": installed_version("numpy"),
        "joblib": installed_version("joblib"),
    }
    if input_format == "dataframe":
        versions["pandas"] = installed_version("pandas")
    root = type(model).__module__.partition(".")[0] if model is not None else ""
    for distribution in packages_distributions().get(root, []) if root not in ("sklearn", "sml", "builtins", "__main__", "") else []:
        try:
            versions[distribution] = installed_version(distribution)
        except PackageNotFoundError:
            continue
    return versions


def estimator_name(model: Any) -> str:
    """The estimator's class name; for a pipeline, its last step's (``HistGradientBoostingClassifier``)."""
    final = model.steps[-1][1] if hasattr(model, "steps") and model.steps else model
    return type(final).__name__


def model_params(model: Any) -> dict[str, Any]:
    """The final estimator's hyper-parameters, JSON-safe (anything else as its ``repr``)."""
    final = model.steps[-1][1] if hasattr(model, "steps") and model.steps else model
    params = final.get_params(deep=False) if hasattr(final, "get_params") else {}
    return json_safe(params)


def json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
            safe[key] = value
        else:
            safe[key] = repr(value)
    return safe


def _predicts_classes(model: Any) -> bool:
    if hasattr(model, "classes_") and hasattr(model, "predict_proba"):
        return True
    from sklearn.base import is_classifier

    try:
        return bool(is_classifier(model))
    except Exception:
        # is_classifier reads estimator tags, which a third-party model may implement badly; its classes_ decides then.
        return hasattr(model, "classes_")


def _check_numeric_target(target: Sequence[Any], source: str, target_name: str) -> None:
    bad = next(((index, value) for index, value in enumerate(target) if isinstance(value, bool) or not isinstance(value, (int, float))), None)
    if bad is not None:
        raise SmlError(f"{source}: {target_name} value {bad[1]!r} in row {bad[0]} is not a number, and a regression target must be")


def split_rows(frame: Any, target: list[Any], test_size: float, seed: int, *, classify: bool) -> tuple[Any, list[Any], Any, list[Any]]:
    """``(train, train target, test, test target)``: a seeded split, stratified by class when ``classify``
    and every class has two rows; rows keep their order. Raises :class:`SmlError` for a ``test_size`` outside 0.05 to 0.5."""
    from sklearn.model_selection import train_test_split

    if not MIN_TEST_SIZE <= test_size <= MAX_TEST_SIZE:
        raise SmlError(f"test_size {test_size}: must be between {MIN_TEST_SIZE} and {MAX_TEST_SIZE}")
    stratify = [_typed(value) for value in target] if classify else None
    if stratify is not None and min(Counter(stratify).values()) < 2:
        stratify = None
    positions = np.arange(len(frame))
    train, test = train_test_split(positions, test_size=test_size, random_state=seed, stratify=None if stratify is None else [str(s) for s in stratify])
    train, test = np.sort(train), np.sort(test)
    return (
        frame.iloc[train].reset_index(drop=True),
        [target[index] for index in train],
        frame.iloc[test].reset_index(drop=True),
        [target[index] for index in test],
    )


def _check_columns(frame: Any, names: Sequence[str], source: str) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise SmlError(f"{source}: no column {missing[0]!r}, which the model was fitted on" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _names_in(model: Any) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def _prediction_problem(model: Any, rows: Sequence[Row], features: Sequence[FeatureSpec], input_format: str) -> str | None:
    """Why the model cannot predict ``rows`` as predict calls it, or ``None`` when it can."""
    return _predict_or_problem(model, rows, features, input_format)[1]


def _predict_or_problem(
    model: Any, rows: Sequence[Row], features: Sequence[FeatureSpec], input_format: str
) -> tuple[tuple[list[Any], np.ndarray | None] | None, str | None]:
    """``(outputs, None)`` when the model predicts ``rows`` as predict calls it, else ``(None, why not)``."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            labels, probabilities = model_outputs(model, model_input(rows, features, input_format))  # type: ignore[arg-type]
        except Exception as exc:
            # Registration's point is to find the model failing on its own data, whatever it raises.
            return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if len(labels) != len(rows):
        return None, f"the model returned {len(labels)} predictions for {len(rows)} rows"
    if probabilities is not None and not np.isfinite(probabilities).all():
        return None, "its probabilities are not finite"
    if probabilities is None and any(isinstance(value, float) and not math.isfinite(value) for value in labels):
        return None, "its prediction is not finite"
    return (labels, probabilities), None


def _first_failing_row(model: Any, rows: Sequence[Row], features: Sequence[FeatureSpec], input_format: str) -> int:
    """The first row the model fails on alone (bisecting down to small blocks, then row by row); 0 if none does."""
    low, high = 0, len(rows)
    while high - low > _SINGLE_ROW_SEARCH:
        middle = (low + high) // 2
        if _prediction_problem(model, rows[low:middle], features, input_format) is not None:
            high = middle
        else:
            low = middle
    for index in range(low, high):
        if _prediction_problem(model, [rows[index]], features, input_format) is not None:
            return index
    return 0


def _culprit(model: Any, rows: Sequence[Row], index: int, features: Sequence[FeatureSpec], input_format: str) -> str | None:
    """The column whose value, replaced by that column's most common value in ``rows``, makes row ``index`` predictable."""
    row = rows[index]
    for spec in features:
        typical = Counter(r[spec.name] for r in rows if r[spec.name] is not None).most_common(1)
        if not typical or typical[0][0] == row[spec.name]:
            continue
        if _prediction_problem(model, [{**row, spec.name: typical[0][0]}], features, input_format) is None:
            return spec.name
    return None


def _typed(value: Any) -> tuple[str, Any]:
    """A value with its type, so that ``'0'``, ``0``, ``0.0`` and ``False`` stay apart."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return (type(value).__name__, value)


def _is_missing(value: Any) -> bool:
    """``None``, NaN, or pandas' ``NA``/``NaT``: what pandas reads an empty cell as."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def _value_kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"

