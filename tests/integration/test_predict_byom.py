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


def test_a_promotion_reaches_a_warm_container_after_the_ttl_and_a_version_that_cannot_load_does_not(
    predict_stack: PredictStack, predict_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    import time
    from dataclasses import replace

    from sml.lifecycle.registry import ModelRegistry
    from tests.predict_support import manifest_for, register_champion, valid_row

    stack = predict_stack
    model_name = f"promoted-{uuid.uuid4().hex[:8]}"
    register_champion(stack.s3, stack.ssm, bucket=stack.bucket, work_dir=stack.work_dir, model_name=model_name, version="v1")
    stack.configure(SML_MODEL_NAME=model_name, SML_CHAMPION_TTL_SECONDS="1")
    body = json.dumps({"features": valid_row()})
    assert invoke("POST", "/predict", body)[2]["model_version"] == "v1"

    register_champion(stack.s3, stack.ssm, bucket=stack.bucket, work_dir=stack.work_dir, model_name=model_name, version="v2")
    time.sleep(1.1)  # past the TTL: the next request starts the refresh and is answered by v1
    status, _, answer = invoke("POST", "/predict", body)
    assert (status, answer["model_version"]) == (200, "v1")
    app.load_runtime().champion.wait_for_refresh()
    assert invoke("POST", "/predict", body)[2]["model_version"] == "v2"
    assert invoke("GET", "/health")[2]["model_version"] == "v2"
    [switch] = [record["champion_switch"] for record in log_records(predict_log) if "champion_switch" in record]
    assert (switch["previous"], switch["current"]) == ("v1", "v2")

    # A version whose artifact cannot be unpickled: v2 keeps serving, the failure is logged and counted.
    artifact = stack.work_dir / f"{model_name}-broken.joblib"
    artifact.write_bytes(b"\x80\x04cno_such_module_here\n_reconstruct\n.")
    registry = ModelRegistry(stack.s3, stack.ssm, bucket=stack.bucket, app_name=APP_NAME, model_name=model_name)
    registry.register(artifact, replace(manifest_for("v3", model_name), sha256=""))
    registry.promote("v3")
    capsys.readouterr()
    time.sleep(1.1)
    invoke("POST", "/predict", body)
    app.load_runtime().champion.wait_for_refresh()
    # Read before the next request: one coming more than the 1 s TTL after this refresh (under load)
    # starts another, whose failure could land in the log and the metrics too.
    [failure] = [record for record in log_records(predict_log) if "champion_refresh_failure" in record]
    refresh_metrics = emitted_metrics(capsys.readouterr().out)

    status, _, answer = invoke("POST", "/predict", body)
    assert (status, answer["model_version"]) == (200, "v2")
    assert "version v3 could not be loaded" in failure["message"] and "no_such_module_here" in failure["champion_refresh_failure"]
    assert not any("champion_unavailable" in record for record in log_records(predict_log))
    assert refresh_metrics.get("ChampionRefreshFailures") == 1
