"""The model quality section of the drift report: verdict, coverage, delay, metrics, reliability chart.

HTML only (inline SVG, no script), every name and value escaped. The metrics table shows each
realized metric with its interval beside the CBPE estimate and the manifest's held-out value;
the reliability chart plots, per probability bin, the fraction of labelled predictions that
were positive against the mean predicted probability (the diagonal is perfect calibration), with
each point's area following the bin's count.

Example::

    section = render_quality_section(run.quality)
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from sml.monitoring.model_quality.metrics import MetricValue, QualityResult, ReliabilityBin

SIZE, MARGIN = 300, 40
_STATUS_COLOUR = {"OK": "#e8f5e9", "DEGRADED": "#fbe3e1", "INSUFFICIENT_DATA": "#fff4d6"}
_MODEL_METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "log_loss", "brier", "ece")


def render_quality_section(quality: QualityResult) -> str:
    """The ``<h2>Model quality</h2>`` section for ``quality``."""
    status = quality.status.value
    delay = quality.delay
    summary = {
        "verdict": f"{status}: {quality.reason}",
        "label coverage": f"{quality.n_labelled} of {quality.n_predictions} predictions labelled ({quality.coverage:.1%})",
        "labels not among the classes": str(quality.n_labels_outside_classes),
        "labels without a stored prediction": f"{quality.n_unmatched_labels} labelled in the window (kept; counted, not scored)",
        "label delay": (
            f"median {_duration(delay.p50)}, 90th percentile {_duration(delay.p90)}, 99th {_duration(delay.p99)}, longest {_duration(delay.maximum)}"
            if delay
            else "no labels"
        ),
        "verdict metric": f"{quality.config.metric} (positive class {quality.positive_class or 'none: macro average'}), tolerance {quality.config.tolerance}, "
        f"at least {quality.config.min_labels} labels, {quality.config.confidence:.0%} intervals",
        "estimate (CBPE)": (
            f"{quality.estimated.n_predictions} predictions, calibrated probabilities; assumes no concept drift (P(label | score) as on held-out data)"
            if quality.estimated
            else "not available (the model's manifest has no calibrator, or no probabilities were stored)"
        ),
    }
    items = "".join(f"<dt>{_escape(name)}</dt><dd>{_escape(value)}</dd>" for name, value in summary.items())
    badge = f'<span class="badge" style="background:{_STATUS_COLOUR[status]}">{status}</span>'
    chart = reliability_chart(quality.realized.reliability) if quality.realized and quality.realized.reliability else "<p>No reliability chart: no labelled prediction with probabilities.</p>"
    return f"<h2>Model quality {badge}</h2><dl>{items}</dl>{_metrics_table(quality)}{_per_class_table(quality)}{chart}"


def _metrics_table(quality: QualityResult) -> str:
    header = "<tr><th class=\"name\">metric</th><th>realized</th><th>interval</th><th class=\"name\">interval method</th><th>estimated (CBPE)</th><th>held-out</th></tr>"
    rows = []
    for name in _MODEL_METRICS:
        realized = quality.realized.get(name) if quality.realized else None
        estimated = quality.estimated.get(name) if quality.estimated else None
        reference = quality.reference_metrics.get(name)
        if realized is None and estimated is None and reference is None:
            continue
        style = ' style="font-weight:600"' if name == quality.config.metric else ""
        rows.append(
            f"<tr{style}><td class=\"name\">{_escape(name)}</td><td>{_value(realized)}</td><td>{_interval(realized)}</td>"
            f"<td class=\"name\">{_escape(realized.interval if realized and realized.interval else '')}</td>"
            f"<td>{_value(estimated)}</td><td>{_number(reference)}</td></tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _per_class_table(quality: QualityResult) -> str:
    if not quality.realized or not quality.realized.metrics:
        return ""
    header = "<tr><th class=\"name\">class</th>" + "".join(f"<th>{name}</th><th>{name} interval</th>" for name in ("precision", "recall", "f1")) + "</tr>"
    rows = []
    for label in quality.classes:
        cells = []
        for name in ("precision", "recall", "f1"):
            value = quality.realized.get(name, label)
            cells.append(f"<td>{_value(value)}</td><td>{_interval(value)}</td>")
        rows.append(f"<tr><td class=\"name\">{_escape(label)}</td>{''.join(cells)}</tr>")
    return f"<table>{header}{''.join(rows)}</table>"


def reliability_chart(bins: Sequence[ReliabilityBin]) -> str:
    """Inline SVG: fraction positive against mean predicted probability per bin, with the diagonal."""
    plot = SIZE - 2 * MARGIN
    largest = max(bin_.count for bin_ in bins)

    def x(value: float) -> float:
        return MARGIN + value * plot

    def y(value: float) -> float:
        return SIZE - MARGIN - value * plot

    parts = [
        f'<rect x="{MARGIN}" y="{MARGIN}" width="{plot}" height="{plot}" fill="none" stroke="#999"/>',
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#999" stroke-dasharray="4 3"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{x(tick):.1f}" y="{SIZE - MARGIN + 14}" text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{MARGIN - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    points = " ".join(f"{x(bin_.mean_predicted):.1f},{y(bin_.fraction_positive):.1f}" for bin_ in bins)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#dd8452" stroke-width="1.5"/>')
    for bin_ in bins:
        radius = 2 + 6 * math.sqrt(bin_.count / largest)
        parts.append(
            f'<circle cx="{x(bin_.mean_predicted):.1f}" cy="{y(bin_.fraction_positive):.1f}" r="{radius:.1f}" fill="#dd8452" fill-opacity="0.6">'
            f"<title>{bin_.lower:.1f}-{bin_.upper:.1f}: {bin_.count} predictions, mean probability {bin_.mean_predicted:.3f}, "
            f"fraction positive {bin_.fraction_positive:.3f}</title></circle>"
        )
    parts.append(f'<text x="{SIZE / 2}" y="{SIZE - 6}" text-anchor="middle">mean predicted probability</text>')
    parts.append(f'<text x="12" y="{SIZE / 2}" text-anchor="middle" transform="rotate(-90 12 {SIZE / 2})">fraction positive</text>')
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" role="img" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}" '
        f'font-size="11" font-family="sans-serif"><title>reliability chart</title>{"".join(parts)}</svg>'
        f"<figcaption>Reliability of the positive class's probability over the window's labelled predictions "
        f"({sum(bin_.count for bin_ in bins)} in {len(bins)} bins); point area follows the bin's count.</figcaption></figure>"
    )


def _value(metric: MetricValue | None) -> str:
    return "–" if metric is None else _number(metric.value)


def _interval(metric: MetricValue | None) -> str:
    if metric is None or metric.low is None or metric.high is None:
        return "–"
    return f"{_number(metric.low)} – {_number(metric.high)}"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)
