"""A regression model (scikit-learn's diabetes) and a multiclass one (wine) on the local stack, driven by
`sml` and HTTP only: trained in the test, registered with `sml register`, promoted with `--strict` (the
drift power check must certify every test at the window's size), served over the Function URL, stored
by the writer, labelled, then judged by `sml drift` and `sml quality`.

Two windows, one after the other on one stack: traffic drawn from the training rows with their true
labels (`sml feedback`) must say NO_DRIFT, for the prediction and the run, and quality OK; traffic with
features shifted so the predictions move, with wrong labels (`POST /feedback`), must say DRIFT for the
prediction and quality DEGRADED, with the task's quality plot in the run's report. The floors are the
model's own drift config, raised to what its small training reference can certify (the power check
says so at promotion), so no verdict is INCONCLUSIVE.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sml.monitoring.drift.run import prediction_column
from tests.e2e.test_user_journey import environment, running_stack, sml, stored_ids, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("journey")]

WINDOW_ROWS = 600  # predictions per window: what the power check is asked about at promotion
REQUEST_ROWS = 100  # rows per POST /predict and labels per POST /feedback (SML_MAX_INSTANCES' default)


@dataclass(frozen=True)
class Task:
    """One model of the journey: its data, estimator, floors, how its traffic shifts and how its labels go wrong."""

    model_name: str
    load: Callable[[], tuple[pd.DataFrame, pd.Series]]
    estimator: Callable[[], Any]
    drift_config: str
    shift: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
    wrong: Callable[[pd.Series], list[Any]]
    verdict_metric: str
    report_section: str  # the model quality plot of the task in the run's HTML report


def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    return load_diabetes(return_X_y=True, as_frame=True)


def _wine() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_wine(return_X_y=True, as_frame=True)
    return X, y.map(lambda index: f"cultivar_{index}")


def _shifted(columns: tuple[str, ...], sds: float) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    def shift(rows: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(**{column: rows[column] + sds * train[column].std() for column in columns})

    return shift


def _next_class(truth: pd.Series) -> list[Any]:
    classes = sorted(truth.unique())
    return [classes[(classes.index(label) + 1) % len(classes)] for label in truth]


def _far_off(truth: pd.Series) -> list[Any]:
    # Two standard deviations of the target below the truth, for predictions the shift moved up.
    return (truth - 2 * truth.std()).round(1).tolist()


TASKS = {
    # Ridge's largest weights are on bmi and s5: 1.5 sd more of both moves the prediction by KS D ~0.5.
    "regression": Task(
        "diabetes",
        _diabetes,
        lambda: Ridge(alpha=0.1),
        "[floors]\nnumeric = 0.2\nlabel = 0.2\n",
        _shifted(("bmi", "s5"), 1.5),
        _far_off,
        "rmse",
        "Residuals",
    ),
    # 2 sd more proline and alcohol: about two thirds of the predictions become cultivar_0 (a third in training).
    "multiclass": Task(
        "wine",
        _wine,
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "[floors]\nnumeric = 0.3\nlabel = 0.25\n",
        _shifted(("proline", "alcohol"), 2.0),
        _next_class,
        "f1_macro",
        "Confusion matrix",
    ),
}


@pytest.mark.parametrize("task", list(TASKS), ids=list(TASKS))
def test_training_traffic_is_no_drift_and_ok_and_shifted_traffic_with_wrong_labels_is_drift_and_degraded(tmp_path: Path, task: str) -> None:
    case = TASKS[task]
    X, y = case.load()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model = case.estimator().fit(X_train, y_train)
    joblib.dump(model, tmp_path / "model.joblib")
    X_train.assign(target=y_train).to_csv(tmp_path / "train.csv", index=False)
    X_test.assign(target=y_test).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "drift.toml").write_text(case.drift_config)
    name = case.model_name

    # One predict container: sequential requests need no second cold start.
    with running_stack(tmp_path, {**environment(), "SML_MODEL_NAME": name}, "--predict-concurrency", "1") as stack:
        _register_and_promote(tmp_path, name, task)
        rng = np.random.default_rng(7)
        chosen = rng.integers(0, len(X_train), WINDOW_ROWS)
        rows, truth = X_train.iloc[chosen], y_train.iloc[chosen].reset_index(drop=True)
        url = stack["function_url"].rstrip("/")

        started = _utc_now()
        same = _predict(url, rows)
        first_end = _a_second_from_now()
        shifted = _predict(url, case.shift(rows, X_train))
        second_end = _a_second_from_now()
        wait_until(lambda: len(stored_ids(stack["database_url"])) == 2 * WINDOW_ROWS, "the writer to store the predictions")

        _write_labels(tmp_path / "labels.csv", same, truth.tolist())
        sml(tmp_path, "feedback", "--file", "labels.csv", "--model", name)
        _post_labels(url, shifted, case.wrong(truth))
        wait_until(lambda: len(stored_ids(stack["database_url"], "ground_truth")) == 2 * WINDOW_ROWS, "the writer to store the labels")

        first = _drift(tmp_path, name, first_end, first_end - started + timedelta(seconds=1))
        assert re.search(r"^verdict: NO_DRIFT ", first, re.MULTILINE), first
        assert _latest_prediction_verdict(stack["database_url"], name, task) == "NO_DRIFT", first
        assert re.search(rf"^│ {re.escape(prediction_column(task))} ", first, re.MULTILINE), first
        labelled = f"{WINDOW_ROWS} of {WINDOW_ROWS} predictions labelled"
        assert re.search(rf"^quality: OK \({labelled} .*; realized {case.verdict_metric} ", first, re.MULTILINE), first

        second = _drift(tmp_path, name, second_end, second_end - first_end)
        assert re.search(r"^verdict: DRIFT ", second, re.MULTILINE), second
        assert _latest_prediction_verdict(stack["database_url"], name, task) == "DRIFT", second
        report = re.search(r"^report: (\S+) \(s3://", second, re.MULTILINE)[1]  # type: ignore[index]
        assert f"<h3>{case.report_section}" in (tmp_path / report).read_text(encoding="utf-8")
        quality = sml(tmp_path, "quality", "--model", name, "--fail-on-degraded", check=False)
        assert quality.returncode == 1, quality.stdout + quality.stderr
        assert re.search(rf"^quality: DEGRADED \({case.verdict_metric} ", quality.stdout, re.MULTILINE), quality.stdout


def _register_and_promote(folder: Path, name: str, task: str) -> None:
    """`sml register` the folder's model.joblib with its files, then `sml promote --strict`: refused unless the
    power check certifies every test at its floor with windows of ``WINDOW_ROWS``."""
    window_rows = ("--expected-window-rows", str(WINDOW_ROWS))
    registered = sml(
        folder, "register", "model.joblib", "--reference", "train.csv", "--test", "test.csv", "--target", "target",
        "--drift-config", "drift.toml", "--model", name, *window_rows,
    ).stdout  # fmt: skip
    assert f", {task}): " in registered, registered
    version = re.search(rf"^registered {name} (\S+) ", registered, re.MULTILINE)[1]  # type: ignore[index]
    promoted = sml(folder, "promote", version, "--model", name, "--strict", *window_rows).stdout
    assert "can certify NO_DRIFT at their floors" in promoted, promoted


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _a_second_from_now() -> datetime:
    """The next whole second, once the clock has passed it: a window ending there holds what came before, none of what comes after."""
    end = _utc_now().replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (end - _utc_now()).total_seconds()) + 0.05)
    return end


def _predict(url: str, rows: pd.DataFrame) -> list[str]:
    """The prediction ids of ``rows`` sent to ``POST /predict``, in order."""
    records = rows.to_dict("records")
    ids = []
    for start in range(0, len(records), REQUEST_ROWS):
        answer = requests.post(f"{url}/predict", json={"instances": records[start : start + REQUEST_ROWS]}, timeout=60)
        assert answer.status_code == 200, answer.text
        ids.extend(item["prediction_id"] for item in answer.json()["predictions"])
    return ids


def _write_labels(path: Path, prediction_ids: list[str], labels: list[Any]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["prediction_id", "label"])
        writer.writerows(zip(prediction_ids, labels))


def _post_labels(url: str, prediction_ids: list[str], labels: list[Any]) -> None:
    """``POST /feedback`` of the labels of ``prediction_ids``, ``REQUEST_ROWS`` to a request."""
    items = [{"prediction_id": prediction_id, "label": label} for prediction_id, label in zip(prediction_ids, labels)]
    for start in range(0, len(items), REQUEST_ROWS):
        body = {"labels": items[start : start + REQUEST_ROWS]}
        answer = requests.post(f"{url}/feedback", json=body, timeout=60)
        assert answer.status_code == 202, answer.text


def _drift(folder: Path, name: str, end: datetime, length: timedelta) -> str:
    window = f"{length.total_seconds() / 60:.6f}m"
    return sml(folder, "drift", "--model", name, "--end", end.isoformat(), "--window", window).stdout


def _latest_prediction_verdict(database_url: str, name: str, task: str) -> str:
    """The stored verdict of the prediction's test (not its missing rate) in the latest run of ``name``, a model of ``task``."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT f.verdict FROM drift_features f JOIN drift_runs r ON r.run_id = f.run_id "
                    "WHERE r.model_name = :name AND f.feature_name = :feature AND f.test <> 'missing_rate' "
                    "ORDER BY r.created_at DESC LIMIT 1"
                ),
                {"name": name, "feature": prediction_column(task)},
            ).scalar_one()
    finally:
        engine.dispose()
