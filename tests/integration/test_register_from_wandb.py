"""`sml register --from-wandb` against a double of W&B's public API as W&B documents it:
``wandb.Api().artifact(name)`` -> an artifact with ``download(root)``, ``logged_by()``,
``qualified_name``, ``version``, ``aliases`` and ``save()``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

from sml.cli.main import main
from tests.registry_support import cli_registry, moto_project
from tests.unit.test_registration import churn


class FakeRun:
    def __init__(self, entity: str, project: str, run_id: str) -> None:
        self.path = [entity, project, run_id]


class FakeArtifact:
    """One logged version of a model artifact: files, the run that logged it, aliases saved on save()."""

    def __init__(self, entity: str, project: str, collection: str, version: str, files: dict[str, bytes], aliases: list[str]) -> None:
        self.entity, self.project, self.collection, self.version = entity, project, collection, version
        self.files = files
        self.aliases = list(aliases)
        self.saved_aliases: list[list[str]] = []
        self.requested_as = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.requested_as.rpartition('/')[2]}"

    def download(self, root: str | None = None) -> str:
        folder = Path(root or ".")
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (folder / name).write_bytes(content)
        return str(folder)

    def logged_by(self) -> FakeRun:
        return FakeRun(self.entity, self.project, "run-7f3a")

    def save(self) -> None:
        self.saved_aliases.append(list(self.aliases))


class FakeApi:
    """``wandb.Api``: artifacts by ``entity/project/name:alias``; an unknown one raises as W&B does (a ValueError here)."""

    artifacts: dict[str, FakeArtifact] = {}

    def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
        if name not in self.artifacts:
            raise ValueError(f"artifact '{name}' not found")
        found = self.artifacts[name]
        found.requested_as = name
        return found


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import wandb

    model, train, y_train, _, _ = churn()
    train.assign(churned=y_train).to_csv(tmp_path / "train.csv", index=False)
    joblib.dump(model, tmp_path / "model.joblib")
    artifact = FakeArtifact("acme", "churn", "churn-model", "v3", {"model.joblib": (tmp_path / "model.joblib").read_bytes(), "README.md": b"notes"}, ["production", "v3"])
    monkeypatch.setattr(FakeApi, "artifacts", {"acme/churn/churn-model:production": artifact, "acme/churn/empty:latest": FakeArtifact("acme", "churn", "empty", "v0", {"notes.txt": b""}, [])})
    monkeypatch.setattr(wandb, "Api", FakeApi)
    with moto_project(tmp_path, monkeypatch):
        yield tmp_path


def test_a_wandb_artifact_is_registered_with_its_version_and_run_and_tagged_back(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", "--from-wandb", "acme/churn/churn-model:production", "--reference", "train.csv", "--target", "churned", "--model", "churn"]) == 0
    (manifest,) = cli_registry("churn").list_versions()
    assert manifest.extra["wandb_artifact"] == "acme/churn/churn-model:v3" and manifest.wandb_run_path == "acme/churn/run-7f3a"
    artifact = FakeApi.artifacts["acme/churn/churn-model:production"]
    assert artifact.saved_aliases == [["production", "v3", manifest.version]]
    out = capsys.readouterr().out
    assert "downloaded acme/churn/churn-model:v3 (logged by run acme/churn/run-7f3a)" in out
    assert f"W&B artifact acme/churn/churn-model:v3 has alias {manifest.version}" in out
    assert not list(project.glob(".sml/wandb-*"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from-wandb", "churn-model:production"], "--from-wandb 'churn-model:production': expected ENTITY/PROJECT/NAME:ALIAS"),
        (["--from-wandb", "acme/churn/missing:latest"], "--from-wandb acme/churn/missing:latest: W&B could not provide it (ValueError: artifact 'acme/churn/missing:latest' not found)"),
        (["--from-wandb", "acme/churn/empty:latest"], "--from-wandb acme/churn/empty:latest: expected one .joblib/.pkl/.pickle file in the artifact, found 0 (notes.txt)"),
        (["model.joblib", "--from-wandb", "acme/churn/churn-model:production"], "give ARTIFACT (a joblib or pickle file) or --from-wandb"),
    ],
)
def test_a_wandb_reference_that_does_not_give_one_model_is_one_line(project: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str) -> None:
    assert main(["register", *arguments, "--reference", "train.csv", "--target", "churned", "--model", "churn"]) == 2
    assert message in capsys.readouterr().err
    assert cli_registry("churn").list_versions() == []
