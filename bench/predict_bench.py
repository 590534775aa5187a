"""Predict warm latency: the whole handler in-process on one row vs the model alone on that row.

Four variants, measured in alternating blocks in one process against a warm container:

- floor: ``model.predict_proba`` on the row's prepared 1 × n matrix (the champion pipeline itself);
- ours, queue send excluded: ``handler(event, context)`` of ``POST /predict`` with
  ``SML_CAPTURE_SAMPLING_RATE=0`` (parse, validate, predict, build the event, answer, metrics);
- floor + send: ``predict_proba`` plus one bare ``sqs.send_message`` of the same event's body;
- ours, queue send included: the handler with capture on.

The queue is moto's server on 127.0.0.1 (a real HTTP call over loopback, not in-process
``mock_aws``), so a send costs what moto's Python server takes to answer; that cost is in both
"send" variants, which is why ours-with-send is compared with floor + send.

Run alone: ``python bench/predict_bench.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    bench_main,
    plot_latency_cdfs,
    BenchReport,
    ChampionStack,
    Comparison,
    champion_stack,
    environment,
    fill_model_cache,
    interleaved_latencies,
    latency_summary,
    percentile_ms,
    predict_event,
)

BENCHMARK = "predict warm latency"
MAX_OVERHEAD_MS = 0.5


@contextlib.contextmanager
def warm_predict(stack: ChampionStack, *, capture: bool) -> Iterator[tuple[Callable[[], Any], Any, np.ndarray]]:
    """A warm predict container for ``stack``: (one invocation on a valid row, the model, the row's matrix).

    Predict's log and metrics output goes to ``/dev/null`` (on Lambda it goes to CloudWatch
    through stdout; the formatting and the write are still paid here).
    """
    from sml.local.lambda_context import new_lambda_context
    from sml.lifecycle.modeling import rows_to_matrix

    from functions.predict import app

    cache_dir = stack.work_dir / "cache"
    fill_model_cache(stack, cache_dir)
    with (
        environment(stack.predict_environment(cache_dir=cache_dir, capture=capture)),
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
    ):
        previous_stream = app.logger.registered_handler.setStream(sink)
        app.load_runtime.cache_clear()
        try:
            row = stack.valid_row()
            event, context = predict_event(row), new_lambda_context("sml-predict", region="us-east-1", timeout_s=10)

            def invoke() -> Any:
                response = app.handler(event, context)
                if response["statusCode"] != 200:
                    raise RuntimeError(f"predict answered {response['statusCode']}: {response['body']}")
                return response

            invoke()
            served = app.load_runtime().champion.current()
            yield invoke, served.loaded.model, rows_to_matrix([row], served.service.schema.features)
        finally:
            app.load_runtime.cache_clear()
            app.logger.registered_handler.setStream(previous_stream)


def send_one(stack: ChampionStack) -> Callable[[], Any]:
    """One bare ``send_message`` of a prediction event's body, on a client configured as capture's."""
    from sml.core.aws import aws_client
    from sml.predict.capture import CAPTURE_CLIENT_CONFIG
    from sml.core.events import build_prediction_event, serialise_prediction_event
    from sml.core.settings import PredictSettings, load_settings

    with environment(stack.predict_environment(cache_dir=stack.work_dir / "cache", capture=True)):
        sqs = aws_client("sqs", load_settings(PredictSettings), config=CAPTURE_CLIENT_CONFIG)
    body = serialise_prediction_event(
        build_prediction_event(
            model_name="breast-cancer",
            model_version="v1",
            features=stack.valid_row(),
            prediction="malignant",
            probabilities={"benign": 0.1, "malignant": 0.9},
        )
    )
    return lambda: sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)


def drain_queue(sqs: Any, queue_url: str) -> None:
    """Receive and delete every message: moto's SendMessage slows down as its queue grows."""
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        entries = [{"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def measure(stack: ChampionStack, count: int, send_count: int) -> dict[str, np.ndarray]:
    """Seconds per call: ``count`` of each variant without the send, ``send_count`` of each with it."""
    with warm_predict(stack, capture=False) as (invoke, model, matrix):
        without_send = interleaved_latencies({"floor": lambda: model.predict_proba(matrix), "ours": invoke}, count)
    send = send_one(stack)

    def floor_and_send() -> None:
        model.predict_proba(matrix)
        send()

    with warm_predict(stack, capture=True) as (invoke, model, matrix):
        with_send = interleaved_latencies(
            {"floor + send": floor_and_send, "ours + send": invoke},
            send_count,
            upkeep=lambda: drain_queue(stack.clients["sqs"], stack.queue_url),
        )
    return {**without_send, **with_send}


def compare(samples: dict[str, np.ndarray]) -> list[Comparison]:
    """Table lines: p50 overhead against the goal, p99 for information."""
    lines = []
    for ours, floor, label in (("ours", "floor", "send excluded"), ("ours + send", "floor + send", "send included")):
        baseline_name = "bare predict_proba" if floor == "floor" else "bare predict_proba + bare send_message"
        ours_p50, floor_p50 = percentile_ms(samples[ours], 50), percentile_ms(samples[floor], 50)
        overhead = ours_p50 - floor_p50
        lines.append(
            Comparison(
                BENCHMARK, f"p50, queue {label}", ours_p50, baseline_name, floor_p50, "ms",
                target=f"≤ +{MAX_OVERHEAD_MS} ms", met=overhead <= MAX_OVERHEAD_MS, note=f"overhead {overhead:+.3f} ms",
            )
        )  # fmt: skip
        lines.append(
            Comparison(
                BENCHMARK, f"p99, queue {label}", percentile_ms(samples[ours], 99), baseline_name, percentile_ms(samples[floor], 99), "ms"
            )
        )
    return lines


def plot(samples: dict[str, np.ndarray], path: Path) -> Path:
    """Latency CDFs of the four variants (log x)."""
    return plot_latency_cdfs(samples, path, title="Predict warm latency, one row, in-process")


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Measure the four variants; quick: 3,000 requests each (1,000 with the send), full: 20,000 (5,000)."""
    count, send_count = (3_000, 1_000) if quick else (20_000, 5_000)
    with tempfile.TemporaryDirectory(prefix="sml-bench-predict-") as folder, champion_stack(Path(folder)) as stack:
        samples = measure(stack, count, send_count)
    return BenchReport(
        name=BENCHMARK,
        comparisons=compare(samples),
        details=[{"variant": name, **latency_summary(values)} for name, values in samples.items()],
        plots=[plot(samples, out_dir / "predict_latency.png")],
        method=[
            (
                f"{count} warm requests per variant ({send_count} with the send) on one valid row, the variants taking turns "
                "call by call after 50 warm-up calls each (same load, same cache state for each)."
            ),
            (
                "Floor: the champion's `predict_proba` on the row's prepared matrix. Ours: `handler(event, context)` "
                "of a Function URL `POST /predict` event, Powertools logger/metrics writing to /dev/null."
            ),
            (
                "Queue: moto's server on 127.0.0.1 over HTTP (not in-process `mock_aws`); the send-included floor adds one "
                "bare `send_message` of an event body on a client configured as capture's, so moto's own time is on both sides. "
                "The queue is drained every 100 rounds (untimed): moto's SendMessage slows down as a queue grows."
            ),
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
