"""The benchmark helpers that decide what the results table says: goals, turn-taking, formatting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_COMMON = Path(__file__).resolve().parents[2] / "bench" / "common.py"


@pytest.fixture(scope="module")
def common():
    # bench/ holds scripts, not a package: load its helpers module from the file.
    spec = importlib.util.spec_from_file_location("bench_common", BENCH_COMMON)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ratio_at_most_is_met_up_to_the_limit_and_says_so(common) -> None:
    within = common.ratio_at_most("cold start", "median", 1.3, "floor", 1.0, "s", 1.3)
    beyond = common.ratio_at_most("cold start", "median", 1.31, "floor", 1.0, "s", 1.3)

    assert (within.met, within.target, beyond.met) == (True, "≤ 1.3×", False)
    assert beyond.ratio == pytest.approx(1.31)


def test_ratio_at_least_is_met_from_the_limit_up(common) -> None:
    assert common.ratio_at_least("writer", "10k", 1000.0, "per-row", 100.0, "events/s", 10).met is True
    short = common.ratio_at_least("writer", "10k", 999.0, "per-row", 100.0, "events/s", 10)
    assert (short.met, short.target) == (False, "≥ 10×")


def test_variants_take_turns_call_by_call_and_upkeep_runs_every_n_rounds(common) -> None:
    calls: list[str] = []
    upkeeps: list[int] = []

    samples = common.interleaved_latencies(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        6,
        warmup=1,
        upkeep=lambda: upkeeps.append(len(calls)),
        upkeep_every=3,
    )

    assert calls == ["a", "b"] + ["a", "b"] * 6
    assert upkeeps == [2 + 6, 2 + 12]
    assert {name: len(values) for name, values in samples.items()} == {"a": 6, "b": 6}


def test_latency_summary_reports_milliseconds(common) -> None:
    summary = common.latency_summary(np.arange(1, 101) / 1000.0)

    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["max_ms"] == pytest.approx(100.0)


def test_table_marks_missed_goals_and_information_lines(common) -> None:
    lines = [
        common.ratio_at_most("drift", "100k", 3.0, "raw SELECT", 1.0, "s", 1.5),
        common.Comparison("drift", "100k memory", 55.0, "pandas loop", 363.0, "MB"),
    ]

    header, missed, information = common.format_table(lines)

    assert header[:3] == ["benchmark", "measure", "ours"]
    assert (missed[2], missed[5], missed[6], missed[7]) == ("3 s", "3×", "≤ 1.5×", "NO")
    assert (information[6], information[7]) == ("-", "-")
    assert common.format_number(21020.3) == "21,020"
