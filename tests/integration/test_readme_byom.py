"""README's "Bring your own model": its code blocks, run as they are, against moto."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from sml.cli.main import main
from tests.registry_support import cli_registry, moto_project
from tests.unit.test_registration import churn_data

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(title: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the README section ``## title``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start : end if end != -1 else len(text)], flags=re.S)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    frame, labels = churn_data(800, seed=3)
    table = frame.assign(Churned=labels)
    table.iloc[:600].to_csv(tmp_path / "train.csv", index=False)
    table.iloc[600:].to_csv(tmp_path / "test.csv", index=False)
    with moto_project(tmp_path, monkeypatch):
        yield tmp_path


def test_the_readme_registers_promotes_and_lists_a_users_pipeline(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = section_blocks("Bring your own model")
    assert [language for language, _ in blocks] == ["python", "bash", "python"]
    namespace: dict[str, object] = {}
    exec(compile(blocks[0][1], "README.md (script)", "exec"), namespace)
    assert (project / "churn.joblib").is_file()

    commands = [line for line in blocks[1][1].splitlines() if line.startswith("sml ")]
    assert len(commands) == 3
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    store = cli_registry("churn")
    (registered,) = store.list_versions()
    assert store.champion_version() == registered.version
    assert registered.input_format == "dataframe" and registered.task == "binary"
    assert [(spec.name, spec.dtype, spec.nullable) for spec in registered.features] == [
        ("Monthly Charges", "float", True),
        ("Tenure Months", "integer", False),
        ("Paperless Billing", "boolean", False),
        ("Contract Type", "string", True),
    ]
    capsys.readouterr()

    exec(compile(blocks[2][1], "README.md (API)", "exec"), namespace)
    version, task, input_format, _ = capsys.readouterr().out.split()[-4:]
    assert (task, input_format) == ("binary", "dataframe") and len(store.list_versions()) == 2
    assert store.manifest(version).metrics.keys() == registered.metrics.keys()
