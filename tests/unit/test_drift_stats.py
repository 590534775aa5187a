"""Drift statistics agree with scipy, detect real shifts on the right column and stay quiet on trivial ones."""

import math
import warnings
from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from sml.monitoring.drift.stats import (
    OTHER_BUCKET,
    UNSEEN_BUCKET,
    CategoricalReference,
    DriftVerdict,
    FeatureTestResult,
    NumericReference,
    chi_square_test,
    ks_two_sample,
    ks_two_sample_columns,
    min_detectable_cramers_v,
    min_detectable_ks_statistic,
    min_detectable_rate_change,
    missing_rate_test,
    overall_verdict,
    pooled_contingency_table,
    reference_from_columns,
    sorted_finite_columns,
    verdict_summary,
)
from sml.monitoring.drift.run import DriftColumn, run_drift_tests


def _random_sample(rng: np.random.Generator, size: int) -> np.ndarray:
    """Continuous, heavily tied or rounded data, sometimes shifted."""
    shape = rng.integers(3)
    shift = rng.choice([0.0, 0.3, 1.0])
    if shape == 0:
        return rng.normal(shift, 1.0, size)
    if shape == 1:
        return rng.integers(0, 6, size).astype(float) + round(shift)
    return np.round(rng.normal(shift, 1.0, size), 1)


def _drifting(results: list[FeatureTestResult]) -> set[tuple[str, str]]:
    return {(result.feature, result.test) for result in results if result.verdict is DriftVerdict.DRIFT}


def _assert_no_nan(results: list[FeatureTestResult]) -> None:
    for result in results:
        for item in fields(result):
            value = getattr(result, item.name)
            if isinstance(value, float):
                assert not math.isnan(value), (result.feature, result.test, item.name)
        for key, value in result.detail.items():
            if isinstance(value, float):
                assert not math.isnan(value), (result.feature, result.test, key)


# --- Kolmogorov–Smirnov ---------------------------------------------------------------------


def test_ks_matches_scipy_on_200_random_cases_with_ties_and_unequal_sizes() -> None:
    rng = np.random.default_rng(20240601)
    for case in range(200):
        n, m = rng.integers(1, 400, size=2)
        reference, current = _random_sample(rng, n), _random_sample(rng, m)
        expected = stats.ks_2samp(reference, current)
        got = ks_two_sample(np.sort(reference), np.sort(current))
        assert got.statistic == pytest.approx(expected.statistic, rel=1e-12, abs=1e-15), case
        assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300), case
        assert got.method == "exact"


@pytest.mark.parametrize(("n", "m"), [(30, 20_000), (5_000, 12_000), (11_000, 700), (10_001, 10_001)])
def test_ks_uses_scipys_asymptotic_distribution_while_it_is_fast(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    reference, current = np.round(rng.normal(0, 1, n), 2), np.round(rng.normal(0.05, 1, m), 2)
    expected = stats.ks_2samp(reference, current, method="asymp")
    got = ks_two_sample(np.sort(reference), np.sort(current))
    assert got.method == "kstwo"
    assert got.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.01, 0.02, 0.03])
def test_ks_limiting_distribution_is_close_to_scipy_at_large_samples(shift: float) -> None:
    rng = np.random.default_rng(int(shift * 100))
    reference, current = rng.normal(0, 1, 40_000), np.round(rng.normal(shift, 1, 30_000), 2)
    expected = stats.ks_2samp(reference, current, method="asymp")
    got = ks_two_sample(np.sort(reference), np.sort(current))
    assert got.method == "kstwobign"
    assert got.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(expected.pvalue, rel=0.02)


def test_ks_columns_sort_a_matrix_once_and_drop_missing_values() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(500, 3))
    current = rng.normal(0.2, 1.0, size=(300, 3))
    current[rng.random(current.shape) < 0.1] = np.nan
    results = ks_two_sample_columns(sorted_finite_columns(reference), sorted_finite_columns(current))
    for column, result in enumerate(results):
        present = current[:, column][~np.isnan(current[:, column])]
        expected = stats.ks_2samp(reference[:, column], present)
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_on_constant_and_empty_samples_is_defined() -> None:
    fives, sixes = np.full(50, 5.0), np.full(40, 6.0)
    assert ks_two_sample(fives, fives).statistic == 0.0
    assert ks_two_sample(fives, fives).p_value == 1.0
    assert ks_two_sample(fives, sixes).statistic == 1.0
    assert ks_two_sample(fives, sixes).p_value < 1e-20
    assert ks_two_sample(fives, np.array([])) == ks_two_sample(np.array([]), fives)
    assert ks_two_sample(fives, np.array([])).p_value == 1.0
    assert ks_two_sample(fives, np.array([])).method == "empty"


