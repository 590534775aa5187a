"""`sml register` and `--model` on the model commands, against moto: the user's files in, one line per bad input."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import joblib
import pandas as pd
import pytest

from sml.cli.main import main
from tests.registry_support import cli_registry, moto_project
from tests.unit.test_registration import churn, churn_pipeline


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder with a registry bucket in moto, the churn model and its data as files."""
    model, train, y_train, test, y_test = churn()
    joblib.dump(model, tmp_path / "churn.joblib")
    train.assign(churned=y_train).to_csv(tmp_path / "train.csv", index=False)
    test.assign(churned=y_test).to_csv(tmp_path / "test.csv", index=False)
    with moto_project(tmp_path, monkeypatch):
        yield tmp_path



def test_register_a_users_csv_and_pipeline_then_promote_it_under_its_own_name(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["register", "churn.joblib", "--reference", "train.csv", "--test", "test.csv", "--target", "churned", "--model", "churn"]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "task: binary (inferred from the model and the target; --task to set it)" in out
    assert "input: a DataFrame (the model was fitted on one)" in out
    assert "positive class: 'yes'" in out and "registered churn v" in out and "(HistGradientBoostingClassifier, binary): accuracy " in out
    (manifest,) = cli_registry("churn").list_versions()
    assert manifest.input_format == "dataframe" and manifest.dataset == "train.csv"
    assert [spec.dtype for spec in manifest.features] == ["float", "integer", "boolean", "string"]
    assert cli_registry("breast-cancer").list_versions() == []

    assert main(["promote", "--best-by", "roc_auc", "--model", "churn"]) == 0
    assert f"champion of churn: {manifest.version} (best roc_auc: " in capsys.readouterr().out
    assert main(["models", "--model", "churn"]) == 0
    listed = capsys.readouterr().out
    assert manifest.version in listed and "binary" in listed and f"champion: {manifest.version}" in listed


def test_parquet_and_json_lines_register_like_csv(project: Path) -> None:
    frame = pd.read_csv(project / "train.csv")
    frame.to_parquet(project / "train.parquet")
    frame.to_json(project / "train.jsonl", orient="records", lines=True)
    for reference in ("train.parquet", "train.jsonl"):
        assert main(["register", "churn.joblib", "--reference", reference, "--test-size", "0.2", "--target", "churned", "--model", "churn"]) == 0
    dtypes = [[spec.dtype for spec in manifest.features] for manifest in cli_registry("churn").list_versions()]
    assert dtypes == [["float", "integer", "boolean", "string"]] * 2


def test_a_version_that_differs_from_the_champion_is_shown_and_strict_refuses_it(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", "churn.joblib", "--reference", "train.csv", "--target", "churned", "--model", "churn"]) == 0
    (first,) = cli_registry("churn").list_versions()
    cli_registry("churn").promote(first.version)
    frame = pd.read_csv(project / "train.csv").assign(**{"Paperless Billing": lambda f: f["Paperless Billing"].astype(int)})
    frame.to_csv(project / "retyped.csv", index=False)
    joblib.dump(churn_pipeline().fit(frame.drop(columns=["churned"]), frame["churned"]), project / "retyped.joblib")
    capsys.readouterr()

    assert main(["register", "retyped.joblib", "--reference", "retyped.csv", "--target", "churned", "--model", "churn", "--strict"]) == 2
    captured = capsys.readouterr()
    assert f"differs from champion {first.version}: retyped feature 'Paperless Billing': boolean -> integer" in captured.out
    assert "and --strict is set" in captured.err
    assert len(cli_registry("churn").list_versions()) == 1

    assert main(["register", "retyped.joblib", "--reference", "retyped.csv", "--target", "churned", "--model", "churn"]) == 0
    second = cli_registry("churn").list_versions()[-1]
    assert main(["promote", second.version, "--model", "churn", "--strict"]) == 1
    assert "not promoted:" in capsys.readouterr().out and cli_registry("churn").champion_version() == first.version
    assert main(["promote", second.version, "--model", "churn"]) == 0
    assert "retyped feature 'Paperless Billing': boolean -> integer" in capsys.readouterr().out
    assert main(["rollback", "--model", "churn"]) == 0
    assert cli_registry("churn").champion_version() == first.version


@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        (lambda p: (p / "train.xlsx").write_text("x"), ["churn.joblib", "--reference", "train.xlsx"], "--reference train.xlsx: not a CSV, Parquet or JSON Lines file"),
        (lambda p: None, ["churn.joblib", "--reference", "missing.csv"], "--reference missing.csv: no such file"),
        (lambda p: (p / "bad.parquet").write_text("a,b\n1,2\n"), ["churn.joblib", "--reference", "bad.parquet"], "--reference bad.parquet: cannot be read as PARQUET"),
        (lambda p: None, ["churn.joblib", "--reference", "train.csv", "--target", "Churned"], "--target 'Churned': not a column of --reference train.csv (columns: 'Monthly Charges',"),
        (lambda p: (p / "notes.pkl").write_bytes(pickle.dumps({"a": 1})), ["notes.pkl", "--reference", "train.csv"], "notes.pkl: holds a builtins.dict, not an estimator with predict()"),
        (lambda p: (p / "junk.joblib").write_text("not a pickle"), ["junk.joblib", "--reference", "train.csv"], "junk.joblib: not a joblib or pickle file this environment can load"),
        (
            lambda p: (p / "mixed.jsonl").write_text(pd.read_csv(p / "train.csv").assign(**{"Tenure Months": ["x", *range(449)]}).to_json(orient="records", lines=True)),
            ["churn.joblib", "--reference", "mixed.jsonl"],
            "--reference mixed.jsonl: column 'Tenure Months' holds values of more than one type (int, str); convert it to one type",
        ),
        (lambda p: None, ["churn.joblib", "--reference", "train.csv", "--model", "Not A Name"], "--model: 'Not A Name' is not a model name"),
        (lambda p: None, ["churn.joblib", "--reference", "train.csv", "--task", "regression"], "task regression: the model is a classifier"),
        (lambda p: None, ["churn.joblib", "--reference", "train.csv", "--test", "test.csv", "--test-size", "0.2"], "not allowed with argument"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(project: Path, capsys: pytest.CaptureFixture[str], setup, arguments: list[str], message: str) -> None:
    setup(project)
    if "--target" not in arguments:
        arguments = [*arguments, "--target", "churned"]
    try:
        code = main(["register", *arguments])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 or "usage:" in err
    assert cli_registry("churn").list_versions() == [] and cli_registry("breast-cancer").list_versions() == []


@pytest.mark.parametrize(
    ("dataset", "estimator", "task", "metric"),
    [("wine", "LogisticRegression", "multiclass", "f1_macro"), ("diabetes", "LinearRegression", "regression", "rmse")],
)
def test_a_multiclass_and_a_regression_model_register_and_promote(project: Path, dataset: str, estimator: str, task: str, metric: str) -> None:
    from sklearn import datasets, linear_model
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
    train, test = frame.iloc[::2], frame.iloc[1::2]
    model = make_pipeline(StandardScaler(), getattr(linear_model, estimator)()).fit(train.drop(columns=["target"]), train["target"])
    joblib.dump(model, project / f"{dataset}.joblib")
    train.to_csv(project / f"{dataset}-train.csv", index=False)
    test.to_parquet(project / f"{dataset}-test.parquet")

    arguments = [f"{dataset}.joblib", "--reference", f"{dataset}-train.csv", "--test", f"{dataset}-test.parquet", "--target", "target"]
    assert main(["register", *arguments, "--model", dataset]) == 0
    assert main(["promote", "--best-by", metric, "--model", dataset]) == 0
    (manifest,) = cli_registry(dataset).list_versions()
    assert cli_registry(dataset).champion_version() == manifest.version
    assert manifest.task == task and manifest.input_format == "dataframe" and metric in manifest.metrics
    assert manifest.classes == ((0, 1, 2) if task == "multiclass" else ())
    assert (manifest.reference.predictions is not None) == (task == "regression")


def test_a_files_target_takes_the_type_of_the_models_string_classes(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"x": [float(value) for value in range(40)], "label": [value % 2 for value in range(40)]})
    model = LogisticRegression().fit(frame[["x"]], frame["label"].astype(str))  # classes '0', '1'
    joblib.dump(model, project / "text-classes.joblib")
    frame.to_csv(project / "numbers.csv", index=False)  # the CSV's target reads back as integers 0, 1
    assert main(["register", "text-classes.joblib", "--reference", "numbers.csv", "--target", "label", "--test-size", "0.25", "--model", "churn"]) == 0
    (manifest,) = cli_registry("churn").list_versions()
    assert manifest.classes == ("0", "1") and manifest.extra["positive_class"] == "1"
