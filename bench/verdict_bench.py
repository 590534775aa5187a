"""Drift verdicts: false alarms, power, share INCONCLUSIVE and time of our rule with every registered
drift method and the prediction of every task, vs per-column KS at p < 0.05.

The data are the 20 columns of ``shared/DRIFT-EVALUATION.md`` (realistic shapes): normal,
lognormal, Student t(3), rounded and Poisson integers, a 5-point Likert scale, a zero-inflated
amount, numeric columns with 2% / 10% / 30% missing values, a rare-level and a 20-level Zipf
categorical, a binary and a 5-level categorical; and the model's prediction for each task, from a
score of four complete numeric columns (:func:`task_predictions`): a binary class, one of three
classes, and a regression model's number. Every repetition draws a fresh reference and window from
the same generator:

- no shift: both from the same distributions; a run with any DRIFT is a false alarm (the goal:
  at most the false discovery rate, 5%, of runs), counted per task (the run tests the features and
  that task's prediction together, as a model's run does);
- shift of 0.1 / 0.2 / 0.5 sd: every numeric column moved by that many of its standard
  deviations; power = share of those columns flagged, and share of runs whose prediction is
  flagged (the score moves by twice the features' shift, so the prediction moves too).

A configuration is one registered main method (every method of the registry but the missing-rate
one) for every column whose kind it tests, the kind's default (``ks``, ``chi2``) for the others;
methods whose configuration is the defaults' share one. Beside them the seed's rule:
``scipy.stats.ks_2samp`` per numeric column at p < 0.05, no correction, no floor (categoricals and
class predictions by chi-square at p < 0.05). Time is the computation only, per run of 20 columns
and the binary prediction, at the largest size.

Run alone: ``python bench/verdict_bench.py [--quick] [--jobs N]``; in parts (each short enough for
the bench lock): ``--methods wasserstein --sizes 400/1000,5000/1000 --save part.json``, then
``--report part1.json part2.json ...`` prints the combined table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from common import BenchReport, Comparison, print_report

BENCHMARK = "verdicts"
FDR = 0.05
SHIFTS_SD = (0.1, 0.2, 0.5)
# (reference rows, window rows): the small service, the problem cases, and a large one.
FULL_SIZES = ((400, 1_000), (400, 10_000), (5_000, 1_000), (5_000, 10_000), (50_000, 1_000), (50_000, 10_000), (10_000, 100_000))
QUICK_SIZES = ((400, 1_000), (5_000, 1_000), (50_000, 1_000), (5_000, 10_000))
# Null runs per size, and how many of them are followed by the three shifted windows.
FULL_REPETITIONS, FULL_POWER_REPETITIONS = 200, 25
QUICK_REPETITIONS, QUICK_POWER_REPETITIONS = 15, 15
LARGE_REPETITIONS, LARGE_POWER_REPETITIONS = 30, 10

NUMERIC = ("normal", "lognormal", "t3", "rounded", "poisson", "likert", "zero_inflated", "missing_2", "missing_10", "missing_30",
           "normal_b", "lognormal_b", "poisson_b", "rounded_b", "t3_b")
CATEGORICAL = ("rare_level", "zipf_20", "binary", "five_level")
LABEL = "(predicted label)"
ZIPF_WEIGHTS = (1 / np.arange(1, 21)) / (1 / np.arange(1, 21)).sum()
TASKS = ("binary", "multiclass", "regression")
BINARY_CLASSES = ("benign", "malignant")
MULTICLASS_CLASSES = ("class_0", "class_1", "class_2")
# The score's inputs and their population mean and sd (lognormal(0, 0.6): e^0.18 and √((e^0.36 − 1)·e^0.36)).
SCORE_INPUTS = {"normal": (10.0, 2.0), "lognormal": (1.1972, 0.7881), "t3": (0.0, 3**0.5), "poisson": (3.0, 3**0.5)}
BINARY_CUT = 0.33  # ~37% "malignant", as the breast-cancer demo's label
MULTICLASS_CUTS = (-0.44, 0.52)  # ~33 / 37 / 30%, as wine's classes


def generate_columns(rng: np.random.Generator, rows: int, shift_sd: float = 0.0) -> dict[str, np.ndarray]:
    """One sample of every column, the binary prediction under ``LABEL``; numeric columns moved by
    ``shift_sd`` of their standard deviation.

    Discrete columns (rounded, Poisson, Likert) are shifted before they are discretised, as a
    real shift would be: moving tied values off their grid would be a different, much larger
    change of distribution.
    """
    s = shift_sd
    latent_likert = rng.normal(0, 1, rows) + s
    columns: dict[str, np.ndarray] = {
        "normal": rng.normal(10 + 2 * s, 2, rows),
        "lognormal": rng.lognormal(0, 0.6, rows) + 0.66 * s,
        "t3": rng.standard_t(3, rows) + 1.73 * s,
        "rounded": np.round(rng.normal(50 + 10 * s, 10, rows)),
        "poisson": rng.poisson(3 + 1.73 * s, rows).astype(float),
        "likert": np.digitize(latent_likert, [-1.28, -0.52, 0.25, 1.04]).astype(float) + 1,
        "zero_inflated": np.where(rng.random(rows) < 0.6, 0.0, rng.gamma(2, 50, rows) + 71 * s),
        "missing_2": rng.normal(s, 1, rows),
        "missing_10": rng.normal(s, 1, rows),
        "missing_30": rng.gamma(3, 1, rows) + 1.73 * s,
        "normal_b": rng.normal(-5 + s, 1, rows),
        "lognormal_b": rng.lognormal(1, 1, rows) + 5.6 * s,
        "poisson_b": rng.poisson(12 + 3.46 * s, rows).astype(float),
        "rounded_b": np.round(rng.normal(3 * s, 3, rows), 1),
        "t3_b": (rng.standard_t(3, rows) + 1.73 * s) * 5,
    }
    for name, rate in (("missing_2", 0.02), ("missing_10", 0.10), ("missing_30", 0.30)):
        columns[name][rng.random(rows) < rate] = np.nan
    columns["rare_level"] = rng.choice(np.array(["a", "b", "c", "rare"], dtype=object), rows, p=[0.5, 0.3, 0.195, 0.005])
    columns["zipf_20"] = rng.choice(np.array([f"z{index:02d}" for index in range(20)], dtype=object), rows, p=ZIPF_WEIGHTS)
    columns["binary"] = rng.choice(np.array(["yes", "no"], dtype=object), rows, p=[0.3, 0.7])
    columns["five_level"] = rng.choice(np.array(["A", "B", "C", "D", "E"], dtype=object), rows)
    columns[LABEL] = task_predictions(columns)["binary"]
    return columns


def task_predictions(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each task's prediction from the score ``Σ z / 2`` of the four ``SCORE_INPUTS`` (sd ≈ 1):
    binary and multiclass classes by fixed cuts, a regression model's ``150 + 50·score`` (the
    diabetes target's scale; heavy-tailed through t3 and lognormal)."""
    score = sum((columns[name] - mean) / sd for name, (mean, sd) in SCORE_INPUTS.items()) / 2
    return {
        "binary": np.array(BINARY_CLASSES, dtype=object)[(score > BINARY_CUT).astype(int)],
        "multiclass": np.array(MULTICLASS_CLASSES, dtype=object)[np.digitize(score, MULTICLASS_CUTS)],
        "regression": 150 + 50 * score,
    }