# --- chi-square and missing rate ------------------------------------------------------------


def test_chi_square_matches_chi2_contingency_when_nothing_is_pooled() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        categories = [f"c{index}" for index in range(rng.integers(2, 7))]
        reference = dict(zip(categories, rng.integers(20, 500, len(categories)).tolist()))
        current = dict(zip(categories, rng.integers(20, 500, len(categories)).tolist()))
        table = np.array([[reference[c] for c in categories], [current[c] for c in categories]])
        expected = stats.chi2_contingency(table, correction=False)
        got = chi_square_test(reference, current, order=categories)
        assert got.buckets == tuple(categories)
        assert got.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12)
        assert got.df == expected.dof
        assert got.table_cramers_v == pytest.approx(math.sqrt(expected.statistic / table.sum()))


def test_rare_categories_are_pooled_and_unseen_values_get_their_own_bucket() -> None:
    reference = {"a": 600, "b": 345, "c": 30, "d": 25}
    current = {"a": 50, "b": 37, "c": 3, "e": 9, "f": 1}
    # The smaller side has 100 of 1100 values, so a category needs 55 values overall to expect 5:
    # c (33) and d (25) are pooled, and reach 58 together; e and f were never seen in the reference.
    buckets, table = pooled_contingency_table(reference, current)
    assert buckets == ("a", "b", OTHER_BUCKET, UNSEEN_BUCKET)
    assert table.tolist() == [[600, 345, 55, 0], [50, 37, 3, 10]]
    got = chi_square_test(reference, current)
    expected = stats.chi2_contingency(table, correction=False)
    assert got.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_a_pool_that_stays_rare_absorbs_the_smallest_category() -> None:
    buckets, table = pooled_contingency_table({"a": 500, "b": 300, "c": 3}, {"a": 50, "b": 30, "c": 1})
    assert buckets == ("a", OTHER_BUCKET)
    assert table.tolist() == [[500, 303], [50, 31]]


def test_cramers_v_effect_does_not_shrink_when_the_reference_dwarfs_the_window() -> None:
    shifted = {"x": 300, "y": 700}
    balanced = chi_square_test({"x": 500, "y": 500}, shifted)
    unbalanced = chi_square_test({"x": 500_000, "y": 500_000}, shifted)
    assert balanced.cramers_v == pytest.approx(balanced.table_cramers_v)
    assert unbalanced.cramers_v == pytest.approx(balanced.cramers_v)
    assert unbalanced.table_cramers_v < balanced.cramers_v / 10


def test_missing_rate_uses_chi_square_or_fisher_by_expected_counts() -> None:
    large = missing_rate_test(50, 1000, 120, 1000)
    table = [[50, 950], [120, 880]]
    assert large.method == "chi2"
    assert large.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-12)
    assert large.difference == pytest.approx(0.07)
    assert large.cohens_h == pytest.approx(2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.05)))
    small = missing_rate_test(1, 1000, 4, 40)
    assert small.method == "fisher"
    assert small.p_value == pytest.approx(stats.fisher_exact([[1, 999], [4, 36]]).pvalue, rel=1e-12)
    none_missing = missing_rate_test(0, 1000, 0, 50)
    assert (none_missing.method, none_missing.p_value, none_missing.statistic) == ("degenerate", 1.0, 0.0)


def test_missing_rate_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="current missing count 5 is not between 0 and the row count 4"):
        missing_rate_test(0, 10, 5, 4)


# --- power ----------------------------------------------------------------------------------


def test_min_detectable_effects_shrink_with_more_data_and_stricter_alpha_needs_more() -> None:
    for detectable in (
        lambda n, alpha: min_detectable_ks_statistic(n, n, alpha),
        lambda n, alpha: min_detectable_cramers_v(n, n, 3, alpha),
        lambda n, alpha: min_detectable_rate_change(n, n, 0.1, alpha),
    ):
        assert detectable(100, 0.05) > detectable(1000, 0.05) > detectable(10_000, 0.05)
        assert detectable(1000, 0.001) > detectable(1000, 0.05)


