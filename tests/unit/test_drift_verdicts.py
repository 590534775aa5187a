"""The three-outcome verdict rule at its boundaries, its bounds' coverage, and its false-alarm rate in simulation."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sml.monitoring.drift.stats import (
    CategoricalReference,
    DriftVerdict,
    NumericReference,
    cohens_h_upper_bound,
    cramers_v_upper_bound,
    ks_d_for_location_shift,
    ks_upper_bound,
    overall_verdict,
    parse_effect_floor,
)
from sml.monitoring.drift.run import DriftColumn, run_drift_tests

SCHEMA = [DriftColumn("x", "numeric")]
VERDICT_BENCH = Path(__file__).resolve().parents[2] / "bench" / "verdict_bench.py"


def _shifted(rows: int, shift: float, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    return {"x": NumericReference(np.sort(rng.normal(0, 1, rows)))}, {"x": rng.normal(shift, 1, rows)}


def _ks(reference: dict, current: dict, floor: float, **options):
    return run_drift_tests(reference, current, SCHEMA, floors={"x": floor}, **options)[0]


def test_a_significant_effect_just_over_at_and_just_under_the_floor() -> None:
    reference, current = _shifted(3000, 0.3, seed=1)
    seen = _ks(reference, current, 0.1)
    assert seen.p_adjusted < 1e-6
    effect = seen.effect_size
    assert _ks(reference, current, effect - 1e-9).verdict is DriftVerdict.DRIFT
    assert _ks(reference, current, effect).verdict is DriftVerdict.DRIFT
    just_under = _ks(reference, current, effect + 1e-9)
    assert (just_under.verdict, just_under.detail["reason"]) == (DriftVerdict.INCONCLUSIVE, "near_floor")
    assert just_under.effect_upper > just_under.effect_floor


def test_no_drift_needs_the_upper_bound_strictly_under_the_floor() -> None:
    reference, current = _shifted(3000, 0.0, seed=2)
    quiet = _ks(reference, current, 0.1)
    upper = quiet.effect_upper
    assert quiet.p_adjusted > 0.05 and upper == pytest.approx(quiet.effect_size + 1.6449 * 0.5 * math.sqrt(2 / 3000), rel=1e-4)
    assert _ks(reference, current, upper + 1e-9).verdict is DriftVerdict.NO_DRIFT
    at_bound = _ks(reference, current, upper)
    assert (at_bound.verdict, at_bound.detail["reason"]) == (DriftVerdict.INCONCLUSIVE, "underpowered")


def test_tiny_samples_stop_at_min_samples_and_huge_ones_decide_trivial_shifts() -> None:
    rng = np.random.default_rng(3)
    reference = {"x": NumericReference(np.sort(rng.normal(0, 1, 5000)))}
    at_minimum = run_drift_tests(reference, {"x": rng.normal(5, 1, 30)}, SCHEMA)[0]
    below = run_drift_tests(reference, {"x": rng.normal(5, 1, 29)}, SCHEMA)[0]
    assert at_minimum.verdict is DriftVerdict.DRIFT
    assert (below.verdict, below.detail["reason"]) == (DriftVerdict.INCONCLUSIVE, "below_min_samples")
    reference, current = _shifted(400_000, 0.05, seed=4)
    huge = run_drift_tests(reference, current, SCHEMA)[0]
    assert huge.p_adjusted < 1e-10 and huge.verdict is DriftVerdict.NO_DRIFT and huge.effect_upper < 0.03


def test_a_shift_exactly_at_the_floor_is_rarely_cleared() -> None:
    # A true KS gap of exactly 0.1: NO_DRIFT would be a wrong all-clear; the bound allows 5%.
    shift = stats.norm.ppf(0.55) * 2
    assert ks_d_for_location_shift(shift) == pytest.approx(0.1)
    rng = np.random.default_rng(5)
    cleared = 0
    for _ in range(200):
        reference = {"x": NumericReference(np.sort(rng.normal(0, 1, 400)))}
        result = run_drift_tests(reference, {"x": rng.normal(shift, 1, 1200)}, SCHEMA)[0]
        cleared += result.verdict is DriftVerdict.NO_DRIFT
    assert cleared / 200 <= 0.05


def test_cramers_v_bound_matches_the_simple_margin_for_one_degree_of_freedom_and_covers_the_truth() -> None:
    chi2 = 4 * 500 * 0.08**2  # V = 0.08 for two samples of 1,000 (n_eff 500)
    assert cramers_v_upper_bound(chi2, 1, 1000, 1000) == pytest.approx(0.08 + 1.6449 * 0.5 * math.sqrt(2 / 1000), abs=0.003)
    # True V = 0.1: a 50/50 column moving to 60/40. The bound must stay above 0.1 in about 95% of samples.
    rng = np.random.default_rng(6)
    below = 0
    for _ in range(300):
        reference = rng.binomial(1000, 0.5)
        current = rng.binomial(1000, 0.6)
        table = np.array([[reference, 1000 - reference], [current, 1000 - current]])
        statistic = stats.chi2_contingency(table, correction=False).statistic
        below += cramers_v_upper_bound(statistic, 1, 1000, 1000) < 0.1
    assert below / 300 <= 0.07


def test_many_categories_can_be_cleared_where_a_fixed_margin_could_not() -> None:
    # A 20-level column with no shift: V is biased upwards by the degrees of freedom; the
    # noncentral bound accounts for that and can still rule out V = 0.1 at 1,500 rows a side,
    # where effect + 1.645·½·√(1/n + 1/m) mostly cannot.
    weights = (1 / np.arange(1, 21)) / (1 / np.arange(1, 21)).sum()
    levels = [f"z{index}" for index in range(20)]
    rng = np.random.default_rng(7)
    fixed_margin = noncentral = 0
    for _ in range(40):
        reference = {"c": CategoricalReference.from_values(rng.choice(levels, 1500, p=weights))}
        result = run_drift_tests(reference, {"c": rng.choice(levels, 1500, p=weights)}, [DriftColumn("c", "categorical")])[0]
        fixed_margin += result.effect_size + 1.6449 * 0.5 * math.sqrt(2 / 1500) < 0.1
        noncentral += result.verdict is DriftVerdict.NO_DRIFT
    assert fixed_margin <= 0.4 * 40 and noncentral >= 0.85 * 40


def test_missing_rate_effect_is_cohens_h() -> None:
    reference = {"x": NumericReference.from_values(np.arange(5000.0))}
    current = np.arange(5000.0)
    current[:100] = np.nan  # a complete column now 2% empty: h = 0.28
    ks, missing = run_drift_tests(reference, {"x": current}, SCHEMA)
    assert missing.effect_size == pytest.approx(2 * math.asin(math.sqrt(0.02)))
    assert missing.verdict is DriftVerdict.DRIFT
    ten = np.where(np.arange(5000) % 10 == 0, np.nan, np.arange(5000.0))
    fifteen = np.where(np.arange(5000) % 20 < 3, np.nan, np.arange(5000.0))
    _, moderate = run_drift_tests({"x": NumericReference.from_values(ten)}, {"x": fifteen}, SCHEMA)
    assert moderate.effect_size == pytest.approx(2 * math.asin(math.sqrt(0.15)) - 2 * math.asin(math.sqrt(0.10)))
    assert moderate.verdict is not DriftVerdict.DRIFT
    assert cohens_h_upper_bound(0.1, 400, 1000) == pytest.approx(0.1 + 1.6449 * math.sqrt(1 / 400 + 1 / 1000), rel=1e-4)


def test_ks_bound_is_capped_at_one() -> None:
    assert ks_upper_bound(0.99, 30, 30) == 1.0


@pytest.mark.parametrize(("value", "expected"), [(0.05, 0.05), ("0.04", 0.04), ("0.25sd", 0.0995), (" 0.1SD ", 0.0399)])
def test_floors_read_as_effects_or_standard_deviations(value: object, expected: float) -> None:
    assert parse_effect_floor("x", value) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("big", "'big' is not a number or '<x>sd'"),
        ("xsd", "not a number of standard deviations"),
        (1.5, "must give an effect in"),
        # Taken as 0.1 sd before: the size of a shift, read from a floor a user wrote wrongly.
        ("-0.1sd", "must be a positive number of standard deviations"),
        ("0sd", "must be a positive number of standard deviations"),
    ],
)
def test_bad_floors_name_the_feature(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"floor of feature 'x': .*{message}"):
        parse_effect_floor("x", value)


def test_false_alarm_rate_of_twenty_realistic_columns_stays_under_the_fdr() -> None:
    spec = importlib.util.spec_from_file_location("verdict_bench", VERDICT_BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(VERDICT_BENCH.parent))
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(VERDICT_BENCH.parent))
    rng = np.random.default_rng(18)
    runs, false_alarms, verdicts = 40, 0, []
    for _ in range(runs):
        flagged, verdict = bench.ours(bench.generate_columns(rng, 400), bench.generate_columns(rng, 1000))
        false_alarms += bool(flagged)
        verdicts.append(verdict)
    assert false_alarms / runs <= 0.05
    # A 400-row reference against 1,000 rows can decide most columns: runs say NO_DRIFT, not INCONCLUSIVE.
    assert verdicts.count("NO_DRIFT") / runs >= 0.9
    assert overall_verdict([]) is DriftVerdict.INCONCLUSIVE


def test_a_missing_rate_floor_per_feature_replaces_the_general_one_for_that_feature_only() -> None:
    schema = [DriftColumn("x", "numeric"), DriftColumn("y", "numeric"), DriftColumn("label", "categorical", prediction=True)]
    reference = {
        "x": NumericReference(np.arange(2_000.0)),
        "y": NumericReference(np.arange(2_000.0)),
        "label": CategoricalReference({"a": 1_000, "b": 1_000}),
    }
    # 2% missing where training had none: Cohen's h 0.28, over the default floor 0.2 but under 0.3.
    column = [None] * 40 + list(range(1_960))
    current = {"x": column, "y": column, "label": ["a", "b"] * 1_000}
    results = {(r.feature, r.test): r for r in run_drift_tests(reference, current, schema, missing_rate_floors={"y": 0.3})}
    assert (results["x", "missing_rate"].effect_floor, results["x", "missing_rate"].verdict) == (0.2, DriftVerdict.DRIFT)
    assert results["y", "missing_rate"].effect_floor == 0.3 and results["y", "missing_rate"].verdict is not DriftVerdict.DRIFT
    with pytest.raises(ValueError, match="missing-rate floors given for feature\\(s\\) not in the schema: 'label'"):
        run_drift_tests(reference, current, schema, missing_rate_floors={"label": 0.3})
    with pytest.raises(ValueError, match="missing-rate floor of feature 'y' must be in \\[0, pi\\), got -0.1"):
        run_drift_tests(reference, current, schema, missing_rate_floors={"y": -0.1})


def test_the_missing_rate_bound_never_passes_pi_the_largest_cohens_h() -> None:
    # A complete reference column arriving empty is h = π; the bound said "rules out ≥ 3.28".
    reference = {"x": NumericReference(np.arange(40.0), missing=0)}
    [missing_rate] = [result for result in run_drift_tests(reference, {"x": np.full(40, np.nan)}, SCHEMA) if result.test == "missing_rate"]

    assert missing_rate.effect_size == pytest.approx(math.pi)
    assert missing_rate.effect_upper == math.pi
    assert cohens_h_upper_bound(3.0, 10, 10) == math.pi
    assert cohens_h_upper_bound(0.1, 10_000, 10_000) == pytest.approx(0.1 + 1.6449 * math.sqrt(2 / 10_000), rel=1e-4)
