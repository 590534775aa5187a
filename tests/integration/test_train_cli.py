"""`sml train`, `models`, `promote`, `rollback` against moto, and where an offline W&B run leaves its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sml.core.aws import aws_client
from sml.cli.main import main
from sml.lifecycle.modeling import rows_to_matrix
from sml.lifecycle.registry import load_champion
from sml.core.settings import LocalSettings, load_settings
from tests.registry_support import moto_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project folder with a registry bucket in moto; the state folder is ``.sml`` in it."""
    with moto_project(tmp_path, monkeypatch):
        yield tmp_path


def test_train_then_promote_best_leaves_a_champion_the_loader_verifies(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 0
    assert main(["train", "--estimator", "random_forest", "--param", "n_estimators=20", "--param", "max_depth=3"]) == 0
    assert main(["promote", "--best-by", "f1"]) == 0
    out = capsys.readouterr().out
    assert "registered breast-cancer v" in out and "champion of breast-cancer: v" in out

    settings = load_settings(LocalSettings)
    loaded = load_champion(
        aws_client("s3", settings),
        aws_client("ssm", settings),
        bucket=settings.bucket,
        app_name=settings.app_name,
        model_name=settings.model_name,
        cache_dir=project / "cache",
    )
    assert out.count(loaded.version) >= 2
    assert loaded.manifest.wandb_run_path is not None
    run_folder = Path(loaded.manifest.wandb_run_path)
    assert run_folder.is_relative_to(project / ".sml" / "wandb") and run_folder.name.startswith("offline-run-")
    assert any(run_folder.glob("*.wandb"))
    rows = [{spec.name: spec.maximum if spec.kind == "numeric" else "high" for spec in loaded.manifest.features}]
    assert loaded.model.predict(rows_to_matrix(rows, loaded.manifest.features)).tolist() == ["malignant"]

    assert main(["models"]) == 0
    table = capsys.readouterr().out
    champion_line = next(line for line in table.splitlines() if loaded.version in line)
    assert "*" in champion_line and "random_forest" in table and "logistic_regression" in table


def test_rollback_after_promoting_by_version(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--seed", "1"]) == 0
    assert main(["train", "--seed", "2"]) == 0
    first, second = sorted(line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("registered "))
    assert main(["promote", first]) == 0
    assert main(["promote", second]) == 0
    capsys.readouterr()
    assert main(["rollback"]) == 0
    assert capsys.readouterr().out.strip() == f"champion of breast-cancer: {first}, was {second}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["promote", "v20990101-000000-abcdef"],
            "sml promote: error: version v20990101-000000-abcdef of model 'breast-cancer' is not registered",
        ),
        (["promote", "--best-by", "f1"], "sml promote: error: no versions of model 'breast-cancer' are registered"),
        (["rollback"], "sml rollback: error: model 'breast-cancer' has no champion: SSM parameter"),
        (["train", "--param", "gamma=1"], "sml train: error: --param gamma: LogisticRegression has no such parameter"),
        (["train", "--test-size", "0.9"], "sml train: error: --test-size 0.9: must be between 0.05 and 0.5"),
        (["train", "--expected-window-rows", "0"], "sml train: error: --expected-window-rows: must be at least 1, got 0"),
        (["promote", "--best-by", "f1", "--expected-window-rows", "-5"], "sml promote: error: --expected-window-rows: must be at least 1, got -5"),
    ],
)
def test_failures_are_one_line_errors(project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    from sml.cli.commands.models import open_registry

    assert open_registry()[0].list_versions() == [], "a refused command registers nothing"


def test_train_against_a_missing_bucket_fails_before_training(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SML_BUCKET", "sml-not-there")
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "error: S3 bucket 'sml-not-there' does not exist; start the local stack with `sml up` or set SML_BUCKET" in err
    assert "fitting" not in err
    assert not (project / ".sml" / "wandb").exists()


@pytest.mark.parametrize("command", ["train", "models", "promote", "rollback"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: sml {command}" in capsys.readouterr().out


TRAIN_IN_MOTO = textwrap.dedent(
    """
    import json, os, sys
    import boto3
    from moto import mock_aws
    from sml.cli.main import main
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=os.environ["SML_BUCKET"])
        code = main(["train"])
        from sml.cli.commands.models import open_registry
        registry, _ = open_registry()
        print(json.dumps({"code": code, "run": registry.list_versions()[0].wandb_run_path}))
    """
)


def test_offline_wandb_run_keeps_every_file_in_the_state_folder(tmp_path: Path) -> None:
    home, temp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for folder in (home, temp, work):
        folder.mkdir()
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "SML_", "XDG_")) and key not in ("HOME", "TMPDIR")
    }
    environ.update(HOME=str(home), TMPDIR=str(temp), SML_BUCKET=f"sml-test-{uuid.uuid4().hex[:12]}", SML_STATE_DIR=".sml")
    result = subprocess.run([sys.executable, "-c", TRAIN_IN_MOTO], cwd=work, env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0

    state = work / ".sml"
    run_folder = Path(outcome["run"])
    assert run_folder.parent == state.resolve() / "wandb" / "wandb" and run_folder.name.startswith("offline-run-")
    assert any(run_folder.glob("run-*.wandb"))
    assert any((state / "wandb" / "data").rglob("*")), "artifact staging belongs under the state folder"
    # W&B's service socket lives in $TMPDIR while the run is open; nothing may stay behind.
    left_elsewhere = [path for path in tmp_path.rglob("*") if not path.is_relative_to(state) and path not in (home, temp, work, state)]
    assert left_elsewhere == []


def test_train_stores_a_drift_config_checked_against_the_features_and_promote_warns_where_the_reference_is_too_small(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "drift.toml").write_text('[features.mean_texture]\nfloor = "0.1sd"\n\n[floors]\nlabel = 0.06\n')
    assert main(["train", "--drift-config", "drift.toml"]) == 0
    out = capsys.readouterr().out
    version = next(line.split()[2] for line in out.splitlines() if line.startswith("registered "))
    assert "drift config drift.toml stored in the manifest" in out
    # 426 training rows cannot rule out 0.1 sd with any window; the label floor needs a larger window.
    assert "warning: mean_texture: the KS test cannot certify NO_DRIFT below 0.20 sd with any window (floor 0.10 sd from features.mean_texture.floor)" in out
    assert "warning: (predicted label): the predicted-label test cannot certify NO_DRIFT below Cramér's V 0.067 with 1,000-row windows (floor Cramér's V 0.060 from floors.label); windows of" in out

    from sml.cli.commands.models import open_registry

    registry, _ = open_registry()
    assert registry.manifest(version).drift_config == {
        "source": "drift.toml", "floors": {"label": 0.06}, "features": {"mean_texture": {"floor": "0.1sd"}}
    }

    assert main(["promote", version, "--strict"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "not promoted: 2 drift power warning(s) and --strict"
    assert registry.find_champion_version() is None
    assert main(["promote", version, "--expected-window-rows", "100000"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: ") == 1 and "mean_texture" in out
    assert out.splitlines()[-1] == f"champion of breast-cancer: {version}, was none"


def test_a_version_without_a_drift_config_passes_the_power_check_under_the_default_floors(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert "drift power: all 23 tests can certify NO_DRIFT at their floors with 1,000-row windows (training reference: 426 rows)" in out
    assert main(["promote", "--best-by", "f1", "--strict"]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[features.mean_textur]\nfloor = 0.05\n", "drift.toml: features.mean_textur: the model has no feature 'mean_textur'"),
        ("[features.concavity_grade]\nfloor = '0.1sd'\n", "drift.toml: features.concavity_grade.floor: 'concavity_grade' is categorical"),
        ("[floors]\nnumeric = -0.2\n", "drift.toml: floors.numeric: -0.2 must give an effect in (0, 1)"),
    ],
)
def test_a_drift_config_that_does_not_fit_registers_nothing(
    project: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (project / "drift.toml").write_text(text)
    assert main(["train", "--drift-config", "drift.toml"]) == 2
    # The error is one line, after the progress line of the training it let finish.
    err_lines = capsys.readouterr().err.splitlines()
    assert err_lines[-1].startswith(f"sml train: error: {message}")
    from sml.cli.commands.models import open_registry

    assert open_registry()[0].list_versions() == []
