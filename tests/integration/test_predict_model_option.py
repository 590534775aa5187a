"""`sml predict --model NAME` sends only to a Function URL that serves NAME (its GET /health says which)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sml.cli.main import main
from sml.local.function_url import FunctionUrlServer


@pytest.fixture
def predict_url() -> Iterator[tuple[str, list[str]]]:
    """A stand-in predict serving model ``churn``; the list records the paths it was asked for."""
    seen: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(f"{event['requestContext']['http']['method']} {event['rawPath']}")
        if event["rawPath"] == "/health":
            return {"statusCode": 200, "body": json.dumps({"status": "ok", "model_name": "churn", "model_version": "v1"})}
        return {"statusCode": 200, "body": json.dumps({"prediction_id": "p-1", "prediction": "yes", "probabilities": None, "model_version": "v1"})}

    server = FunctionUrlServer(handler, function_name="predict").start()
    yield server.url, seen
    server.stop()


def test_the_served_model_is_checked_before_the_request_is_sent(predict_url: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = predict_url
    assert main(["predict", "--url", url, "--feature", "Tenure Months=3", "--model", "churn"]) == 0
    assert seen == ["GET /health", "POST /predict"] and '"prediction": "yes"' in capsys.readouterr().out

    seen.clear()
    assert main(["predict", "--url", url, "--feature", "Tenure Months=3", "--model", "breast-cancer"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "sml predict: error: --model breast-cancer: the Function URL serves model 'churn'; nothing was sent "
        "(give --url of breast-cancer's Function URL)"
    )
    assert seen == ["GET /health"]
