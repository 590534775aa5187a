"""The model manifest: the registry's source of truth for one registered model version.

Stored as ``models/<name>/<version>/manifest.json`` next to ``model.joblib``. Predict validates
requests against :attr:`ModelManifest.features`; drift compares production windows with
:attr:`ModelManifest.reference`. Pure data, no I/O.

Reference data: the training split's values per feature, sorted, with the missing count
(numeric), or category counts (categorical), plus the model's predicted-label counts on that
split. Sorted values make the KS test a ``searchsorted`` away and are capped at
``MAX_REFERENCE_ROWS`` rows (a uniform sample beyond that), which bounds the manifest's size
while keeping the empirical distribution exact up to the cap.

Model quality: ``metrics`` are the held-out scores the weekly run compares realized performance
with; ``extra["calibration"]`` (when present) is the CBPE calibrator fitted on the held-out split,
as JSON thresholds (:mod:`sml.lifecycle.calibration`), never a pickle.

Task and input: ``task`` is ``binary``, ``multiclass`` or ``regression`` (every stage reads it:
predict's answer, label validation, the prediction's drift test, quality metrics, the label-free
estimate); manifests written before it existed get it from their classes (two: binary, more:
multiclass, none: regression). ``input_format`` says how predict hands rows to the model:
``array`` (an object array in feature order; pandas is never imported) or ``dataframe`` (a
DataFrame with the features' columns and dtypes, for models fitted on one, e.g. a
``ColumnTransformer`` selecting columns by name). ``FeatureSpec.dtype`` is the column's type as
the user's data had it (``float``, ``integer``, ``boolean``, ``string``); ``kind`` is how drift
and data quality treat it (``numeric`` for float and integer, ``categorical`` for boolean and
string).

Booleans: a ``boolean`` feature's values are JSON ``true``/``false`` in requests and events (Python
``bool``); wherever a value is a category (``FeatureSpec.categories``, the reference's category
counts, drift, data quality) it is its ``str()``, ``"True"`` or ``"False"``, as registration
writes the reference and as drift counts the window's values.

Drift configuration: ``drift_config`` (optional) is the model's own drift floors and thresholds,
as ``sml train --drift-config FILE`` checked them against the feature schema
(:mod:`sml.monitoring.config` reads it); manifests without it (older ones included) leave the drift
job on the deployment's settings. The manifest keeps it as plain JSON so predict, which never
reads it, needs nothing more to parse a manifest.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sml.core.errors import SmlError

MANIFEST_FORMAT = 1
MAX_REFERENCE_ROWS = 10_000
FeatureKind = Literal["numeric", "categorical"]
FeatureDtype = Literal["float", "integer", "boolean", "string"]
Task = Literal["binary", "multiclass", "regression"]
InputFormat = Literal["array", "dataframe"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
INPUT_FORMATS: tuple[InputFormat, ...] = ("array", "dataframe")
FEATURE_DTYPES: tuple[FeatureDtype, ...] = ("float", "integer", "boolean", "string")
_DTYPE_KIND: dict[str, FeatureKind] = {"float": "numeric", "integer": "numeric", "boolean": "categorical", "string": "categorical"}


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature of the model, as predict validates it and drift tests it.

    ``dtype`` defaults to ``float`` for a numeric and ``string`` for a categorical feature; a
    ``dtype`` whose kind differs from ``kind`` raises :class:`ValueError`.
    """

    name: str
    kind: FeatureKind
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    dtype: FeatureDtype | None = None

    def __post_init__(self) -> None:
        if self.dtype is None:
            object.__setattr__(self, "dtype", "float" if self.kind == "numeric" else "string")
        elif self.dtype not in _DTYPE_KIND:
            raise ValueError(f"feature {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(FEATURE_DTYPES)}")
        elif _DTYPE_KIND[self.dtype] != self.kind:
            raise ValueError(f"feature {self.name!r}: dtype {self.dtype!r} is not a {self.kind} type")


@dataclass(frozen=True)
class NumericReference:
    sorted_values: tuple[float, ...]
    missing: int = 0


@dataclass(frozen=True)
class CategoricalReference:
    counts: dict[str, int]
    missing: int = 0


@dataclass(frozen=True)
class ReferenceData:
    """Training reference for drift: ``n_rows`` rows summarised per feature and for the prediction.

    ``label_counts`` are a classifier's predicted labels on those rows; ``predictions`` a regression
    model's predicted numbers, sorted (``None`` for a classifier, and for manifests written before
    it existed: their prediction is then not tested for drift).
    """

    n_rows: int
    features: dict[str, NumericReference | CategoricalReference]
    label_counts: dict[str, int]
    predictions: NumericReference | None = None