def main_methods() -> list[Any]:
    """Every registered method a column's main test can use (all but the missing-rate method)."""
    from sml.monitoring.drift.methods import registered_methods

    return [method for method in registered_methods() if not method.missing_rate]


def configurations() -> dict[str, dict[str, str]]:
    """Per configuration name, the main method per kind: each registered method where it tests the
    kind, the kind's default elsewhere; methods giving the same choice share one (``ks / chi2``)."""
    from sml.monitoring.drift.methods import DEFAULT_METHODS

    found: dict[str, dict[str, str]] = {}
    for method in main_methods():
        choice = {kind: method.name if kind in method.kinds else default for kind, default in DEFAULT_METHODS.items()}
        found.setdefault(" / ".join(choice[kind] for kind in DEFAULT_METHODS), choice)
    return found


SEED_RULE = "per-column KS p<0.05"
DEFAULTS = "ks / chi2"


def _feature_columns(choice: dict[str, str]) -> list[Any]:
    from sml.monitoring.drift.run import DriftColumn

    return [*(DriftColumn(name, "numeric", method=choice["numeric"]) for name in NUMERIC),
            *(DriftColumn(name, "categorical", method=choice["categorical"]) for name in CATEGORICAL)]


def _prediction_column(task: str, choice: dict[str, str]) -> Any:
    from sml.monitoring.drift.run import DriftColumn, prediction_column

    if task == "regression":
        return DriftColumn(prediction_column(task), "numeric", prediction=True, method=choice["numeric"])
    classes = BINARY_CLASSES if task == "binary" else MULTICLASS_CLASSES
    return DriftColumn(prediction_column(task), "categorical", classes, prediction=True, method=choice["categorical"])


