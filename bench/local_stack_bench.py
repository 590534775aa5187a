"""The local stack end to end under load and faults, against moto's server as the baseline.

1. Per-call queue latency by depth (``queue_depth.py``: SendMessageBatch of 10, ReceiveMessage of
   10 + DeleteMessageBatch), on the default local AWS endpoint (fauxqs), on ministack (the
   endpoint before it) and on moto's server, the same boto3 client and the same messages.
2. Baseline: the local stack on moto's server (what `sml up` ran first), the same traffic without
   faults, fewer events (moto's cost grows with depth, so a large run would not finish).
3. Ours: the local stack on fauxqs (with SSM from ministack), 20,000 events (2,000 requests × 10
   rows; quick: 5,000), with the database down 10 s, the queue endpoint down 10 s, a writer
   container killed in a batch and 1% poison records (``load_and_faults.py``); and the same on
   ministack, for information.

Goals: sustained events/s ≥ 10× the baseline's; lost = 0 and duplicates = 0; receive + delete at
the deepest depth ≤ 1.5× the same on an empty queue (flat in depth).

Usage: ``python bench/local_stack_bench.py [--quick]`` (needs MariaDB/MySQL on 127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import BenchReport, Comparison, format_table, ratio_at_least, ratio_at_most, text_table
from load_and_faults import LoadPlan, LoadResult, run_load
from queue_depth import queue_latency_by_depth

BENCH_NAME = "local-stack"
FLAT_LIMIT = 1.5  # deepest / empty, per call


def run(quick: bool, out_dir: Path) -> BenchReport:
    depths = [0, 1000, 5000] if quick else [0, 1000, 5000, 20000]
    moto_depths = [0, 500] if quick else [0, 1000]
    depth_rows = queue_latency_by_depth("fauxqs", depths) + queue_latency_by_depth("ministack", depths) + queue_latency_by_depth("moto", moto_depths)

    # One writer poller on moto: its threaded server corrupts a queue under concurrent receives
    # ("list.remove(x): x not in list", "Set changed size during iteration"), as the stack had one.
    baseline_plan = LoadPlan(
        requests=40 if quick else 100, emulator="moto", faults=(), poison_share=0.0, writer_concurrency=1, settle_limit_s=600
    )
    print("== baseline: the local stack on moto's server (one writer poller), no faults", flush=True)
    baseline = run_load(baseline_plan)
    ours_plan = LoadPlan(requests=500 if quick else 2000, emulator="fauxqs", settle_limit_s=600)
    print("== ours: the local stack on fauxqs, with faults", flush=True)
    ours = run_load(ours_plan)
    print("== for information: the local stack on ministack, with faults", flush=True)
    ministack = run_load(LoadPlan(requests=ours_plan.requests, emulator="ministack", settle_limit_s=600))

    return BenchReport(
        name=BENCH_NAME,
        comparisons=_comparisons(ours, baseline, ministack, depth_rows),
        details=[
            {"run": "ours (fauxqs, faults)", **ours.summary()},
            {"run": "ministack, faults", **ministack.summary()},
            {"run": "baseline (moto, no faults)", **baseline.summary()},
            *depth_rows,
        ],
        method=[
            "Queue latency: median of 21 calls per depth after 30 warm-up calls, one boto3 client, 10 messages of ~250 bytes per "
            "call; depth = visible messages; receive + delete = ReceiveMessage(10) then DeleteMessageBatch of what it got.",
            "Sustained events/s = prediction events stored / (last row's stored_at − the first request), after every predict container "
            "is warm; lag = stored_at − predicted_at per row (MySQL, both UTC, microseconds). Peak depth = visible + in-flight messages, "
            "sampled every 0.5 s.",
            "All runs use the same stack settings (predict 2 containers, writer batches of ≤ 50, batching window 0.5 s, "
            "visibility timeout 5 s), the same 8 closed-loop HTTP clients and 10 rows per request; the baseline has no faults, fewer "
            "events (moto's per-call cost grows with queue depth) and one writer poller, as the stack had: with two concurrent "
            "receivers moto's threaded server corrupts the queue (500s: 'list.remove(x): x not in list', 'Set changed size during "
            "iteration') and stops delivering.",
            "Faults (fauxqs and ministack runs): MySQL behind a TCP proxy closed for 10 s (connections cut, new ones refused), the AWS "
            "endpoint's S3/SQS/SNS port behind another closed for 10 s, then SIGKILL of a writer container while it runs a batch; 1% of "
            "events are poison records sent straight to the queue (half not JSON, half off-schema).",
        ],
    )


def _comparisons(ours: LoadResult, baseline: LoadResult, ministack: LoadResult, depth_rows: list[dict[str, Any]]) -> list[Comparison]:
    def by(emulator: str) -> list[dict[str, Any]]:
        return [row for row in depth_rows if row["emulator"] == emulator]

    fauxqs_depth, ministack_depth, moto_depth = by("fauxqs"), by("ministack"), by("moto")
    deepest = f"{fauxqs_depth[-1]['depth']:,}"
    return [
        ratio_at_least(
            BENCH_NAME, f"sustained events/s, {ours.stored + ours.in_dlq + ours.capture_missed:,} events with faults", ours.events_per_s,
            "moto server, no faults", baseline.events_per_s, "events/s", 10,
        ),
        Comparison(
            BENCH_NAME, "sustained events/s, same run on ministack", ministack.events_per_s, "fauxqs (ours)", ours.events_per_s,
            "events/s", note="for information",
        ),
        Comparison(BENCH_NAME, "lost (answered, not stored / DLQ / capture-miss log)", ours.lost, "must be", 0, "events", "= 0", ours.lost == 0),
        Comparison(BENCH_NAME, "duplicate rows", ours.duplicates, "must be", 0, "rows", "= 0", ours.duplicates == 0),
        Comparison(BENCH_NAME, "5xx answers", ours.server_errors, "must be", 0, "responses", "= 0", ours.server_errors == 0),
        Comparison(BENCH_NAME, "end-to-end lag p50 (prediction → row)", ours.lag_p50_s, "baseline p50", baseline.lag_p50_s, "s"),
        Comparison(BENCH_NAME, "end-to-end lag p99 (prediction → row)", ours.lag_p99_s, "baseline p99", baseline.lag_p99_s, "s"),
        Comparison(BENCH_NAME, "peak queue depth", ours.peak_depth, "baseline peak", baseline.peak_depth, "messages"),
        ratio_at_most(
            BENCH_NAME, f"fauxqs: ReceiveMessage(10) + DeleteMessageBatch at depth {deepest}", fauxqs_depth[-1]["receive_delete_ms"],
            "same, empty queue", fauxqs_depth[0]["receive_delete_ms"], "ms", FLAT_LIMIT, note="flat in depth",
        ),
        ratio_at_most(
            BENCH_NAME, f"fauxqs: SendMessageBatch(10) at depth {deepest}", fauxqs_depth[-1]["send_ms"],
            "same, empty queue", fauxqs_depth[0]["send_ms"], "ms", FLAT_LIMIT, note="flat in depth",
        ),
        Comparison(
            BENCH_NAME, f"ministack: ReceiveMessage(10) + DeleteMessageBatch at depth {deepest}", ministack_depth[-1]["receive_delete_ms"],
            "ministack, empty queue", ministack_depth[0]["receive_delete_ms"], "ms", note="the endpoint before, for comparison",
        ),
        Comparison(
            BENCH_NAME, f"moto: ReceiveMessage(10) + DeleteMessageBatch at depth {moto_depth[-1]['depth']:,}", moto_depth[-1]["receive_delete_ms"],
            "moto, empty queue", moto_depth[0]["receive_delete_ms"], "ms", note="for comparison",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the details as JSON here")
    args = parser.parse_args()
    report = run(args.quick, Path("."))
    print(text_table(format_table(report.comparisons)))
    for detail in report.details:
        print(json.dumps(detail, default=str))
    if args.json:
        args.json.write_text(json.dumps(report.details, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
