"""A model's own drift configuration: floors and thresholds that travel with the model version.

The deployment's settings (``SML_DRIFT_*``, ``SML_DQ_*``, ``SML_QUALITY_*``, from the CDK context
on AWS) hold for every model version. A version may carry its own in its manifest
(``sml train --drift-config FILE``), so that a feature that matters gets a tighter floor, and
the floors change with the version that promotion or rollback puts in front of users.

File format: TOML (``.toml``, read with :mod:`tomllib`) or the same structure in JSON
(``.json``); every table and key is optional::

    [floors]                 # for every feature of the kind that has no floor of its own
    numeric = "0.25sd"       # KS D, or "<x>sd": a location shift of x standard deviations
    categorical = 0.1        # Cramér's V
    missing_rate = 0.2       # Cohen's h of a feature's missing rate
    label = 0.1              # the prediction's floor, in its method's unit (else its kind's floor)
    psi = 0.1                # a method's own floor key, for the methods other than ks and chi2 (SML_DRIFT_FLOORS)

    [methods]                # the main method per kind (default ks and chi2; also psi,
    numeric = "psi"          # wasserstein, jensen_shannon, or any registered method)
    categorical = "jensen_shannon"

    [features.mean_texture]  # one feature of the model
    floor = "0.1sd"          # its main test, in its method's unit: KS D or "<x>sd", Cramér's V, ...
    missing_rate = 0.1       # its missing-rate test: Cohen's h
    method = "wasserstein"   # its main method, replacing its kind's

    [data_quality]           # shares in [0, 1]
    max_out_of_range = 0.01
    max_unseen_category = 0.01
    max_missing_excess = 0.05
    max_refused_rate = 0.01  # values predict refused with a 4xx naming the feature

    [quality]
    metric = "roc_auc"       # a verdict metric of the model's task (sml.lifecycle.quality_metrics)
    tolerance = 0.03         # absolute; a share of the held-out value for mae and rmse

**Precedence**, key by key: built-in defaults < deployment settings < the model's config. The
model's author knows which of its features matter and how large a shift hurts it; the
deployment's settings are written once for every version and cannot know a feature that a later
version adds. So each key of the model's file replaces the deployment setting it corresponds to
(``floors.numeric`` ↔ ``SML_DRIFT_MIN_KS_D``, ``features.X.floor`` ↔ ``SML_DRIFT_FEATURE_FLOORS``'s
entry for X, ``floors.psi`` ↔ ``SML_DRIFT_FLOORS``'s entry for ``psi``, ``data_quality.max_out_of_range`` ↔ ``SML_DQ_MAX_OUT_OF_RANGE``, ...), and keys it does
not set keep the deployment's values. Then, per test, the most specific floor wins: a floor for
the feature (the model's, else the deployment's) before a floor for its kind (the model's, else
the deployment's), before the built-in default. :func:`resolve_floors` says for every test which
source its floor came from; the drift run stores that and the report shows it.
"""

from __future__ import annotations

import json
import math
import tomllib
from decimal import Decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sml.core.errors import SmlError
from sml.lifecycle.quality_metrics import QUALITY_METRICS as LISTED_QUALITY_METRICS
from sml.lifecycle.quality_metrics import check_verdict_metric
from sml.monitoring.data_quality.checks import DataQualityThresholds
from sml.monitoring.drift.methods import DEFAULT_METHODS, DriftMethod, drift_method, registered_methods
from sml.monitoring.drift.run import PREDICTION_COLUMNS
from sml.monitoring.drift.stats import parse_effect_floor

FloorSource = Literal["model", "deployment", "default"]
QUALITY_METRICS = tuple(name for name, metric in LISTED_QUALITY_METRICS.items() if metric.verdict)
KIND_FLOOR_KEYS = ("numeric", "categorical", "missing_rate", "label")
FEATURE_KEYS = ("floor", "missing_rate", "method")
METHOD_KEYS = tuple(DEFAULT_METHODS)
DATA_QUALITY_KEYS = ("max_out_of_range", "max_unseen_category", "max_missing_excess", "max_refused_rate")
QUALITY_KEYS = ("metric", "tolerance")
TABLES: dict[str, tuple[str, ...] | None] = {"floors": None, "methods": METHOD_KEYS, "features": None, "data_quality": DATA_QUALITY_KEYS, "quality": QUALITY_KEYS}