class TaskOutcome(NamedTuple):
    """One run of one task: the columns flagged DRIFT (the prediction under ``LABEL``), the methods
    of the flagged tests, and the run's verdict."""

    flagged: frozenset[str]
    flagged_methods: frozenset[str]
    verdict: str


Tester = Callable[[dict[str, np.ndarray]], dict[str, TaskOutcome]]


def our_rule(choice: dict[str, str]) -> Callable[[dict[str, np.ndarray]], Tester]:
    """Our rule with ``choice``'s main methods: given a reference, a tester of windows that runs the
    features once and decides them with each task's prediction as that task's run would (one
    Benjamini–Hochberg correction over the features and the prediction)."""
    from sml.monitoring.drift.run import PREDICTION_COLUMNS, default_floors, pending_tests
    from sml.monitoring.drift.stats import DriftVerdict, decide_all, overall_verdict, reference_from_columns
    from sml.monitoring.summaries import SummaryReference, reference_grids, summarise

    features = _feature_columns(choice)
    predictions_columns = {task: _prediction_column(task, choice) for task in TASKS}
    feature_floors = default_floors(features)

    def prepare(reference_columns: dict[str, np.ndarray]) -> Tester:
        grids = reference_grids(reference_from_columns(reference_columns, features), features)
        reference_predictions = task_predictions(reference_columns)
        tasks = {}
        for task, column in predictions_columns.items():
            grid = reference_grids(reference_from_columns({column.name: reference_predictions[task]}, [column]), [column])
            tasks[task] = (column, SummaryReference(features={}, prediction=grid.prediction), default_floors([column]))

        def test(current: dict[str, np.ndarray]) -> dict[str, TaskOutcome]:
            summary = summarise({column.name: current[column.name] for column in features}, grids)
            # Each task's decision asks the features' tests for their detectable effect at the same
            # level: computed once (a root search per test), not once per task.
            pending = [replace(test, min_detectable=cache(test.min_detectable)) if test.min_detectable else test
                       for test in pending_tests(grids, summary, features, feature_floors)]
            predictions = task_predictions(current)
            outcomes = {}
            for task, (column, grid, floors) in tasks.items():
                results = decide_all(pending + pending_tests(grid, summarise({}, grid, predictions[task]), [column], floors), FDR)
                drift = [result for result in results if result.verdict is DriftVerdict.DRIFT]
                outcomes[task] = TaskOutcome(
                    frozenset(LABEL if result.feature in PREDICTION_COLUMNS else result.feature for result in drift),
                    frozenset(result.test for result in drift), overall_verdict(results).value,
                )
            return outcomes

        return test

    return prepare


