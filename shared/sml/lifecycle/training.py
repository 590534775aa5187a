"""Training: the data set, the pipeline, metrics, reference data, and train-then-register.

Data set: scikit-learn's Wisconsin breast cancer data (569 biopsies, ships with scikit-learn, no
download). Inputs are the ten "mean ..." measurements, renamed to snake_case (``mean_radius``),
plus one categorical feature, ``concavity_grade`` (low / moderate / high): the tertile of the
"worst concavity" measurement, with cut points from the training split only. "Worst" values are
otherwise withheld from the model, so the grade adds information instead of restating an input.
Labels are ``"benign"`` and ``"malignant"``; ``malignant`` is the positive class for F1,
precision, recall and ROC AUC.

The pipeline takes the object matrix of :func:`sml.lifecycle.modeling.rows_to_matrix` (columns in manifest
order) and imputes missing values, so every feature is nullable and predict needs no pandas.

The user's own data (``sml train --data FILE --target COLUMN``, :func:`train_on_data`): the same
pipeline with a classifier (``ESTIMATORS``) or, for a regression target, a regressor
(``REGRESSORS``), fitted on a split of the file; the version is derived and checked by
:func:`sml.lifecycle.registration.prepare_version` like any registered model. The task is
inferred from the target unless given (:func:`target_task`).
"""

from __future__ import annotations

import ast
import importlib
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.lifecycle.manifest import FeatureSpec, ModelManifest, ReferenceData
from sml.lifecycle.evaluation import held_out_metrics
from sml.lifecycle.modeling import model_outputs, rows_to_matrix
from sml.lifecycle.calibration import fit_label_free_estimator
from sml.lifecycle.registration import (
    PreparedVersion,
    build_reference,
    json_safe,
    library_versions,
    new_version,
    save_artifact,
)
from sml.lifecycle.registry import ModelRegistry
from sml.lifecycle.tracking import TrackingOptions, tracked_run

DATASET = "sklearn.datasets.load_breast_cancer"
NUMERIC_SOURCES = (
    "mean radius",
    "mean texture",
    "mean perimeter",
    "mean area",
    "mean smoothness",
    "mean compactness",
    "mean concavity",
    "mean concave points",
    "mean symmetry",
    "mean fractal dimension",
)
GRADE_FEATURE = "concavity_grade"
GRADE_SOURCE = "worst concavity"
GRADE_LEVELS = ("low", "moderate", "high")
POSITIVE_CLASS = "malignant"
# --estimator name -> (module, class, this project's defaults; random_state always comes from --seed)
ESTIMATORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier", {"n_estimators": 200}),
    "gradient_boosting": ("sklearn.ensemble", "GradientBoostingClassifier", {}),
}
# The regressor variants, for a regression task.
REGRESSORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ridge": ("sklearn.linear_model", "Ridge", {}),
    "random_forest": ("sklearn.ensemble", "RandomForestRegressor", {"n_estimators": 200}),
    "gradient_boosting": ("sklearn.ensemble", "GradientBoostingRegressor", {}),
}
ESTIMATORS_BY_TASK = {"binary": ESTIMATORS, "multiclass": ESTIMATORS, "regression": REGRESSORS}
DEFAULT_ESTIMATOR = {"binary": "logistic_regression", "multiclass": "logistic_regression", "regression": "ridge"}
# A target with at most this many distinct whole numbers is taken for classes, not a quantity.
MAX_INFERRED_CLASSES = 20
# At least ~28 rows on either side of the split, so every metric has both classes to score.
MIN_TEST_SIZE, MAX_TEST_SIZE = 0.05, 0.5

Row = dict[str, object]


@dataclass(frozen=True)
class TrainingConfig:
    """What to train: the estimator, its hyper-parameters and how to split the data."""

    model_name: str
    estimator: str = "logistic_regression"
    params: Mapping[str, Any] = field(default_factory=dict)
    test_size: float = 0.25
    seed: int = 42
    task: str = "binary"

    def __post_init__(self) -> None:
        _estimator_class(self.estimator, self.task)
        if not MIN_TEST_SIZE <= self.test_size <= MAX_TEST_SIZE:
            raise SmlError(f"--test-size {self.test_size}: must be between {MIN_TEST_SIZE} and {MAX_TEST_SIZE}")


