"""`sml drift`: run the drift job now against the champion (or ``--version``) and print the verdict table.

The job is the drift Lambda's (:func:`sml.monitoring.job.run_drift_job`): it stores the run, puts the
report in S3 and publishes the alert when a topic is configured (``sml up`` sets one). The report
is also written to ``<state_dir>/reports/<model>/<window end>-<run id>.html``. Exit code 0 whatever the
verdict (it is a report, not a failure) unless ``--fail-on-drift``.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sml.core.errors import SmlError

if TYPE_CHECKING:
    from sml.monitoring.job import DriftJobResult
    from sml.monitoring.store import DriftRun

VERDICT_RANK = {"DRIFT": 0, "INCONCLUSIVE": 1, "NO_DRIFT": 2}
VERDICT_STYLE = {"DRIFT": "bold red", "INCONCLUSIVE": "yellow", "NO_DRIFT": "green"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option

    parser = subparsers.add_parser(
        "drift",
        help="run the drift job now and print the verdict",
        description=(
            "Compare the champion's recent predictions with its training reference (or the previous window): "
            "KS / chi-square / missing-rate tests per feature and for the prediction, Benjamini-Hochberg "
            "corrected, with effect-size floors (SML_DRIFT_*, under the champion's own drift config from `sml train --drift-config`, "
            "whose keys win; the table says where each floor came from). Stores the run, writes the HTML report and "
            "publishes the SNS alert, like the weekly drift Lambda. Model quality is assessed in the same run "
            "(realized metrics from labels, CBPE estimate; SML_QUALITY_*) and its verdict printed; `sml quality` shows it in full. "
            "The run's data quality against the training profile (SML_DQ_*: out of range, unseen categories, missing values, values predict refused) "
            "is printed with its violated checks. The window is read from --window-source (SML_WINDOW_SOURCE), as the drift function reads it."
        ),
    )
    parser.add_argument("--window", help="length of the current window, e.g. 7d, 12h, 90m, 2w (default: SML_DRIFT_WINDOW_DAYS, 7 days)")
    parser.add_argument("--reference", choices=("training", "previous"), help="compare with the training reference or the previous window (default: SML_DRIFT_REFERENCE, training)")
    add_model_option(parser)
    parser.add_argument(
        "--version",
        help="the registered version whose predictions and reference are compared (default: the champion); "
        "rows of other versions in the window are counted, not tested",
    )
    parser.add_argument("--end", help="end of the window, ISO 8601 such as 2025-03-10T06:00:00Z; a time without offset is UTC (default: now)")
    parser.add_argument(
        "--window-source",
        choices=("database", "duckdb", "athena"),
        help="where the window is read: the database; DuckDB over the event archive's Parquet objects (SML_ARCHIVE_PREFIX), "
        "all of it there, labels and refusals included; or Athena over its Glue table (SML_ATHENA_WORKGROUP, "
        "SML_ATHENA_DATABASE), with the labels from the database; the archive holds only what the conversion has turned "
        "into Parquet, `sml compact` converts at once (default: SML_WINDOW_SOURCE, as the drift function reads it, else database)",
    )
    parser.add_argument("--report-dir", type=Path, help="folder for the HTML report (default: <SML_STATE_DIR>/reports)")
    parser.add_argument("--fail-on-drift", action="store_true", help="exit with status 1 when the verdict is DRIFT")
    parser.set_defaults(run=run_drift)
    actions = parser.add_subparsers(title="past runs", metavar="{history}")
    history = actions.add_parser(
        "history",
        help="print the stored drift runs of the model, newest first",
        description="Print past drift runs from the database: one line per run, or per run and test of --feature (effect, upper bound, floor, verdict).",
    )
    history.add_argument("--feature", help="show this feature's tests across the runs (the model's prediction is '(predicted label)' for a classifier, '(prediction)' for a regression model; either name finds it)")
    history.add_argument("--limit", type=int, default=12, help="how many runs, newest first (default 12)")
    history.add_argument("--version", help="only the runs of this model version (default: every version's)")
    add_model_option(history)
    history.set_defaults(run=run_history)


def run_drift(args: argparse.Namespace) -> int:
    from sml.core.aws import aws_client
    from sml.core.db import database_engine_from_settings
    from sml.monitoring.job import DriftJobConfig, run_drift_job
    from sml.monitoring.sources import window_source_from_settings
    from sml.monitoring.windows import check_window_end, parse_window_length
    from sml.lifecycle.registry import ModelRegistry
    from sml.cli.commands.models import load_model_settings
    from sml.core.settings import DriftSettings, LocalSettings

    settings = load_model_settings(LocalSettings, args.model)
    drift_settings = load_model_settings(DriftSettings, args.model)
    overrides: dict[str, object] = {"topic_arn": settings.topic_arn}
    if args.window:
        overrides["window_length"] = parse_window_length(args.window, option="--window")
    if args.reference:
        overrides["reference_kind"] = args.reference
    config = DriftJobConfig.from_settings(drift_settings, **overrides)
    window_end = parse_end(args.end) if args.end else datetime.now(timezone.utc).replace(microsecond=0)
    check_window_end(window_end, source="--end")

    registry = ModelRegistry(
        aws_client("s3", settings), aws_client("ssm", settings), bucket=settings.bucket, app_name=settings.app_name, model_name=settings.model_name
    )
    manifest = registry.manifest(check_version(args.version) if args.version else registry.champion_version())
    # The source the drift function would read (SML_WINDOW_SOURCE), with the archive the CLI sees (the local stack's too).
    window_source = window_source_from_settings(
        settings, lambda service: aws_client(service, settings), source=args.window_source or drift_settings.window_source,
        label_horizon_days=drift_settings.label_horizon_days,
    )
    if window_source is not None and settings.archive_prefix is not None:
        from sml.cli.commands.rebuild import archive_location, warn_unconverted

        warn_unconverted(aws_client("s3", settings), archive_location(settings), "this run")
    engine = database_engine_from_settings(settings)
    try:
        outcome = run_drift_job(
            config,
            manifest,
            engine=engine,
            s3_client=aws_client("s3", settings),
            sns_client=aws_client("sns", settings) if config.topic_arn else None,
            window_end=window_end,
            report_dir=args.report_dir or settings.state_dir / "reports",
            window_source=window_source,
        )
    finally:
        engine.dispose()
    print_run(outcome)
    return 1 if args.fail_on_drift and outcome.run.status.value == "DRIFT" else 0


def run_history(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sml.core.db import database_engine_from_settings
    from sml.cli.commands.models import load_model_settings
    from sml.core.settings import LocalSettings
    from sml.monitoring.store import drift_history

    if args.limit < 1:
        raise SmlError(f"--limit: must be at least 1, got {args.limit}")
    settings = load_model_settings(LocalSettings, args.model)
    engine = database_engine_from_settings(settings)
    try:
        rows = drift_history(engine, settings.model_name, limit=args.limit, feature=args.feature, version=args.version and check_version(args.version))
    finally:
        engine.dispose()
    console = Console()
    if not console.is_terminal:
        console.width = 160
    if not rows:
        subject = f"feature {args.feature!r} of " if args.feature else ""
        of_version = f" version {args.version!r}" if args.version else ""
        console.print(f"no stored drift runs for {subject}model {settings.model_name!r}{of_version}", markup=False)
        return 0
    title = f"drift history of {escape(settings.model_name)}" + (f", feature {escape(args.feature)}" if args.feature else "")
    table = Table(title=title)
    columns = ["window end (UTC)", "version"]
    if args.feature:
        columns += ["test", "effect", "rules out ≥", "floor", "adjusted p", "verdict"]
    else:
        columns += ["verdict", "data quality", "rows", "drifted", "other versions' rows"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        cells = [f"{row['window_end']:%Y-%m-%d %H:%M}", escape(row["model_version"])]
        if args.feature:
            verdict = row["verdict"] + (f" ({row['reason']})" if row["reason"] else "")
            cells += [row["test"], _number(row["effect_size"]), _number(row["effect_upper"]), _number(row["effect_floor"]), _number(row["p_adjusted"]),
                      f"[{VERDICT_STYLE.get(row['verdict'], 'yellow')}]{escape(verdict)}[/]"]
        else:
            cells += [f"[{VERDICT_STYLE.get(row['status'], 'yellow')}]{row['status']}[/]", row["data_quality_status"] or "-",
                      str(row["n_current"]), f"{row['features_drifted']} of {row['features_tested']}", _other_versions(row)]
        table.add_row(*cells)
    console.print(table)
    return 0


def check_version(text: str) -> str:
    """``--version`` as given, when it can be a registered version's name.

    :raises SmlError: naming ``--version``.
    """
    from sml.lifecycle.registry import VERSION_PATTERN

    if not VERSION_PATTERN.match(text):
        raise SmlError(f"--version: {text!r} is not a version name (letters, digits, '.', '_', '-'; at most 64)")
    return text


def _other_versions(row: dict[str, object]) -> str:
    counts = row["other_versions_rows"]
    text = ", ".join(f"{version} {rows}" for version, rows in sorted(counts.items())) if isinstance(counts, dict) and counts else "-"
    return text + (f" (since {row['version_since']})" if row["version_since"] else "")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def parse_end(text: str) -> datetime:
    """``--end`` as an aware UTC datetime, by the system's one timestamp rule
    (:func:`sml.core.events.parse_utc_timestamp`); a value without offset is taken as UTC, a date
    alone as its midnight UTC."""
    from sml.core.events import TimestampError, parse_utc_timestamp

    stripped = text.strip()
    try:
        return parse_utc_timestamp(stripped + "T00:00:00Z" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", stripped) else stripped, naive_as_utc=True)
    except TimestampError as exc:
        if "is not an RFC 3339 date-time" in str(exc):
            raise SmlError(f"--end: {text!r} is not an ISO 8601 time such as 2025-03-10T06:00:00Z") from None
        raise SmlError(f"--end: {exc}") from None


def print_run(outcome: DriftJobResult) -> None:
    """The verdict table (drifted tests first), the verdict and where the report and alert went."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    run = outcome.run
    console = Console()
    if not console.is_terminal:
        console.width = 160
    table = Table(title=f"drift of {escape(run.model_name)} {run.model_version}: {run.window.start:%Y-%m-%d %H:%M} to {run.window.end:%Y-%m-%d %H:%M} UTC")
    for column in ("feature", "test"):
        table.add_column(column, no_wrap=True)
    for column in ("statistic", "p", "adjusted p", "effect", "rules out ≥", "floor"):
        table.add_column(column, justify="right")
    table.add_column("floor from", no_wrap=True)
    for column in ("n ref", "n cur"):
        table.add_column(column, justify="right")
    table.add_column("verdict", no_wrap=True)
    ordered = sorted(run.results, key=lambda result: (VERDICT_RANK[result.verdict.value], result.p_adjusted))
    for result in ordered:
        table.add_row(
            escape(result.feature),
            result.test,
            f"{result.statistic:.4g}",
            f"{result.p_value:.3g}",
            f"{result.p_adjusted:.3g}",
            f"{result.effect_size:.3g}",
            "-" if result.effect_upper is None else f"{result.effect_upper:.3g}",
            f"{result.effect_floor:.3g}",
            str(result.detail.get("floor_source", "-")),
            str(result.n_reference),
            str(result.n_current),
            f"[{VERDICT_STYLE[result.verdict.value]}]{result.verdict.value}[/]" + (f" ({result.detail['reason']})" if "reason" in result.detail else ""),
        )
    console.print(table)
    status = run.status.value
    from sml.monitoring.drift.stats import verdict_summary

    console.print(f"summary: {escape(verdict_summary(run.results))}")
    console.print(
        f"verdict: [{VERDICT_STYLE[status]}]{status}[/] ({len(run.drifted_features)} of {run.features_tested} features drifted"
        f"{f', and the {run.prediction_tested}' if run.label_drifted else ''}; "
        f"{run.current_rows} rows in the window, {run.reference_rows} in the {run.reference_kind} reference)"
    )
    if note := run.versions_note():
        console.print(f"versions: {note}", markup=False)
    if run.data_quality:
        console.print(data_quality_line(run), markup=False)
    if run.refused_requests:
        reasons = ", ".join(f"{reason} {count}" for reason, count in run.refused_requests.items())
        console.print(f"requests refused for a problem that names no feature: {sum(run.refused_requests.values())} ({reasons})", markup=False)
    if run.quality is not None:
        from sml.cli.commands.quality import print_quality_lines

        print_quality_lines(console, run.quality)
    # One line whatever the terminal's width, so the path can be copied.
    console.print(f"report: {outcome.report_path} ({run.report_uri})", markup=False, soft_wrap=True)
    alert = f"published as SNS message {outcome.message_id}" if outcome.message_id else "not published (no SML_TOPIC_ARN)"
    console.print(f"alert: {alert}", markup=False)


def data_quality_line(run: DriftRun, shown: int = 5) -> str:
    """``data quality: STATUS (...)``: the violated checks, largest share first (``shown`` of them), or how many passed."""
    violated = sorted((check for check in run.data_quality if check.violated), key=lambda check: -check.value)
    if not violated:
        return f"data quality: {run.data_quality_status} (all {len(run.data_quality)} checks passed)"
    listed = "; ".join(
        f"{check.feature} {check.check} {check.value:.2%} > {check.threshold:.2%} ({check.count} of {check.n} values)" for check in violated[:shown]
    )
    more = f"; and {len(violated) - shown} more" if len(violated) > shown else ""
    return f"data quality: {run.data_quality_status} ({len(violated)} of {len(run.data_quality)} checks violated: {listed}{more})"
