"""A user's own models behind PredictionService: DataFrame models, JSON booleans and integers,
regression answers, and a model that fails on valid input (a model error, never a refusal)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest

from sml.core.events import parse_prediction_event, serialise_prediction_event
from sml.lifecycle.modeling import model_input
from sml.predict.errors import ApiError, ModelError
from sml.predict.service import PredictionService, predict_response
from tests.byom_support import (
    churn_frame,
    churn_manifest,
    churn_model,
    churn_rows,
    diabetes_manifest,
    diabetes_model,
    diabetes_rows,
)


def service_for(model: Any, manifest: Any) -> PredictionService:
    return PredictionService(model, manifest, max_instances=50, max_body_bytes=100_000)


@pytest.fixture(scope="module")
def churn() -> PredictionService:
    return service_for(churn_model(), churn_manifest())


def answer(service: PredictionService, payload: dict[str, Any]) -> Any:
    request = service.schema.parse_request(json.loads(json.dumps(payload)))
    return service.predict(request.rows, batch=request.batch)


def test_a_dataframe_model_answers_as_its_own_predict_proba_on_the_users_frame(churn: PredictionService) -> None:
    rows = churn_rows()[:40]
    expected = churn_model().predict_proba(churn_frame().drop(columns="churned").iloc[:40])

    events = answer(churn, {"instances": rows})

    assert [[event.probabilities["no"], event.probabilities["yes"]] for event in events] == np.clip(expected, 0, 1).tolist()
    assert [event.prediction for event in events] == churn_model().predict(churn_frame().drop(columns="churned").iloc[:40]).tolist()


def test_json_booleans_and_integers_are_served_and_kept_as_such_in_the_event(churn: PredictionService) -> None:
    row = {"Monthly Charges": 70.5, "Tenure Months": 12.0, "Support Calls": None, "Has Partner": True, "Paperless": False, "Contract": "one year"}

    [event] = answer(churn, {"features": row})

    assert event.features == {**row, "Tenure Months": 12}
    assert type(event.features["Tenure Months"]) is int and event.features["Has Partner"] is True
    body = serialise_prediction_event(event)
    assert '"Has Partner":true' in body and '"Paperless":false' in body and '"Tenure Months":12,' in body
    assert parse_prediction_event(body) == event


@pytest.mark.parametrize(
    ("name", "value", "code", "message"),
    [
        ("Has Partner", "true", "invalid_type", "must be true or false, got string"),
        ("Has Partner", 1, "invalid_type", "must be true or false, got number"),
        ("Has Partner", None, "null_not_allowed", "must be true or false; null is not allowed for this feature"),
        ("Tenure Months", 2.5, "invalid_type", "must be an integer, got 2.5"),
        ("Tenure Months", True, "invalid_type", "must be a number, got boolean"),
        ("Tenure Months", 2**63, "out_of_range", f"must be a 64-bit integer ({-(2**63)} to {2**63 - 1}), got {2**63}"),
    ],
)
def test_booleans_and_integers_are_validated_by_their_dtype(churn: PredictionService, name: str, value: Any, code: str, message: str) -> None:
    row = {**churn_rows()[1], name: value}

    with pytest.raises(ApiError) as caught:
        answer(churn, {"features": row})

    assert (caught.value.code, caught.value.field, caught.value.message) == (code, f"features.{name}", message)


def test_a_boolean_value_training_never_saw_is_an_unknown_category() -> None:
    from dataclasses import replace

    manifest = churn_manifest()
    features = tuple(replace(spec, categories=("True",)) if spec.name == "Has Partner" else spec for spec in manifest.features)
    service = service_for(churn_model(), replace(manifest, features=features))

    with pytest.raises(ApiError) as caught:
        answer(service, {"features": {**churn_rows()[1], "Has Partner": False}})

    assert (caught.value.code, caught.value.message) == ("unknown_category", "false was never seen in training for this feature")


def test_a_model_that_selects_columns_by_name_served_an_array_is_a_model_error_not_a_refusal() -> None:
    service = service_for(churn_model(), churn_manifest(input_format="array"))

    with pytest.raises(ModelError) as caught:
        answer(service, {"instances": churn_rows()[:3]})

    assert "the model cannot compute row 0 of 3" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    assert "Specifying the columns using strings is only supported for dataframes" in str(caught.value.__cause__)


def test_a_regression_model_answers_a_number_and_no_probabilities() -> None:
    service = service_for(diabetes_model(), diabetes_manifest())
    rows = diabetes_rows()[:5]
    expected = diabetes_model().predict(model_input(rows, service.manifest.features, "array")).tolist()

    events = answer(service, {"instances": rows})

    assert [event.prediction for event in events] == expected
    assert all(type(event.prediction) is float and event.probabilities is None for event in events)
    single = predict_response(service.schema.parse_request({"features": rows[0]}), events[:1])
    assert single["prediction"] == expected[0] and single["probabilities"] is None
    assert parse_prediction_event(serialise_prediction_event(events[0])).prediction == expected[0]


class NaNRegressor:
    """A regression model that answers NaN for negative inputs."""

    def predict(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=float)[:, 0]
        return np.where(values < 0, np.nan, values * 2)


def test_a_regression_model_answering_nan_is_a_model_error() -> None:
    manifest = diabetes_manifest()
    service = service_for(NaNRegressor(), manifest)
    row = {**diabetes_rows()[0], manifest.features[0].name: -0.01}

    with pytest.raises(ModelError, match="not finite"):
        answer(service, {"features": row})


class FailsOnBatches:
    """A classifier that computes one row at a time but raises on more."""

    classes_ = np.array(["no", "yes"])

    def predict_proba(self, X: Any) -> np.ndarray:
        if len(X) > 1:
            raise RuntimeError("batch too large for this model")
        return np.array([[0.4, 0.6]])


def test_a_model_failing_on_the_batch_while_every_row_computes_alone_is_a_model_error() -> None:
    service = service_for(FailsOnBatches(), churn_manifest())

    assert answer(service, {"features": churn_rows()[0]})[0].prediction == "yes"
    with pytest.raises(ModelError, match="computes each of 2 rows alone but not the batch") as caught:
        answer(service, {"instances": churn_rows()[:2]})
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_an_overflow_is_still_a_422_naming_the_feature_when_the_model_is_not_at_fault() -> None:
    class OverflowsAbove:
        classes_ = np.array(["no", "yes"])

        def predict_proba(self, X: Any) -> np.ndarray:
            if (X["Monthly Charges"] > 1e6).any():
                raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
            return np.tile([0.5, 0.5], (len(X), 1))

    service = service_for(OverflowsAbove(), churn_manifest())  # no training range in the schema: validation lets 1e9 through

    with pytest.raises(ApiError) as caught:
        answer(service, {"instances": [churn_rows()[1], {**churn_rows()[1], "Monthly Charges": 1e9}]})

    assert (caught.value.status, caught.value.code, caught.value.field) == (
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "out_of_range",
        "instances[1].Monthly Charges",
    )