def seed_rule(reference_columns: dict[str, np.ndarray]) -> Tester:
    """The seed's rule: per-column KS (chi-square for categoricals and classes) at p < 0.05, no correction, no floor."""
    reference_predictions = task_predictions(reference_columns)

    def chi_square_rejects(reference: np.ndarray, current: np.ndarray) -> bool:
        levels = sorted(set(reference) | set(current))
        table = np.array([[np.count_nonzero(column == level) for level in levels] for column in (reference, current)])
        return len(levels) > 1 and stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False).pvalue < 0.05

    def ks_rejects(reference: np.ndarray, current: np.ndarray) -> bool:
        return stats.ks_2samp(reference[~np.isnan(reference)], current[~np.isnan(current)]).pvalue < 0.05

    def test(current: dict[str, np.ndarray]) -> dict[str, TaskOutcome]:
        flagged = {name for name in NUMERIC if ks_rejects(reference_columns[name], current[name])}
        flagged |= {name for name in CATEGORICAL if chi_square_rejects(reference_columns[name], current[name])}
        predictions, outcomes = task_predictions(current), {}
        for task in TASKS:
            rejects = ks_rejects if task == "regression" else chi_square_rejects
            task_flagged = flagged | ({LABEL} if rejects(reference_predictions[task], predictions[task]) else set())
            outcomes[task] = TaskOutcome(frozenset(task_flagged), frozenset(), "DRIFT" if task_flagged else "NO_DRIFT")
        return outcomes

    return test


def rules() -> dict[str, Callable[[dict[str, np.ndarray]], Tester]]:
    return {**{name: our_rule(choice) for name, choice in configurations().items()}, SEED_RULE: seed_rule}


def ours(reference_columns: dict[str, np.ndarray], current: dict[str, np.ndarray], method: str | None = None) -> tuple[set[str], str]:
    """Flagged columns and the run verdict of our rule with its default floors for the binary task
    (main tests by ``method`` where it tests the kind, else the kind's default)."""
    from sml.monitoring.drift.methods import DEFAULT_METHODS, drift_method

    chosen = drift_method(method) if method else None
    choice = {kind: chosen.name if chosen and kind in chosen.kinds else default for kind, default in DEFAULT_METHODS.items()}
    outcome = our_rule(choice)(reference_columns)(current)["binary"]
    return set(outcome.flagged), outcome.verdict


