"""Capture after the response: predict's user-facing latency when SQS is 0, 20 or 50 ms away.

Predict runs in-process as a Lambda execution environment would run it: a local Extensions API
(``sml.local.extensions_api``) with predict's capture extension registered at init, and for every
request the runtime's cycle: ``INVOKE`` to the extension, ``handler(event, context)``, then the
post-runtime phase (the extension sends and calls ``next``) before the next request. The time
measured is the caller's: from the call of the handler to its answer. The post-runtime phase is
timed separately (billed, but nobody waits on it).

SQS is moto's server on 127.0.0.1 behind ``latency_proxy.DelayProxy`` adding 0, 20 or 50 ms per
round trip. Variants: ``after_response`` (ours) and ``inline`` (the baseline: send, then answer),
and the floor, the champion's ``predict_proba`` on the same row's matrix, timed call by call
beside every variant's requests.

Goals: p99 with +50 ms ≤ 1.05× p99 with +0 ms (the queue's distance does not reach the caller);
p50 ≤ 1.15× the floor at every distance.

Run alone: ``python bench/capture_bench.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from common import (
    BenchReport,
    ChampionStack,
    Comparison,
    bench_main,
    champion_stack,
    environment,
    fill_model_cache,
    latency_summary,
    percentile_ms,
    plot_latency_cdfs,
    predict_event,
    ratio_at_most,
)
from latency_proxy import DelayProxy

BENCHMARK = "capture after response"
DELAYS_MS = (0, 20, 50)
MODES = ("after_response", "inline")
MAX_P99_RATIO = 1.05
MAX_P50_OVER_FLOOR = 1.15


@contextlib.contextmanager
def predict_environment(stack: ChampionStack, *, mode: str, endpoint_url: str) -> Iterator[tuple[Any, Any, Any]]:
    """A warm predict container in ``mode`` whose AWS calls go to ``endpoint_url``.

    Yields (one request: returns (answer seconds, post-runtime seconds), the model, the row's matrix).
    Predict's log and metrics go to /dev/null.
    """
    from sml.lifecycle.modeling import rows_to_matrix
    from sml.local.extensions_api import ExtensionsApiServer
    from sml.local.lambda_context import new_lambda_context

    from functions.predict import app

    cache_dir = stack.work_dir / "cache"
    fill_model_cache(stack, cache_dir)
    variables = {**stack.predict_environment(cache_dir=cache_dir, capture=True), "SML_AWS_ENDPOINT_URL": endpoint_url, "SML_CAPTURE_MODE": mode}
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    with (
        ExtensionsApiServer(function_name="sml-predict") as api,
        environment({**variables, "AWS_LAMBDA_RUNTIME_API": api.runtime_api}),
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
    ):
        previous_stream = app.logger.registered_handler.setStream(sink)
        previous_extension = app._capture_extension
        app.load_runtime.cache_clear()
        app._capture_extension = app.start_capture_extension()  # the container's init
        if (app._capture_extension is not None) != (mode == "after_response"):
            raise RuntimeError(f"capture mode {mode}: the extension {'did not' if mode == 'after_response' else 'did'} register")
        row = stack.valid_row()
        event = predict_event(row)
        clock = time.perf_counter

        def request() -> tuple[float, float]:
            context = new_lambda_context("sml-predict", region="us-east-1", timeout_s=10, request_id=str(uuid.uuid4()))
            api.begin_invoke(context.aws_request_id, deadline_ms=int(context.deadline_epoch_s * 1000), invoked_function_arn=context.invoked_function_arn)
            started = clock()
            response = app.handler(event, context)
            answered = clock()
            api.wait_post_invoke(timeout_s=10)
            if response["statusCode"] != 200:
                raise RuntimeError(f"predict answered {response['statusCode']}: {response['body']}")
            return answered - started, clock() - answered

        try:
            request()
            served = app.load_runtime().champion.current()
            yield request, served.loaded.model, rows_to_matrix([row], served.service.schema.features)
        finally:
            app.load_runtime.cache_clear()
            app._capture_extension = previous_extension
            app.logger.registered_handler.setStream(previous_stream)
            signal.signal(signal.SIGTERM, previous_sigterm)


def measure(stack: ChampionStack, count: int, rounds: int) -> dict[str, dict[str, np.ndarray]]:
    """Per variant (``"<mode> +<delay> ms"``): answer, post-runtime and floor seconds.

    The variants take turns in ``rounds`` blocks of ``count // rounds`` requests each, so a burst
    of load on the shared machine hits every variant alike; the floor is timed between requests.
    """
    from predict_bench import drain_queue

    logging.getLogger("sml.predict.capture_extension").setLevel(logging.ERROR)  # "API gone" as each block's API stops
    host, port = urlsplit(stack.endpoint_url).hostname, urlsplit(stack.endpoint_url).port
    samples: dict[str, dict[str, list[float]]] = {}
    per_block = max(1, count // rounds)
    proxies = {delay: DelayProxy((host, port), delay_s=delay / 1000).__enter__() for delay in DELAYS_MS}
    try:
        for _ in range(rounds):
            for delay, proxy in proxies.items():
                for mode in MODES:
                    name = f"{mode} +{delay} ms"
                    into = samples.setdefault(name, {"answer": [], "post_runtime": [], "floor": []})
                    with predict_environment(stack, mode=mode, endpoint_url=f"http://127.0.0.1:{proxy.port}") as (request, model, matrix):
                        for _ in range(10):
                            request()
                            model.predict_proba(matrix)
                        for _ in range(per_block):
                            answer, post_runtime = request()
                            started = time.perf_counter()
                            model.predict_proba(matrix)
                            into["floor"].append(time.perf_counter() - started)
                            into["answer"].append(answer)
                            into["post_runtime"].append(post_runtime)
                    drain_queue(stack.clients["sqs"], stack.queue_url)
    finally:
        for proxy in proxies.values():
            proxy.__exit__(None, None, None)
    return {name: {kind: np.asarray(values) for kind, values in kinds.items()} for name, kinds in samples.items()}


def compare(samples: dict[str, dict[str, np.ndarray]]) -> list[Comparison]:
    """Goal lines for after_response; inline beside it, per distance, for information."""
    floor = np.concatenate([kinds["floor"] for kinds in samples.values()])
    floor_p50 = percentile_ms(floor, 50)
    ours = {delay: samples[f"after_response +{delay} ms"]["answer"] for delay in DELAYS_MS}
    inline = {delay: samples[f"inline +{delay} ms"]["answer"] for delay in DELAYS_MS}
    lines = [
        ratio_at_most(
            BENCHMARK, "after_response p99, SQS +50 ms", percentile_ms(ours[50], 99), "after_response p99, SQS +0 ms",
            percentile_ms(ours[0], 99), "ms", MAX_P99_RATIO, note="the queue's distance must not reach the caller",
        )
    ]  # fmt: skip
    for delay in DELAYS_MS:
        lines.append(
            ratio_at_most(
                BENCHMARK, f"after_response p50, SQS +{delay} ms", percentile_ms(ours[delay], 50), "bare predict_proba p50 (same row)",
                floor_p50, "ms", MAX_P50_OVER_FLOOR,
            )
        )  # fmt: skip
    for delay in DELAYS_MS:
        for q in (50, 99):
            lines.append(
                Comparison(
                    BENCHMARK, f"after_response p{q}, SQS +{delay} ms", percentile_ms(ours[delay], q), f"inline p{q}, SQS +{delay} ms",
                    percentile_ms(inline[delay], q), "ms",
                )
            )  # fmt: skip
    return lines


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Quick: 300 requests per variant in 3 rounds; full: 2,000 in 5 rounds."""
    count, rounds = (300, 3) if quick else (2_000, 5)
    with tempfile.TemporaryDirectory(prefix="sml-bench-capture-") as folder, champion_stack(Path(folder)) as stack:
        samples = measure(stack, count, rounds)
    details = []
    for name, kinds in samples.items():
        details.append({"variant": name, "what": "answer", **latency_summary(kinds["answer"])})
        details.append({"variant": name, "what": "post-runtime phase", **latency_summary(kinds["post_runtime"])})
    details.append({"variant": "floor", "what": "predict_proba", **latency_summary(np.concatenate([k["floor"] for k in samples.values()]))})
    answers = {name: kinds["answer"] for name, kinds in samples.items() if name.endswith(("+0 ms", "+50 ms"))}
    return BenchReport(
        name=BENCHMARK,
        comparisons=compare(samples),
        details=details,
        plots=[plot_latency_cdfs(answers, out_dir / "capture_latency.png", title="Predict answer latency, SQS +0 / +50 ms", dashed=lambda n: n.startswith("inline"))],
        method=[
            (
                f"{count} warm requests per variant on one valid row, in {rounds} rounds in which every variant takes a block "
                "of requests (a fresh container each block, 10 warm-up requests untimed), so the machine's load hits all alike."
            ),
            (
                "Each request runs Lambda's cycle in-process: INVOKE to the registered capture extension through a local "
                "Extensions API, `handler(event, context)` (timed: the caller's answer), then the post-runtime phase until the "
                "extension calls next (timed apart; billed on Lambda, nobody waits on it)."
            ),
            (
                "SQS: moto's server on 127.0.0.1 behind a TCP proxy adding 0, 20 or 50 ms per round trip. Baseline `inline` "
                "sends before answering; floor: `predict_proba` on the row's prepared matrix, timed after every request."
            ),
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
