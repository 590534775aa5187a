"""The power check: the smallest shift a reference can certify as absent, per test.

Checked against the verdict rule itself: the returned value is the median of the upper bounds
that simulated no-shift windows get (fixed seed, bounded repetitions), it falls as either sample
grows, and it explains which floors a tiny reference can never certify.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sml.monitoring.drift.power import (
    CertifiableShift,
    certifiable_cohens_h,
    certifiable_cramers_v,
    certifiable_ks,
    certifiable_shifts,
)
from sml.monitoring.drift.stats import (
    CategoricalReference,
    NumericReference,
    chi_square_test,
    cohens_h_upper_bound,
    cramers_v_upper_bound,
    ks_d_for_location_shift,
    ks_upper_bound,
    location_shift_for_ks_d,
    missing_rate_test,
)
from sml.monitoring.drift.run import DriftColumn
from sml.monitoring.summaries import SummaryReference, reference_grids

REPETITIONS = 300


def test_location_shift_and_ks_d_are_inverse() -> None:
    for shift in (0.05, 0.25, 1.0, 3.0):
        assert location_shift_for_ks_d(ks_d_for_location_shift(shift)) == pytest.approx(shift)
    assert location_shift_for_ks_d(1.0) == math.inf


def test_ks_value_is_the_median_bound_of_no_shift_windows() -> None:
    rng = np.random.default_rng(11)
    n, m = 400, 1000
    bounds = [ks_upper_bound(stats.ks_2samp(rng.normal(size=n), rng.normal(size=m), method="asymp").statistic, n, m) for _ in range(REPETITIONS)]
    assert np.median(bounds) == pytest.approx(certifiable_ks(n, m), rel=0.06)


def test_cramers_v_value_is_the_median_bound_of_no_shift_windows() -> None:
    rng = np.random.default_rng(12)
    n, m, shares = 400, 1000, (0.5, 0.3, 0.2)
    bounds = []
    for _ in range(REPETITIONS):
        reference = dict(zip("abc", rng.multinomial(n, shares).tolist()))
        current = dict(zip("abc", rng.multinomial(m, shares).tolist()))
        outcome = chi_square_test(reference, current)
        bounds.append(cramers_v_upper_bound(outcome.statistic, outcome.df, n, m))
    assert np.median(bounds) == pytest.approx(certifiable_cramers_v(2, n, m), rel=0.06)


def test_cohens_h_value_is_the_median_bound_of_no_shift_windows() -> None:
    rng = np.random.default_rng(13)
    n, m, rate = 400, 1000, 0.1
    bounds = [
        cohens_h_upper_bound(missing_rate_test(rng.binomial(n, rate), n, rng.binomial(m, rate), m).cohens_h, n, m) for _ in range(REPETITIONS)
    ]
    assert np.median(bounds) == pytest.approx(certifiable_cohens_h(rate, n, m), rel=0.06)
    # A reference with no missing value: a window like it has none either, so h is 0 and only the margin remains.
    assert certifiable_cohens_h(0.0, n, m) == pytest.approx(cohens_h_upper_bound(0.0, n, m))


@pytest.mark.parametrize("bound", [certifiable_ks, lambda n, m: certifiable_cramers_v(3, n, m), lambda n, m: certifiable_cohens_h(0.05, n, m)])
def test_results_fall_as_either_sample_grows_and_an_unlimited_window_is_the_limit(bound) -> None:  # type: ignore[no-untyped-def]
    sizes = [30, 100, 426, 1_000, 10_000, 1_000_000]
    by_reference = [bound(n, 1_000) for n in sizes]
    by_window = [bound(426, m) for m in sizes]
    assert by_reference == sorted(by_reference, reverse=True) and len(set(by_reference)) == len(sizes)
    assert by_window == sorted(by_window, reverse=True) and len(set(by_window)) == len(sizes)
    assert bound(426, None) < by_window[-1] and bound(426, None) == pytest.approx(by_window[-1], rel=1e-3)


def numeric_reference(rows: int, missing: int = 0) -> NumericReference:
    return NumericReference.from_values(np.concatenate([np.random.default_rng(rows).normal(size=rows), np.full(missing, np.nan)]))


SCHEMA = [DriftColumn("x", "numeric"), DriftColumn("grade", "categorical"), DriftColumn("(predicted label)", "categorical", prediction=True)]


def reference_of(rows: int) -> dict:
    return {
        "x": numeric_reference(rows),
        "grade": CategoricalReference({"low": rows // 2, "moderate": rows // 4, "high": rows - rows // 2 - rows // 4}),
        "(predicted label)": CategoricalReference({"benign": rows * 6 // 10, "malignant": rows - rows * 6 // 10}),
    }


FLOORS = {
    ("x", "ks"): ks_d_for_location_shift(0.25),
    ("x", "missing_rate"): 0.2,
    ("grade", "chi2"): 0.1,
    ("grade", "missing_rate"): 0.2,
    ("(predicted label)", "chi2"): 0.1,
}


def grids(reference: dict, schema: list[DriftColumn]) -> SummaryReference:
    return reference_grids(reference, schema)


def by_test(shifts: list[CertifiableShift]) -> dict[tuple[str, str], CertifiableShift]:
    return {(shift.feature, shift.test): shift for shift in shifts}


def test_a_tiny_reference_can_certify_nothing_and_a_huge_one_everything() -> None:
    tiny = by_test(certifiable_shifts(grids(reference_of(40), SCHEMA), SCHEMA, FLOORS, window_rows=1_000))
    huge = by_test(certifiable_shifts(grids(reference_of(100_000), SCHEMA), SCHEMA, FLOORS, window_rows=1_000))
    assert list(tiny) == list(FLOORS)
    assert not any(shift.certifiable for shift in tiny.values())
    assert all(shift.min_window_rows is None for shift in tiny.values())
    assert all(shift.certifiable for shift in huge.values())
    assert huge["x", "ks"].in_units(huge["x", "ks"].unlimited) < 0.03
    below_min_samples = certifiable_shifts(grids(reference_of(20), SCHEMA), SCHEMA, FLOORS, window_rows=1_000, min_samples=30)[0]
    assert below_min_samples.unlimited == below_min_samples.at_window == math.inf
    assert below_min_samples.warning() == "x: the KS test cannot certify NO_DRIFT at all: the reference has only 20 values to test"


def test_the_demo_sized_reference_certifies_the_default_floors_but_not_a_tenth_of_a_standard_deviation() -> None:
    floors = {**FLOORS, ("x", "ks"): ks_d_for_location_shift(0.1)}
    shifts = by_test(certifiable_shifts(grids(reference_of(426), SCHEMA), SCHEMA, floors, window_rows=1_000))
    texture = shifts["x", "ks"]
    assert not texture.certifiable and texture.min_window_rows is None
    assert texture.in_units(texture.unlimited) == pytest.approx(0.20, abs=0.01)
    assert texture.warning() == (
        "x: the KS test cannot certify NO_DRIFT below 0.20 sd with any window (floor 0.10 sd): "
        "the reference has 426 values; raise the floor or train on more rows"
    )
    assert all(shift.certifiable for key, shift in shifts.items() if key != ("x", "ks"))
    assert certifiable_shifts(grids(reference_of(426), SCHEMA), SCHEMA, FLOORS, window_rows=1_000)[0].in_units(texture.at_window) == pytest.approx(0.24, abs=0.01)


def test_a_bound_just_above_its_floor_is_not_printed_equal_to_it() -> None:
    # 426 values rule out at best about 0.2005 sd: "cannot certify below 0.20 sd (floor 0.20 sd)" reads as a contradiction.
    floors = {**FLOORS, ("x", "ks"): ks_d_for_location_shift(0.2)}
    texture = by_test(certifiable_shifts(grids(reference_of(426), SCHEMA), SCHEMA, floors, window_rows=1_000))["x", "ks"]
    assert not texture.certifiable and texture.min_window_rows is None
    assert texture.warning().startswith("x: the KS test cannot certify NO_DRIFT below 0.201 sd with any window (floor 0.200 sd)")


def test_the_smallest_sufficient_window_is_exact() -> None:
    floors = {**FLOORS, ("(predicted label)", "chi2"): 0.06}
    label = by_test(certifiable_shifts(grids(reference_of(426), SCHEMA), SCHEMA, floors, window_rows=500))["(predicted label)", "chi2"]
    assert not label.certifiable and label.min_window_rows is not None
    assert certifiable_cramers_v(1, 426, label.min_window_rows) < 0.06 <= certifiable_cramers_v(1, 426, label.min_window_rows - 1)
    assert label.warning() == (
        f"(predicted label): the predicted-label test cannot certify NO_DRIFT below Cramér's V {label.at_window:.3f} with 500-row windows "
        f"(floor Cramér's V 0.060); windows of {label.min_window_rows:,} rows or more can"
    )


def test_a_regression_models_prediction_is_not_called_a_label() -> None:
    schema = [DriftColumn("x", "numeric"), DriftColumn("(prediction)", "numeric", prediction=True)]
    floors = {("x", "ks"): 0.1, ("x", "missing_rate"): 0.2, ("(prediction)", "ks"): 0.05}
    reference = {"x": numeric_reference(426), "(prediction)": numeric_reference(400)}
    prediction = by_test(certifiable_shifts(grids(reference, schema), schema, floors, window_rows=500))["(prediction)", "ks"]
    assert prediction.warning().startswith("(prediction): the prediction test cannot certify NO_DRIFT below 0.21 sd with any window")


def test_missing_values_shrink_the_values_a_test_uses() -> None:
    schema = [DriftColumn("x", "numeric")]
    floors = {("x", "ks"): 0.1, ("x", "missing_rate"): 0.2}
    complete = by_test(certifiable_shifts(grids({"x": numeric_reference(400)}, schema), schema, floors, window_rows=1_000))
    half_empty = by_test(certifiable_shifts(grids({"x": numeric_reference(400, missing=400)}, schema), schema, floors, window_rows=2_000))
    # Same present values on both sides, so the same KS bound; the missing-rate test counts every row.
    assert half_empty["x", "ks"].at_window == pytest.approx(complete["x", "ks"].at_window)
    assert half_empty["x", "ks"].n_reference == 400 and half_empty["x", "missing_rate"].n_reference == 800


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="window_rows must be at least 1, got 0"):
        certifiable_shifts(grids(reference_of(100), SCHEMA), SCHEMA, FLOORS, window_rows=0)
    with pytest.raises(ValueError, match="no floor for the chi2 test of feature 'grade'"):
        certifiable_shifts(grids(reference_of(100), SCHEMA), SCHEMA, {key: value for key, value in FLOORS.items() if key[0] != "grade"}, window_rows=10)
