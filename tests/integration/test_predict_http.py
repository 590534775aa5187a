"""Predict over HTTP behind the local Function URL server, driven by `sml predict` and plain requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

import pytest

from functions.predict import app
from sml.cli.main import main
from sml.local.function_url import FunctionUrlServer
from tests.predict_support import (  # noqa: F401 - registered_model, predict_stack are fixtures
    PredictStack,
    predict_stack,
    registered_model,
    valid_row,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def function_url(predict_stack: PredictStack) -> Iterator[str]:
    with FunctionUrlServer(app.handler, function_name="sml-predict") as server:
        yield server.url


def printed_json(out: str) -> dict[str, object]:
    """What `sml predict` printed, without the metric lines the in-process handler prints too."""
    return json.loads("\n".join(line for line in out.splitlines() if not line.startswith('{"_aws"')))


def feature_options(row: dict[str, object]) -> list[str]:
    return [option for name, value in row.items() for option in ("--feature", f"{name}={value}")]


def test_sml_predict_prints_the_prediction_and_the_event_is_queued(
    function_url: str, predict_stack: PredictStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", "--url", function_url, *feature_options(valid_row())])

    response = printed_json(capsys.readouterr().out)
    assert code == 0
    assert response["model_version"] == "v1"
    assert [event["prediction_id"] for event in predict_stack.queued()] == [response["prediction_id"]]


def test_sml_predict_sends_an_instances_file(
    function_url: str, predict_stack: PredictStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([valid_row(), {**valid_row(), "concavity_grade": "high"}]))

    assert main(["predict", "--url", function_url, "--instances-file", str(rows)]) == 0
    predictions = printed_json(capsys.readouterr().out)["predictions"]
    assert {event["prediction_id"] for event in predict_stack.queued()} == {item["prediction_id"] for item in predictions}


def test_sml_predict_exits_1_with_the_error_of_a_refused_request(
    function_url: str, predict_stack: PredictStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", "--url", function_url, *feature_options({**valid_row(), "concavity_grade": "severe"})])

    assert code == 1
    assert "sml predict: HTTP 422: unknown_category at features.concavity_grade: unknown category 'severe'" in capsys.readouterr().err
    assert [event.get("refused") for event in predict_stack.queued()] == [{"concavity_grade": {"unknown_category": 1}}]


def test_a_curl_style_request_without_a_json_content_type_is_served(function_url: str, predict_stack: PredictStack) -> None:
    body = json.dumps({"features": valid_row()}).encode("utf-8")
    request = Request(f"{function_url}predict", data=body, headers={"content-type": "application/x-www-form-urlencoded"}, method="POST")

    with urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())

    assert response.status == 200
    assert [event["prediction_id"] for event in predict_stack.queued()] == [answer["prediction_id"]]


def test_sml_predict_reports_an_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--url", "http://127.0.0.1:9/", "--feature", "a=1", "--timeout", "5"]) == 2
    assert "cannot reach http://127.0.0.1:9/predict" in capsys.readouterr().err
