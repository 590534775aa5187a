"""Bring your own model on the local stack: a user's DataFrame pipeline registered with `sml register`,
promoted, served over the Function URL, stored, labelled and monitored, driven by `sml` and HTTP only."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
import requests

from tests.e2e.test_user_journey import environment, running_stack, sml, stored_ids, wait_until
from tests.unit.test_registration import churn

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("journey")]


@pytest.fixture
def churn_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The local stack serving model ``churn``, with the user's pipeline and files in the folder."""
    model, train, y_train, test, y_test = churn()
    joblib.dump(model, tmp_path / "churn.joblib")
    train.assign(Churned=y_train).to_csv(tmp_path / "train.csv", index=False)
    test.assign(Churned=y_test).to_csv(tmp_path / "test.csv", index=False)
    with running_stack(tmp_path, {**environment(), "SML_MODEL_NAME": "churn"}) as running:
        yield running


def test_a_dataframe_pipeline_is_registered_served_labelled_and_monitored(tmp_path: Path, churn_stack: dict[str, str]) -> None:
    sml(tmp_path, "register", "churn.joblib", "--reference", "train.csv", "--test", "test.csv", "--target", "Churned", "--model", "churn")
    sml(tmp_path, "promote", "--best-by", "roc_auc", "--model", "churn")

    url = churn_stack["function_url"].rstrip("/")
    rows = [
        {"Monthly Charges": 70.5, "Tenure Months": 3, "Paperless Billing": True, "Contract Type": "month"},
        {"Monthly Charges": None, "Tenure Months": 40, "Paperless Billing": False, "Contract Type": None},
    ]
    answer = requests.post(f"{url}/predict", json={"instances": rows * 10}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert {item["prediction"] for item in predictions} <= {"no", "yes"} and all(item["probabilities"] for item in predictions)
    served = [item["prediction_id"] for item in predictions]
    wait_until(lambda: set(served) <= set(stored_ids(churn_stack["database_url"])), "the writer to store the predictions")
    single = json.loads(sml(tmp_path, "predict", "--model", "churn", "--file", _request(tmp_path, rows[0])).stdout)
    assert single["prediction"] in ("no", "yes")

    with (tmp_path / "labels.csv").open("w", newline="") as labels:
        writer = csv.writer(labels)
        writer.writerow(["prediction_id", "label"])
        writer.writerows([prediction_id, "yes" if index % 3 == 0 else "no"] for index, prediction_id in enumerate(served))
    sml(tmp_path, "feedback", "--file", "labels.csv", "--model", "churn")
    wait_until(lambda: len(stored_ids(churn_stack["database_url"], "ground_truth")) == len(served), "the labels to be stored")

    drift = sml(tmp_path, "drift", "--model", "churn", "--window", "1d", check=False)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    quality = sml(tmp_path, "quality", "--model", "churn", check=False)
    assert quality.returncode == 0, quality.stdout + quality.stderr
    assert "churn" in quality.stdout


def _request(folder: Path, row: dict[str, object]) -> str:
    path = folder / "request.json"
    path.write_text(json.dumps({"features": row}))
    return str(path)