def measure_size(rule_name: str, reference_rows: int, window_rows: int, runs: int, power_runs: int, seed: int) -> dict[str, Any]:
    """One size's false alarms, power per shift and INCONCLUSIVE share per task, from its own seeded stream.

    Each (size, rule) pair draws from ``default_rng((seed, reference_rows, window_rows))``, so the
    figures do not depend on which sizes or rules run, in what order, or in how many processes;
    every rule sees the same data. The first ``power_runs`` repetitions also test the three shifted windows.
    """
    prepare = rules()[rule_name]
    rng = np.random.default_rng((seed, reference_rows, window_rows))
    false_alarms = {task: 0 for task in TASKS}
    prediction_false_alarms = {task: 0 for task in TASKS}
    method_false_alarms: dict[str, dict[str, int]] = {task: {} for task in TASKS}
    inconclusive = {task: 0 for task in TASKS}
    detected = {task: {shift: 0 for shift in SHIFTS_SD} for task in TASKS}
    prediction_detected = {task: {shift: 0 for shift in SHIFTS_SD} for task in TASKS}
    for repetition in range(runs):
        test = prepare(generate_columns(rng, reference_rows))
        for task, outcome in test(generate_columns(rng, window_rows)).items():
            false_alarms[task] += bool(outcome.flagged)
            prediction_false_alarms[task] += LABEL in outcome.flagged
            inconclusive[task] += outcome.verdict == "INCONCLUSIVE"
            for method in outcome.flagged_methods:
                method_false_alarms[task][method] = method_false_alarms[task].get(method, 0) + 1
        if repetition >= power_runs:
            continue
        for shift in SHIFTS_SD:
            for task, outcome in test(generate_columns(rng, window_rows, shift)).items():
                detected[task][shift] += len(outcome.flagged.intersection(NUMERIC))
                prediction_detected[task][shift] += LABEL in outcome.flagged
    figures = {
        "rule": rule_name, "reference": reference_rows, "window": window_rows, "runs": runs, "power_runs": power_runs,
        "tasks": {
            task: {
                "false_alarm": false_alarms[task] / runs, "prediction_false_alarm": prediction_false_alarms[task] / runs,
                "method_false_alarm": {method: count / runs for method, count in sorted(method_false_alarms[task].items())},
                "inconclusive": inconclusive[task] / runs,
                **{f"power_{shift}": detected[task][shift] / max(power_runs * len(NUMERIC), 1) for shift in SHIFTS_SD},
                **{f"prediction_power_{shift}": prediction_detected[task][shift] / max(power_runs, 1) for shift in SHIFTS_SD},
            }
            for task in TASKS
        },
    }
    print(f"  {rule_name:>28} {reference_rows:>6,}/{window_rows:<7,} runs {runs}/{power_runs}: false alarm "
          + ", ".join(f"{task} {figures['tasks'][task]['false_alarm']:.1%}" for task in TASKS), flush=True)
    return figures


def size_tasks(
    rule_names: Sequence[str], sizes: Sequence[tuple[int, int]], quick: bool, seed: int, runs: int | None = None, power_runs: int | None = None
) -> list[tuple[Any, ...]]:
    repetitions, power = (QUICK_REPETITIONS, QUICK_POWER_REPETITIONS) if quick else (FULL_REPETITIONS, FULL_POWER_REPETITIONS)
    repetitions, power = runs or repetitions, min(power_runs or power, runs or repetitions)
    tasks = []
    for reference_rows, window_rows in sizes:
        large = window_rows >= 100_000
        runs, power_runs = (min(LARGE_REPETITIONS, repetitions), min(LARGE_POWER_REPETITIONS, power)) if large else (repetitions, power)
        tasks.extend((name, reference_rows, window_rows, runs, power_runs, seed) for name in rule_names)
    return tasks


def measure_all(tasks: list[tuple[Any, ...]], jobs: int) -> list[dict[str, Any]]:
    """:func:`measure_size` for every (rule, size), in ``jobs`` processes."""
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(measure_size, *zip(*tasks)))
    return [measure_size(*task) for task in tasks]


def pooled(per_size: list[dict[str, Any]], task: str, key: str) -> float:
    """A figure pooled over sizes, weighted by the runs it was measured on."""
    weight = "power_runs" if "power" in key else "runs"
    total = sum(size[weight] for size in per_size)
    return sum(size["tasks"][task][key] * size[weight] for size in per_size) / total if total else float("nan")


def time_per_run(prepare: Callable[[dict[str, np.ndarray]], Tester], reference_rows: int, window_rows: int, runs: int) -> float:
    """Seconds per window tested (features and the three tasks' predictions), against one prepared reference."""
    rng = np.random.default_rng(5)
    test = prepare(generate_columns(rng, reference_rows))
    current = generate_columns(rng, window_rows)
    test(current)
    started = time.perf_counter()
    for _ in range(runs):
        test(current)
    return (time.perf_counter() - started) / runs