def test_min_detectable_cramers_v_reaches_the_requested_power_for_equal_samples() -> None:
    n, df, alpha = 400, 2, 0.01
    effect = min_detectable_cramers_v(n, n, df, alpha)
    noncentrality = 2 * n * effect**2
    assert stats.ncx2.sf(stats.chi2.isf(alpha, df), df, noncentrality) == pytest.approx(0.8, abs=1e-6)


def test_ks_has_about_80_percent_power_at_its_min_detectable_statistic() -> None:
    rng = np.random.default_rng(3)
    n, alpha = 400, 0.05
    detectable = min_detectable_ks_statistic(n, n, alpha)
    # A normal location shift delta has ECDF gap 2 * Phi(delta / 2) - 1.
    delta = 2 * stats.norm.ppf((1 + detectable) / 2)
    trials = 300
    detected = sum(
        ks_two_sample(np.sort(rng.normal(0, 1, n)), np.sort(rng.normal(delta, 1, n))).p_value < alpha
        for _ in range(trials)
    )
    assert detected / trials >= 0.75


def test_missing_rate_power_holds_near_zero_rates_for_equal_samples() -> None:
    rng = np.random.default_rng(5)
    n, alpha = 300, 0.005
    change = min_detectable_rate_change(n, n, 0.0, alpha)
    trials = 400
    detected = sum(missing_rate_test(0, n, rng.binomial(n, change), n).p_value < alpha for _ in range(trials))
    assert detected / trials >= 0.75


# --- whole runs -----------------------------------------------------------------------------

SCHEMA = [
    DriftColumn("age", "numeric"),
    DriftColumn("income", "numeric"),
    DriftColumn("score", "numeric"),
    DriftColumn("colour", "categorical", categories=["red", "green", "blue"]),
    DriftColumn("city", "categorical"),
    DriftColumn("prediction", "categorical", ["yes", "no"], prediction=True),
]
COLOURS, COLOUR_MIX, SHIFTED_COLOUR_MIX = ["red", "green", "blue"], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]
CITIES = ["paris", "lyon", "nice", "lille", "metz", "brest"]


def _window(rng: np.random.Generator, rows: int, shift: str | None = None) -> dict[str, list | np.ndarray]:
    """One window of every SCHEMA column; ``shift`` names the single change to apply."""
    age = rng.normal(40 + (5 if shift == "mean" else 0), 10, rows)
    income = rng.normal(3000, 1000 * (2 if shift == "variance" else 1), rows)
    score = rng.normal(0, 1, rows)
    if shift == "nulls":
        score[rng.random(rows) < 0.2] = np.nan
    colour = rng.choice(COLOURS, p=SHIFTED_COLOUR_MIX if shift == "mix" else COLOUR_MIX, size=rows).tolist()
    city = rng.choice(CITIES, size=rows).tolist()
    prediction = rng.choice(["yes", "no"], p=[0.3, 0.7], size=rows).tolist()
    return {"age": age, "income": income, "score": score, "colour": colour, "city": city, "prediction": prediction}


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        ("mean", {("age", "ks")}),
        ("variance", {("income", "ks")}),
        ("mix", {("colour", "chi2")}),
        ("nulls", {("score", "missing_rate")}),
        (None, set()),
    ],
)
def test_each_kind_of_shift_is_flagged_on_its_column_only(shift: str | None, expected: set) -> None:
    rng = np.random.default_rng(42)
    reference = reference_from_columns(_window(rng, 5000), SCHEMA)
    results = run_drift_tests(reference, _window(rng, 5000, shift), SCHEMA)
    assert _drifting(results) == expected
    assert overall_verdict(results) is (DriftVerdict.DRIFT if expected else DriftVerdict.NO_DRIFT)
    assert [(result.feature, result.test) for result in results][:4] == [
        ("age", "ks"), ("age", "missing_rate"), ("income", "ks"), ("income", "missing_rate"),
    ]
    assert [result.kind for result in results if result.feature == "prediction"] == ["label"]


def test_a_million_rows_do_not_flag_identical_or_trivially_shifted_columns() -> None:
    rng = np.random.default_rng(1)
    rows = 1_000_000
    schema = [DriftColumn("same_a", "numeric"), DriftColumn("same_b", "numeric"), DriftColumn("nudged", "numeric")]
    reference = {spec.name: NumericReference(np.sort(rng.normal(0, 1, rows))) for spec in schema}
    current = {"same_a": rng.normal(0, 1, rows), "same_b": rng.normal(0, 1, rows), "nudged": rng.normal(0.02, 1, rows)}
    results = run_drift_tests(reference, current, schema)
    nudged = next(result for result in results if result.feature == "nudged" and result.test == "ks")
    assert nudged.p_adjusted < 1e-6 and nudged.effect_size < 0.02
    assert {result.verdict for result in results} == {DriftVerdict.NO_DRIFT}
    assert overall_verdict(results) is DriftVerdict.NO_DRIFT


