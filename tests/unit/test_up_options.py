"""`sml up` refuses bad runtime options with one line naming the option, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from sml.cli.main import main


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--predict-concurrency", "0"], "--predict-concurrency: must be between 1 and 1000, got 0"),
        (["--writer-concurrency", "two"], "--writer-concurrency: expected a whole number, got 'two'"),
        (["--aws-endpoint-url", "localhost:4566"], "--aws-endpoint-url: expected an http(s) URL such as http://127.0.0.1:4566, or `aws`"),
        (["--aws-emulator", "localstack"], "--aws-emulator: invalid choice: 'localstack'"),
        (["--model", "Wine"], "--model: 'Wine' is not a model name"),
    ],
)
def test_bad_runtime_options_are_named(arguments: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["up", "--state-dir", str(tmp_path / "state"), *arguments])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_a_model_given_twice_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["up", "--state-dir", str(tmp_path / "state"), "--model", "wine", "--model", "wine"]) == 2
    assert "--model wine: given twice" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