@dataclass(frozen=True)
class DatasetSplit:
    """Request-shaped rows (feature name -> value) and string labels, split for training and testing."""

    train_rows: list[Row]
    train_labels: list[str]
    test_rows: list[Row]
    test_labels: list[str]
    grade_cut_points: tuple[float, float]


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and everything its manifest records about it."""

    pipeline: Any
    config: TrainingConfig
    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...]
    metrics: dict[str, float]
    params: dict[str, Any]
    reference: ReferenceData
    extra: dict[str, Any]


def feature_name(source: str) -> str:
    """The snake_case feature name for a scikit-learn column name (``mean radius`` -> ``mean_radius``)."""
    return source.replace(" ", "_")


def load_dataset_split(test_size: float = 0.25, seed: int = 42) -> DatasetSplit:
    """The breast cancer data as rows of this model's features, split stratified by label."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    columns = [list(data.feature_names).index(source) for source in (*NUMERIC_SOURCES, GRADE_SOURCE)]
    labels = np.asarray(data.target_names)[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data[:, columns], labels, test_size=test_size, random_state=seed, stratify=labels
    )
    low, high = np.quantile(x_train[:, -1], [1 / 3, 2 / 3])
    cut_points = (float(low), float(high))
    return DatasetSplit(
        train_rows=_rows(x_train, cut_points),
        train_labels=[str(label) for label in y_train],
        test_rows=_rows(x_test, cut_points),
        test_labels=[str(label) for label in y_test],
        grade_cut_points=cut_points,
    )


def feature_schema(rows: Sequence[Mapping[str, object]]) -> tuple[FeatureSpec, ...]:
    """The manifest's feature schema, with numeric ranges observed in ``rows`` (the training split)."""
    numeric = []
    for source in NUMERIC_SOURCES:
        values = np.array([np.nan if row.get(feature_name(source)) is None else row[feature_name(source)] for row in rows], dtype=float)
        numeric.append(
            FeatureSpec(
                name=feature_name(source),
                kind="numeric",
                nullable=True,
                minimum=float(np.nanmin(values)),
                maximum=float(np.nanmax(values)),
            )
        )
    grade = FeatureSpec(name=GRADE_FEATURE, kind="categorical", nullable=True, categories=GRADE_LEVELS)
    return (*numeric, grade)


