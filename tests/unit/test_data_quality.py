"""Data-quality checks against the training profile: range, unseen categories, missing values beyond training."""

from __future__ import annotations

import numpy as np
import pytest

from sml.monitoring.data_quality.checks import DataQualityThresholds, RefusedCounts, data_quality_status, run_data_quality_checks
from sml.monitoring.drift.stats import CategoricalReference, NumericReference
from sml.monitoring.drift.run import DriftColumn
from sml.monitoring.summaries import reference_grids, summarise

SCHEMA = [DriftColumn("size", "numeric"), DriftColumn("colour", "categorical"), DriftColumn("(predicted label)", "categorical", prediction=True)]
REFERENCE = {
    "size": NumericReference.from_values([*np.linspace(0.0, 10.0, 95), *[None] * 5]),
    "colour": CategoricalReference(counts={"red": 50, "blue": 50}, missing=0),
    "(predicted label)": CategoricalReference(counts={"yes": 60, "no": 40}),
}


GRIDS = reference_grids(REFERENCE, SCHEMA)
FEATURES = SCHEMA[:2]


def _run(current: dict, thresholds: DataQualityThresholds, refused: RefusedCounts | None = None) -> list:
    summary = summarise({name: values for name, values in current.items() if name in GRIDS.features}, GRIDS, current.get("(predicted label)"))
    return run_data_quality_checks(GRIDS, summary, FEATURES, thresholds, refused)


def _checks(size: list, colour: list, **thresholds: float) -> dict[tuple[str, str], object]:
    current = {"size": size, "colour": colour, "(predicted label)": ["yes"] * len(size)}
    checks = _run(current, DataQualityThresholds(**thresholds))
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
        _run({"colour": []}, DataQualityThresholds())


def _refused(refused: dict[str, int], served: int, **thresholds: float) -> dict[str, object]:
    current = {"size": [5.0] * served, "colour": ["red"] * served, "(predicted label)": ["yes"] * served}
    checks = _run(current, DataQualityThresholds(**thresholds), RefusedCounts(refused, {"invalid_json": 7}))
    return {check.feature: check for check in checks if check.check == "refused"}


def test_refused_values_are_a_share_of_the_values_refused_or_served_per_feature() -> None:
    checks = _refused({"size": 3, "no such feature": 50}, 97)
    assert list(checks) == ["size", "colour"], "every feature of the schema, none other; the label is no feature"
    assert (checks["size"].count, checks["size"].n, checks["size"].value) == (3, 100, pytest.approx(0.03))
    assert checks["size"].violated and checks["size"].threshold == 0.01
    assert (checks["colour"].count, checks["colour"].n, checks["colour"].value, checks["colour"].violated) == (0, 97, 0.0, False)


def test_the_refused_share_at_the_threshold_is_no_violation_and_just_above_is() -> None:
    assert _refused({"size": 1}, 99)["size"].value == 0.01
    assert not _refused({"size": 1}, 99)["size"].violated
    assert _refused({"size": 1}, 98)["size"].violated  # 1 / 99
    assert not _refused({"size": 5}, 95, max_refused_rate=0.05)["size"].violated
    assert _refused({"size": 5}, 0)["size"].value == 1.0, "everything refused, nothing served"
    assert _refused({}, 0)["size"].value == 0.0


def test_without_refusals_read_there_is_no_refused_check_and_the_threshold_is_checked() -> None:
    assert all(check != "refused" for _, check in _checks([5.0] * 10, ["red"] * 10))
    with pytest.raises(ValueError, match="max_refused_rate must be in \\[0, 1\\], got -0.1"):
        DataQualityThresholds(max_refused_rate=-0.1)
