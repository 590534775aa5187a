"""`sml train --data FILE --target COLUMN`: the built-in pipelines on the user's data, per task, against moto."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.datasets import load_diabetes, load_wine

from sml.cli.main import main
from sml.core.aws import aws_client
from sml.core.settings import LocalSettings, load_settings
from sml.lifecycle.modeling import model_input
from sml.lifecycle.registry import load_champion
from tests.registry_support import cli_registry, moto_project
from tests.unit.test_registration import churn_data


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    frame, labels = churn_data(400)
    frame.assign(churned=labels).to_csv(tmp_path / "churn.csv", index=False)
    load_wine(as_frame=True).frame.to_csv(tmp_path / "wine.csv", index=False)
    load_diabetes(as_frame=True).frame.to_parquet(tmp_path / "diabetes.parquet")
    with moto_project(tmp_path, monkeypatch):
        yield tmp_path



def test_a_churn_csv_trains_an_array_model_that_takes_every_column_type(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", "churn.csv", "--target", "churned", "--model", "churn"]) == 0
    assert "task: binary (inferred from the target; --task to set it)" in capsys.readouterr().out
    (manifest,) = cli_registry("churn").list_versions()
    assert manifest.input_format == "array" and manifest.classes == ("no", "yes") and manifest.estimator == "logistic_regression"
    assert [(spec.dtype, spec.nullable) for spec in manifest.features] == [("float", True), ("integer", True), ("boolean", True), ("string", True)]
    assert {"f1", "roc_auc", "log_loss"} <= set(manifest.metrics) and manifest.extra["target"] == "churned"
    cli_registry("churn").promote(manifest.version)
    loaded = load_champion(aws_client("s3", load_settings(LocalSettings)), aws_client("ssm", load_settings(LocalSettings)),
                           bucket=os.environ["SML_BUCKET"], app_name=os.environ["SML_APP_NAME"], model_name="churn", cache_dir=project / "cache")
    row = {"Monthly Charges": None, "Tenure Months": 3, "Paperless Billing": True, "Contract Type": "month"}
    assert loaded.model.predict(model_input([row], loaded.manifest.features, loaded.manifest.input_format))[0] in ("no", "yes")


def test_a_boolean_or_float_target_trains_a_model_with_text_or_integer_classes(project: Path) -> None:
    frame, labels = churn_data(400)
    frame.assign(churned=labels == "yes").to_csv(project / "flag.csv", index=False)
    frame.assign(churned=(labels == "yes").astype(float)).to_csv(project / "float.csv", index=False)

    assert main(["train", "--data", "flag.csv", "--target", "churned", "--model", "flag"]) == 0
    assert main(["train", "--data", "float.csv", "--target", "churned", "--model", "number"]) == 0
    assert cli_registry("flag").list_versions()[0].classes == ("False", "True")
    assert cli_registry("number").list_versions()[0].classes == (0, 1)


def test_wine_trains_a_multiclass_model(project: Path) -> None:
    assert main(["train", "--data", "wine.csv", "--target", "target", "--estimator", "random_forest", "--param", "n_estimators=20", "--model", "wine"]) == 0
    (manifest,) = cli_registry("wine").list_versions()
    assert manifest.task == "multiclass" and manifest.classes == (0, 1, 2) and "f1_macro" in manifest.metrics


def test_diabetes_trains_regressors_and_promote_by_rmse_picks_the_lowest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", "diabetes.parquet", "--target", "target", "--model", "diabetes"]) == 0
    assert "task: regression (inferred from the target" in capsys.readouterr().out
    assert main(["train", "--data", "diabetes.parquet", "--target", "target", "--estimator", "random_forest", "--param", "n_estimators=5",
                 "--param", "max_depth=2", "--model", "diabetes"]) == 0
    versions = cli_registry("diabetes").list_versions()
    assert [manifest.estimator for manifest in versions] == ["ridge", "random_forest"] and all(m.task == "regression" for m in versions)
    best = min(versions, key=lambda manifest: manifest.metrics["rmse"])
    assert main(["promote", "--best-by", "rmse", "--model", "diabetes"]) == 0
    assert cli_registry("diabetes").champion_version() == best.version
    assert main(["promote", "--best-by", "r2", "--model", "diabetes"]) == 0
    assert cli_registry("diabetes").champion_version() == max(versions, key=lambda manifest: manifest.metrics["r2"]).version


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "churn.csv"], "--data and --target go together"),
        (["--data", "churn.csv", "--target", "churned", "--task", "regression"], "--task regression: the target is not numeric"),
        (["--data", "diabetes.parquet", "--target", "target", "--estimator", "logistic_regression"], "--estimator 'logistic_regression': for a regression model choose one of ridge, random_forest, gradient_boosting"),
        (["--data", "churn.txt", "--target", "churned"], "--data churn.txt: not a CSV, Parquet or JSON Lines file"),
        (["--task", "multiclass"], "--task: the bundled data set is binary"),
    ],
)
def test_bad_training_input_is_one_line_and_registers_nothing(project: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str) -> None:
    assert main(["train", *arguments, "--model", "churn"]) == 2
    assert message in capsys.readouterr().err
    assert cli_registry("churn").list_versions() == []