def report(results: list[dict[str, Any]], timings: dict[str, float], timing_size: tuple[int, int], notes: list[str]) -> BenchReport:
    """The comparisons per configuration and task (baseline: the defaults, and the seed's rule), and one detail line per size."""
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_rule.setdefault(result["rule"], []).append(result)
    comparisons = []
    baseline = DEFAULTS if DEFAULTS in by_rule else SEED_RULE
    for rule_name, per_size in by_rule.items():
        if rule_name == SEED_RULE:
            continue
        other = SEED_RULE if rule_name == DEFAULTS else baseline
        for task in TASKS:
            ours_alarm = pooled(per_size, task, "false_alarm")
            worst = max(per_size, key=lambda size: size["tasks"][task]["false_alarm"])
            comparisons.append(Comparison(
                BENCHMARK, f"{rule_name}, {task}: runs with any false alarm (no shift)", ours_alarm * 100, other,
                pooled(by_rule[other], task, "false_alarm") * 100 if other in by_rule else float("nan"), "%",
                target=f"≤ {FDR:.0%}", met=ours_alarm <= FDR,
                note=f"worst size {worst['reference']:,}/{worst['window']:,}: {worst['tasks'][task]['false_alarm']:.1%}; "
                     f"prediction alone {pooled(per_size, task, 'prediction_false_alarm'):.1%}",
            ))
            for shift in SHIFTS_SD:
                comparisons.append(Comparison(
                    BENCHMARK, f"{rule_name}, {task}: prediction flagged at a {shift} sd shift", pooled(per_size, task, f"prediction_power_{shift}") * 100,
                    other, pooled(by_rule[other], task, f"prediction_power_{shift}") * 100 if other in by_rule else float("nan"), "%",
                ))
        for shift in SHIFTS_SD:
            comparisons.append(Comparison(
                BENCHMARK, f"{rule_name}: power at a {shift} sd shift (numeric columns flagged)", pooled(per_size, "binary", f"power_{shift}") * 100,
                other, pooled(by_rule[other], "binary", f"power_{shift}") * 100 if other in by_rule else float("nan"), "%",
            ))
        if rule_name in timings:
            comparisons.append(Comparison(
                BENCHMARK, f"{rule_name}: time per window, ref {timing_size[0]:,} × window {timing_size[1]:,}, 3 tasks", timings[rule_name] * 1000,
                SEED_RULE, timings.get(SEED_RULE, float("nan")) * 1000, "ms",
            ))
    details = []
    for result in results:
        for task in TASKS:
            figures = result["tasks"][task]
            details.append({
                "rule": result["rule"], "task": task, "reference": result["reference"], "window": result["window"],
                "runs": result["runs"], "power_runs": result["power_runs"],
                "false_alarm": f"{figures['false_alarm']:.1%}", "prediction_false_alarm": f"{figures['prediction_false_alarm']:.1%}",
                "by_method": ",".join(f"{method}:{share:.1%}" for method, share in figures["method_false_alarm"].items()) or "-",
                "inconclusive": f"{figures['inconclusive']:.1%}",
                "power": "/".join(f"{figures[f'power_{shift}']:.1%}" for shift in SHIFTS_SD),
                "prediction_power": "/".join(f"{figures[f'prediction_power_{shift}']:.1%}" for shift in SHIFTS_SD),
            })
    return BenchReport(name=BENCHMARK, comparisons=comparisons, details=details, method=notes)


def method_notes(sizes: Sequence[tuple[int, int]], quick: bool) -> list[str]:
    repetitions, power = (QUICK_REPETITIONS, QUICK_POWER_REPETITIONS) if quick else (FULL_REPETITIONS, FULL_POWER_REPETITIONS)
    return [
        f"20 generated columns of realistic shapes and each task's prediction (see bench/verdict_bench.py); sizes (reference, window) "
        f"{', '.join(f'{r:,}/{w:,}' for r, w in sizes)}; {repetitions} null runs per size ({LARGE_REPETITIONS} at 100k), the first "
        f"{power} ({LARGE_POWER_REPETITIONS} at 100k) also with three shifted windows; seed 18.",
        "Ours: each configuration's methods at their default floors, BH at FDR 5% over the features and the task's prediction, "
        "NO_DRIFT when the one-sided 95% upper bound of the effect is under the floor.",
        "Power counts the 15 numeric columns moved by 0.1/0.2/0.5 of their sd, and the runs whose prediction is flagged "
        "(the score moves by 0.2/0.4/1.0 of its sd).",
    ]