def build_pipeline(features: Sequence[FeatureSpec], estimator: str, params: Mapping[str, Any], seed: int, task: str = "binary") -> Any:
    """An unfitted pipeline: per-kind imputation and encoding by column index, then ``estimator``.

    Raises:
        SmlError: unknown ``estimator`` or parameter name (names ``--estimator`` / ``--param``).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [index for index, spec in enumerate(features) if spec.kind == "numeric"]
    categorical = [index for index, spec in enumerate(features) if spec.kind == "categorical"]
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(missing_values=None, strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", make_estimator(estimator, params, seed, task))])


def make_estimator(estimator: str, params: Mapping[str, Any], seed: int, task: str = "binary") -> Any:
    """The ``task``'s estimator by ``--estimator`` name (a classifier, or a regressor for
    ``regression``) with this project's defaults, overridden by ``params``.

    Raises:
        SmlError: unknown estimator or parameter name (names ``--estimator`` / ``--param``).
    """
    cls, defaults = _estimator_class(estimator, task)
    _check_param_names(cls, params)
    return cls(**{**defaults, "random_state": seed, **params})


def parse_params(estimator: str, assignments: Sequence[str], task: str = "binary") -> dict[str, Any]:
    """``KEY=VALUE`` strings into typed hyper-parameters for ``estimator``.

    Values are Python literals (``0.5``, ``200``, ``None``, ``True``; ``true``/``false``/``none``
    too); anything else stays a string (``balanced``). An integer given where the estimator's
    default is a float becomes a float. scikit-learn validates the values when it fits.

    Raises:
        SmlError: an assignment without ``=``, an unknown estimator or key (names the option).
    """
    cls, _ = _estimator_class(estimator, task)
    valid = cls().get_params()
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise SmlError(f"--param {assignment!r}: expected KEY=VALUE, e.g. --param C=0.5")
        _check_param_names(cls, [key])
        value = _literal(text.strip())
        if isinstance(valid[key], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        params[key] = value
    return params


def train_model(config: TrainingConfig) -> TrainedModel:
    """Fit the pipeline on the training split and evaluate it on the held-out split.

    Raises:
        SmlError: bad estimator, parameters or test size (names the option).
    """
    split = load_dataset_split(config.test_size, config.seed)
    features = feature_schema(split.train_rows)
    pipeline = build_pipeline(features, config.estimator, config.params, config.seed)
    try:
        pipeline.fit(rows_to_matrix(split.train_rows, features), np.asarray(split.train_labels))
    except ValueError as exc:
        # The data set is fixed and clean, so a fit that rejects its input is rejecting the parameters.
        raise SmlError(f"--estimator {config.estimator} with --param {dict(config.params)}: {exc}") from None
    classes = tuple(str(label) for label in pipeline.classes_)
    predicted, probabilities = model_outputs(pipeline, rows_to_matrix(split.test_rows, features))
    metrics = held_out_metrics("binary", split.test_labels, predicted, probabilities, classes, POSITIVE_CLASS)
    calibration = fit_label_free_estimator(
        "binary", truth=split.test_labels, predictions=predicted, probabilities=probabilities, classes=classes,
        positive_class=POSITIVE_CLASS, fitted_on="held-out test split",
    )
    reference = build_reference(pipeline, split.train_rows, features, seed=config.seed)
    return TrainedModel(
        pipeline=pipeline,
        config=config,
        features=features,
        classes=classes,
        metrics=metrics,
        params=json_safe(pipeline.named_steps["model"].get_params()),
        reference=reference,
        extra={
            "positive_class": POSITIVE_CLASS,
            "test_size": config.test_size,
            "seed": config.seed,
            "n_train": len(split.train_rows),
            "n_test": len(split.test_rows),
            "calibration": calibration,
            "derived_features": {
                GRADE_FEATURE: {"source": GRADE_SOURCE, "levels": list(GRADE_LEVELS), "cut_points": list(split.grade_cut_points)}
            },
        },
    )


def build_manifest(
    trained: TrainedModel,
    *,
    version: str,
    sha256: str,
    wandb_run_path: str | None,
    created_at: datetime,
    drift_config: dict[str, Any] | None = None,
) -> ModelManifest:
    """The manifest for a trained model; the registry fills in ``artifact_key`` when it registers it."""
    return ModelManifest(
        model_name=trained.config.model_name,
        version=version,
        created_at=created_at.astimezone(timezone.utc).isoformat(),
        sha256=sha256,
        artifact_key="",
        estimator=trained.config.estimator,
        metrics=trained.metrics,
        params=trained.params,
        classes=trained.classes,
        features=trained.features,
        reference=trained.reference,
        library_versions=library_versions(trained.pipeline),
        wandb_run_path=wandb_run_path,
        dataset=DATASET,
        extra=trained.extra,
        drift_config=drift_config,
    )


def train_and_register(
    config: TrainingConfig,
    *,
    registry: ModelRegistry,
    tracking: TrackingOptions,
    work_dir: Path,
    on_step: Callable[[str], None] = lambda step: None,
    drift_config: Callable[[tuple[FeatureSpec, ...]], dict[str, Any]] | None = None,
) -> ModelManifest:
    """Train on the bundled data set, log the run to W&B, and register the model: the whole of ``sml train``.

    Args:
        config: what to train.
        registry: where the new version goes (it does not become the champion).
        tracking: the W&B mode and local folder.
        work_dir: a folder for the artifact until it is uploaded (a temporary folder inside it).
        on_step: called with a short description before each step, for progress display.
        drift_config: given the trained model's features, checks the model's drift config against
            them and returns it as the manifest stores it (``sml train --drift-config``); it runs
            before anything is logged or uploaded, so a config that does not fit registers nothing.

    Returns:
        The registered manifest.
    """
    on_step(f"fitting {config.estimator} on {DATASET}")
    trained = train_model(config)
    created_at = datetime.now(timezone.utc)
    manifest = build_manifest(
        trained,
        version=new_version(created_at),
        sha256="",
        wandb_run_path=None,
        created_at=created_at,
        drift_config=drift_config(trained.features) if drift_config is not None else None,
    )
    return track_and_register(trained.pipeline, manifest, config, registry=registry, tracking=tracking, work_dir=work_dir, on_step=on_step)


def train_on_data(
    config: TrainingConfig,
    features: Any,
    target: Any,
    *,
    source: str,
    target_name: str,
    drift_config: Callable[[tuple[FeatureSpec, ...]], dict[str, Any]] | None = None,
) -> PreparedVersion:
    """Fit the built-in pipeline of ``config.task`` on the user's data and derive its version.

    Args:
        config: the estimator, parameters, split and task (see :func:`target_task`).
        features, target: the data's feature columns (a DataFrame) and target column.
        source: the data's name (its file) for the manifest and messages.
        target_name: the target column's name, for messages.

    Returns:
        The fitted pipeline with its manifest (not yet uploaded): an ``array`` model whose schema
        comes from the data (every feature nullable: the pipeline imputes).

    Raises:
        SmlError: the data does not fit (as :func:`sml.lifecycle.registration.prepare_version`),
            or the estimator rejects its parameters on it.
    """
    from sml.lifecycle.registration import as_frame, as_target, feature_spec, frame_rows, prepare_version, split_rows

    frame = as_frame(features, None, None, source)
    labels = as_target(target, len(frame), source, target_name)
    if config.task != "regression":
        labels = class_labels(labels)
    train, y_train, test, y_test = split_rows(frame, labels, config.test_size, config.seed, classify=config.task != "regression")
    schema = tuple(replace(feature_spec(name, [train[name], test[name]], ["training split", "test split"]), nullable=True) for name in frame.columns)
    pipeline = build_pipeline(schema, config.estimator, config.params, config.seed, config.task)
    try:
        pipeline.fit(rows_to_matrix(frame_rows(train, schema), schema), np.asarray(y_train))
    except ValueError as exc:
        raise SmlError(f"--estimator {config.estimator} with --param {dict(config.params)} on {source}: {' '.join(str(exc).split())}") from None
    return prepare_version(
        pipeline,
        train,
        y_train,
        X_test=test,
        y_test=y_test,
        task=config.task,
        model_name=config.model_name,
        target_name=target_name,
        reference_name=f"{source} (training split)",
        test_name=f"{source} (test split)",
        seed=config.seed,
        dataset=source,
        estimator=config.estimator,
        params=json_safe(pipeline.named_steps["model"].get_params()),
        extra={"test_size": config.test_size, "n_train": len(train), "target": target_name},
        drift_config=drift_config,
        features=schema,
    )


def class_labels(labels: Sequence[Any]) -> list[Any]:
    """A classification target as the classes a model may have (strings or integers).

    A boolean becomes its text as a CSV file holds it (``True`` -> ``"True"``) and a whole float
    its integer (``1.0`` -> ``1``), so that the fitted model's classes travel as JSON and labels
    sent later (``sml feedback``, ``POST /feedback``) match them; other values are kept.
    """
    return [
        str(value) if isinstance(value, (bool, np.bool_)) else int(value) if isinstance(value, float) and value.is_integer() else value
        for value in labels
    ]


def target_task(target: Any, task: str | None = None) -> str:
    """The task a built-in model fits for ``target``: ``task`` when given, else ``regression`` for a
    numeric target with fractions or more than ``MAX_INFERRED_CLASSES`` distinct whole numbers,
    else ``binary`` (two values) or ``multiclass``.

    Raises:
        SmlError: an unknown task, or ``regression`` for a target that is not numeric.
    """
    from sml.lifecycle.manifest import TASKS

    values = [value for value in (target.tolist() if hasattr(target, "tolist") else list(target))]
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
    if task is not None:
        if task not in TASKS:
            raise SmlError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
        if task == "regression" and not numeric:
            raise SmlError("--task regression: the target is not numeric")
        return task
    distinct = set(values)
    if numeric and (any(float(value) != int(value) for value in distinct if value == value) or len(distinct) > MAX_INFERRED_CLASSES):
        return "regression"
    return "binary" if len(distinct) <= 2 else "multiclass"


def track_and_register(
    model: Any,
    manifest: ModelManifest,
    config: TrainingConfig,
    *,
    registry: ModelRegistry,
    tracking: TrackingOptions,
    work_dir: Path,
    on_step: Callable[[str], None] = lambda step: None,
) -> ModelManifest:
    """Log the training run to W&B (config, metrics, model) and register ``model`` with ``manifest``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="train-") as folder:
        artifact = Path(folder) / "model.joblib"
        sha256 = save_artifact(model, artifact)
        on_step(f"logging run {manifest.version} to W&B ({tracking.mode})")
        run_config = {
            "model_name": manifest.model_name,
            "version": manifest.version,
            "estimator": config.estimator,
            "task": manifest.task,
            "params": manifest.params,
            "test_size": config.test_size,
            "seed": config.seed,
            "dataset": manifest.dataset,
            "features": manifest.feature_names,
        }
        with tracked_run(tracking, name=manifest.version, config=run_config) as run:
            run.log_metrics(manifest.metrics)
            run.log_model(artifact, name=manifest.model_name, version=manifest.version, metadata={"sha256": sha256, "metrics": manifest.metrics})
        on_step(f"registering {manifest.version} in s3://{registry.bucket}/{registry.prefix}")
        return registry.register(artifact, replace(manifest, sha256=sha256, wandb_run_path=run.path))


def _rows(matrix: np.ndarray, cut_points: tuple[float, float]) -> list[Row]:
    names = [feature_name(source) for source in NUMERIC_SOURCES]
    rows: list[Row] = []
    for values in matrix:
        row: Row = {name: float(value) for name, value in zip(names, values[:-1], strict=True)}
        row[GRADE_FEATURE] = GRADE_LEVELS[int(np.searchsorted(cut_points, values[-1], side="right"))]
        rows.append(row)
    return rows


def _estimator_class(estimator: str, task: str = "binary") -> tuple[type, dict[str, Any]]:
    choices = ESTIMATORS_BY_TASK[task]
    if estimator not in choices:
        raise SmlError(f"--estimator {estimator!r}: for a {task} model choose one of {', '.join(choices)}")
    module, name, defaults = choices[estimator]
    return getattr(importlib.import_module(module), name), defaults


def _check_param_names(cls: type, names: Iterable[str]) -> None:
    valid = cls().get_params()
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise SmlError(f"--param {unknown[0]}: {cls.__name__} has no such parameter; valid: {', '.join(sorted(valid))}")


def _literal(text: str) -> Any:
    lowered = {"true": True, "false": False, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
