"""Drift verdicts: false alarms, power, share INCONCLUSIVE and time of our rule vs per-column KS at p < 0.05.

The data are the 20 columns of ``shared/DRIFT-EVALUATION.md`` (realistic shapes): normal,
lognormal, Student t(3), rounded and Poisson integers, a 5-point Likert scale, a zero-inflated
amount, numeric columns with 2% / 10% / 30% missing values, a rare-level and a 20-level Zipf
categorical, a binary and a 5-level categorical, and the predicted label (binary). Every
repetition draws a fresh reference and window from the same generator:

- no shift: both from the same distributions; a run with any DRIFT is a false alarm (the goal:
  at most the false discovery rate, 5%, of runs);
- shift of 0.1 / 0.2 / 0.5 sd: every numeric column moved by that many of its standard
  deviations; power = share of those columns flagged, over all runs.

Beside our rule (:func:`sml.monitoring.drift.run.run_drift_tests`, default floors), the seed's rule:
``scipy.stats.ks_2samp`` per numeric column at p < 0.05, no correction, no floor (categoricals
by chi-square at p < 0.05). Time is the computation only, per run of 20 columns, at the largest
size. Run alone: ``python bench/verdict_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from common import BenchReport, Comparison, print_report

BENCHMARK = "verdicts"
FDR = 0.05
SHIFTS_SD = (0.1, 0.2, 0.5)
# (reference rows, window rows): the small service, the issue's problem cases, and a large one.
FULL_SIZES = ((400, 1_000), (400, 10_000), (5_000, 1_000), (5_000, 10_000), (50_000, 1_000), (50_000, 10_000), (10_000, 100_000))
QUICK_SIZES = ((400, 1_000), (5_000, 1_000), (50_000, 1_000), (5_000, 10_000))
FULL_REPETITIONS, QUICK_REPETITIONS = 200, 15
LARGE_REPETITIONS = 30

NUMERIC = ("normal", "lognormal", "t3", "rounded", "poisson", "likert", "zero_inflated", "missing_2", "missing_10", "missing_30",
           "normal_b", "lognormal_b", "poisson_b", "rounded_b", "t3_b")
CATEGORICAL = ("rare_level", "zipf_20", "binary", "five_level")
LABEL = "(predicted label)"
ZIPF_WEIGHTS = (1 / np.arange(1, 21)) / (1 / np.arange(1, 21)).sum()


def schema(method: str | None = None) -> list[Any]:
    """The columns, every main test by ``method`` where it tests the column's kind (else the kind's default)."""
    from sml.monitoring.drift.methods import drift_method
    from sml.monitoring.drift.run import DriftColumn

    def chosen(kind: str) -> str | None:
        return method if method is not None and kind in drift_method(method).kinds else None

    return [*(DriftColumn(name, "numeric", method=chosen("numeric")) for name in NUMERIC),
            *(DriftColumn(name, "categorical", method=chosen("categorical")) for name in CATEGORICAL),
            DriftColumn(LABEL, "categorical", prediction=True, method=chosen("categorical"))]


def generate_columns(rng: np.random.Generator, rows: int, shift_sd: float = 0.0) -> dict[str, np.ndarray]:
    """One sample of every column; numeric columns moved by ``shift_sd`` of their standard deviation.

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
    columns[LABEL] = rng.choice(np.array(["benign", "malignant"], dtype=object), rows, p=[0.63, 0.37])
    return columns


def ours(reference_columns: dict[str, np.ndarray], current: dict[str, np.ndarray], method: str | None = None) -> tuple[set[str], str, str]:
    """Flagged columns and the run verdict of our rule with its default floors (and main tests by ``method``)."""
    from sml.monitoring.drift.stats import DriftVerdict, overall_verdict, reference_from_columns
    from sml.monitoring.drift.run import run_drift_tests

    spec = schema(method)
    results = run_drift_tests(reference_from_columns(reference_columns, spec), current, spec, fdr=FDR)
    flagged = {result.feature for result in results if result.verdict is DriftVerdict.DRIFT}
    return flagged, overall_verdict(results).value, _verdict_before_issue_18(results)


def _verdict_before_issue_18(results: list[Any]) -> str:
    # The run verdict of the rule this one replaced, from the same tests: a main test that did
    # not drift was INSUFFICIENT_DATA when its sample was small or its detectable effect (power
    # 0.8) exceeded the floor, and one such test made the whole run INSUFFICIENT_DATA.
    if any(result.verdict.value == "DRIFT" for result in results if result.test != "missing_rate"):
        return "DRIFT"
    for result in results:
        if result.test == "missing_rate" or result.verdict.value == "DRIFT":
            continue
        reason = result.detail.get("reason")
        if reason in ("empty_sample", "below_min_samples") or result.detail["min_detectable_effect"] > result.effect_floor:
            return "INSUFFICIENT_DATA"
    return "NO_DRIFT"