@dataclass(frozen=True)
class ModelManifest:
    model_name: str
    version: str
    created_at: str
    sha256: str
    artifact_key: str
    estimator: str
    metrics: dict[str, float]
    params: dict[str, Any]
    classes: tuple[str | int, ...]
    features: tuple[FeatureSpec, ...]
    reference: ReferenceData
    library_versions: dict[str, str]
    wandb_run_path: str | None = None
    dataset: str = ""
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    drift_config: dict[str, Any] | None = None
    task: Task | None = None
    input_format: InputFormat = "array"

    def __post_init__(self) -> None:
        if self.task is None:
            object.__setattr__(self, "task", task_from_classes(self.classes))
        elif self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format {self.input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
        if self.task == "regression" and self.classes:
            raise ValueError(f"a regression model has no classes, got {list(self.classes)}")
        if self.task in ("binary", "multiclass") and len(self.classes) < 2:
            raise ValueError(f"a {self.task} model needs at least two classes, got {list(self.classes)}")
        if self.task == "binary" and len(self.classes) != 2:
            raise ValueError(f"a binary model has exactly two classes, got {len(self.classes)}")

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]

    def to_json(self) -> str:
        data = asdict(self)
        data["reference"] = {
            "n_rows": self.reference.n_rows,
            "label_counts": self.reference.label_counts,
            **({"predictions": asdict(self.reference.predictions)} if self.reference.predictions is not None else {}),
            "features": {
                name: ({"kind": "numeric", **asdict(ref)} if isinstance(ref, NumericReference) else {"kind": "categorical", **asdict(ref)})
                for name, ref in self.reference.features.items()
            },
        }
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest.json") -> ModelManifest:
        """Parse and check a manifest; any problem raises :class:`SmlError` naming ``source`` and the key."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SmlError(f"{source}: not valid JSON ({exc})") from None
        try:
            if data.get("format") != MANIFEST_FORMAT:
                raise SmlError(f"{source}: unsupported manifest format {data.get('format')!r}")
            features = tuple(
                FeatureSpec(
                    name=spec["name"],
                    kind=_kind(spec["kind"]),
                    nullable=bool(spec.get("nullable", False)),
                    categories=tuple(spec["categories"]) if spec.get("categories") is not None else None,
                    minimum=spec.get("minimum"),
                    maximum=spec.get("maximum"),
                    dtype=spec.get("dtype"),
                )
                for spec in data["features"]
            )
            reference = data["reference"]
            manifest = cls(
                model_name=data["model_name"],
                version=data["version"],
                created_at=data["created_at"],
                sha256=data["sha256"],
                artifact_key=data["artifact_key"],
                estimator=data["estimator"],
                metrics={key: float(value) for key, value in data["metrics"].items()},
                params=data.get("params", {}),
                classes=tuple(data["classes"]),
                features=features,
                reference=ReferenceData(
                    n_rows=int(reference["n_rows"]),
                    label_counts={str(k): int(v) for k, v in reference["label_counts"].items()},
                    features={name: _reference(ref) for name, ref in reference["features"].items()},
                    predictions=_reference({"kind": "numeric", **reference["predictions"]}) if reference.get("predictions") is not None else None,
                ),
                library_versions=data["library_versions"],
                wandb_run_path=data.get("wandb_run_path"),
                dataset=data.get("dataset", ""),
                extra=data.get("extra", {}),
                drift_config=_drift_config(data.get("drift_config")),
                task=data.get("task"),
                input_format=data.get("input_format", "array"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SmlError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from None
        missing = [spec.name for spec in features if spec.name not in manifest.reference.features]
        if missing:
            raise SmlError(f"{source}: no reference data for feature(s) {', '.join(missing)}")
        return manifest


def task_from_classes(classes: tuple[Any, ...] | list[Any]) -> Task:
    """The task a manifest without a ``task`` field had: two classes binary, more multiclass, none regression."""
    if not classes:
        return "regression"
    return "binary" if len(classes) == 2 else "multiclass"


def _drift_config(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"drift_config must be a JSON object, got {type(value).__name__}")
    return value


def _kind(value: str) -> FeatureKind:
    if value not in ("numeric", "categorical"):
        raise ValueError(f"feature kind {value!r} is not numeric or categorical")
    return value  # type: ignore[return-value]


def _reference(raw: dict[str, Any]) -> NumericReference | CategoricalReference:
    if raw["kind"] == "numeric":
        values = tuple(float(value) for value in raw["sorted_values"])
        if any(not math.isfinite(value) for value in values) or list(values) != sorted(values):
            raise ValueError("numeric reference values must be finite and sorted")
        return NumericReference(sorted_values=values, missing=int(raw.get("missing", 0)))
    if raw["kind"] == "categorical":
        return CategoricalReference(counts={str(k): int(v) for k, v in raw["counts"].items()}, missing=int(raw.get("missing", 0)))
    raise ValueError(f"reference kind {raw['kind']!r} is not numeric or categorical")