def test_twenty_rows_are_inconclusive_even_when_wildly_shifted() -> None:
    rng = np.random.default_rng(2)
    reference = reference_from_columns(_window(rng, 5000), SCHEMA)
    current = _window(rng, 20)
    current["age"] = current["age"] + 100
    results = run_drift_tests(reference, current, SCHEMA)
    assert {result.verdict for result in results} == {DriftVerdict.INCONCLUSIVE}
    assert {result.detail["reason"] for result in results} == {"below_min_samples"}
    assert overall_verdict(results) is DriftVerdict.INCONCLUSIVE


def test_a_small_quiet_window_is_inconclusive_and_says_what_it_could_rule_out() -> None:
    rng = np.random.default_rng(3)
    schema = [DriftColumn("x", "numeric")]
    reference = {"x": NumericReference(np.sort(rng.normal(0, 1, 5000)))}
    quiet = run_drift_tests(reference, {"x": rng.normal(0, 1, 100)}, schema)[0]
    assert quiet.verdict is DriftVerdict.INCONCLUSIVE
    assert quiet.detail["reason"] == "underpowered"
    assert quiet.effect_upper == pytest.approx(quiet.effect_size + 1.6449 * 0.5 * math.sqrt(1 / 5000 + 1 / 100), rel=1e-4)
    assert quiet.effect_upper > quiet.effect_floor
    loud = run_drift_tests(reference, {"x": rng.normal(3, 1, 100)}, schema)[0]
    assert loud.verdict is DriftVerdict.DRIFT


def test_p_values_are_adjusted_with_benjamini_hochberg_across_the_run() -> None:
    rng = np.random.default_rng(4)
    reference = reference_from_columns(_window(rng, 3000), SCHEMA)
    results = run_drift_tests(reference, _window(rng, 400, "nulls"), SCHEMA, fdr=0.1)
    # Missing-rate tests without a single missing value cannot reject and stay out of the correction.
    corrected = [result for result in results if result.detail["method"] != "degenerate"]
    assert [(result.feature, result.test) for result in results if result not in corrected] == [
        ("age", "missing_rate"), ("income", "missing_rate"), ("colour", "missing_rate"), ("city", "missing_rate"),
    ]
    adjusted = stats.false_discovery_control([result.p_value for result in corrected], method="bh")
    assert [result.p_adjusted for result in corrected] == pytest.approx(adjusted.tolist(), rel=1e-12)
    assert all(result.p_adjusted == 1.0 for result in results if result not in corrected)
    assert all(result.detail["power_alpha"] == pytest.approx(0.1 / len(corrected)) for result in results)


def test_a_significant_shift_below_the_floor_is_not_drift_until_the_floor_is_lowered() -> None:
    rng = np.random.default_rng(6)
    schema = [DriftColumn("x", "numeric")]
    reference = {"x": NumericReference(np.sort(rng.normal(0, 1, 20_000)))}
    current = {"x": rng.normal(0.15, 1, 20_000)}
    default = run_drift_tests(reference, current, schema)[0]
    assert default.p_adjusted < 1e-6 and default.effect_size < 0.1
    assert default.effect_upper < 0.1
    assert default.verdict is DriftVerdict.NO_DRIFT
    assert run_drift_tests(reference, current, schema, min_ks_d=0.05)[0].verdict is DriftVerdict.DRIFT
    tighter = run_drift_tests(reference, current, schema, floors={"x": 0.05})[0]
    assert (tighter.verdict, tighter.effect_floor) == (DriftVerdict.DRIFT, 0.05)


