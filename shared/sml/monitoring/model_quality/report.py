"""The model quality section of the drift report: verdict, coverage, delay, metrics and the task's charts.

HTML only (inline SVG, no script), every name and value escaped. The metrics table shows each
realized metric of the model's task with its interval beside the label-free estimate (CBPE or
DLE) and the manifest's held-out value. Classifiers get the confusion matrix (counts, true class
by row, with each row's share shaded) and the reliability chart: per probability bin, the
fraction of labelled predictions that were positive (binary) or whose top label was right
(multiclass) against the mean probability (the diagonal is perfect calibration), each point's
area following the bin's count. Regression models get the residual plots: a histogram of the
errors (prediction − label) and the mean error with ±1 sd per bin of the predicted value.

Example::

    section = render_quality_section(run.quality)
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from sml.lifecycle.quality_metrics import metrics_for
from sml.monitoring.model_quality.metrics import MetricValue, QualityResult, ReliabilityBin, ResidualPlots

SIZE, MARGIN = 300, 40
_STATUS_COLOUR = {"OK": "#e8f5e9", "DEGRADED": "#fbe3e1", "INSUFFICIENT_DATA": "#fff4d6"}


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
            if delay and delay.p50 == delay.p50
            else "no labels" if not delay else "every label is dated before its prediction"
        ),
        "labels dated before their prediction": (
            f"{delay.before_prediction if delay else 0} (a wrong clock or client: scored, left out of the delay)"
        ),
        "verdict metric": f"{quality.config.metric} of a {quality.task} model{_positive(quality)}, tolerance {quality.config.tolerance}, "
        f"at least {quality.config.min_labels} labels, {quality.config.confidence:.0%} intervals",
        f"estimate ({_estimate_name(quality)})": _estimate_note(quality),
    }
    items = "".join(f"<dt>{_escape(name)}</dt><dd>{_escape(value)}</dd>" for name, value in summary.items())
    badge = f'<span class="badge" style="background:{_STATUS_COLOUR[status]}">{status}</span>'
    return f"<h2>Model quality {badge}</h2><dl>{items}</dl>{_metrics_table(quality)}{_per_class_table(quality)}{_charts(quality)}"


def _positive(quality: QualityResult) -> str:
    if quality.task == "binary":
        return f" (positive class {quality.positive_class})"
    return " (macro: the classes' unweighted mean)" if quality.task == "multiclass" else ""


def _estimate_name(quality: QualityResult) -> str:
    return "DLE" if quality.task == "regression" else "CBPE"


def _estimate_note(quality: QualityResult) -> str:
    estimated = quality.estimated
    if estimated is None:
        kind = "loss model (DLE)" if quality.task == "regression" else "calibrator"
        return f"not available (the model's manifest has no {kind}, or no probabilities were stored)"
    if estimated.method == "dle":
        return (
            f"{estimated.n_predictions} predictions ({estimated.n_evaluated} evaluated), expected absolute and squared errors from a model of "
            "the error fitted on held-out data; assumes no concept drift (P(label | inputs) as on held-out data)"
        )
    return f"{estimated.n_predictions} predictions, calibrated probabilities; assumes no concept drift (P(label | score) as on held-out data)"


def _charts(quality: QualityResult) -> str:
    realized = quality.realized
    if quality.task == "regression":
        if realized is None or realized.residuals is None:
            return "<p>No residual plots: no labelled prediction.</p>"
        return residual_charts(realized.residuals)
    confusion = confusion_table(quality.classes, realized.confusion) if realized and realized.confusion and realized.n_labelled else ""
    if not (realized and realized.reliability):
        return f"{confusion}<p>No reliability chart: no labelled prediction with probabilities.</p>"
    caption = "the positive class's probability" if quality.task == "binary" else "the top label's probability (right when the top label is the true class)"
    return confusion + reliability_chart(realized.reliability, caption, "fraction positive" if quality.task == "binary" else "fraction right")


def _metrics_table(quality: QualityResult) -> str:
    header = (
        "<tr><th class=\"name\">metric</th><th>realized</th><th>interval</th><th class=\"name\">interval method</th>"
        f"<th>estimated ({_estimate_name(quality)})</th><th>held-out</th></tr>"
    )
    rows = []
    for name in metrics_for(quality.task):
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
    if not quality.realized or not quality.realized.metrics or not quality.classes:
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


def confusion_table(classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> str:
    """The confusion matrix as a table: true class by row, predicted by column, each cell shaded by its share of the row."""
    header = "<tr><th class=\"name\">true \\ predicted</th>" + "".join(f"<th>{_escape(label)}</th>" for label in classes) + "</tr>"
    rows = []
    for label, row in zip(classes, confusion):
        total = sum(row) or 1
        cells = "".join(f'<td style="background:rgba(76,114,176,{0.08 + 0.6 * count / total:.2f})">{count}</td>' for count in row)
        rows.append(f"<tr><td class=\"name\">{_escape(label)}</td>{cells}</tr>")
    return f"<h3>Confusion matrix (labelled predictions)</h3><table>{header}{''.join(rows)}</table>"


def residual_charts(plots: ResidualPlots) -> str:
    """Inline SVGs: the histogram of errors (prediction − label) and the mean error ± 1 sd per bin of the prediction."""
    return f"<h3>Residuals</h3>{_histogram_svg(plots)}{_by_prediction_svg(plots)}"


def _frame(title: str, x_label: str, y_label: str, body: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}" font-size="11" '
        f'font-family="sans-serif"><title>{_escape(title)}</title><rect x="{MARGIN}" y="{MARGIN}" width="{SIZE - 2 * MARGIN}" '
        f'height="{SIZE - 2 * MARGIN}" fill="none" stroke="#999"/>{"".join(body)}'
        f'<text x="{SIZE / 2}" y="{SIZE - 6}" text-anchor="middle">{_escape(x_label)}</text>'
        f'<text x="12" y="{SIZE / 2}" text-anchor="middle" transform="rotate(-90 12 {SIZE / 2})">{_escape(y_label)}</text></svg>'
    )


def _histogram_svg(plots: ResidualPlots) -> str:
    plot = SIZE - 2 * MARGIN
    edges, counts = plots.edges, plots.counts
    inner = counts[1:-1]
    largest = max(max(inner, default=0), 1)
    low, high = edges[0], edges[-1]
    width = plot / len(inner)
    parts = []
    for index, count in enumerate(inner):
        height = plot * count / largest
        parts.append(
            f'<rect x="{MARGIN + index * width:.1f}" y="{SIZE - MARGIN - height:.1f}" width="{max(width - 1, 1):.1f}" height="{height:.1f}" fill="#4c72b0">'
            f"<title>{edges[index]:.4g} to {edges[index + 1]:.4g}: {count}</title></rect>"
        )
    zero = MARGIN + plot * (0 - low) / (high - low)
    parts.append(f'<line x1="{zero:.1f}" y1="{MARGIN}" x2="{zero:.1f}" y2="{SIZE - MARGIN}" stroke="#dd8452" stroke-dasharray="4 3"/>')
    for value in (low, 0.0, high):
        parts.append(f'<text x="{MARGIN + plot * (value - low) / (high - low):.1f}" y="{SIZE - MARGIN + 14}" text-anchor="middle">{value:.3g}</text>')
    outside = f"; {counts[0]} below and {counts[-1]} above the axis" if counts[0] or counts[-1] else ""
    return (
        f"<figure>{_frame('histogram of errors', 'error (prediction − label)', 'labelled predictions', parts)}"
        f"<figcaption>Errors of the window's labelled predictions ({sum(counts)}{outside}); bins are a quarter of the held-out RMSE.</figcaption></figure>"
    )


def _by_prediction_svg(plots: ResidualPlots) -> str:
    plot = SIZE - 2 * MARGIN
    bins = [(index, count, mean, sd) for index, (count, mean, sd) in enumerate(plots.by_prediction) if count]
    if not bins:
        return ""
    spread = max(max(abs(mean) + sd for _, _, mean, sd in bins), 1e-12)
    slots = len(plots.by_prediction)

    def y(value: float) -> float:
        return MARGIN + plot / 2 - value / spread * plot / 2

    parts = [f'<line x1="{MARGIN}" y1="{y(0):.1f}" x2="{SIZE - MARGIN}" y2="{y(0):.1f}" stroke="#999" stroke-dasharray="4 3"/>']
    edges = plots.prediction_edges
    for index, count, mean, sd in bins:
        x = MARGIN + plot * (index + 0.5) / slots
        lower = f"{edges[index - 1]:.4g}" if index > 0 else "−∞"
        upper = f"{edges[index]:.4g}" if index < len(edges) else "∞"
        parts.append(f'<line x1="{x:.1f}" y1="{y(mean - sd):.1f}" x2="{x:.1f}" y2="{y(mean + sd):.1f}" stroke="#4c72b0"/>')
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y(mean):.1f}" r="4" fill="#4c72b0"><title>prediction {lower} to {upper}: {count} labelled, '
            f"mean error {mean:.4g}, sd {sd:.4g}</title></circle>"
        )
    parts.append(f'<text x="{MARGIN - 4}" y="{y(spread) + 4:.1f}" text-anchor="end">{spread:.3g}</text>')
    parts.append(f'<text x="{MARGIN - 4}" y="{y(-spread) + 4:.1f}" text-anchor="end">{-spread:.3g}</text>')
    return (
        f"<figure>{_frame('errors by predicted value', 'predicted value (bins of the training predictions)', 'error', parts)}"
        "<figcaption>Mean error ± 1 sd per bin of the predicted value (deciles of the training predictions); a curve away from 0 is a bias "
        "that depends on the prediction.</figcaption></figure>"
    )


def reliability_chart(bins: Sequence[ReliabilityBin], caption: str = "the positive class's probability", outcome: str = "fraction positive") -> str:
    """Inline SVG: fraction positive (or right) against mean predicted probability per bin, with the diagonal."""
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
    parts.append(f'<text x="12" y="{SIZE / 2}" text-anchor="middle" transform="rotate(-90 12 {SIZE / 2})">{_escape(outcome)}</text>')
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" role="img" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}" '
        f'font-size="11" font-family="sans-serif"><title>reliability chart</title>{"".join(parts)}</svg>'
        f"<figcaption>Reliability of {_escape(caption)} over the window's labelled predictions "
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