def floor_keys() -> tuple[str, ...]:
    """The keys of ``[floors]``: the kinds', the prediction's, and every registered method's own."""
    return tuple(dict.fromkeys([*KIND_FLOOR_KEYS, *(method.floor_key for method in registered_methods())]))


@dataclass(frozen=True)
class ModelDriftConfig:
    """A model's drift configuration as read from its file or its manifest (see the module doc).

    Floors keep the form they were written in (``"0.1sd"`` or a number); :func:`resolve_floors`
    turns them into effects. ``source`` is the file as ``--drift-config`` named it, as the manifest records it.
    """

    source: str = ""
    floors: Mapping[str, float | str] = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)
    features: Mapping[str, Mapping[str, float | str]] = field(default_factory=dict)
    data_quality: Mapping[str, float] = field(default_factory=dict)
    quality: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str) -> ModelDriftConfig:
        """Check the structure and values of a parsed file (features are checked by :meth:`check_features`).

        :raises SmlError: ``"<source>: <key>: <problem>"`` for an unknown table or key, a value of
            the wrong type, or a floor or threshold out of range.
        """
        if not isinstance(data, Mapping):
            raise SmlError(f"{source}: expected a table of {', '.join(TABLES)}, got {_type_name(data)}")
        tables = {}
        for name, value in data.items():
            if name not in TABLES:
                raise SmlError(f"{source}: {name}: unknown table; expected {', '.join(TABLES)}")
            if not isinstance(value, Mapping):
                raise SmlError(f"{source}: {name}: expected a table, got {_type_name(value)}")
            allowed = floor_keys() if name == "floors" else TABLES[name]
            if allowed is not None:
                unknown = [key for key in value if key not in allowed]
                if unknown:
                    raise SmlError(f"{source}: {name}.{unknown[0]}: unknown key; expected {', '.join(allowed)}")
            tables[name] = value
        floors = {key: _kind_floor(source, key, value) for key, value in tables.get("floors", {}).items()}
        methods = {kind: _method(source, f"methods.{kind}", value, kind).name for kind, value in tables.get("methods", {}).items()}
        features = {}
        for feature, entry in tables.get("features", {}).items():
            where = f"features.{_key(feature)}"
            if not isinstance(entry, Mapping):
                raise SmlError(f"{source}: {where}: expected a table with {' and/or '.join(FEATURE_KEYS)}, got {_type_name(entry)}")
            unknown = [key for key in entry if key not in FEATURE_KEYS]
            if unknown:
                raise SmlError(f"{source}: {where}.{unknown[0]}: unknown key; expected {', '.join(FEATURE_KEYS)}")
            features[feature] = {key: _feature_entry(source, f"{where}.{key}", key, value) for key, value in entry.items()}
            if "floor" in entry and "method" not in entry:
                _main_floor(source, f"{where}.floor", entry["floor"])  # the default methods' floors; a method's own is checked with it
        data_quality = {key: _share(source, f"data_quality.{key}", value) for key, value in tables.get("data_quality", {}).items()}
        quality = dict(tables.get("quality", {}))
        if "metric" in quality and quality["metric"] not in QUALITY_METRICS:
            raise SmlError(f"{source}: quality.metric: {quality['metric']!r} is not one of {', '.join(QUALITY_METRICS)}")
        if "tolerance" in quality:
            quality["tolerance"] = _share(source, "quality.tolerance", quality["tolerance"])
        return cls(source=source, floors=floors, methods=methods, features=features, data_quality=data_quality, quality=quality)

    def check_task(self, task: Any) -> ModelDriftConfig:
        """Check ``quality.metric`` against the model's task (``binary``, ``multiclass``, ``regression``); returns itself.

        :raises SmlError: ``"<source>: quality.metric: ..."`` naming the task's verdict metrics.
        """
        if "metric" in self.quality:
            try:
                check_verdict_metric(self.quality["metric"], task)
            except ValueError as exc:
                raise SmlError(f"{self.source}: quality.metric: {exc}") from None
        return self

    def check_features(self, schema: Sequence[Any]) -> ModelDriftConfig:
        """Check the config against the model's features (``name`` and ``kind`` each); returns itself.

        :raises SmlError: ``"<source>: features.<name>: ..."`` for a feature the model does not have,
            a method that does not test the feature's kind, or a floor its method refuses (an
            ``"<x>sd"`` floor on a categorical feature among them).
        """
        kinds = {spec.name: spec.kind for spec in schema if not getattr(spec, "prediction", False)}
        for feature, entry in self.features.items():
            where = f"features.{_key(feature)}"
            if feature not in kinds:
                raise SmlError(f"{self.source}: {where}: the model has no feature {feature!r} (features: {', '.join(sorted(kinds))})")
            method = self.method_for(feature, kinds[feature])
            if "method" in entry:
                _method(self.source, f"{where}.method", entry["method"], kinds[feature])
            floor = entry.get("floor")
            if floor is None:
                continue
            if kinds[feature] != "numeric" and _is_sd(floor):
                raise SmlError(f"{self.source}: {where}.floor: {feature!r} is {kinds[feature]}; give its floor as a {method.effect_name}, not {floor!r}")
            try:
                method.parse_floor(feature, floor)
            except ValueError as exc:
                raise SmlError(f"{self.source}: {where}.floor: {str(exc).split(': ', 1)[-1]}") from None
        return self

    def method_for(self, feature: str | None, kind: str) -> DriftMethod:
        """The main method of a column: the feature's own ``method``, else ``[methods]``'s for its kind, else the kind's default."""
        own = self.features.get(feature, {}).get("method") if feature is not None else None
        return drift_method(str(own or self.methods.get(kind) or DEFAULT_METHODS[kind]))

    def for_manifest(self, schema: Sequence[Any]) -> dict[str, Any]:
        """:meth:`check_features`, then :meth:`to_manifest`: what ``sml train --drift-config`` stores."""
        return self.check_features(schema).to_manifest()

    def to_manifest(self) -> dict[str, Any]:
        """The JSON object the manifest stores (the file's tables, and ``source``)."""
        data: dict[str, Any] = {"source": self.source}
        for name in TABLES:
            value = getattr(self, name)
            if value:
                data[name] = {key: dict(entry) if isinstance(entry, Mapping) else entry for key, entry in value.items()}
        return data

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any], *, manifest: str) -> ModelDriftConfig:
        """Read the manifest's ``drift_config`` back; a problem names the manifest and the file it came from."""
        if not isinstance(data, Mapping):
            raise SmlError(f"{manifest} drift_config: expected a table, got {_type_name(data)}")
        tables = {name: value for name, value in data.items() if name != "source"}
        return cls.from_mapping(tables, source=f"{manifest} drift_config (from {data.get('source') or 'an unnamed file'})")

    def data_quality_thresholds(self, deployment: DataQualityThresholds) -> DataQualityThresholds:
        """The deployment's thresholds with this model's keys on top."""
        return DataQualityThresholds(**{**{key: getattr(deployment, key) for key in DATA_QUALITY_KEYS}, **self.data_quality})


