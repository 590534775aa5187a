"""A user's DataFrame model behind predict: warm latency against its bare call, cold start against its floor.

The model is the bring-your-own-model tests' churn pipeline (``tests/byom_support.py``): a
``ColumnTransformer`` selecting six columns by name (float, integer, boolean and string, with
missing values), imputers, one-hot encoding and a ``HistGradientBoostingClassifier``, fitted on
the DataFrame ``pandas.read_csv`` gave; registered with ``input_format: dataframe``.

- warm: ``handler(event, context)`` of ``POST /predict`` on one row (capture off) against the same
  model's bare ``predict_proba`` as a user's minimal server calls it: on a DataFrame built from the
  request's row on every call with the simplest pandas idiom that gives the training dtypes,
  ``pandas.DataFrame([row]).astype(training_dtypes)`` (``training_dtypes`` being the ``dtypes`` of
  the frame the model was fitted on). For information, the same call on one such frame built once
  and reused (pandas' own caches and CPU caches warm, which no server reaches: every request
  brings a new row), and on one frame from predict's own builder reused. All variants take turns
  call by call in one process;
- cold start: a fresh interpreter to the first answer (artifact cached) against the floor
  ``import pandas; joblib.load(model.joblib)`` (the imports the model needs: unpickling imports
  scikit-learn).

Run alone: ``python bench/dataframe_bench.py [--quick]`` (the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any

from cold_start_bench import OURS, take_turns, time_to_ready
from common import (
    APP_NAME,
    REPOSITORY,
    BenchReport,
    ChampionStack,
    Comparison,
    bench_main,
    champion_stack,
    environment,
    function_url_event,
    interleaved_latencies,
    latency_summary,
    percentile_ms,
    predict_event,
    ratio_at_most,
)

BENCHMARK = "DataFrame model"
MAX_WARM_RATIO = 1.15
MAX_COLD_RATIO = 1.3
MODEL_NAME = "churn"
FRESH = "bare predict_proba, frame built per call"
REUSED = "bare predict_proba, one frame reused"
REUSED_OURS = "bare predict_proba, predict's frame reused"
FLOOR = "import sys, pandas, joblib; joblib.load(sys.argv[1]); print('cold-start-ready loaded', flush=True)"


@contextlib.contextmanager
def churn_stack(work_dir: Path) -> Iterator[tuple[ChampionStack, Any, dict[str, Any]]]:
    """The bench's moto stack with the churn model registered and promoted: (stack, model, one valid row)."""
    from sml.lifecycle.registry import ModelRegistry
    from sml.lifecycle.training import save_artifact
    from tests.byom_support import churn_manifest, churn_model, churn_rows

    with champion_stack(work_dir) as stack:
        artifact = work_dir / "churn.joblib"
        save_artifact(churn_model(), artifact)
        registry = ModelRegistry(stack.clients["s3"], stack.clients["ssm"], bucket=stack.bucket, app_name=APP_NAME, model_name=MODEL_NAME)
        stored = registry.register(artifact, churn_manifest("v1", model_name=MODEL_NAME))
        registry.promote("v1")
        yield replace(stack, artifact_path=artifact, manifest=stored), churn_model(), churn_rows()[1]


def churn_environment(stack: ChampionStack, cache_dir: Path) -> dict[str, str]:
    return {**stack.predict_environment(cache_dir=cache_dir, capture=False), "SML_MODEL_NAME": MODEL_NAME}


def warm(stack: ChampionStack, model: Any, row: dict[str, Any], count: int) -> dict[str, Any]:
    """Seconds per call of the handler and of the bare ``predict_proba`` on the same row."""
    import pandas as pd
    from sml.lifecycle.modeling import model_input
    from sml.local.lambda_context import new_lambda_context
    from tests.byom_support import churn_frame

    from functions.predict import app

    with environment(churn_environment(stack, stack.work_dir / "cache")), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        previous_stream = app.logger.registered_handler.setStream(sink)
        app.load_runtime.cache_clear()
        try:
            event, context = predict_event(row), new_lambda_context("sml-predict", region="us-east-1", timeout_s=10)
            training_dtypes = churn_frame().drop(columns="churned").dtypes
            users_frame = pd.DataFrame([row]).astype(training_dtypes)
            ours_frame = model_input([row], stack.manifest.features, "dataframe")

            def invoke() -> None:
                response = app.handler(event, context)
                if response["statusCode"] != 200:
                    raise RuntimeError(f"predict answered {response['statusCode']}: {response['body']}")

            calls = {
                FRESH: lambda: model.predict_proba(pd.DataFrame([row]).astype(training_dtypes)),
                REUSED: lambda: model.predict_proba(users_frame),
                REUSED_OURS: lambda: model.predict_proba(ours_frame),
                "ours": invoke,
            }
            return interleaved_latencies(calls, count)
        finally:
            app.load_runtime.cache_clear()
            app.logger.registered_handler.setStream(previous_stream)


