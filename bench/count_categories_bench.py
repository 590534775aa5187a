"""count_categories: counting a categorical column (or the predicted label) by each value's own text.

Ours is :func:`sml.monitoring.drift.stats.count_categories`; the floor is a bare ``collections.Counter`` of
the same values, the one C-level pass it starts with (which merges ``1``, ``1.0`` and ``True``,
so it is not a correct count, only the speed to stay near). Two columns of N values: string
labels (the usual case, which keeps the one-pass Counter) and integer labels (counted by
``(type, value)``, still one C-level pass). Variants alternate call by call; the median of the
repeats is reported. Run alone: ``python bench/count_categories_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from common import BenchReport, print_report, ratio_at_most

from sml.monitoring.drift.stats import count_categories

BENCHMARK = "count-categories"


def columns(rows: int) -> dict[str, list[Any]]:
    rng = random.Random(13)
    return {
        "string labels": [rng.choice(["benign", "malignant", None]) for _ in range(rows)],
        "integer labels": [rng.choice([0, 1, 2, None]) for _ in range(rows)],
    }


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def run(quick: bool, out_dir: Path) -> BenchReport:
    rows, repeats = (200_000, 5) if quick else (1_000_000, 9)
    comparisons = []
    for name, values in columns(rows).items():
        ours, floor = [], []
        for _ in range(repeats):
            ours.append(timed(lambda: count_categories(values)))
            floor.append(timed(lambda: Counter(values)))
        # Strings keep the one-pass Counter; other values are counted a second time by (type, value).
        limit = 1.5 if name == "string labels" else 6.0
        comparisons.append(
            ratio_at_most(BENCHMARK, f"{name}, {rows:,} values", median(ours) * 1000, "bare Counter", median(floor) * 1000, "ms", limit)
        )
    return BenchReport(name=BENCHMARK, comparisons=comparisons, method=[__doc__.split("\n\n")[1].replace("\n", " ")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k values instead of 1M")
    args = parser.parse_args()
    print_report(run(args.quick, Path(".")))


if __name__ == "__main__":
    main()
