"""Cold start: a fresh Python process to the first answer, ours vs loading the model alone.

Each variant is a new interpreter (the benchmark's own, with the same environment) timed from
spawn until it prints its answer:

- floor: ``import joblib; joblib.load(<model.joblib>)`` of the very artifact predict serves;
- seed's imports: ``import pandas, sklearn, pymysql, boto3, joblib`` then the same ``joblib.load``
  (what the tutorial handlers this project descends from imported at module level);
- ours, artifact cached: import ``functions.predict.app``, answer one ``POST /predict`` event
  (settings, S3/SSM/SQS clients, champion pointer, manifest, sha256 check, unpickle, predict,
  capture to SQS); the artifact is already in ``SML_MODEL_CACHE_DIR``, as in a container whose
  ``/tmp`` survived, so the download does not dominate;
- ours, artifact downloaded: the same with an empty cache dir, so the artifact comes from S3.

AWS is moto's server on 127.0.0.1 in the benchmark's process. Run alone:
``python bench/cold_start_bench.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from common import (
    bench_main,
    REPOSITORY,
    BenchReport,
    ChampionStack,
    Comparison,
    champion_stack,
    fill_model_cache,
    function_url_event,
    predict_event,
    ratio_at_most,
    seed_environment,
)

BENCHMARK = "cold start"
MAX_RATIO = 1.3
# Predict prints its metrics and logs on stdout too, so the answer is the line that starts with this.
READY = "cold-start-ready"
HEALTH = "cold-start-health"
FLOOR = f"import sys, joblib; joblib.load(sys.argv[1]); print('{READY} loaded', flush=True)"
SEED_IMPORTS = f"import sys, pandas, sklearn, pymysql, boto3, joblib; joblib.load(sys.argv[1]); print('{READY} loaded', flush=True)"
# After the timed answer, GET /health (untimed) reports how long the container's init and model load took.
OURS = f"""
import json, sys, types
from functions.predict.app import handler
context = types.SimpleNamespace(function_name="sml-predict", memory_limit_in_mb=1024, aws_request_id="cold-start",
                                invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sml-predict")
with open(sys.argv[1], encoding="utf-8") as events_file:
    events = json.load(events_file)
response = handler(events["predict"], context)
print("{READY}", response["statusCode"], flush=True)
print("{HEALTH}", handler(events["health"], context)["body"], flush=True)
"""


@dataclass(frozen=True)
class ColdStart:
    """One fresh process: seconds to its answer, and predict's own ``/health`` timings when it reported them."""

    seconds: float
    health: dict[str, Any] | None


def time_to_ready(code: str, argument: str, env: dict[str, str]) -> ColdStart:
    """Time ``python -c code argument`` from spawn until it prints its ``READY`` line.

    :raises RuntimeError: the process exited without it, or its answer was not a success.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code, argument], cwd=REPOSITORY, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    ready = next((line.split() for line in process.stdout if line.startswith(READY)), None)
    elapsed = time.perf_counter() - started
    output, errors = process.communicate(timeout=60)
    if ready is None or ready[1] not in ("loaded", "200"):
        raise RuntimeError(f"cold-start child answered {ready}; stderr: {errors.strip()[-2000:]}")
    health = next((json.loads(line.removeprefix(HEALTH)) for line in output.splitlines() if line.startswith(HEALTH)), None)
    return ColdStart(elapsed, health)


def variants(stack: ChampionStack, work_dir: Path) -> dict[str, Callable[[], ColdStart]]:
    """One timed fresh-process run per variant name."""
    cache_dir = work_dir / "cache"
    fill_model_cache(stack, cache_dir)
    events_path = work_dir / "events.json"
    events = {"predict": predict_event(stack.valid_row()), "health": function_url_event("GET", "/health")}
    events_path.write_text(json.dumps(events), encoding="utf-8")
    base = dict(os.environ)
    cached = {**base, **stack.predict_environment(cache_dir=cache_dir, capture=True)}
    downloads = iter(range(1_000_000))

    def downloaded() -> ColdStart:
        fresh = work_dir / f"empty-cache-{next(downloads)}"
        return time_to_ready(OURS, str(events_path), {**base, **stack.predict_environment(cache_dir=fresh, capture=True)})

    artifact = str(stack.artifact_path)
    return {
        "floor: joblib.load": lambda: time_to_ready(FLOOR, artifact, base),
        "seed's imports + joblib.load": lambda: time_to_ready(SEED_IMPORTS, artifact, seed_environment()),
        "ours, artifact cached": lambda: time_to_ready(OURS, str(events_path), cached),
        "ours, artifact downloaded": downloaded,
    }


def measure(stack: ChampionStack, work_dir: Path, repeats: int) -> dict[str, list[ColdStart]]:
    """``repeats`` runs per variant, the variants taking turns, after one untimed run each (warm disk cache)."""
    return take_turns(variants(stack, work_dir), repeats)


def take_turns(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """``repeats`` results per run, the runs taking turns, after one untimed call each (warm disk cache)."""
    for run_once in runs.values():
        run_once()
    results: dict[str, list[Any]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run_once in runs.items():
            results[name].append(run_once())
    return results


def phases(runs: list[ColdStart]) -> dict[str, float]:
    """Median split of our cold start, from predict's ``/health``: init (imports, settings, clients), model load, the rest."""
    reported = [run for run in runs if run.health is not None]
    model_load = median([run.health["model_load_seconds"] for run in reported])
    init = median([run.health["init_seconds"] for run in reported])
    total = median([run.seconds for run in reported])
    return {
        "imports + settings + AWS clients": init - model_load,
        "champion load: SSM, manifest, sha256, unpickle (imports scikit-learn)": model_load,
        "interpreter start + routing + predict + SQS send": total - init,
    }


def compare(results: dict[str, list[ColdStart]]) -> list[Comparison]:
    """Table lines on the medians: ours (cached) against the floor's goal; the rest for information."""
    seconds = {name: [run.seconds for run in runs] for name, runs in results.items()}
    floor = median(seconds["floor: joblib.load"])
    seed = median(seconds["seed's imports + joblib.load"])
    cached = median(seconds["ours, artifact cached"])
    downloaded = median(seconds["ours, artifact downloaded"])
    return [
        ratio_at_most(BENCHMARK, "ours, artifact cached (median)", cached, "floor: joblib.load in a fresh process", floor, "s", MAX_RATIO),
        Comparison(
            BENCHMARK, "ours, artifact downloaded from S3 (median)", downloaded, "floor: joblib.load in a fresh process", floor, "s"
        ),
        Comparison(BENCHMARK, "ours, artifact cached (median)", cached, "seed's imports + joblib.load", seed, "s"),
    ]


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Time every variant; quick: 3 runs each, full: 15; medians in the table."""
    repeats = 3 if quick else 15
    with tempfile.TemporaryDirectory(prefix="sml-bench-cold-") as folder, champion_stack(Path(folder)) as stack:
        results = measure(stack, Path(folder), repeats)
    details: list[dict[str, Any]] = []
    for name, runs in results.items():
        values = [run.seconds for run in runs]
        details.append(
            {
                "variant": name,
                "runs": len(values),
                "median_s": round(median(values), 3),
                "min_s": round(min(values), 3),
                "max_s": round(max(values), 3),
            }
        )
    details += [
        {"variant": f"ours, artifact cached: {phase}", "median_s": round(value, 3)}
        for phase, value in phases(results["ours, artifact cached"]).items()
    ]
    return BenchReport(
        name=BENCHMARK,
        comparisons=compare(results),
        details=details,
        method=[
            (
                f"Each run is a new `{Path(sys.executable).name} -c ...` timed from spawn to its answer on stdout; {repeats} runs per "
                "variant taking turns, after one untimed run each (warm disk cache, as on a Lambda host)."
            ),
            (
                "Floor: `import joblib; joblib.load(model.joblib)`. Seed's imports: pandas, sklearn, pymysql, boto3, joblib, then the same load. "
                "Ours: import the predict handler and answer one `POST /predict` event with capture on (S3, SSM and SQS on moto's "
                "server on 127.0.0.1): settings, clients, champion pointer, manifest, sha256 check, unpickle, predict, send."
            ),
            "Artifact cached = already in `SML_MODEL_CACHE_DIR` (a container whose /tmp survived); downloaded = empty cache dir, fetched from S3.",
            "The split of our time comes from predict's own `GET /health` (`init_seconds`, `model_load_seconds`), asked after the timed answer.",
            (
                "Unpickling imports scikit-learn, which imports rich (and pandas) whenever installed: this venv has rich (the local "
                "extra), the predict image does not, so both sides here carry about 0.1 s that a Lambda would not."
            ),
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
