"""A model's drift config: its file format, its checks, its place in the manifest, and precedence.

Precedence, key by key: built-in defaults < deployment settings < the model's config; per test
the most specific floor (the feature's) before the general one (its kind's).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from sml.core.errors import SmlError
from sml.core.settings import DriftSettings, load_settings
from sml.monitoring.config import DeploymentFloors, ModelDriftConfig, read_model_drift_config, resolve_floors
from sml.monitoring.data_quality.checks import DataQualityThresholds
from sml.monitoring.drift.run import CLASS_PREDICTION_COLUMN as LABEL_COLUMN
from sml.monitoring.job import DriftJobConfig
from sml.monitoring.model_quality.metrics import QualityConfig
from sml.monitoring.drift.stats import ks_d_for_location_shift
from sml.monitoring.drift.run import DriftColumn
from sml.lifecycle.manifest import CategoricalReference, ModelManifest, NumericReference, ReferenceData
from sml.lifecycle.manifest import FeatureSpec as ManifestFeature

SCHEMA = [DriftColumn("mean_texture", "numeric"), DriftColumn("grade", "categorical"), DriftColumn(LABEL_COLUMN, "categorical", prediction=True)]
DEFAULTS = DeploymentFloors(min_ks_d=0.1, min_cramers_v=0.1, min_missing_rate_h=0.2)

FULL = textwrap.dedent(
    """
    [floors]
    numeric = "0.2sd"
    categorical = 0.08
    missing_rate = 0.15
    label = 0.06

    [features.mean_texture]
    floor = "0.1sd"
    missing_rate = 0.1

    [data_quality]
    max_out_of_range = 0.01

    [quality]
    metric = "roc_auc"
    tolerance = 0.03
    """
)


def write(tmp_path: Path, text: str, name: str = "drift.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_full_toml_file_reads_and_its_json_twin_reads_the_same(tmp_path: Path) -> None:
    from_toml = read_model_drift_config(write(tmp_path, FULL)).check_features(SCHEMA)
    assert from_toml.floors == {"numeric": "0.2sd", "categorical": 0.08, "missing_rate": 0.15, "label": 0.06}
    assert from_toml.features == {"mean_texture": {"floor": "0.1sd", "missing_rate": 0.1}}
    assert from_toml.data_quality == {"max_out_of_range": 0.01}
    assert from_toml.quality == {"metric": "roc_auc", "tolerance": 0.03}
    twin = {key: value for key, value in from_toml.to_manifest().items() if key != "source"}
    from_json = read_model_drift_config(write(tmp_path, json.dumps(twin), "drift.json"))
    assert replace(from_json, source=from_toml.source) == from_toml


def test_an_empty_file_is_a_config_that_changes_nothing(tmp_path: Path) -> None:
    config = read_model_drift_config(write(tmp_path, ""))
    assert config == ModelDriftConfig(source=str(tmp_path / "drift.toml"))
    assert resolve_floors(SCHEMA, DEFAULTS, config) == resolve_floors(SCHEMA, DEFAULTS, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[floors\nnumeric = 0.1", "drift.toml: not valid TOML"),
        ("source = 'mine.toml'", "drift.toml: source: unknown table"),
        ("[thresholds]\nx = 1", "drift.toml: thresholds: unknown table; expected floors, methods, features, data_quality, quality"),
        ("floors = 3", "drift.toml: floors: expected a table, got a number"),
        ("[floors]\nnumerical = 0.1", "drift.toml: floors.numerical: unknown key; expected numeric, categorical, missing_rate, label"),
        ("[floors]\nnumeric = -0.1", "drift.toml: floors.numeric: -0.1 must give an effect in (0, 1)"),
        ("[floors]\nnumeric = '-0.1sd'", "drift.toml: floors.numeric: '-0.1sd' must be a positive number of standard deviations"),
        ("[floors]\nnumeric = 'tiny'", "drift.toml: floors.numeric: 'tiny' is not a number or '<x>sd'"),
        ("[floors]\nnumeric = true", "drift.toml: floors.numeric: expected a number or '<x>sd', got a boolean"),
        ("[floors]\ncategorical = '0.1sd'", "drift.toml: floors.categorical: give a Cramér's V"),
        ("[floors]\nmissing_rate = '0.2'", "drift.toml: floors.missing_rate: expected a number (Cohen's h), got a string"),
        ("[floors]\nmissing_rate = 4", "drift.toml: floors.missing_rate: a Cohen's h floor must be in (0, pi)"),
        ("[features]\nmean_texture = 0.1", "drift.toml: features.mean_texture: expected a table with floor and/or missing_rate and/or method, got a number"),
        ("[features.mean_texture]\nflor = 0.1", "drift.toml: features.mean_texture.flor: unknown key; expected floor, missing_rate"),
        ("[features.mean_texture]\nfloor = 1.5", "drift.toml: features.mean_texture.floor: 1.5 must give an effect in (0, 1)"),
        ("[features.mean_texture]\nmissing_rate = -0.1", "drift.toml: features.mean_texture.missing_rate: a Cohen's h floor must be in (0, pi)"),
        ("[data_quality]\nmax_out_of_range = 2", "drift.toml: data_quality.max_out_of_range: must be a share in [0, 1], got 2"),
        ("[data_quality]\nmax_range = 0.1", "drift.toml: data_quality.max_range: unknown key"),
        ("[quality]\nmetric = 'auc'", "drift.toml: quality.metric: 'auc' is not one of accuracy, precision, recall, f1, precision_macro"),
        ("[quality]\ntolerance = [0.1]", "drift.toml: quality.tolerance: expected a number (a share in [0, 1]), got an array"),
    ],
)
def test_garbage_is_refused_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SmlError) as raised:
        read_model_drift_config(write(tmp_path, text))
    assert str(raised.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[features.mean_textur]\nfloor = 0.05", "drift.toml: features.mean_textur: the model has no feature 'mean_textur' (features: grade, mean_texture)"),
        ('[features."(predicted label)"]\nfloor = 0.05', 'drift.toml: features."(predicted label)": the model has no feature'),
        ("[features.grade]\nfloor = '0.1sd'", "drift.toml: features.grade.floor: 'grade' is categorical; give its floor as a Cramér's V"),
    ],
)
def test_features_are_checked_against_the_models_schema(tmp_path: Path, text: str, message: str) -> None:
    config = read_model_drift_config(write(tmp_path, text))
    with pytest.raises(SmlError) as raised:
        config.check_features(SCHEMA)
    assert str(raised.value).startswith(f"{tmp_path}/{message}")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("drift.yaml", "floors: {}", "drift.yaml: a drift config is a .toml or .json file"),
        ("drift.json", "[0.1]", "drift.json: expected a table of floors, methods, features, data_quality, quality, got an array"),
        ("drift.json", "{floors: 1}", "drift.json: not valid JSON"),
    ],
)
def test_wrong_file_kinds_are_refused(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(SmlError) as raised:
        read_model_drift_config(write(tmp_path, text, name))
    assert str(raised.value).startswith(f"{tmp_path}/{message}")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SmlError, match=r"drift\.toml: cannot read it"):
        read_model_drift_config(tmp_path / "drift.toml")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("drift.toml", "[floors]\nmissing_rate = 1" + "0" * 400, "drift.toml: floors.missing_rate: a Cohen's h floor must be in (0, pi), got 1.000e+400"),
        ("drift.toml", "[floors]\nnumeric = 1" + "0" * 400, "drift.toml: floors.numeric: 1.000e+400 must give an effect in (0, 1)"),
        ("drift.json", '{"data_quality": {"max_refused_rate": 1' + "0" * 400 + "}}", "drift.json: data_quality.max_refused_rate: must be a share in [0, 1], got 1.000e+400"),
        ("drift.toml", "[floors]\nnumeric = inf", "drift.toml: floors.numeric: expected a number or '<x>sd', got a non-finite number (inf)"),
        ("drift.toml", "[floors]\nmissing_rate = nan", "drift.toml: floors.missing_rate: expected a number (Cohen's h), got a non-finite number (nan)"),
        ("drift.json", '{"floors": {"numeric": 1e400}}', "drift.json: floors.numeric: expected a number or '<x>sd', got a non-finite number (inf)"),
        ("drift.json", '{"quality": {"tolerance": NaN}}', "drift.json: quality.tolerance: expected a number (a share in [0, 1]), got a non-finite number (nan)"),
        ("drift.json", "null", "drift.json: expected a table of floors, methods, features, data_quality, quality, got null"),
    ],
)
def test_huge_and_non_finite_numbers_are_refused_by_value_not_with_a_traceback(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(SmlError) as raised:
        read_model_drift_config(write(tmp_path, text, name))
    assert str(raised.value).startswith(f"{tmp_path}/{message}")


def test_a_key_given_twice_in_json_is_refused_as_toml_refuses_it(tmp_path: Path) -> None:
    # json.loads keeps the last value silently, so the same mistake meant two different floors in the two formats.
    with pytest.raises(SmlError) as raised:
        read_model_drift_config(write(tmp_path, '{"floors": {"numeric": 0.05, "numeric": 0.5}}', "drift.json"))
    assert str(raised.value) == f"{tmp_path}/drift.json: not valid JSON (key 'numeric' given twice)"
    with pytest.raises(SmlError, match="not valid TOML"):
        read_model_drift_config(write(tmp_path, "[floors]\nnumeric = 0.05\nnumeric = 0.5\n"))


@pytest.mark.parametrize(("name", "text"), [("drift.toml", '[floors]\nnumeric = "0.2sd"\n'), ("drift.json", '{"floors": {"numeric": "0.2sd"}}')])
def test_a_file_saved_with_a_utf8_byte_order_mark_reads_like_one_without(tmp_path: Path, name: str, text: str) -> None:
    # Windows editors (Notepad, PowerShell's Out-File) write one; the file is still UTF-8 TOML/JSON.
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_model_drift_config(path).floors == {"numeric": "0.2sd"}


def manifest(drift_config: dict | None = None) -> ModelManifest:
    return ModelManifest(
        model_name="m", version="v1", created_at="2025-01-01T00:00:00Z", sha256="ab" * 32, artifact_key="models/m/v1/model.joblib",
        estimator="LogisticRegression", metrics={"f1": 0.9}, params={}, classes=("a", "b"),
        features=(ManifestFeature("mean_texture", "numeric"), ManifestFeature("grade", "categorical")),
        reference=ReferenceData(
            n_rows=400,
            features={"mean_texture": NumericReference(tuple(float(x) for x in range(400))), "grade": CategoricalReference({"low": 200, "high": 200})},
            label_counts={"a": 200, "b": 200},
        ),
        library_versions={}, drift_config=drift_config,
    )


def test_the_manifest_keeps_the_config_and_its_sha256_and_old_manifests_have_none(tmp_path: Path) -> None:
    config = read_model_drift_config(write(tmp_path, FULL))
    stored = manifest(config.for_manifest(SCHEMA))
    again = ModelManifest.from_json(stored.to_json())
    assert again == stored and again.sha256 == "ab" * 32
    assert ModelDriftConfig.from_manifest(again.drift_config, manifest="m v1") == replace(config, source=f"m v1 drift_config (from {config.source})")

    old = json.loads(manifest().to_json())
    del old["drift_config"]
    assert ModelManifest.from_json(json.dumps(old)).drift_config is None
    with pytest.raises(SmlError, match="manifest.json: malformed manifest .*drift_config must be a JSON object"):
        ModelManifest.from_json(json.dumps({**old, "drift_config": [1]}))


def test_a_broken_config_in_a_manifest_names_the_manifest_and_its_file() -> None:
    broken = manifest({"source": "drift.toml", "floors": {"numeric": 7}})
    with pytest.raises(SmlError, match=r"^m v1 manifest drift_config \(from drift\.toml\): floors\.numeric: 7 must give an effect"):
        DriftJobConfig(bucket="b").plan(broken)


def sources(floors: dict) -> dict[tuple[str, str], tuple[float, str, str]]:
    return {key: (round(floor.value, 4), floor.source, floor.setting) for key, floor in floors.items()}


def test_without_any_setting_every_floor_is_the_built_in_default() -> None:
    assert sources(resolve_floors(SCHEMA, DEFAULTS, None)) == {
        ("mean_texture", "ks"): (0.1, "default", "SML_DRIFT_MIN_KS_D"),
        ("mean_texture", "missing_rate"): (0.2, "default", "SML_DRIFT_MIN_MISSING_RATE_H"),
        ("grade", "chi2"): (0.1, "default", "SML_DRIFT_MIN_CRAMERS_V"),
        ("grade", "missing_rate"): (0.2, "default", "SML_DRIFT_MIN_MISSING_RATE_H"),
        (LABEL_COLUMN, "chi2"): (0.1, "default", "SML_DRIFT_MIN_CRAMERS_V"),
    }


def test_deployment_settings_replace_defaults_and_the_models_keys_replace_the_deployments() -> None:
    deployment = DeploymentFloors(
        min_ks_d=0.12, min_cramers_v=0.1, min_missing_rate_h=0.3,
        feature_floors={"grade": 0.07, LABEL_COLUMN: 0.09}, set_by_deployment=frozenset({"min_ks_d", "min_missing_rate_h"}),
    )
    model = ModelDriftConfig(source="drift.toml", floors={"categorical": 0.05, "missing_rate": 0.25}, features={"mean_texture": {"floor": "0.1sd"}})
    assert sources(resolve_floors(SCHEMA, deployment, model)) == {
        # the model's feature floor beats the deployment's kind floor
        ("mean_texture", "ks"): (round(ks_d_for_location_shift(0.1), 4), "model", "features.mean_texture.floor"),
        # the model's kind floor replaces the deployment's SML_DRIFT_MIN_MISSING_RATE_H
        ("mean_texture", "missing_rate"): (0.25, "model", "floors.missing_rate"),
        # a feature floor of the deployment is more specific than the model's kind floor
        ("grade", "chi2"): (0.07, "deployment", "SML_DRIFT_FEATURE_FLOORS"),
        ("grade", "missing_rate"): (0.25, "model", "floors.missing_rate"),
        (LABEL_COLUMN, "chi2"): (0.09, "deployment", "SML_DRIFT_FEATURE_FLOORS"),
    }
    tighter = replace(model, floors={**model.floors, "label": 0.04}, features={"grade": {"floor": 0.03}})
    resolved = sources(resolve_floors(SCHEMA, deployment, tighter))
    assert resolved["grade", "chi2"] == (0.03, "model", "features.grade.floor")
    assert resolved[LABEL_COLUMN, "chi2"] == (0.04, "model", "floors.label")
    assert resolved["mean_texture", "ks"] == (0.12, "deployment", "SML_DRIFT_MIN_KS_D")


def test_a_deployment_floor_for_the_prediction_holds_under_either_of_its_names() -> None:
    # The deployment's floors hold for every model; a regression model's prediction was called
    # "(predicted label)" before it was "(prediction)", and its runs must not start failing.
    regression = [DriftColumn("mean_texture", "numeric"), DriftColumn("(prediction)", "numeric", prediction=True)]
    old_name = DeploymentFloors(min_ks_d=0.1, min_cramers_v=0.1, min_missing_rate_h=0.2, feature_floors={LABEL_COLUMN: 0.07})
    assert sources(resolve_floors(regression, old_name, None))["(prediction)", "ks"] == (0.07, "deployment", "SML_DRIFT_FEATURE_FLOORS")
    assert sources(resolve_floors(SCHEMA, replace(old_name, feature_floors={"(prediction)": 0.08}), None))[LABEL_COLUMN, "chi2"] == (
        0.08, "deployment", "SML_DRIFT_FEATURE_FLOORS",
    )
    both = replace(old_name, feature_floors={LABEL_COLUMN: 0.07, "(prediction)": 0.05})
    assert sources(resolve_floors(regression, both, None))["(prediction)", "ks"] == (0.05, "deployment", "SML_DRIFT_FEATURE_FLOORS")
    assert sources(resolve_floors(SCHEMA, both, None))[LABEL_COLUMN, "chi2"] == (0.07, "deployment", "SML_DRIFT_FEATURE_FLOORS")


def test_a_feature_named_as_the_prediction_keeps_its_own_deployment_floor() -> None:
    # A regression model whose feature is "(prediction)" tests its prediction as "(predicted label)";
    # the feature's floor is not moved onto the prediction.
    columns = [DriftColumn("(prediction)", "numeric"), DriftColumn(LABEL_COLUMN, "numeric", prediction=True)]
    floors = DeploymentFloors(min_ks_d=0.1, min_cramers_v=0.1, min_missing_rate_h=0.2, feature_floors={"(prediction)": 0.07})
    resolved = sources(resolve_floors(columns, floors, None))
    assert resolved["(prediction)", "ks"] == (0.07, "deployment", "SML_DRIFT_FEATURE_FLOORS")
    assert resolved[LABEL_COLUMN, "ks"][1] == "default"

def test_deployment_floors_that_do_not_fit_the_model_are_named() -> None:
    with pytest.raises(SmlError, match="SML_DRIFT_FEATURE_FLOORS: the model has no feature 'radius'"):
        resolve_floors(SCHEMA, replace(DEFAULTS, feature_floors={"radius": 0.1}), None)
    with pytest.raises(SmlError, match="SML_DRIFT_FEATURE_FLOORS: feature 'grade' is categorical"):
        resolve_floors(SCHEMA, replace(DEFAULTS, feature_floors={"grade": "0.1sd"}), None)


def test_the_job_config_marks_what_the_deployment_set_and_takes_the_models_thresholds() -> None:
    deployment = DriftJobConfig(
        bucket="b", min_cramers_v=0.2, data_quality=DataQualityThresholds(max_unseen_category=0.03, max_refused_rate=0.04), quality=QualityConfig(metric="f1", tolerance=0.05)
    )
    assert deployment.deployment_floors().set_by_deployment == {"min_cramers_v"}

    unchanged = deployment.plan(manifest())
    assert unchanged.config == deployment and unchanged.floors["grade", "chi2"].source == "deployment"

    model = {"source": "drift.toml", "data_quality": {"max_out_of_range": 0.005}, "quality": {"metric": "roc_auc"}}
    effective = deployment.plan(manifest(model)).config
    assert effective.data_quality == DataQualityThresholds(max_out_of_range=0.005, max_unseen_category=0.03, max_refused_rate=0.04)
    refused = deployment.plan(manifest({"source": "drift.toml", "data_quality": {"max_refused_rate": 0.002}})).config
    assert refused.data_quality == DataQualityThresholds(max_unseen_category=0.03, max_refused_rate=0.002)
    assert (effective.quality.metric, effective.quality.tolerance) == ("roc_auc", 0.05)
    assert (effective.min_cramers_v, effective.bucket) == (0.2, "b")


def test_a_floor_the_deployment_sets_to_its_default_value_is_labelled_the_deployments() -> None:
    # SML_DRIFT_MIN_KS_D=0.1 is the default value, set on purpose: the report must say who set it.
    settings = load_settings(DriftSettings, {"SML_DRIFT_MIN_KS_D": "0.1", "SML_DRIFT_MIN_MISSING_RATE_H": "0.25"})
    config = DriftJobConfig.from_settings(settings, topic_arn=None)

    assert config.deployment_floors().set_by_deployment == {"min_ks_d", "min_missing_rate_h"}
    floors = config.plan(manifest()).floors
    assert (floors["mean_texture", "ks"].value, floors["mean_texture", "ks"].source) == (0.1, "deployment")
    assert floors["mean_texture", "missing_rate"].source == "deployment"
    assert (floors["grade", "chi2"].source, floors["grade", "chi2"].setting) == ("default", "SML_DRIFT_MIN_CRAMERS_V")


def test_a_job_config_built_directly_says_which_floors_the_deployment_set_or_leaves_it_to_the_defaults() -> None:
    assert DriftJobConfig(bucket="b", min_ks_d=0.1).deployment_floors().set_by_deployment == set()
    explicit = DriftJobConfig(bucket="b", min_ks_d=0.1, set_by_deployment=frozenset({"min_ks_d"}))
    assert explicit.deployment_floors().set_by_deployment == {"min_ks_d"}
    assert DriftJobConfig.from_settings(load_settings(DriftSettings, {}), min_cramers_v=0.1).deployment_floors().set_by_deployment == {"min_cramers_v"}


def test_a_quality_metric_of_another_task_is_refused_naming_the_tasks_choices(tmp_path: Path) -> None:
    config = read_model_drift_config(write(tmp_path, "[quality]\nmetric = 'rmse'\ntolerance = 0.1"))
    assert config.check_task("regression") is config
    with pytest.raises(SmlError, match=r"drift.toml: quality.metric: 'rmse' is not a verdict metric of a multiclass model; choose one of accuracy, precision_macro"):
        config.check_task("multiclass")