def read_model_drift_config(path: Path) -> ModelDriftConfig:
    """Read and check a drift config file (``.toml`` or ``.json``); features are checked later.

    :raises SmlError: naming the file (and the key) when it is unreadable, not TOML/JSON, or wrong.
    """
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SmlError(f"{path}: a drift config is a .toml or .json file")
    try:
        # utf-8-sig: Windows editors start UTF-8 files with a byte order mark, which TOML and JSON parsers refuse.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SmlError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SmlError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text, object_pairs_hook=_object_without_repeats)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise SmlError(f"{path}: not valid {suffix[1:].upper()} ({exc})") from None
    return ModelDriftConfig.from_mapping(data, source=str(path))


@dataclass(frozen=True)
class EffectiveFloor:
    """The floor one test of a run uses: ``value`` as an effect (KS D, Cramér's V or Cohen's h),
    ``given`` as it was written (``"0.1sd"``, 0.05), and where it came from."""

    value: float
    given: float | str
    source: FloorSource
    setting: str
    """The key or variable that set it, e.g. ``features.mean_texture.floor`` or ``SML_DRIFT_MIN_KS_D``."""


@dataclass(frozen=True)
class DeploymentFloors:
    """The deployment's floors and, for each, whether the deployment set it (else it is the built-in default)."""

    min_ks_d: float
    min_cramers_v: float
    min_missing_rate_h: float
    feature_floors: Mapping[str, float | str] = field(default_factory=dict)
    set_by_deployment: frozenset[str] = frozenset()
    """Which of ``min_ks_d``, ``min_cramers_v``, ``min_missing_rate_h`` the deployment set (else they are the built-in defaults)."""
    method_floors: Mapping[str, float | str] = field(default_factory=dict)
    """``SML_DRIFT_FLOORS``: per floor key of a method with no variable of its own (``psi``, ...), its floor."""


