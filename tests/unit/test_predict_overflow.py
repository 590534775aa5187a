"""Finite values that overflow inside a model: refused as a 422 naming the row and feature, for
every estimator the project trains, never a 5xx (issue 13, item 1)."""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from functools import cache
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sml.lifecycle.manifest import ModelManifest
from sml.lifecycle.training import ESTIMATORS, TrainingConfig, build_manifest, train_model
from sml.predict.errors import ApiError
from sml.predict.service import PredictionService
from sml.predict.validation import served_range

MAX_INSTANCES = 5


@cache
def service_for(estimator: str, *, with_training_range: bool = True) -> PredictionService:
    trained = train_model(TrainingConfig(model_name="breast-cancer", estimator=estimator))
    manifest = build_manifest(trained, version="v1", sha256="", wandb_run_path=None, created_at=datetime.now(timezone.utc))
    if not with_training_range:
        manifest = without_training_range(manifest)
    return PredictionService(trained.pipeline, manifest, max_instances=MAX_INSTANCES, max_body_bytes=1_000_000)


def without_training_range(manifest: ModelManifest) -> ModelManifest:
    """A manifest as one registered without numeric ranges would read (validation then has no bound)."""
    return replace(manifest, features=tuple(replace(spec, minimum=None, maximum=None) for spec in manifest.features))


def middle_row(service: PredictionService) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for spec in service.manifest.features:
        row[spec.name] = (spec.minimum + spec.maximum) / 2 if spec.kind == "numeric" else spec.categories[1]
    return row


def answer(service: PredictionService, payload: dict[str, Any]) -> list[Any] | ApiError:
    """What predict answers: the events, or the ApiError (anything else escapes: a 5xx)."""
    try:
        request = service.schema.parse_request(payload)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an overflow warning is the first sign of the bug
            return service.predict(request.rows, batch=request.batch)
    except ApiError as error:
        return error


FAILING_INPUTS = [
    ("logistic_regression", "mean_smoothness", 1e307),
    ("logistic_regression", "mean_symmetry", -1e307),
    ("random_forest", "mean_area", 1e300),
    ("gradient_boosting", "mean_area", 1e300),
    ("random_forest", "mean_smoothness", 3.5e38),
    ("gradient_boosting", "mean_texture", -sys.float_info.max),
]


@pytest.mark.parametrize(("estimator", "feature", "value"), FAILING_INPUTS)
@pytest.mark.parametrize("batch", [False, True])
def test_a_finite_value_that_overflows_inside_the_model_is_a_422_naming_the_row_and_feature(
    estimator: str, feature: str, value: float, batch: bool
) -> None:
    service = service_for(estimator)
    row = {**middle_row(service), feature: value}
    payload = {"instances": [middle_row(service), row]} if batch else {"features": row}

    error = answer(service, payload)

    assert isinstance(error, ApiError)
    assert (error.status, error.code) == (HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range")
    assert error.field == (f"instances[1].{feature}" if batch else f"features.{feature}")


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_corner_of_the_served_range_is_computed_by_every_estimator(estimator: str) -> None:
    service = service_for(estimator)
    numeric = [spec for spec in service.manifest.features if spec.kind == "numeric"]
    rng = np.random.default_rng(13)
    corners = rng.integers(0, 2, size=(40, len(numeric)))
    rows = [
        {**middle_row(service), **{spec.name: served_range(spec)[side] for spec, side in zip(numeric, corner)}} for corner in corners
    ]

    for start in range(0, len(rows), MAX_INSTANCES):
        events = answer(service, {"instances": rows[start : start + MAX_INSTANCES]})
        assert isinstance(events, list)
        assert all(math.isfinite(p) for event in events for p in event.probabilities.values())


@pytest.mark.parametrize(("estimator", "feature", "value"), FAILING_INPUTS)
def test_without_a_training_range_in_the_manifest_the_model_itself_is_checked_per_row(estimator: str, feature: str, value: float) -> None:
    service = service_for(estimator, with_training_range=False)
    payload = {"instances": [middle_row(service_for(estimator)), {**middle_row(service_for(estimator)), feature: value}]}

    error = answer(service, payload)

    assert isinstance(error, ApiError)
    assert (error.status, error.code, error.field) == (HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range", f"instances[1].{feature}")
    assert "seen in training" in error.message


def finite_floats_everywhere(spec_minimum: float, spec_maximum: float, served: tuple[float, float]) -> st.SearchStrategy[float]:
    """The whole finite range (both signs, subnormals), the training range, and the values just
    past the training range and just past the served range."""
    edges = [spec_minimum, spec_maximum, *served]
    near_edges = [np.nextafter(edge, direction) for edge in edges for direction in (-math.inf, math.inf)]
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True, min_value=-1e-300, max_value=1e-300),
        st.floats(min_value=spec_minimum, max_value=spec_maximum),
        st.floats(min_value=served[0], max_value=served[1]),
        st.sampled_from([float(value) for value in [*edges, *near_edges, 5e-324, -5e-324, sys.float_info.max, -sys.float_info.max]]),
        st.integers(min_value=-(10**20), max_value=10**20),
    )


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("with_training_range", [True, False])
def test_any_finite_numbers_get_a_prediction_or_a_422(estimator: str, with_training_range: bool) -> None:
    service = service_for(estimator, with_training_range=with_training_range)
    ranged = service_for(estimator).manifest.features
    numeric = {spec.name: spec for spec in ranged if spec.kind == "numeric"}
    row_strategy = st.fixed_dictionaries(
        {
            **{name: finite_floats_everywhere(spec.minimum, spec.maximum, served_range(spec)) for name, spec in numeric.items()},
            "concavity_grade": st.sampled_from(["low", "moderate", "high", None]),
        }
    )

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(row_strategy, min_size=1, max_size=3))
    def check(rows: list[dict[str, Any]]) -> None:
        outcome = answer(service, {"instances": rows})
        if isinstance(outcome, ApiError):
            assert (outcome.status, outcome.code) == (HTTPStatus.UNPROCESSABLE_ENTITY, "out_of_range")
            index, feature = outcome.field.removeprefix("instances[").split("].")
            served = served_range(numeric[feature])
            value = rows[int(index)][feature]
            assert not served[0] <= value <= served[1] or not with_training_range
        else:
            assert len(outcome) == len(rows)
            for row in rows:
                inside = all(served_range(spec)[0] <= row[name] <= served_range(spec)[1] for name, spec in numeric.items())
                assert inside or not with_training_range

    check()
