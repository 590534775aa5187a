"""Data-quality checks against the training profile: range, unseen categories, missing values beyond training."""

from __future__ import annotations

import numpy as np
import pytest

from sml.drift.data_quality import DataQualityThresholds, data_quality_status, run_data_quality_checks
from sml.drift.stats import CategoricalReference, FeatureSpec, NumericReference

SCHEMA = [FeatureSpec("size", "numeric"), FeatureSpec("colour", "categorical"), FeatureSpec("(predicted label)", "label")]
REFERENCE = {
    "size": NumericReference.from_values([*np.linspace(0.0, 10.0, 95), *[None] * 5]),
    "colour": CategoricalReference(counts={"red": 50, "blue": 50}, missing=0),
    "(predicted label)": CategoricalReference(counts={"yes": 60, "no": 40}),
}


def _checks(size: list, colour: list, **thresholds: float) -> dict[tuple[str, str], object]:
    current = {"size": size, "colour": colour, "(predicted label)": ["yes"] * len(size)}
    checks = run_data_quality_checks(REFERENCE, current, SCHEMA, DataQualityThresholds(**thresholds))
    return {(check.feature, check.check): check for check in checks}


def test_a_window_like_training_passes_every_check() -> None:
    checks = _checks([1.0, 5.0, 10.0, 0.0] * 25, ["red", "blue"] * 50)
    assert [key for key in checks] == [("size", "out_of_range"), ("size", "missing_excess"), ("colour", "unseen_category"), ("colour", "missing_excess")]
    assert data_quality_status(list(checks.values())) == "OK"
    assert all(check.value == 0 for check in checks.values())


def test_out_of_range_values_are_counted_against_the_training_min_and_max() -> None:
    size = [5.0] * 90 + [10.5] * 4 + [-0.1] * 1 + [None] * 5
    checks = _checks(size, ["red"] * 100)
    out_of_range = checks[("size", "out_of_range")]
    assert (out_of_range.count, out_of_range.n) == (5, 95)
    assert out_of_range.value == pytest.approx(5 / 95) and out_of_range.violated
    assert data_quality_status(list(checks.values())) == "VIOLATIONS"
    # A share at the threshold is no violation; just above is.
    assert not _checks([5.0] * 98 + [11.0] * 2, ["red"] * 100)[("size", "out_of_range")].violated
    assert _checks([5.0] * 97 + [11.0] * 3, ["red"] * 100)[("size", "out_of_range")].violated


def test_unseen_categories_and_missing_values_beyond_the_training_rate() -> None:
    checks = _checks([5.0] * 80 + [None] * 20, ["red"] * 97 + ["green"] * 2 + [None])
    unseen = checks[("colour", "unseen_category")]
    assert (unseen.count, unseen.n, unseen.violated) == (2, 99, True)
    missing = checks[("size", "missing_excess")]
    assert missing.value == pytest.approx(0.20 - 0.05) and missing.violated and (missing.count, missing.n) == (20, 100)
    colour_missing = checks[("colour", "missing_excess")]
    assert colour_missing.value == pytest.approx(0.01) and not colour_missing.violated
    # Fewer missing values than in training is not a violation.
    assert _checks([5.0] * 100, ["red"] * 100)[("size", "missing_excess")].value == 0.0


def test_thresholds_are_settable_and_checked() -> None:
    assert not _checks([5.0] * 90 + [11.0] * 10, ["red"] * 100, max_out_of_range=0.2)[("size", "out_of_range")].violated
    with pytest.raises(ValueError, match="max_unseen_category must be in \\[0, 1\\], got 2"):
        DataQualityThresholds(max_unseen_category=2)


def test_empty_window_and_unknown_features_are_defined() -> None:
    checks = _checks([], [])
    assert all(check.value == 0 and check.n == 0 for check in checks.values())
    with pytest.raises(ValueError, match="no values for feature 'size'"):
        run_data_quality_checks(REFERENCE, {"colour": []}, SCHEMA, DataQualityThresholds())