DEPLOYMENT_VARIABLES = {
    "min_ks_d": "SML_DRIFT_MIN_KS_D",
    "min_cramers_v": "SML_DRIFT_MIN_CRAMERS_V",
    "min_missing_rate_h": "SML_DRIFT_MIN_MISSING_RATE_H",
}
METHOD_FLOORS_VARIABLE = "SML_DRIFT_FLOORS"  # the floors of the methods without a variable above, by floor key


def resolve_floors(
    columns: Sequence[Any], deployment: DeploymentFloors, model: ModelDriftConfig | None
) -> dict[tuple[str, str], EffectiveFloor]:
    """The floor of every test of a run and its source, by the precedence of the module doc.

    :param columns: the run's columns (:class:`sml.monitoring.drift.run.DriftColumn`: features
        and the prediction, each with its methods).
    :returns: per (column, method name) for each of the column's methods.
    :raises SmlError: a deployment floor names a feature the model does not have, or is not a floor.

    A deployment floor for the prediction may name it either way (``(predicted label)`` or
    ``(prediction)``, :data:`sml.monitoring.drift.run.PREDICTION_COLUMNS`): the deployment's
    settings hold for every model, and a regression model's prediction was named
    ``(predicted label)`` before it was ``(prediction)``; the run's own name wins when both are set.
    """
    model = model or ModelDriftConfig()
    kinds = {column.name: column.kind for column in columns}
    feature_floors = _prediction_floor_under_its_name(deployment.feature_floors, columns)
    deployment = replace(deployment, feature_floors=feature_floors)
    for name, value in feature_floors.items():
        if name not in kinds:
            raise SmlError(f"SML_DRIFT_FEATURE_FLOORS: the model has no feature {name!r} (features: {', '.join(sorted(kinds))})")
        if _is_sd(value) and kinds[name] != "numeric":
            raise SmlError(f"SML_DRIFT_FEATURE_FLOORS: feature {name!r} is {kinds[name]}; give its floor as a Cramér's V, not {value!r}")
    _check_method_floors(deployment.method_floors)

    def general(method: DriftMethod) -> tuple[float | str, FloorSource, str]:
        if method.floor_key in model.floors:
            return model.floors[method.floor_key], "model", f"floors.{method.floor_key}"
        setting = method.deployment_setting
        if setting is None:
            if method.floor_key in deployment.method_floors:
                return deployment.method_floors[method.floor_key], "deployment", METHOD_FLOORS_VARIABLE
            return method.default_floor, "default", METHOD_FLOORS_VARIABLE
        source: FloorSource = "deployment" if setting in deployment.set_by_deployment else "default"
        return getattr(deployment, setting), source, DEPLOYMENT_VARIABLES[setting]

    floors: dict[tuple[str, str], EffectiveFloor] = {}
    for column in columns:
        own = model.features.get(column.name, {})
        for method in column.methods():
            if method.missing_rate:
                if "missing_rate" in own:
                    given, source, setting = own["missing_rate"], "model", f"features.{_key(column.name)}.missing_rate"
                else:
                    given, source, setting = general(method)
            elif column.prediction and "label" in model.floors:
                given, source, setting = model.floors["label"], "model", "floors.label"
            elif "floor" in own:
                given, source, setting = own["floor"], "model", f"features.{_key(column.name)}.floor"
            elif column.name in deployment.feature_floors:
                given, source, setting = deployment.feature_floors[column.name], "deployment", "SML_DRIFT_FEATURE_FLOORS"
            else:
                given, source, setting = general(method)
            try:
                floors[column.name, method.name] = EffectiveFloor(method.parse_floor(column.name, given), given, source, setting)
            except ValueError as exc:
                raise SmlError(f"{setting}: {exc}") from None
    return floors


def _prediction_floor_under_its_name(feature_floors: Mapping[str, float | str], columns: Sequence[Any]) -> dict[str, float | str]:
    floors = dict(feature_floors)
    prediction = next((column.name for column in columns if getattr(column, "prediction", False)), None)
    features = {column.name for column in columns if not getattr(column, "prediction", False)}
    if prediction in PREDICTION_COLUMNS:
        for other in PREDICTION_COLUMNS:
            if other != prediction and other in floors and other not in features:
                floors.setdefault(prediction, floors.pop(other))
    return floors