def test_constant_all_missing_and_empty_columns_give_defined_results_without_warnings() -> None:
    schema = [
        DriftColumn("same_constant", "numeric"),
        DriftColumn("moved_constant", "numeric"),
        DriftColumn("all_missing_now", "numeric"),
        DriftColumn("never_present", "numeric"),
        DriftColumn("one_category", "categorical"),
        DriftColumn("no_categories", "categorical"),
    ]
    reference = {
        "same_constant": NumericReference.from_values([5.0] * 1000),
        "moved_constant": NumericReference.from_values([5.0] * 1000),
        "all_missing_now": NumericReference.from_values(np.arange(1000.0)),
        "never_present": NumericReference.from_values([None] * 1000),
        "one_category": CategoricalReference.from_values(["a"] * 1000),
        "no_categories": CategoricalReference.from_values([None] * 1000),
    }
    current = {
        "same_constant": [5.0] * 1000,
        "moved_constant": [6.0] * 1000,
        "all_missing_now": [float("nan")] * 1000,
        "never_present": [None] * 1000,
        "one_category": ["a"] * 1000,
        "no_categories": [None] * 1000,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = run_drift_tests(reference, current, schema)
        empty = run_drift_tests(reference, {name: [] for name in current}, schema)
    _assert_no_nan(results)
    _assert_no_nan(empty)
    verdicts = {(result.feature, result.test): result.verdict for result in results}
    assert verdicts[("same_constant", "ks")] is DriftVerdict.NO_DRIFT
    assert verdicts[("moved_constant", "ks")] is DriftVerdict.DRIFT
    assert verdicts[("all_missing_now", "ks")] is DriftVerdict.INCONCLUSIVE
    assert verdicts[("all_missing_now", "missing_rate")] is DriftVerdict.DRIFT
    assert verdicts[("never_present", "ks")] is DriftVerdict.INCONCLUSIVE
    assert verdicts[("never_present", "missing_rate")] is DriftVerdict.NO_DRIFT
    assert verdicts[("one_category", "chi2")] is DriftVerdict.NO_DRIFT
    assert verdicts[("no_categories", "chi2")] is DriftVerdict.INCONCLUSIVE
    assert {result.verdict for result in empty} == {DriftVerdict.INCONCLUSIVE}
    assert all(result.effect_upper is None for result in empty)
    assert {result.detail["reason"] for result in empty} == {"empty_sample"}
    assert all(result.p_value == 1.0 and result.statistic == 0.0 for result in empty)


def test_the_run_is_inconclusive_only_when_most_main_tests_could_not_decide() -> None:
    def result(feature: str, verdict: DriftVerdict, test: str = "ks") -> FeatureTestResult:
        detail = {} if verdict is not DriftVerdict.INCONCLUSIVE else {"reason": "underpowered"}
        return FeatureTestResult(feature, test, "numeric", 0.1, 0.5, 0.5, 0.08, 0.1, 400, 1000, verdict, detail, effect_upper=0.13)

    decided = [result(f"f{index}", DriftVerdict.NO_DRIFT) for index in range(18)]
    undecided = [result("income", DriftVerdict.INCONCLUSIVE), result("city", DriftVerdict.INCONCLUSIVE)]
    assert overall_verdict(decided + undecided) is DriftVerdict.NO_DRIFT
    summary = verdict_summary(decided + undecided)
    assert summary.startswith("NO_DRIFT on 18 of 20 features; 2 inconclusive: income (underpowered: could rule out only ≥ 0.13, floor 0.1), city")
    assert overall_verdict(decided[:1] + undecided) is DriftVerdict.INCONCLUSIVE
    assert verdict_summary(decided[:1] + undecided).startswith("INCONCLUSIVE: NO_DRIFT on 1 of 3 features; 2 inconclusive")
    assert overall_verdict(decided[:2] + undecided) is DriftVerdict.NO_DRIFT  # half is not most
    # A missing-rate test that cannot decide is named, but only main tests decide the run.
    assert overall_verdict(decided[:1] + [result("f0", DriftVerdict.INCONCLUSIVE, "missing_rate")]) is DriftVerdict.NO_DRIFT
    assert overall_verdict(decided + [result("x", DriftVerdict.DRIFT)] + undecided) is DriftVerdict.DRIFT
    assert overall_verdict([]) is DriftVerdict.INCONCLUSIVE
    assert verdict_summary([]) == "INCONCLUSIVE: nothing tested"


def test_stored_insufficient_data_reads_as_inconclusive() -> None:
    assert DriftVerdict("INSUFFICIENT_DATA") is DriftVerdict.INCONCLUSIVE
    with pytest.raises(ValueError):
        DriftVerdict("MAYBE")


def test_reference_objects_are_duck_typed_like_the_model_manifest() -> None:
    rng = np.random.default_rng(9)
    reference = {
        "x": SimpleNamespace(sorted_values=tuple(np.sort(rng.normal(0, 1, 2000)).tolist()), missing=0),
        "c": SimpleNamespace(counts={"a": 1000, "b": 1000}, missing=0),
    }
    schema = [SimpleNamespace(name="x", kind="numeric", categories=None),
              SimpleNamespace(name="c", kind="categorical", categories=("b", "a"))]
    results = run_drift_tests(reference, {"x": rng.normal(0, 1, 2000), "c": ["a", "b"] * 1000}, schema)
    assert [result.verdict for result in results] == [DriftVerdict.NO_DRIFT] * 4
    assert results[2].detail["buckets"] == ["b", "a"]


def test_verdicts_serialise_as_their_names() -> None:
    assert [verdict.value for verdict in DriftVerdict] == ["DRIFT", "NO_DRIFT", "INCONCLUSIVE"]
    assert f"{DriftVerdict.INCONCLUSIVE}" == "INCONCLUSIVE"


@pytest.mark.parametrize(
    ("reference", "current", "options", "message"),
    [
        ({"x": NumericReference(np.array([1.0]))}, {}, {}, "no values for feature 'x'"),
        ({}, {"x": [1.0]}, {}, "reference data has no feature 'x'"),
        ({"x": NumericReference(np.array([2.0, 1.0]))}, {"x": [1.0]}, {}, "'x': sorted_values must be ascending"),
        ({"x": CategoricalReference({"a": 1})}, {"x": [1.0]}, {}, "reference for feature 'x' is not numeric"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": ["high"]}, {}, "feature 'x' is numeric but has a non-numeric"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": [1.0]}, {"fdr": 0.0}, "fdr must be in"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": [1.0]}, {"min_ks_d": 1.5}, "min_ks_d must be in"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": [1.0]}, {"floors": {"y": 0.1}}, "floors given for feature\\(s\\) not in the schema: 'y'"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": [1.0]}, {"floors": {"x": 2.0}}, "floor of feature 'x' must be in"),
        ({"x": NumericReference(np.array([1.0]))}, {"x": [1.0]}, {"min_missing_rate_h": -1}, "min_missing_rate_h must be in"),
    ],
)
def test_invalid_inputs_name_the_feature_or_option(reference, current, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        run_drift_tests(reference, current, [DriftColumn("x", "numeric")], **options)


def test_schema_errors_name_the_feature() -> None:
    with pytest.raises(ValueError, match="feature 'x': kind 'text' is not one of"):
        DriftColumn("x", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema lists feature\\(s\\) 'x' more than once"):
        run_drift_tests({}, {}, [DriftColumn("x", "numeric"), DriftColumn("x", "numeric")])


def test_count_categories_folds_by_string_form_and_counts_every_missing_kind() -> None:
    from sml.monitoring.drift.stats import count_categories

    counts, missing = count_categories([None, float("nan"), float("nan"), np.float64("nan"), "a", 1, "1", "a"])
    assert counts == {"a": 2, "1": 2}
    assert missing == 4


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 1], {"1.0": 1, "1": 1}),
        ([True, 1, 1.0], {"True": 1, "1": 1, "1.0": 1}),
        ([1, True, 1.0, 1], {"1": 2, "True": 1, "1.0": 1}),
        ([0.0, -0.0, 0], {"0.0": 1, "-0.0": 1, "0": 1}),
        ([np.float64(2.0), 2, "2"], {"2.0": 1, "2": 2}),
        (["None", None, "nan", float("nan")], {"None": 1, "nan": 1}),
    ],
)
def test_count_categories_counts_each_value_by_its_own_text(values: list, expected: dict) -> None:
    from sml.monitoring.drift.stats import count_categories

    assert dict(count_categories(values)[0]) == expected
    assert dict(count_categories(reversed(values))[0]) == expected


def test_a_categorical_verdict_does_not_depend_on_row_order() -> None:
    schema = [DriftColumn("grade", "categorical")]
    reference = {"grade": CategoricalReference(counts={"1": 500, "2": 500})}
    window = [1.0] + [1] * 499 + [2] * 500
    rng = np.random.default_rng(13)

    verdicts = {
        tuple((result.test, result.verdict, result.statistic) for result in run_drift_tests(reference, {"grade": order}, schema))
        for order in (window, window[::-1], list(rng.permutation(np.array(window, dtype=object))))
    }

    assert len(verdicts) == 1
    [(chi2, verdict, _), *_] = verdicts.pop()
    assert (chi2, verdict) == ("chi2", DriftVerdict.NO_DRIFT)
