"""Promotion while serving: what the background switch to a new champion costs the requests around it.

One warm predict container in-process (capture off, ``SML_CHAMPION_TTL_SECONDS=1``) answers one
row back to back. Steady state: requests before the promotion. Then ``v2`` (the same estimator
trained with another seed, so another artifact of the same cost: downloaded from S3, verified,
unpickled, warmed up in the refresher thread) is promoted and requests continue; "during the switch" are the requests answered while the
refresher thread was running (they share the interpreter with the load), "after" those answered
by ``v2``. Also: seconds from the promotion to the first answer of ``v2``, against TTL + the
load time the container reports.

Run alone: ``python bench/champion_switch_bench.py [--quick]`` (the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    APP_NAME,
    MODEL_NAME,
    BenchReport,
    Comparison,
    bench_main,
    champion_stack,
    environment,
    function_url_event,
    latency_summary,
    percentile_ms,
)
from predict_bench import warm_predict

BENCHMARK = "champion switch"
TTL_SECONDS = 1.0


def register_v2(stack: Any) -> None:
    """The same estimator with another seed as ``v2`` (its own artifact, as costly to run), promoted."""
    from datetime import UTC, datetime

    from sml.lifecycle.registry import ModelRegistry
    from sml.lifecycle.training import TrainingConfig, build_manifest, save_artifact, train_model

    trained = train_model(TrainingConfig(model_name=MODEL_NAME, seed=7))
    artifact = stack.work_dir / "v2.joblib"
    save_artifact(trained.pipeline, artifact)
    registry = ModelRegistry(stack.clients["s3"], stack.clients["ssm"], bucket=stack.bucket, app_name=APP_NAME, model_name=MODEL_NAME)
    registry.register(artifact, build_manifest(trained, version="v2", sha256="", wandb_run_path=None, created_at=datetime.now(UTC)))
    registry.promote("v2")


def measure(stack: Any, steady_count: int, after_count: int) -> dict[str, Any]:
    from sml.local.lambda_context import new_lambda_context

    from functions.predict import app

    with environment({"SML_CHAMPION_TTL_SECONDS": str(TTL_SECONDS)}), warm_predict(stack, capture=False) as (invoke, _, _):
        holder = app.load_runtime().champion
        clock = time.perf_counter

        def timed() -> tuple[float, str, bool]:
            started = clock()
            response = invoke()
            elapsed = clock() - started
            return elapsed, json.loads(response["body"])["model_version"], holder.refreshing

        steady = [timed()[0] for _ in range(steady_count)]
        register_v2(stack)
        promoted = clock()
        during, waiting, after = [], [], []
        first_v2 = None
        while len(after) < after_count:
            started = clock()
            elapsed, version, refreshing = timed()
            if version == "v2":
                first_v2 = first_v2 if first_v2 is not None else started - promoted
                after.append(elapsed)
            elif refreshing:
                during.append(elapsed)
            else:
                waiting.append(elapsed)
        context = new_lambda_context("sml-predict", region="us-east-1", timeout_s=10)
        health = json.loads(app.handler(function_url_event("GET", "/health"), context)["body"])
    return {
        "steady": np.asarray(steady),
        "before the refresh (TTL not yet passed)": np.asarray(waiting),
        "during the switch": np.asarray(during),
        "after, served by v2": np.asarray(after),
        "first_v2_s": first_v2,
        "load_s": health["model_load_seconds"],
    }


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Steady: 1,000 requests (5,000 full); after the switch: 500 (2,000)."""
    steady_count, after_count = (1_000, 500) if quick else (5_000, 2_000)
    with tempfile.TemporaryDirectory(prefix="sml-bench-switch-") as folder, champion_stack(Path(folder)) as stack:
        result = measure(stack, steady_count, after_count)
    steady, during = result["steady"], result["during the switch"]
    after = result["after, served by v2"]
    comparisons = [
        Comparison(BENCHMARK, "p50 after the switch (v2)", percentile_ms(after, 50), "steady state p50 (v1)", percentile_ms(steady, 50), "ms"),
        Comparison(BENCHMARK, "p50 during the switch", percentile_ms(during, 50), "steady state p50", percentile_ms(steady, 50), "ms"),
        Comparison(BENCHMARK, "max during the switch", float(during.max()) * 1000, "steady state p99", percentile_ms(steady, 99), "ms"),
        Comparison(
            BENCHMARK,
            "promotion to the first answer of v2",
            result["first_v2_s"],
            "TTL + the new version's load time",
            TTL_SECONDS + result["load_s"],
            "s",
            note=f"{len(during)} requests answered by v1 while v2 loaded",
        ),
    ]
    details = [{"variant": name, **latency_summary(values)} for name, values in result.items() if isinstance(values, np.ndarray) and len(values)]
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=details,
        method=[
            "One warm container in-process (moto's server on 127.0.0.1 for S3/SSM), capture off, requests back to back on one thread, "
            f"SML_CHAMPION_TTL_SECONDS={TTL_SECONDS:g}; v1 and v2 are the logistic regression pipeline, v2 trained with another seed "
            "(its own artifact, downloaded).",
            "'During the switch' = requests answered while the refresher thread ran (pointer read, download, sha256, unpickle, warm-up); "
            "the load time is the one /health reports for v2 afterwards.",
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
