"""The drift methods beyond KS and chi-square (PSI, Wasserstein, Jensen–Shannon): their statistics
agree with the reference implementations, they take the same three-way verdicts, and a model's
drift config chooses them per kind or per feature."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from sml.core.errors import SmlError
from sml.core.settings import DriftSettings, SettingsError, load_settings
from sml.lifecycle.manifest import FeatureSpec
from sml.monitoring.job import DriftJobConfig
from sml.monitoring.config import DeploymentFloors, ModelDriftConfig, resolve_floors
from sml.monitoring.drift.methods import drift_method
from sml.monitoring.drift.resampling import binned_counts
from sml.monitoring.drift.run import DriftColumn, run_drift_tests
from sml.monitoring.drift.stats import CategoricalReference, DriftVerdict, NumericReference
from sml.monitoring.summaries import CategoricalGrid, CategoricalSummary, NumericGrid, NumericSummary

DEPLOYMENT = DeploymentFloors(min_ks_d=0.1, min_cramers_v=0.1, min_missing_rate_h=0.2)


def _numeric(reference: np.ndarray, window: np.ndarray) -> tuple[NumericGrid, NumericSummary]:
    grid = NumericGrid.from_sorted(np.sort(reference))
    summary = NumericSummary.empty(grid)
    summary.add(window, grid)
    return grid, summary


def test_numeric_bins_are_the_reference_deciles_counted_exactly() -> None:
    rng = np.random.default_rng(1)
    reference, window = rng.normal(0, 1, 1_000), rng.normal(0.3, 1, 700)
    grid, summary = _numeric(reference, window)
    reference_counts, window_counts = binned_counts(grid, summary)
    edges = np.sort(reference)[np.arange(1, 10) * 100 - 1]
    assert reference_counts.tolist() == [100] * 10
    assert window_counts.tolist() == np.bincount(np.searchsorted(edges, window, side="left"), minlength=10).tolist()


def test_categorical_bins_add_one_for_unseen_values_only_when_there_are_some() -> None:
    grid = CategoricalGrid.from_counts({"a": 5, "b": 3, "zero": 0})
    summary = CategoricalSummary.empty(grid)
    summary.add(["a", "b", "b"])
    assert [counts.tolist() for counts in binned_counts(grid, summary)] == [[5, 3], [1, 2]]
    summary.add(["new", "zero"])
    assert [counts.tolist() for counts in binned_counts(grid, summary)] == [[5, 3, 0], [1, 2, 2]]


def test_jensen_shannon_is_scipys_base_2_distance_and_psi_the_textbook_sum() -> None:
    grid = CategoricalGrid.from_counts({"a": 500, "b": 300, "c": 200})
    summary = CategoricalSummary.empty(grid)
    summary.add(["a"] * 300 + ["b"] * 300 + ["c"] * 400)
    column = DriftColumn("c", "categorical")
    js = drift_method("jensen_shannon").compute(column, grid, summary)
    assert js.effect == pytest.approx(jensenshannon([0.5, 0.3, 0.2], [0.3, 0.3, 0.4], base=2), rel=1e-12)
    psi = drift_method("psi").compute(column, grid, summary)
    expected = sum((c - r) * math.log(c / r) for r, c in ((0.5, 0.3), (0.3, 0.3), (0.2, 0.4)))
    assert psi.effect == pytest.approx(expected, rel=1e-12)
    for outcome in (js, psi):
        assert outcome.p_value < 1e-10 and outcome.effect_upper >= outcome.effect


def test_wasserstein_from_cells_is_scipys_on_the_values_within_the_midpoint_error() -> None:
    rng = np.random.default_rng(2)
    reference, window = rng.normal(10, 2, 5_000), rng.normal(10.5, 2.5, 3_000)
    grid, summary = _numeric(reference, window)
    outcome = drift_method("wasserstein").compute(DriftColumn("x", "numeric"), grid, summary)
    exact = stats.wasserstein_distance(reference, window) / np.std(reference)
    largest_gap = float(np.max(np.diff(grid.values)))
    assert abs(outcome.effect - exact) <= largest_gap / 2 / np.std(reference)
    assert outcome.effect == pytest.approx(exact, rel=0.01)
    # On values the reference holds (integers), no value sits between reference values: exact.
    integers, shifted = rng.integers(0, 20, 4_000).astype(float), rng.integers(1, 21, 2_000).astype(float)
    grid, summary = _numeric(integers, shifted)
    outcome = drift_method("wasserstein").compute(DriftColumn("x", "numeric"), grid, summary)
    assert outcome.effect == pytest.approx(stats.wasserstein_distance(integers, shifted) / np.std(integers), rel=1e-9)


@pytest.mark.parametrize("method", ["psi", "wasserstein", "jensen_shannon"])
def test_each_method_clears_a_null_window_and_flags_a_half_sd_shift_with_the_same_rule(method: str) -> None:
    rng = np.random.default_rng(3)
    reference = {"x": NumericReference.from_values(rng.normal(0, 1, 5_000))}
    column = [DriftColumn("x", "numeric", method=method)]
    (null, _) = run_drift_tests(reference, {"x": rng.normal(0, 1, 5_000)}, column)
    (shifted, _) = run_drift_tests(reference, {"x": rng.normal(0.5, 1, 5_000)}, column)
    assert (null.test, null.verdict, shifted.verdict) == (method, DriftVerdict.NO_DRIFT, DriftVerdict.DRIFT)
    assert null.effect_upper < null.effect_floor == drift_method(method).default_floor
    assert shifted.p_adjusted < 0.05 and shifted.effect_size >= shifted.effect_floor


def test_resampled_bounds_are_reproducible() -> None:
    rng = np.random.default_rng(4)
    reference = {"x": NumericReference.from_values(rng.normal(0, 1, 2_000))}
    window = {"x": rng.normal(0.05, 1, 1_000)}
    for method in ("psi", "wasserstein", "jensen_shannon"):
        first, second = (run_drift_tests(reference, window, [DriftColumn("x", "numeric", method=method)])[0] for _ in range(2))
        assert (first.effect_upper, first.p_value) == (second.effect_upper, second.p_value)


def test_the_drift_config_chooses_methods_per_kind_and_per_feature_with_their_own_floors() -> None:
    features = (FeatureSpec("age", "numeric"), FeatureSpec("income", "numeric"), FeatureSpec("city", "categorical"))
    config = ModelDriftConfig.from_mapping(
        {"methods": {"numeric": "psi", "categorical": "jensen_shannon"}, "features": {"income": {"method": "wasserstein", "floor": 0.3}},
         "floors": {"psi": 0.2}},
        source="drift.toml",
    ).check_features(features)
    columns = [DriftColumn(spec.name, spec.kind, method=config.method_for(spec.name, spec.kind).name) for spec in features]
    floors = resolve_floors(columns, DEPLOYMENT, config)
    assert {key: (floor.value, floor.source, floor.setting) for key, floor in floors.items() if key[1] != "missing_rate"} == {
        ("age", "psi"): (0.2, "model", "floors.psi"),
        ("income", "wasserstein"): (0.3, "model", "features.income.floor"),
        ("city", "jensen_shannon"): (0.1, "default", "SML_DRIFT_FLOORS"),
    }


def test_the_deployment_sets_any_registered_methods_floor_by_its_key_and_the_models_key_wins() -> None:
    # KS and chi-square have SML_DRIFT_MIN_KS_D / _CRAMERS_V; the others take SML_DRIFT_FLOORS by their floor key.
    settings = load_settings(DriftSettings, {"SML_DRIFT_FLOORS": '{"psi": 0.25, "wasserstein": "0.2", "jensen_shannon": 0.05}'})
    deployment = DriftJobConfig.from_settings(settings).deployment_floors()
    features = (FeatureSpec("age", "numeric"), FeatureSpec("income", "numeric"), FeatureSpec("city", "categorical"))
    config = ModelDriftConfig.from_mapping(
        {"methods": {"numeric": "psi", "categorical": "jensen_shannon"}, "features": {"income": {"method": "wasserstein"}},
         "floors": {"jensen_shannon": 0.15}},
        source="drift.toml",
    ).check_features(features)
    columns = [DriftColumn(spec.name, spec.kind, method=config.method_for(spec.name, spec.kind).name) for spec in features]
    with pytest.raises(SmlError, match="SML_DRIFT_FLOORS: wasserstein: a Wasserstein distance \\(reference sd\\) floor must be a number"):
        resolve_floors(columns, deployment, config)
    deployment = replace(deployment, method_floors={**deployment.method_floors, "wasserstein": 0.2})
    assert {key: (floor.value, floor.source, floor.setting) for key, floor in resolve_floors(columns, deployment, config).items() if key[1] != "missing_rate"} == {
        ("age", "psi"): (0.25, "deployment", "SML_DRIFT_FLOORS"),
        ("income", "wasserstein"): (0.2, "deployment", "SML_DRIFT_FLOORS"),
        ("city", "jensen_shannon"): (0.15, "model", "floors.jensen_shannon"),
    }


@pytest.mark.parametrize(
    ("floors", "message"),
    [
        ({"numeric": 0.2}, "SML_DRIFT_FLOORS: numeric: its floor is SML_DRIFT_MIN_KS_D; expected a floor key of jensen_shannon, psi, wasserstein"),
        ({"missing_rate": 0.2}, "SML_DRIFT_FLOORS: missing_rate: its floor is SML_DRIFT_MIN_MISSING_RATE_H"),
        ({"nope": 0.2}, "SML_DRIFT_FLOORS: nope: expected a floor key of jensen_shannon, psi, wasserstein"),
        ({"psi": -1}, "SML_DRIFT_FLOORS: psi: a PSI floor must be a number in \\(0, inf\\), got -1"),
    ],
)
def test_a_deployment_floor_of_no_method_or_out_of_range_is_refused_naming_the_variable(floors: dict, message: str) -> None:
    columns = [DriftColumn("age", "numeric")]
    with pytest.raises(SmlError, match=message):
        resolve_floors(columns, replace(DEPLOYMENT, method_floors=floors), None)


def test_sml_drift_floors_must_be_a_json_object() -> None:
    with pytest.raises(SettingsError, match="SML_DRIFT_FLOORS.*JSON object of a drift method's floor key -> floor"):
        load_settings(DriftSettings, {"SML_DRIFT_FLOORS": "[0.2]"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"methods": {"categorical": "wasserstein"}}, "methods.categorical: 'wasserstein' is not a drift method for categorical"),
        ({"methods": {"numeric": "missing_rate"}}, "methods.numeric: 'missing_rate' is not a drift method for numeric"),
        ({"floors": {"psi": -1}}, "floors.psi: a PSI floor must be a number in \\(0, inf\\), got -1"),
        ({"features": {"age": {"method": "jensen_shannon", "floor": 2}}}, "features.age.floor: a Jensen–Shannon distance floor must be a number in \\(0, 1\\)"),
    ],
)
def test_a_wrong_method_or_floor_is_refused_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(SmlError, match=message):
        ModelDriftConfig.from_mapping(data, source="drift.toml").check_features((FeatureSpec("age", "numeric"),))


def test_categorical_columns_take_psi_and_js_on_the_same_data_as_chi_square() -> None:
    rng = np.random.default_rng(5)
    reference = {"c": CategoricalReference.from_values(rng.choice(["a", "b", "c"], 4_000, p=[0.5, 0.3, 0.2]).tolist())}
    window = {"c": rng.choice(["a", "b", "c"], 4_000, p=[0.3, 0.3, 0.4]).tolist()}
    verdicts = {method: run_drift_tests(reference, window, [DriftColumn("c", "categorical", method=method)])[0].verdict for method in ("chi2", "psi", "jensen_shannon")}
    assert set(verdicts.values()) == {DriftVerdict.DRIFT}


def test_a_method_that_cannot_read_a_sketch_is_refused_against_the_previous_window() -> None:
    from dataclasses import replace

    from sml.core.errors import SmlError
    from sml.lifecycle.manifest import ModelManifest, ReferenceData
    from sml.lifecycle.manifest import NumericReference as ManifestNumeric
    from sml.monitoring.job import DriftJobConfig

    manifest = ModelManifest(
        model_name="m", version="v1", created_at="2026-01-01T00:00:00Z", sha256="0" * 64, artifact_key="k", estimator="e", metrics={},
        params={}, classes=("no", "yes"), features=(FeatureSpec("age", "numeric"),),
        reference=ReferenceData(n_rows=3, features={"age": ManifestNumeric(sorted_values=(1.0, 2.0, 3.0))}, label_counts={"no": 2, "yes": 1}),
        library_versions={}, drift_config={"source": "drift.toml", "methods": {"numeric": "psi"}},
    )
    assert DriftJobConfig(bucket="b").plan(manifest).columns[0].method == "psi"
    with pytest.raises(SmlError, match="^age: the psi method cannot test against the previous window"):
        DriftJobConfig(bucket="b", reference_kind="previous").plan(manifest)
    assert DriftJobConfig(bucket="b", reference_kind="previous").plan(replace(manifest, drift_config=None)).columns[0].main_method().name == "ks"


def test_wasserstein_power_check_of_a_discrete_reference_is_its_own_not_an_earlier_one_with_the_same_values() -> None:
    # Two references of a 5-level feature share their distinct values (and so the grid's digest)
    # but not their counts: the no-shift quantiles behind the power check must be each one's.
    from sml.monitoring.drift.methods import wasserstein

    rng = np.random.default_rng(9)
    small, large = (NumericGrid.from_sorted(np.sort(rng.integers(1, 6, size).astype(float))) for size in (400, 50_000))
    assert small.digest == large.digest
    method, column = drift_method("wasserstein"), DriftColumn("likert", "numeric", method="wasserstein")
    wasserstein._NULL_QUANTILES.clear()
    alone = method.certifiable(column, large, 1_000, 0.05)
    wasserstein._NULL_QUANTILES.clear()
    method.certifiable(column, small, 1_000, 0.05)
    assert method.certifiable(column, large, 1_000, 0.05) == alone


def test_wassersteins_default_floor_is_the_shift_that_ks_default_floor_stands_for() -> None:
    # At Evidently's 0.1 sd, 6-7 % of null runs of 20 columns with 1,000-row windows said DRIFT:
    # the floor sat at the distance such a window reaches by chance.
    ks_floor = drift_method("ks").default_floor
    shift = drift_method("wasserstein").default_floor  # W = δ for a location shift of δ sd
    assert 2 * stats.norm.cdf(shift / 2) - 1 == pytest.approx(ks_floor, abs=0.002)
