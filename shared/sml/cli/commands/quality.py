"""`sml quality`: the model quality of the latest stored monitoring run (or of ``--end``'s), printed.

The weekly run (the drift Lambda, or ``sml drift``) assesses model quality beside drift and
stores it; this command reads it back: the verdict and its reason, label coverage and delay, and
every metric realized (with its interval) beside the CBPE estimate and the held-out value in the
model's manifest. Exit code 0 whatever the verdict unless ``--fail-on-degraded``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sml.core.errors import SmlError

STATUS_STYLE = {"DEGRADED": "bold red", "INSUFFICIENT_DATA": "yellow", "OK": "green"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option

    parser = subparsers.add_parser(
        "quality",
        help="print the model quality verdict of the latest monitoring run",
        description=(
            "Print the model quality the latest monitoring run stored for the model: OK, DEGRADED (the chosen metric's interval "
            "is worse than the held-out value by more than SML_QUALITY_TOLERANCE, in the metric's direction) or INSUFFICIENT_DATA "
            "(fewer than SML_QUALITY_MIN_LABELS labels), with coverage, label delay, realized metrics of the model's task with their "
            "intervals, and the label-free estimate (CBPE for classifiers, DLE for regression). "
            "Run `sml drift` first to assess the current window."
        ),
    )
    add_model_option(parser)
    parser.add_argument("--end", help="the run whose window ends at this time, ISO 8601 (default: the latest run)")
    parser.add_argument("--version", help="the run of this model version (default: the latest run of any version)")
    parser.add_argument("--fail-on-degraded", action="store_true", help="exit with status 1 when the verdict is DEGRADED")
    parser.set_defaults(run=run_quality)


def run_quality(args: argparse.Namespace) -> int:
    from sml.cli.commands.drift import check_version, parse_end
    from sml.core.db import database_engine_from_settings
    from sml.cli.commands.models import load_model_settings
    from sml.core.settings import LocalSettings
    from sml.monitoring.model_quality.store import latest_quality

    settings = load_model_settings(LocalSettings, args.model)
    window_end = parse_end(args.end) if args.end else None
    version = check_version(args.version) if args.version else None
    engine = database_engine_from_settings(settings)
    try:
        found = latest_quality(engine, settings.model_name, window_end, version=version)
    finally:
        engine.dispose()
    which = (f"ending at {args.end}" if args.end else "stored") + (f" of version {version!r}" if version else "")
    if found is None:
        raise SmlError(f"no monitoring run {which} for model {settings.model_name!r}; run `sml drift` first")
    run, quality = found
    if quality is None:
        raise SmlError(f"the monitoring run {run['run_id']} of {settings.model_name!r} has no model quality (it ran before quality existed, or with quality off); run `sml drift` again")
    print_stored_quality(run, quality)
    return 1 if args.fail_on_degraded and quality.run["status"] == "DEGRADED" else 0


def print_stored_quality(run: dict[str, Any], quality: Any) -> None:
    """The verdict, coverage and delay, then a table of realized (interval), estimated and held-out metrics."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sml.lifecycle.manifest import task_from_classes
    from sml.lifecycle.quality_metrics import metrics_for

    console = Console()
    if not console.is_terminal:
        console.width = 160
    row = quality.run
    parameters = json.loads(row["parameters"])
    table = Table(title=f"model quality of {escape(run['model_name'])} {escape(run['model_version'])}: {run['window_start']:%Y-%m-%d %H:%M} to {run['window_end']:%Y-%m-%d %H:%M} UTC")
    table.add_column("metric", no_wrap=True)
    table.add_column("class", no_wrap=True)
    classes = parameters.get("classes", [])
    task = parameters.get("task") or task_from_classes(classes)
    for column in ("realized", "interval", f"estimated ({'DLE' if task == 'regression' else 'CBPE'})", "held-out"):
        table.add_column(column, justify="right")
    names = [(name, "") for name in metrics_for(task)] + [(name, label) for label in classes for name in ("precision", "recall", "f1")]
    for name, label in names:
        realized, estimated, reference = (quality.value(source, name, label) for source in ("realized", "estimated", "reference"))
        if realized is None and estimated is None and reference is None:
            continue
        interval = f"{_number(realized['ci_low'])} – {_number(realized['ci_high'])}" if realized and realized["ci_low"] is not None else "–"
        table.add_row(
            f"[bold]{name}[/]" if name == row["metric"] and not label else name,
            escape(label),
            _number(realized and realized["value"]),
            interval,
            _number(estimated and estimated["value"]),
            _number(reference and reference["value"]),
        )
    console.print(table)
    coverage = row["n_labelled"] / row["n_predictions"] if row["n_predictions"] else 0.0
    console.print(
        f"labels: {row['n_labelled']} of {row['n_predictions']} predictions ({coverage:.1%}); {row['n_labels_outside_classes']} labels "
        f"{'that are not numbers' if task == 'regression' else 'not among the classes'}; "
        f"{row['n_unmatched_labels']} labels in the window without a stored prediction",
        markup=False,
    )
    if row["delay_p50_seconds"] is not None:
        console.print(
            f"label delay: median {_duration(row['delay_p50_seconds'])}, 90th percentile {_duration(row['delay_p90_seconds'])}, "
            f"99th {_duration(row['delay_p99_seconds'])}",
            markup=False,
        )
    before = json.loads(row["parameters"] or "{}").get("labels_before_prediction", 0)
    if before:
        console.print(f"labels dated before their prediction: {before} (a wrong clock or client; scored, left out of the label delay)", markup=False)
    status = row["status"]
    console.print(f"quality: [{STATUS_STYLE[status]}]{status}[/] ({escape(row['reason'])})")


def print_quality_lines(console: Any, quality: Any) -> None:
    """The quality lines `sml drift` prints under its verdict, from a :class:`~sml.monitoring.model_quality.metrics.QualityResult`."""
    from rich.markup import escape

    metric = quality.config.metric
    realized = quality.realized.get(metric) if quality.realized else None
    estimated = quality.estimated.get(metric) if quality.estimated else None
    parts = [f"{quality.n_labelled} of {quality.n_predictions} predictions labelled ({quality.coverage:.1%})"]
    if realized is not None:
        parts.append(f"realized {metric} {_number(realized.value)} [{_number(realized.low)}, {_number(realized.high)}]")
    if estimated is not None:
        parts.append(f"estimated {metric} {_number(estimated.value)}")
    if quality.reference_value is not None:
        parts.append(f"held-out {_number(quality.reference_value)}")
    if quality.delay is not None and quality.delay.before_prediction:
        parts.append(f"{quality.delay.before_prediction} labels dated before their prediction")
    status = quality.status.value
    console.print(f"quality: [{STATUS_STYLE[status]}]{status}[/] ({escape('; '.join(parts))})")
    console.print(f"quality reason: {quality.reason}", markup=False)


def _number(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.4g}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
