"""A user's own models, as the bring-your-own-model tests need them: a churn CSV read with pandas
(float, integer, boolean and string columns, missing values, names with spaces and capitals) and
a ``ColumnTransformer`` selecting those columns by name, a regression model on scikit-learn's
diabetes data, and the manifests registration would write for them (built here by hand, so the
tests need nothing of registration).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sml.lifecycle.manifest import CategoricalReference, FeatureSpec, ModelManifest, NumericReference, ReferenceData
from sml.lifecycle.registry import ModelRegistry
from sml.lifecycle.training import library_versions, save_artifact

CHURN_FEATURES = (
    FeatureSpec("Monthly Charges", "numeric", nullable=True, dtype="float"),
    FeatureSpec("Tenure Months", "numeric", dtype="integer"),
    FeatureSpec("Support Calls", "numeric", nullable=True, dtype="integer"),
    FeatureSpec("Has Partner", "categorical", dtype="boolean", categories=("False", "True")),
    FeatureSpec("Paperless", "categorical", nullable=True, dtype="boolean", categories=("False", "True")),
    FeatureSpec("Contract", "categorical", nullable=True, dtype="string"),
)
CHURN_CLASSES = ("no", "yes")


@cache
def churn_csv(rows: int = 400) -> str:
    """A churn CSV as a user would have it: empty cells for missing values, True/False columns."""
    import pandas as pd

    rng = np.random.default_rng(7)
    charges = rng.normal(60, 15, rows).round(2)
    tenure = rng.integers(0, 72, rows)
    calls = rng.integers(0, 6, rows).astype(float)
    partner = rng.random(rows) < 0.5
    paperless = np.where(rng.random(rows) < 0.5, "True", "False").astype(object)
    contract = rng.choice(["month-to-month", "one year", "two year"], rows).astype(object)
    charges[::11] = np.nan
    calls[::7] = np.nan
    paperless[::5] = ""
    contract[::6] = ""
    risk = 0.04 * charges - 0.05 * tenure + 0.6 * np.nan_to_num(calls) + (contract == "month-to-month") * 1.5
    churned = np.where(np.nan_to_num(risk, nan=2.0) + rng.normal(0, 1, rows) > 2.0, "yes", "no")
    frame = pd.DataFrame(
        {
            "Monthly Charges": charges,
            "Tenure Months": tenure,
            "Support Calls": calls,
            "Has Partner": partner,
            "Paperless": paperless,
            "Contract": contract,
            "churned": churned,
        }
    )
    return frame.to_csv(index=False)


def churn_frame() -> Any:
    """The CSV as the user's script reads it: ``pandas.read_csv`` with its defaults."""
    import pandas as pd

    return pd.read_csv(io.StringIO(churn_csv()))


def churn_rows() -> list[dict[str, Any]]:
    """The CSV's feature rows as JSON would carry them: NaN as None, booleans as bool, integers as int."""
    frame = churn_frame()
    rows = []
    for record in frame.drop(columns="churned").to_dict("records"):
        row: dict[str, Any] = {}
        for spec in CHURN_FEATURES:
            value = record[spec.name]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                row[spec.name] = None
            elif spec.dtype == "integer":
                row[spec.name] = int(value)
            elif spec.dtype == "boolean":
                row[spec.name] = bool(value)
            elif spec.dtype == "float":
                row[spec.name] = float(value)
            else:
                row[spec.name] = str(value)
        rows.append(row)
    return rows


@cache
def churn_model() -> Any:
    """The user's pipeline: columns selected by name, fitted on the DataFrame ``read_csv`` gave."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = churn_frame()
    numeric = ["Monthly Charges", "Tenure Months", "Support Calls"]
    categorical = ["Has Partner", "Paperless", "Contract"]
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), categorical),
        ]
    )
    model = make_pipeline(preprocess, HistGradientBoostingClassifier(max_iter=30, random_state=0))
    return model.fit(frame.drop(columns="churned"), frame["churned"])


@cache
def diabetes_model() -> Any:
    """A regression model fitted on an array (scikit-learn's diabetes data, ten float features)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    data = load_diabetes()
    return Ridge(alpha=0.5).fit(data.data, data.target)


def diabetes_features() -> tuple[FeatureSpec, ...]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return tuple(
        FeatureSpec(name, "numeric", minimum=float(data.data[:, index].min()), maximum=float(data.data[:, index].max()))
        for index, name in enumerate(data.feature_names)
    )


def diabetes_rows() -> list[dict[str, Any]]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return [dict(zip(data.feature_names, map(float, row))) for row in data.data]


def reference_of(rows: list[dict[str, Any]], features: tuple[FeatureSpec, ...], predictions: list[Any]) -> ReferenceData:
    """The drift reference registration builds: sorted numbers, category counts (booleans as ``"True"``/``"False"``)."""
    summaries: dict[str, NumericReference | CategoricalReference] = {}
    for spec in features:
        values = [row[spec.name] for row in rows]
        present = [value for value in values if value is not None]
        if spec.kind == "numeric":
            summaries[spec.name] = NumericReference(sorted_values=tuple(sorted(float(value) for value in present)), missing=len(values) - len(present))
        else:
            summaries[spec.name] = CategoricalReference(counts=dict(Counter(map(str, present))), missing=len(values) - len(present))
    return ReferenceData(n_rows=len(rows), features=summaries, label_counts=dict(Counter(map(str, predictions))))


def manifest_of(
    model_name: str, version: str, *, model: Any, features: tuple[FeatureSpec, ...], rows: list[dict[str, Any]], task: str, input_format: str
) -> ModelManifest:
    """The manifest registration would write for ``model`` (the registry fills in the sha256)."""
    from sml.lifecycle.modeling import model_input

    predictions = model.predict(model_input(rows, features, input_format)).tolist()
    return ModelManifest(
        model_name=model_name,
        version=version,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sha256="",
        artifact_key="",
        estimator=type(model).__name__,
        metrics={},
        params={},
        classes=tuple(model.classes_.tolist()) if task != "regression" else (),
        features=features,
        reference=reference_of(rows, features, predictions),
        library_versions=library_versions(),
        task=task,  # type: ignore[arg-type]
        input_format=input_format,  # type: ignore[arg-type]
    )


def churn_manifest(version: str = "v1", *, input_format: str = "dataframe", model_name: str = "churn") -> ModelManifest:
    """The churn model's manifest; ``input_format="array"`` is the mistake of registering it as an array model."""
    manifest = manifest_of(model_name, version, model=churn_model(), features=CHURN_FEATURES, rows=churn_rows(), task="binary", input_format="dataframe")
    return replace(manifest, input_format=input_format)  # type: ignore[arg-type]


def diabetes_manifest(version: str = "v1", *, model_name: str = "diabetes") -> ModelManifest:
    return manifest_of(
        model_name, version, model=diabetes_model(), features=diabetes_features(), rows=diabetes_rows(), task="regression", input_format="array"
    )


def register_and_promote(s3: Any, ssm: Any, *, bucket: str, app_name: str, work_dir: Path, model: Any, manifest: ModelManifest) -> ModelManifest:
    """Register ``model`` under ``manifest`` and make it the champion; returns the stored manifest."""
    artifact = work_dir / f"{manifest.model_name}-{manifest.version}.joblib"
    save_artifact(model, artifact)
    registry = ModelRegistry(s3, ssm, bucket=bucket, app_name=app_name, model_name=manifest.model_name)
    stored = registry.register(artifact, manifest)
    registry.promote(manifest.version)
    return stored