def _check_method_floors(method_floors: Mapping[str, Any]) -> None:
    """``SML_DRIFT_FLOORS``'s keys are floor keys of registered methods without a variable of their own; its values their floors.

    :raises SmlError: ``"SML_DRIFT_FLOORS: <key>: ..."`` naming the variable to use instead, the keys it takes, or the floor's range.
    """
    by_key = {method.floor_key: method for method in registered_methods()}
    for key, value in method_floors.items():
        method = by_key.get(key)
        if method is None or method.deployment_setting is not None:
            open_keys = ", ".join(sorted(found for found, method in by_key.items() if method.deployment_setting is None))
            instead = f"its floor is {DEPLOYMENT_VARIABLES[method.deployment_setting]}; " if method is not None and method.deployment_setting else ""
            raise SmlError(f"{METHOD_FLOORS_VARIABLE}: {key}: {instead}expected a floor key of {open_keys}")
        try:
            method.parse_floor(key, value)
        except ValueError as exc:
            raise SmlError(f"{METHOD_FLOORS_VARIABLE}: {key}: {str(exc).split(': ', 1)[-1]}") from None


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of repeated keys silently; TOML refuses them, so the two formats agree.
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} given twice")
        data[key] = value
    return data


def _kind_floor(source: str, key: str, value: Any) -> float | str:
    where = f"floors.{key}"
    if key == "missing_rate":
        return _missing_rate_floor(source, where, value)
    if key == "numeric":
        return _main_floor(source, where, value)
    if key in ("categorical", "label"):
        if _is_sd(value):
            raise SmlError(f"{source}: {where}: give a Cramér's V (a number in (0, 1)), not {value!r}; '<x>sd' is for numeric features")
        return _main_floor(source, where, value)
    method = next(method for method in registered_methods() if method.floor_key == key)
    try:
        method.parse_floor(key, value)
    except ValueError as exc:
        raise SmlError(f"{source}: {where}: {str(exc).split(': ', 1)[-1]}") from None
    return value


def _feature_entry(source: str, where: str, key: str, value: Any) -> float | str:
    if key == "floor":
        if _is_number(value) or isinstance(value, str):
            return value
        raise SmlError(f"{source}: {where}: expected a number or '<x>sd', got {_type_name(value)}")
    if key == "method":
        return _method(source, where, value, None).name
    return _missing_rate_floor(source, where, value)


def _method(source: str, where: str, value: Any, kind: str | None) -> DriftMethod:
    """A main method named in a config; ``kind`` (when known) must be one it tests."""
    names = sorted(method.name for method in registered_methods() if not method.missing_rate and (kind is None or kind in method.kinds))
    if not isinstance(value, str) or value not in names:
        expected = f"one of {', '.join(names)}" if names else "a registered method"
        raise SmlError(f"{source}: {where}: {value!r} is not a drift method for {kind or 'a feature'}; expected {expected}")
    return drift_method(value)


def _main_floor(source: str, where: str, value: Any) -> float | str:
    if not (_is_number(value) or isinstance(value, str)):
        raise SmlError(f"{source}: {where}: expected a number or '<x>sd', got {_type_name(value)}")
    try:
        parse_effect_floor(where, value)
    except ValueError as exc:
        problem = str(exc).split(": ", 1)[-1]
        raise SmlError(f"{source}: {where}: {problem}") from None
    return value


def _missing_rate_floor(source: str, where: str, value: Any) -> float:
    if not _is_number(value):
        raise SmlError(f"{source}: {where}: expected a number (Cohen's h), got {_type_name(value)}")
    if not 0 < value < math.pi:
        raise SmlError(f"{source}: {where}: a Cohen's h floor must be in (0, pi), got {_shown(value)}")
    return float(value)


def _share(source: str, where: str, value: Any) -> float:
    if not _is_number(value):
        raise SmlError(f"{source}: {where}: expected a number (a share in [0, 1]), got {_type_name(value)}")
    if not 0 <= value <= 1:
        raise SmlError(f"{source}: {where}: must be a share in [0, 1], got {_shown(value)}")
    return float(value)


def _is_number(value: Any) -> bool:
    # An int is always finite; math.isfinite would raise OverflowError on one beyond a float's range.
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value)


def _shown(value: float) -> str:
    return f"{Decimal(value):.3e}" if isinstance(value, int) and abs(value) > 2**63 else str(value)


def _is_sd(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().endswith("sd")


def _type_name(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite number ({value})"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _key(name: str) -> str:
    # A bare TOML key where it can be one, else quoted, so the message can be pasted back into the file.
    return name if name.replace("_", "").replace("-", "").isalnum() and name.isascii() else json.dumps(name)