def cold(stack: ChampionStack, row: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Fresh-process seconds to the first answer: ours (artifact cached) and the floor, taking turns after one untimed run each."""
    from sml.lifecycle.registry import ModelRegistry

    cache_dir = stack.work_dir / "cold-cache"
    registry = ModelRegistry(stack.clients["s3"], stack.clients["ssm"], bucket=stack.bucket, app_name=APP_NAME, model_name=MODEL_NAME)
    registry.fetch_artifact(stack.manifest, cache_dir)
    events_path = stack.work_dir / "events.json"
    events_path.write_text(json.dumps({"predict": predict_event(row), "health": function_url_event("GET", "/health")}), encoding="utf-8")
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(REPOSITORY / "shared")])}
    runs = {
        "floor: import pandas + joblib.load": lambda: time_to_ready(FLOOR, str(stack.artifact_path), base).seconds,
        "ours, artifact cached": lambda: time_to_ready(OURS, str(events_path), {**base, **churn_environment(stack, cache_dir)}).seconds,
    }
    return take_turns(runs, repeats)


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Warm: 2,000 calls each (10,000 full); cold: 3 fresh processes each (10 full)."""
    count, repeats = (2_000, 3) if quick else (10_000, 10)
    with tempfile.TemporaryDirectory(prefix="sml-bench-dataframe-") as folder, churn_stack(Path(folder)) as (stack, model, row):
        samples = warm(stack, model, row, count)
        starts = cold(stack, row, repeats)
    ours_p50, ours_p99 = percentile_ms(samples["ours"], 50), percentile_ms(samples["ours"], 99)
    fresh = "bare predict_proba on pd.DataFrame([row]).astype(training dtypes), built per call"
    warm_p50 = "warm p50, one row, capture off"
    comparisons = [
        ratio_at_most(BENCHMARK, warm_p50, ours_p50, fresh, percentile_ms(samples[FRESH], 50), "ms", MAX_WARM_RATIO),
        Comparison(BENCHMARK, "warm p99, one row, capture off", ours_p99, fresh, percentile_ms(samples[FRESH], 99), "ms"),
        Comparison(BENCHMARK, warm_p50, ours_p50, "bare predict_proba on one such frame, reused", percentile_ms(samples[REUSED], 50), "ms"),
        Comparison(BENCHMARK, warm_p50, ours_p50, "bare predict_proba, our frame reused", percentile_ms(samples[REUSED_OURS], 50), "ms"),
        ratio_at_most(
            BENCHMARK,
            "cold start, artifact cached (median)",
            median(starts["ours, artifact cached"]),
            "import pandas + joblib.load in a fresh process",
            median(starts["floor: import pandas + joblib.load"]),
            "s",
            MAX_COLD_RATIO,
        ),
    ]
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=[{"variant": name, **latency_summary(values)} for name, values in samples.items()]
        + [{"variant": name, "runs": len(values), "median_s": round(median(values), 3)} for name, values in starts.items()],
        method=[
            f"Warm: {count} calls per variant taking turns call by call after 50 warm-up calls each, in one process; "
            "Powertools output to /dev/null; capture off, so the queue is on neither side.",
            "Goal baseline: `model.predict_proba(pd.DataFrame([row]).astype(training_dtypes))` per call, a minimal server's work per "
            "request (`training_dtypes` = dtypes of the frame the model was fitted on); the reused frames are for information: "
            "no server gets the same frame twice.",
            f"Cold: {repeats} fresh interpreters per variant taking turns, after one untimed run each; ours answers one POST /predict "
            "(settings, clients, pointer, manifest, sha256, unpickle, DataFrame, predict) with the artifact already cached.",
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