def seed_rule(reference_columns: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> tuple[set[str], str, str]:
    """The seed's rule: per-column KS (chi-square for categoricals) at p < 0.05, no correction, no floor."""
    flagged = set()
    for name in NUMERIC:
        reference, window = reference_columns[name], current[name]
        if stats.ks_2samp(reference[~np.isnan(reference)], window[~np.isnan(window)]).pvalue < 0.05:
            flagged.add(name)
    for name in (*CATEGORICAL, LABEL):
        levels = sorted(set(reference_columns[name]) | set(current[name]))
        table = np.array([[np.count_nonzero(column == level) for level in levels] for column in (reference_columns[name], current[name])])
        if stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False).pvalue < 0.05:
            flagged.add(name)
    return flagged, "DRIFT" if flagged else "NO_DRIFT", ""


# Our rule with each drift method for the main tests (defaults: KS and chi-square), and the seed's.
METHODS = ("psi", "wasserstein", "jensen_shannon")
RULES: dict[str, Callable[[dict, dict], tuple[set[str], str, str]]] = {
    "ours": ours, **{f"ours ({method})": partial(ours, method=method) for method in METHODS}, "per-column KS": seed_rule,
}


def measure_size(rule_name: str, reference_rows: int, window_rows: int, runs: int, seed: int) -> dict[str, Any]:
    """One size's false-alarm runs, power per shift and INCONCLUSIVE share, from its own seeded stream.

    Each (size, rule) pair draws from ``default_rng((seed, reference_rows, window_rows))``, so the
    figures do not depend on which sizes run, in what order, or in how many processes; both rules
    see the same data.
    """
    rule = RULES[rule_name]
    rng = np.random.default_rng((seed, reference_rows, window_rows))
    false_alarms = inconclusive = insufficient_before = 0
    detected = {shift: 0 for shift in SHIFTS_SD}
    for _ in range(runs):
        reference = generate_columns(rng, reference_rows)
        flagged, verdict, verdict_before = rule(reference, generate_columns(rng, window_rows))
        false_alarms += bool(flagged)
        inconclusive += verdict == "INCONCLUSIVE"
        insufficient_before += verdict_before == "INSUFFICIENT_DATA"
        for shift in SHIFTS_SD:
            flagged, *_ = rule(reference, generate_columns(rng, window_rows, shift))
            detected[shift] += len(flagged.intersection(NUMERIC))
    figures = {
        "reference": reference_rows, "window": window_rows, "runs": runs,
        "false_alarm": false_alarms / runs, "inconclusive": inconclusive / runs,
        "insufficient_before": insufficient_before / runs,
        **{f"power_{shift}": detected[shift] / (runs * len(NUMERIC)) for shift in SHIFTS_SD},
    }
    print(f"  {rule_name:>14} {reference_rows:>6,}/{window_rows:<7,} runs {runs}: false alarm {figures['false_alarm']:.1%}, "
          f"INCONCLUSIVE {figures['inconclusive']:.1%}, power " + " / ".join(f"{figures[f'power_{s}']:.1%}" for s in SHIFTS_SD),
          flush=True)
    return figures


def measure_all(sizes: tuple[tuple[int, int], ...], repetitions: int, seed: int, jobs: int) -> dict[str, dict[str, Any]]:
    """Both rules over every size, in ``jobs`` processes; pooled figures per rule (weighted by runs)."""
    tasks = [(rule_name, reference_rows, window_rows, min(LARGE_REPETITIONS if window_rows >= 100_000 else repetitions, repetitions), seed)
             for reference_rows, window_rows in sizes for rule_name in RULES]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(measure_size, *zip(*tasks)))
    else:
        results = [measure_size(*task) for task in tasks]
    figures = {}
    for rule_name in RULES:
        per_size = [result for task, result in zip(tasks, results) if task[0] == rule_name]
        total_runs = sum(size["runs"] for size in per_size)

        def pooled(key: str, per_size: list[dict[str, Any]] = per_size, total_runs: int = total_runs) -> float:
            return sum(size[key] * size["runs"] for size in per_size) / total_runs

        figures[rule_name] = {"per_size": per_size,
                              **{key: pooled(key) for key in ("false_alarm", "inconclusive", "insufficient_before", *(f"power_{s}" for s in SHIFTS_SD))}}
    return figures


def time_per_run(rule: Callable[[dict, dict], tuple[set[str], str, str]], reference_rows: int, window_rows: int, runs: int) -> float:
    rng = np.random.default_rng(5)
    reference, current = generate_columns(rng, reference_rows), generate_columns(rng, window_rows)
    rule(reference, current)
    started = time.perf_counter()
    for _ in range(runs):
        rule(reference, current)
    return (time.perf_counter() - started) / runs


