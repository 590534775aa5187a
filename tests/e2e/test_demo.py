"""The main job end to end: `sml demo --small` in a fresh process, on SQLite and on MariaDB.

Asserts on what the demo measured from the real stores (database rows, DLQ counts, the alert read
from a subscribed queue, the report file), not on its printed words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sml.cli.main import build_parser, main
from sml.demo.traffic import DEMO_SHIFT
from sml.local.stack import lock_state_dir


def run_small_demo(workdir: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    summary_path = workdir / "summary.json"
    summary_path.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SML_")}
    completed = subprocess.run(
        [sys.executable, "-m", "sml.cli.main", "demo", "--small", "--state-dir", str(workdir / "demo"), "--summary-json", str(summary_path), *extra],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert summary_path.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed, json.loads(summary_path.read_text())


def assert_story_held(completed: subprocess.CompletedProcess[str], summary: dict) -> None:
    failed = [check for check in summary["checks"] if not check["passed"]]
    assert completed.returncode == 0 and not failed, (failed, completed.stdout[-3000:])
    assert summary["requests_ok"] == summary["requests"] > 0
    assert summary["rows_stored"] == summary["events_captured"] > 1000
    assert summary["archived_predictions"] == summary["rebuilt_predictions"] == summary["rows_stored"]
    assert summary["dlq_before_replay"] > 0 and summary["dlq_after_replay"] == 0
    assert summary["flagged"] == sorted(DEMO_SHIFT.features)
    assert summary["alert"]["attributes"]["status"] == "DRIFT"
    assert summary["baseline_status"] == "NO_DRIFT" and summary["baseline_data_quality"] == "OK"
    assert {f"{name}:out_of_range" for name in DEMO_SHIFT.out_of_range} <= set(summary["data_quality_violations"])
    assert f"{summary['refused_feature']}:refused" in summary["data_quality_violations"] and summary["refused_requests"] > 0
    assert summary["alert"]["attributes"]["data_quality_status"] == "VIOLATIONS"
    report = Path(summary["report_path"]).read_text(encoding="utf-8")
    assert all(feature in report for feature in DEMO_SHIFT.features)
    # Concept drift: realized F1 falls below its baseline and the held-out value; the estimate does not follow it down.
    baseline, shifted = summary["baseline_quality"], summary["quality"]
    assert shifted["status"] == "DEGRADED" and summary["alert"]["attributes"]["quality_status"] == "DEGRADED"
    assert shifted["realized_f1"]["high"] < baseline["realized_f1"]["low"]
    assert shifted["estimated_f1"] > shifted["realized_f1"]["high"]
    assert "Model quality" in report
    assert "all checks passed" in completed.stdout


@pytest.mark.e2e
@pytest.mark.xdist_group("demo-sqlite")
def test_small_demo_on_sqlite_twice_in_the_same_folder(tmp_path: Path) -> None:
    first, summary = run_small_demo(tmp_path)
    assert_story_held(first, summary)
    assert summary["database_url"].startswith("sqlite:///")
    assert len(list(Path(summary["wandb_dir"]).rglob("offline-run-*"))) == 2
    second, summary = run_small_demo(tmp_path, "--concurrency", "4")
    assert_story_held(second, summary)


@pytest.mark.e2e
@pytest.mark.mysql
@pytest.mark.xdist_group("demo-mysql")
def test_small_demo_on_mariadb(tmp_path: Path, mysql_url: str) -> None:
    completed, summary = run_small_demo(tmp_path, "--database-url", mysql_url)
    assert_story_held(completed, summary)
    assert summary["database_url"].startswith("mysql+pymysql://")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--concurrency", "0"], "--concurrency must be between 1 and 64"),
        (["--database-url", "mysql+pymysql://root:secret@127.0.0.1/test"], "--database-url: Value error, must not contain a password"),
        (["--database-url", "nonsense"], "must be a SQLAlchemy URL"),
    ],
)
def test_bad_options_get_one_line_naming_them(arguments: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--state-dir", str(tmp_path / "demo"), *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and "secret" not in error


def test_without_fauxqs_the_demo_names_an_emulator_option_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SML_FAUXQS_HOME", str(tmp_path / "no-fauxqs"))

    assert main(["demo", "--state-dir", str(tmp_path / "demo")]) == 2

    error = capsys.readouterr().err
    assert "sml demo: error: the local AWS endpoint needs fauxqs" in error and "pass --aws-emulator ministack" in error
    assert build_parser(["demo"]).parse_args(["demo", "--aws-emulator", "ministack"]).aws_emulator == "ministack"


def test_a_stack_still_starting_in_the_demo_folder_stops_the_demo_before_it_wipes_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "demo"
    held = lock_state_dir(state_dir)  # what a stack holds from its first step, long before stack.json
    try:
        (state_dir / "sml.db").write_text("the other stack's")

        assert main(["demo", "--state-dir", str(state_dir)]) == 2
    finally:
        os.close(held)

    assert f"sml demo: error: a stack is already running in {state_dir} (pid {os.getpid()}); stop it or pass --state-dir\n" == capsys.readouterr().err
    assert (state_dir / "sml.db").read_text() == "the other stack's"