def run(quick: bool, out_dir: Path, jobs: int = 1) -> BenchReport:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    names = list(rules())
    results = measure_all(size_tasks(names, sizes, quick, seed=18), jobs)
    timing_size = (5_000, 10_000) if quick else (10_000, 100_000)
    timings = {name: time_per_run(prepare, *timing_size, runs=1 if name != SEED_RULE else 3) for name, prepare in rules().items()}
    return report(results, timings, timing_size, method_notes(sizes, quick))


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        sizes = [tuple(int(part) for part in item.split("/")) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: expected REFERENCE/WINDOW[,...], got {text!r}") from None
    if any(len(size) != 2 or min(size) < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--sizes: expected REFERENCE/WINDOW[,...] of positive numbers, got {text!r}")
    return sizes  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_SIZES)} sizes × {QUICK_REPETITIONS} repetitions instead of "
                        f"{len(FULL_SIZES)} sizes × {FULL_REPETITIONS}")
    parser.add_argument("--jobs", type=int, default=1, help="processes to spread the (size, rule) pairs over (default 1)")
    parser.add_argument("--methods", help="comma-separated: only the configurations using these registered methods "
                        f"(and '{SEED_RULE}' as 'seed')")
    parser.add_argument("--sizes", type=_sizes, help="REFERENCE/WINDOW[,...]: only these sizes (default: all of --quick's or the full set)")
    parser.add_argument("--save", type=Path, help="write the per-size figures and timings as JSON instead of printing the table")
    parser.add_argument("--runs", type=int, help="null runs per size instead of the set's (at most 30 at 100k rows)")
    parser.add_argument("--power-runs", type=int, help="of those, runs also tested on the shifted windows (at most 10 at 100k rows)")
    parser.add_argument("--time", action="store_true", help="with --save: also time one window per configuration at the largest size")
    parser.add_argument("--report", type=Path, nargs="+", help="print the table of parts written by --save, measuring nothing")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.report:
        parts = [json.loads(path.read_text()) for path in args.report]
        results = [result for part in parts for result in part["results"]]
        timings = {name: seconds for part in parts for name, seconds in part["timings"].items()}
        sizes = list(dict.fromkeys((result["reference"], result["window"]) for result in results))
        print_report(report(results, timings, tuple(parts[0]["timing_size"]), method_notes(sizes, parts[0]["quick"])))
        return
    if args.methods is None and args.sizes is None and args.save is None:
        print_report(run(args.quick, Path(__file__).resolve().parent, args.jobs))
        return
    wanted = None if args.methods is None else set(args.methods.split(","))
    names = [name for name in rules() if wanted is None or (name == SEED_RULE and "seed" in wanted) or wanted & set(name.split(" / "))]
    if not names:
        parser.error(f"--methods {args.methods}: no configuration uses them; configurations: {', '.join(rules())}")
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    started = time.time()
    results = measure_all(size_tasks(names, sizes, args.quick, seed=18, runs=args.runs, power_runs=args.power_runs), args.jobs)
    timing_size = (5_000, 10_000) if args.quick else (10_000, 100_000)
    timings = {name: time_per_run(rules()[name], *timing_size, runs=1 if name != SEED_RULE else 3) for name in names} if args.save is None or args.time else {}
    part = {"quick": args.quick, "timing_size": timing_size, "results": results, "timings": timings, "seconds": time.time() - started}
    if args.save:
        args.save.write_text(json.dumps(part, indent=1))
    else:
        print_report(report(results, timings, timing_size, method_notes(sizes, args.quick)))


if __name__ == "__main__":
    main()