def run(quick: bool, out_dir: Path, jobs: int = 1) -> BenchReport:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repetitions = QUICK_REPETITIONS if quick else FULL_REPETITIONS
    figures = measure_all(sizes, repetitions, seed=18, jobs=jobs)
    ours_figures, seed_figures = figures["ours"], figures["per-column KS"]
    timing_size = (10_000, 100_000) if not quick else (5_000, 10_000)
    ours_seconds = time_per_run(ours, *timing_size, runs=3)
    seed_seconds = time_per_run(seed_rule, *timing_size, runs=3)
    comparisons = [
        Comparison(BENCHMARK, "runs with any false alarm (no shift)", ours_figures["false_alarm"] * 100, "per-column KS p<0.05",
                   seed_figures["false_alarm"] * 100, "%", target=f"≤ {FDR:.0%}", met=ours_figures["false_alarm"] <= FDR),
        *(
            Comparison(BENCHMARK, f"power at a {shift} sd shift (numeric columns flagged)", ours_figures[f"power_{shift}"] * 100,
                       "per-column KS p<0.05", seed_figures[f"power_{shift}"] * 100, "%")
            for shift in SHIFTS_SD
        ),
        Comparison(BENCHMARK, "no-shift runs whose verdict is INCONCLUSIVE", ours_figures["inconclusive"] * 100,
                   "INSUFFICIENT_DATA share, rule before #18", ours_figures["insufficient_before"] * 100, "%",
                   note="the old rule's verdict recomputed from the same tests; per-column KS cannot abstain"),
        Comparison(BENCHMARK, f"time per run, ref {timing_size[0]:,} × window {timing_size[1]:,} × 20 columns", ours_seconds * 1000,
                   "per-column KS p<0.05", seed_seconds * 1000, "ms"),
        *(
            comparison
            for method in METHODS
            for comparison in (
                Comparison(BENCHMARK, f"{method}: runs with any false alarm (no shift)", figures[f"ours ({method})"]["false_alarm"] * 100,
                           "ours (KS, chi-square)", ours_figures["false_alarm"] * 100, "%", target=f"≤ {FDR:.0%}",
                           met=figures[f"ours ({method})"]["false_alarm"] <= FDR),
                *(
                    Comparison(BENCHMARK, f"{method}: power at a {shift} sd shift", figures[f"ours ({method})"][f"power_{shift}"] * 100,
                               "ours (KS, chi-square)", ours_figures[f"power_{shift}"] * 100, "%")
                    for shift in SHIFTS_SD
                ),
                Comparison(BENCHMARK, f"{method}: time per run, ref {timing_size[0]:,} × window {timing_size[1]:,}",
                           time_per_run(RULES[f"ours ({method})"], *timing_size, runs=1) * 1000, "ours (KS, chi-square)", ours_seconds * 1000, "ms"),
            )
        ),
    ]
    details = [
        {"rule": rule_name, **{key: (f"{value:.1%}" if isinstance(value, float) else value) for key, value in size.items()}}
        for rule_name, rule_figures in figures.items()
        for size in rule_figures["per_size"]
    ]
    method = [
        f"20 generated columns of realistic shapes plus the predicted label (see bench/verdict_bench.py); sizes (reference, window) "
        f"{', '.join(f'{r:,}/{w:,}' for r, w in sizes)}; {repetitions} repetitions per size ({LARGE_REPETITIONS} at 100k), seed 18.",
        "Ours: default floors (KS D 0.1 ≈ 0.25 sd, Cramér's V 0.1, missing-rate Cohen's h 0.2), BH at FDR 5%, "
        "NO_DRIFT when the one-sided 95% upper bound of the effect is under the floor.",
        "Power counts the 15 numeric columns moved by 0.1/0.2/0.5 of their sd; below the floor (≈0.25 sd) our rule does not flag by design.",
        "ours (psi / wasserstein / jensen_shannon): the same rule with that method for every main test whose kind it tests (Wasserstein "
        "is numeric only; categoricals keep chi-square) at its default floor (PSI 0.1, W 0.1 reference sd, JS distance 0.1).",
    ]
    return BenchReport(name=BENCHMARK, comparisons=comparisons, details=details, method=method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_SIZES)} sizes × {QUICK_REPETITIONS} repetitions instead of "
                        f"{len(FULL_SIZES)} sizes × {FULL_REPETITIONS}")
    parser.add_argument("--jobs", type=int, default=1, help="processes to spread the (size, rule) pairs over (default 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    print_report(run(args.quick, Path(__file__).resolve().parent, args.jobs))


if __name__ == "__main__":
    main()
