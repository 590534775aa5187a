"""A user's own models behind the predict handler on moto: a DataFrame pipeline, the same pipeline
registered by mistake as an array model (a model error, not refusals), and a regression model."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from functions.predict import app
from sml.core.events import parse_prediction_event
from tests.byom_support import (
    churn_frame,
    churn_manifest,
    churn_model,
    churn_rows,
    diabetes_manifest,
    diabetes_model,
    diabetes_rows,
    register_and_promote,
)
from tests.integration.test_predict_handler import emitted_metrics, invoke, log_records
from tests.predict_support import (  # noqa: F401 - registered_model, predict_stack, predict_log are fixtures
    APP_NAME,
    PredictStack,
    predict_log,
    predict_stack,
    registered_model,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def serve(stack: PredictStack, model: Any, manifest: Any) -> None:
    """Register ``model`` under a fresh model name, promote it and point a new container at it."""
    from dataclasses import replace

    manifest = replace(manifest, model_name=f"{manifest.model_name}-{uuid.uuid4().hex[:8]}")
    register_and_promote(stack.s3, stack.ssm, bucket=stack.bucket, app_name=APP_NAME, work_dir=stack.work_dir, model=model, manifest=manifest)
    stack.configure(SML_MODEL_NAME=manifest.model_name)


def openapi_check(name: str, document: dict[str, Any]) -> None:
    schema = {**invoke("GET", "/openapi.json")[2], "$ref": f"#/components/schemas/{name}"}
    Draft202012Validator(schema).validate(document)


def test_a_dataframe_pipeline_is_served_with_json_booleans_and_its_events_keep_them(predict_stack: PredictStack) -> None:
    serve(predict_stack, churn_model(), churn_manifest())
    rows = churn_rows()[:5]

    status, _, body = invoke("POST", "/predict", json.dumps({"instances": rows}))

    assert status == 200, body
    expected = churn_model().predict_proba(churn_frame().drop(columns="churned").iloc[:5])[:, 1].tolist()
    assert [answer["probabilities"]["yes"] for answer in body["predictions"]] == expected
    openapi_check("BatchPrediction", body)
    events = [parse_prediction_event(json.dumps(event)) for event in predict_stack.queued()]
    assert [event.features for event in events] == rows
    assert all(type(event.features["Has Partner"]) is bool for event in events)


def test_a_model_failing_on_valid_input_answers_500_model_error_logs_the_traceback_and_refuses_nothing(
    predict_stack: PredictStack, predict_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reproduction: a ColumnTransformer selecting columns by name, registered as an array model.
    serve(predict_stack, churn_model(), churn_manifest(input_format="array"))
    capsys.readouterr()

    status, _, body = invoke("POST", "/predict", json.dumps({"features": churn_rows()[1]}))

    assert (status, body["error"]["code"], body["error"]["field"]) == (500, "model_error", None)
    assert "the function's log has the cause" in body["error"]["message"]
    [record] = [record for record in log_records(predict_log) if "model_failure" in record]
    assert "Specifying the columns using strings is only supported for dataframes" in record["exception"]
    assert "Traceback" in record["exception"]
    assert not any("champion_unavailable" in record for record in log_records(predict_log))
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics.get("ModelErrors") == 1 and "RejectedRequests" not in metrics and "RefusedValues" not in metrics
    assert predict_stack.queued() == []  # no refusal event: the client's values were valid


def test_a_regression_model_answers_a_number_without_probabilities_and_queues_it_exactly(predict_stack: PredictStack) -> None:
    serve(predict_stack, diabetes_model(), diabetes_manifest())
    row = diabetes_rows()[3]

    status, _, body = invoke("POST", "/predict", json.dumps({"features": row}))

    assert status == 200, body
    assert body["prediction"] == diabetes_model().predict([list(row.values())])[0]
    assert body["probabilities"] is None
    openapi_check("Prediction", body)
    [event] = predict_stack.queued()
    assert event["prediction"] == body["prediction"] and event["probabilities"] is None
