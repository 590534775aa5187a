"""`sml demo`: the whole story end to end on the local stack, with a summary and checks."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from sml.local.aws_endpoint import EMULATORS

SMALL = {"baseline_single": 200, "baseline_batches": 40, "shifted_single": 100, "shifted_batches": 110}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole story end to end on the local stack and print a summary",
        description=(
            "Start the local stack (local AWS endpoint + SQLite unless --database-url), train and register two "
            "model versions and promote the best, serve baseline traffic over HTTP, store it, push the events "
            "of a database maintenance window through the DLQ and replay them, serve shifted traffic, run the "
            "drift job, read its SNS alert from a subscribed queue and write the HTML report. Exits 1 when any "
            "check of the summary fails. Each run starts from an empty --state-dir."
        ),
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".sml/demo"), help="folder for the demo's state (emptied first; default .sml/demo)")
    parser.add_argument("--database-url", help="SQLAlchemy URL of MySQL/MariaDB, e.g. mysql+pymysql://root@127.0.0.1:3306/test (default: SQLite in --state-dir)")
    parser.add_argument("--aws-emulator", choices=EMULATORS, default="fauxqs",
                        help="what serves the local AWS endpoint (default: %(default)s, with SSM from ministack; ministack needs no npm)")
    parser.add_argument("--small", action="store_true", help="send fewer requests (about 1,800 rows instead of 2,800)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic and the training split")
    parser.add_argument("--summary-json", type=Path, help="also write the summary and its checks as JSON to this file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sml.demo.story import DemoConfig, run_demo
    from sml.core.errors import SmlError

    if args.concurrency < 1 or args.concurrency > 64:
        raise SmlError(f"--concurrency must be between 1 and 64, got {args.concurrency}")
    if args.database_url:
        from sml.core.settings import LocalSettings, SettingsError, load_settings

        try:
            load_settings(LocalSettings, {"SML_DATABASE_URL": args.database_url})
        except SettingsError as exc:
            raise SmlError(f"--database-url: {exc.problem}") from None
    config = DemoConfig(
        state_dir=args.state_dir,
        database_url=args.database_url,
        aws_emulator=args.aws_emulator,
        concurrency=args.concurrency,
        seed=args.seed,
        **(SMALL if args.small else {}),
    )
    console = Console(file=sys.stdout, highlight=False)
    config.state_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = config.state_dir.parent / f"{config.state_dir.name}-functions.log"
    console.print(f"serverless-ml demo: the functions' logs go to {config.state_dir / 'logs'}, the stack's to {log_path}")
    # The Lambda handlers log JSON lines and metrics to stdout in their own processes, as on AWS
    # (into <state-dir>/logs/); the poller and the Function URL server report failed invocations
    # on stderr here; those go to a file so the story stays readable.
    started = time.perf_counter()

    def say(line: str) -> None:
        console.print(f"{time.perf_counter() - started:6.1f}s  {line}", markup=False, soft_wrap=True)

    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_demo(config, say=say)
    print_summary(console, summary, log_path)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.to_json(), indent=2, default=str), encoding="utf-8")
    return 0 if summary.passed else 1


def print_summary(console, summary, log_path: Path) -> None:
    from rich.table import Table

    from sml.demo.story import percentile

    traffic = summary.traffic
    console.rule("summary")
    single, batch = traffic.single_latencies_ms, traffic.batch_latencies_ms
    console.print(
        f"requests served: {traffic.ok:,}/{traffic.requests:,}  "
        f"(single-row p50 {percentile(single, 50):.1f} ms, p99 {percentile(single, 99):.1f} ms; "
        f"batch of 10 p50 {percentile(batch, 50):.1f} ms, p99 {percentile(batch, 99):.1f} ms)"
    )
    console.print("  (client-side, over HTTP; predict runs in a few container processes, so concurrent requests beyond them queue)")
    console.print(f"events captured: {summary.events_captured:,}   rows stored: {summary.rows_stored:,}")
    console.print(f"DLQ: {summary.dlq_before_replay} before replay, {summary.dlq_after_replay} after")
    console.print(f"champion: {summary.champion}   drift verdict: {summary.drift_status}   flagged: {', '.join(summary.flagged) or 'none'}"
                  + ("   (the predicted label moved too)" if summary.label_drift else ""))
    table = Table(title="drift per feature (shifted window vs training reference)")
    for column in ("feature", "test", "statistic", "adjusted p", "effect", "verdict"):
        table.add_column(column, justify="right" if column in ("statistic", "adjusted p", "effect") else "left")
    for row in summary.drift_rows:
        table.add_row(
            row["feature"], row["test"], f"{row['statistic']:.3f}", f"{row['p_adjusted']:.2g}", f"{row['effect']:.3f}", row["verdict"]
        )
    console.print(table)
    if summary.alert:
        console.print(f"alert: {summary.alert['subject']}  attributes {summary.alert['attributes']}")
    from sml.demo.story import describe_quality

    console.print(f"model quality, baseline window: {describe_quality(summary.baseline_quality)}", markup=False)
    console.print(f"model quality, shifted window:  {describe_quality(summary.quality)}", markup=False)
    console.print(f"archive: {summary.archived_predictions:,} predictions in S3 as Parquet; {summary.rebuilt_predictions:,} rebuilt into a scratch database")
    console.print(f"report:   {summary.report_path}")
    console.print(f"database: {summary.database_url}")
    console.print(f"W&B offline runs: {summary.wandb_dir}")
    console.print(f"function logs: {summary.function_logs} (stack: {log_path})")
    console.rule("checks")
    for check in summary.checks:
        mark = "[green]PASS[/green]" if check.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}")
    verdict = "all checks passed" if summary.passed else "SOME CHECKS FAILED"
    console.print(f"{verdict} in {summary.elapsed_s:.1f} s")
