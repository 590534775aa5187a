"""The drift report: one self-contained HTML page per run (inline CSS, charts as inline SVG).

The page has the run's verdict (with :func:`~sml.monitoring.drift.stats.verdict_summary`: how many
features could not decide, and why) and parameters, a table of every test with drifted features
first (effect, the largest shift the data rule out, floor and the setting it came from: the
model's drift config, the deployment's settings or the built-in default), and per feature a
chart of reference against current: overlaid histograms and ECDFs for a numeric feature, bars of
category shares for a categorical feature or the label (with the missing share as its own bar).
Every name and value is HTML-escaped. Charts are drawn from fixed numbers of histogram bins, so
neither their size nor their cost beyond one pass over the values grows with the row count;
hand-written SVG keeps a 20-feature report to milliseconds, where matplotlib took a quarter of a
second per chart.

Example::

    html_text = render_drift_report(run, reference, window_summary)
"""

from __future__ import annotations

import html
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sml.monitoring.model_quality.report import render_quality_section
from sml.core.errors import SmlError
from sml.monitoring.drift.methods import drift_method
from sml.monitoring.drift.run import PREDICTION_KIND
from sml.monitoring.drift.stats import DriftVerdict, FeatureTestResult, is_main_test, verdict_summary
from sml.monitoring.summaries import NumericSummary, SummaryReference, WindowSummary, cell_positions
from sml.monitoring.store import DriftRun, TrendPoint

logger = logging.getLogger(__name__)

# Beyond this many features the page lists every test but plots only the first (drifted first).
MAX_PLOTTED_FEATURES = 60
MAX_PLOTTED_CATEGORIES = 12
HISTOGRAM_BINS = 40
ECDF_STEPS_PER_BIN = 5  # the ECDF is drawn at HISTOGRAM_BINS * ECDF_STEPS_PER_BIN + 1 points
PANEL_WIDTH, PANEL_GAP, CHART_HEIGHT = 440, 20, 230
PLOT_LEFT, PLOT_TOP, PLOT_BOTTOM = 46, 34, 200
MISSING_WIDTH = 84
CHART_WIDTH = 2 * PANEL_WIDTH + 2 * PANEL_GAP + MISSING_WIDTH
REFERENCE_COLOUR = "#4c72b0"
CURRENT_COLOUR = "#dd8452"
MISSING_BAR = "(missing)"
OTHER_BAR = "(other)"
UNSEEN_BAR = "(other unseen values)"
TREND_HEIGHT = 150
_VERDICT_COLOUR = {"DRIFT": "#c0392b", "NO_DRIFT": "#2e7d32", "INCONCLUSIVE": "#b8860b", "INSUFFICIENT_DATA": "#b8860b"}
_VERDICT_ORDER = {DriftVerdict.DRIFT: 0, DriftVerdict.INCONCLUSIVE: 1, DriftVerdict.NO_DRIFT: 2}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td.name,th.name{text-align:left}
.DRIFT{background:#fbe3e1;font-weight:600}.INCONCLUSIVE{background:#fff4d6}.NO_DRIFT{background:#e8f5e9}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;font-size:.9rem}dt{font-weight:600}
svg{max-width:100%;height:auto}figure{margin:0}figcaption{font-size:.8rem;color:#555}
td.origin{text-align:left;font-size:.75rem;max-width:13rem;overflow-wrap:break-word}.scroll{overflow-x:auto}
"""


def render_drift_report(
    run: DriftRun,
    reference: SummaryReference,
    current: WindowSummary,
    *,
    max_plotted_features: int = MAX_PLOTTED_FEATURES,
    trends: Mapping[str, Sequence[TrendPoint]] | None = None,
) -> str:
    """Render the HTML report of ``run``.

    :param reference: the reference the tests used, as grids (:mod:`sml.monitoring.summaries`).
    :param current: the window's summary against ``reference``. A numeric chart places the
        window's values counted between two reference values at their midpoint (exact at the
        reference values themselves), so bins narrower than the reference's gaps look coarser.
    :param max_plotted_features: plot at most this many features, drifted ones first.
    :param trends: per feature, the main test of earlier runs (oldest first, e.g.
        :func:`sml.monitoring.store.feature_trends`); with it, each feature also gets a trend chart of
        its effect and upper bound against the floor across those runs and this one.
    :returns: the page as a string.
    """
    order = _features_worst_first(run.results)
    by_feature: dict[str, list[FeatureTestResult]] = {}
    for result in run.results:
        by_feature.setdefault(result.feature, []).append(result)
    sections = []
    for feature in order[:max_plotted_features]:
        results = by_feature[feature]
        prediction = results[0].kind == PREDICTION_KIND
        grid = reference.prediction if prediction else reference.features.get(feature)
        summary = current.prediction if prediction else current.features.get(feature)
        main = next((result for result in results if is_main_test(result.test)), results[0])
        chart = _drawn(feature, "distribution", _chart, feature, main.test, grid, summary)
        if trends is not None:
            chart = (chart or "") + (_drawn(feature, "trend", _trend_chart, feature, trends.get(feature, ()), run, by_feature[feature]) or "")
        sections.append(_feature_section(feature, by_feature[feature], chart))
    if len(order) > max_plotted_features:
        sections.append(f"<p>{len(order) - max_plotted_features} more features are listed in the table but not plotted.</p>")
    title = f"Drift report: {run.model_name} {run.model_version}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_escape(title)} <span class=\"badge {run.status.value}\">{run.status.value}</span></h1>"
        f"{_summary(run)}{_data_quality_section(run)}<h2>Tests</h2>{_results_table(run.results, order)}"
        f"{render_quality_section(run.quality) if run.quality is not None else ''}"
        f"<h2>Features</h2>{''.join(sections)}</body></html>\n"
    )


def _drawn(feature: str, what: str, draw: Any, *args: Any) -> str | None:
    """One chart, or a line saying why it is missing: the verdicts are computed before any chart is
    drawn, and a chart that fails on data nobody foresaw must not cost the run, its report or its
    alert (the error is logged with its traceback)."""
    try:
        return draw(*args)
    except Exception as exc:  # noqa: BLE001 - logged and shown on the page, the run goes on
        logger.exception("drift report: the %s chart of %r could not be drawn", what, feature)
        return f"<p class=\"chart-error\">The {what} chart could not be drawn: {_escape(type(exc).__name__)}: {_escape(exc)}.</p>"


def _features_worst_first(results: Sequence[FeatureTestResult]) -> list[str]:
    rank: dict[str, tuple[int, float]] = {}
    for result in results:
        key = (_VERDICT_ORDER[result.verdict], result.p_adjusted)
        rank[result.feature] = min(rank.get(result.feature, key), key)
    return sorted(rank, key=lambda feature: rank[feature])


def _summary(run: DriftRun) -> str:
    items = {
        "verdict": verdict_summary(run.results),
        "model": f"{run.model_name} {run.model_version}",
        "window": f"{run.window.start.isoformat()} to {run.window.end.isoformat()}",
        "reference": f"{run.reference_kind} ({run.reference_rows} rows)"
        + (f", {run.reference_window.start.isoformat()} to {run.reference_window.end.isoformat()}" if run.reference_window else ""),
        "current rows": str(run.current_rows),
        **({"other versions": note} if (note := run.versions_note()) else {}),
        "features drifted": f"{len(run.drifted_features)} of {run.features_tested}",
        **({run.prediction_tested: "drifted" if run.label_drifted else "did not drift"} if run.prediction_tested else {"prediction": "not tested"}),
        "data quality": run.data_quality_status if run.data_quality else "not checked",
        "run id": run.run_id,
        "created": run.created_at.isoformat(),
        **({"model drift config": str(run.parameters["model_drift_config"].get("source", ""))} if "model_drift_config" in run.parameters else {}),
        # Per-test floors are in the table of tests, where each sits beside its test.
        **{f"parameter {name}": str(value) for name, value in sorted(run.parameters.items()) if name not in _SHOWN_ELSEWHERE},
    }
    rows = "".join(f"<dt>{_escape(name)}</dt><dd>{_escape(value)}</dd>" for name, value in items.items())
    return f"<dl>{rows}</dl>"


_SHOWN_ELSEWHERE = ("effective_floors", "model_drift_config")


def _data_quality_section(run: DriftRun) -> str:
    """The violated checks, worst first, and how many passed; values are shares of the window's values."""
    if not run.data_quality:
        return ""
    checks = sorted((check for check in run.data_quality if check.violated), key=lambda check: -check.value)
    passed = len(run.data_quality) - len(checks)
    header = "<tr><th class=\"name\">feature</th><th class=\"name\">check</th><th>share</th><th>threshold</th><th>count</th><th>of</th><th class=\"name\">status</th></tr>"
    rows = "".join(
        f"<tr class=\"{'DRIFT' if check.violated else 'NO_DRIFT'}\"><td class=\"name\">{_escape(check.feature)}</td>"
        f"<td class=\"name\">{_escape(check.check)}</td><td>{check.value:.2%}</td><td>{check.threshold:.2%}</td>"
        f"<td>{check.count}</td><td>{check.n}</td><td class=\"name\">{'violated' if check.violated else 'ok'}</td></tr>"
        for check in checks
    )
    note = (
        "<p>Against the training profile: values outside the training range, categories training never saw, "
        "missing values beyond the training rate, and values predict refused (HTTP 4xx naming the feature; share of the feature's "
        f"values refused or served). {passed} of {len(run.data_quality)} checks passed.</p>"
    )
    if run.refused_requests:
        reasons = ", ".join(f"{_escape(reason)} {count}" for reason, count in run.refused_requests.items())
        note += f"<p class=\"requests-refused\">Requests refused for a problem that names no feature: {sum(run.refused_requests.values())} ({reasons}).</p>"
    table = f"<table>{header}{rows}</table>" if checks else ""
    return f"<h2>Data quality <span class=\"badge {'DRIFT' if run.data_quality_status == 'VIOLATIONS' else 'NO_DRIFT'}\">{run.data_quality_status}</span></h2>{note}{table}"


def _results_table(results: Sequence[FeatureTestResult], order: Sequence[str]) -> str:
    position = {feature: index for index, feature in enumerate(order)}
    ordered = sorted(results, key=lambda result: (position[result.feature], _VERDICT_ORDER[result.verdict]))
    header = (
        "<tr><th class=\"name\">feature</th><th class=\"name\">test</th><th>statistic</th><th>p</th><th>adjusted p</th>"
        "<th>effect</th><th title=\"one-sided 95% upper bound: the data rule out shifts this large\">rules out ≥</th><th>floor</th><th class=\"name\">floor from</th><th>n ref</th><th>n cur</th><th class=\"name\">verdict</th></tr>"
    )
    return f"<div class=\"scroll\"><table>{header}{''.join(_result_row(result) for result in ordered)}</table></div>"


def _result_row(result: FeatureTestResult) -> str:
    reason = result.detail.get("reason")
    verdict = result.verdict.value + (f" ({reason})" if reason else "")
    cells = [
        f"<td class=\"name\">{_escape(result.feature)}</td>",
        f"<td class=\"name\">{_escape(result.test)}</td>",
        *(
            f"<td>{_number(value)}</td>"
            for value in (result.statistic, result.p_value, result.p_adjusted, result.effect_size, result.effect_upper, result.effect_floor)
        ),
        # <wbr> lets the long setting names wrap at their own joints, not mid-word.
        f"<td class=\"origin\">{_escape(floor_origin(result)).replace('_', '_<wbr>').replace('.', '.<wbr>')}</td>",
        f"<td>{result.n_reference}</td><td>{result.n_current}</td>",
        f"<td class=\"name\">{_escape(verdict)}</td>",
    ]
    return f"<tr class=\"{result.verdict.value}\">{''.join(cells)}</tr>"


def floor_origin(result: FeatureTestResult) -> str:
    """Where a test's floor came from, e.g. ``model: features.mean_texture.floor = 0.1sd`` or
    ``default: SML_DRIFT_MIN_KS_D``; empty for results recorded without it."""
    source, setting = result.detail.get("floor_source"), result.detail.get("floor_setting")
    if source is None:
        return ""
    given = result.detail.get("floor_given")
    return f"{source}: {setting}" + (f" = {given}" if source != "default" and given is not None else "")


def _feature_section(feature: str, results: Sequence[FeatureTestResult], chart: str | None) -> str:
    worst = min(results, key=lambda result: _VERDICT_ORDER[result.verdict]).verdict.value
    figure = chart or "<p>No values to plot.</p>"
    return f"<section><h3>{_escape(feature)} <span class=\"badge {worst}\">{worst}</span></h3>{figure}</section>"


def _chart(feature: str, test: str, reference: Any, current: Any) -> str | None:
    if reference is None or current is None:
        return None
    registered = _method(test)
    drawn = registered.chart(feature, reference, current) if registered is not None else None
    if drawn is not None:
        return drawn
    if isinstance(current, NumericSummary):
        filled = current.cells > 0
        current_values, current_weights = cell_positions(reference, current)[filled], current.cells[filled]
        missing_rates = (int(reference.missing) / max(int(reference.missing) + reference.n_present, 1), current.missing / max(current.n_rows, 1))
        return _numeric_chart(feature, (reference.values, reference.counts), (current_values, current_weights), missing_rates)
    current_counts = current.all_counts()
    hidden_unseen = current.unseen - sum(current.unseen_top.values())
    if hidden_unseen:
        current_counts[UNSEEN_BAR] += hidden_unseen
    return _categorical_chart(feature, Counter(reference.counts), int(reference.missing), current_counts, current.missing)


def _method(test: str) -> Any:
    try:
        return drift_method(test)
    except SmlError:  # a stored run's test no longer registered: drawn by its column's kind
        return None


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, shares: Sequence[float]) -> list[float]:
    """The smallest values whose cumulative count reaches each share (no interpolation, as ``inverted_cdf``)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return [float(values[order][min(int(np.searchsorted(cumulative, share * cumulative[-1], side="left")), values.size - 1)]) for share in shares]


def _plot_range(*samples: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """The range holding the central 99% of each (values, counts) sample's finite values, widened
    around its centre when it is too narrow for the chart's bins to be told apart in floating
    point (one constant value, or values a few ulps apart): such a sample is drawn as one spike.
    Never wider than the finite doubles."""
    edges = []
    for values, weights in samples:
        finite = np.isfinite(values)
        if finite.any():
            # No interpolation between order statistics: (b - a) overflows for values near the float limits.
            edges += _weighted_quantiles(values[finite], weights[finite], [0.005, 0.995])
    if not edges:
        return -0.5, 0.5
    low, high = float(min(edges)), float(max(edges))
    if _bin_edges(low, high).size:
        return low, high
    centre = low / 2 + high / 2
    half_width = max(0.5, abs(centre) * 0.05)
    return max(centre - half_width, -_FLOAT_MAX), min(centre + half_width, _FLOAT_MAX)


_FLOAT_MAX = float(np.finfo(float).max)


def _bin_edges(low: float, high: float) -> np.ndarray:
    """The ECDF's ``HISTOGRAM_BINS * ECDF_STEPS_PER_BIN + 1`` edges from ``low`` to ``high``, or an
    empty array when they are not finite and strictly increasing. Interpolated as
    ``low * (1 - t) + high * t`` so that ``high - low`` need not be a finite double."""
    steps = np.linspace(0.0, 1.0, HISTOGRAM_BINS * ECDF_STEPS_PER_BIN + 1)
    edges = low * (1 - steps) + high * steps
    edges[0], edges[-1] = low, high
    if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges / 2) > 0)):
        return np.empty(0)
    return edges


def _numeric_chart(
    feature: str, reference: tuple[np.ndarray, np.ndarray], current: tuple[np.ndarray, np.ndarray], missing_rates: tuple[float, float]
) -> str | None:
    """Histograms and ECDFs of two samples given as (values, counts), with their missing shares."""
    if not reference[0].size and not current[0].size:
        return None
    low, high = _plot_range(reference, current)
    fine_edges = _bin_edges(low, high)
    edges = fine_edges[::ECDF_STEPS_PER_BIN]
    # Bin widths from halves, so that a width near the float limit stays finite.
    widths = np.diff(edges / 2) * 2
    densities, cdfs = {}, {}
    sizes = {}
    for label, (values, weights) in (("reference", reference), ("current", current)):
        sizes[label] = total = int(weights.sum())
        if values.size:
            # One pass over the values: the histogram's bins are runs of the ECDF's finer ones.
            fine_counts = np.histogram(values, bins=fine_edges, weights=weights)[0]
            # Divided by all values, not those in range, so the tails beyond the plot keep their weight.
            densities[label] = fine_counts.reshape(HISTOGRAM_BINS, ECDF_STEPS_PER_BIN).sum(axis=1) / total / widths
            below = weights[values < low].sum()
            cdfs[label] = (below + np.concatenate(([0], np.cumsum(fine_counts)))) / total
    top = max(float(density.max()) for density in densities.values()) or 1.0
    histogram = _Panel("histogram (density)", (low, high), (0.0, top * 1.05))
    ecdf = _Panel("ECDF", (low, high), (0.0, 1.0))
    for label, colour in (("reference", REFERENCE_COLOUR), ("current", CURRENT_COLOUR)):
        if label in densities:
            steps_x = np.repeat(edges, 2)[1:-1]
            steps_y = np.repeat(densities[label], 2)
            histogram.line(steps_x, steps_y, colour, filled=label == "reference")
            ecdf.line(fine_edges, cdfs[label], colour)
    reference_rate, current_rate = missing_rates
    caption = (
        f"values: reference n={sizes['reference']}{_constant(reference[0])}, current n={sizes['current']}{_constant(current[0])}; "
        f"missing: reference {reference_rate:.1%}, current {current_rate:.1%}"
    )
    return _svg(feature, [histogram.render(0), ecdf.render(PANEL_WIDTH + PANEL_GAP), _missing_bars(missing_rates)], caption)


def _constant(values: np.ndarray) -> str:
    """`` (every value is 3.5)`` for a sample of one value, which the chart draws as a spike."""
    if values.size and values.min() == values.max():
        return f" (every value is {values.min():.6g})"
    return ""


def _missing_bars(rates: tuple[float, float]) -> str:
    """Two bars on a 0–100% scale, right of the panels: the missing share of reference and current."""
    left = 2 * PANEL_WIDTH + 2 * PANEL_GAP
    height = PLOT_BOTTOM - PLOT_TOP
    parts = [f'<text x="{left + MISSING_WIDTH / 2:.0f}" y="{PLOT_TOP - 6}" text-anchor="middle">missing</text>']
    for index, (rate, colour) in enumerate(zip(rates, (REFERENCE_COLOUR, CURRENT_COLOUR))):
        x = left + 12 + index * 36
        parts.append(f'<rect x="{x}" y="{PLOT_BOTTOM - rate * height:.1f}" width="26" height="{rate * height:.1f}" fill="{colour}"/>')
        parts.append(f'<text x="{x + 13}" y="{PLOT_BOTTOM + 16}" text-anchor="middle">{rate:.0%}</text>')
    parts.append(f'<line x1="{left + 6}" x2="{left + MISSING_WIDTH - 6}" y1="{PLOT_BOTTOM}" y2="{PLOT_BOTTOM}" stroke="#999"/>')
    return "".join(parts)


def _categorical_chart(
    feature: str, reference_counts: Counter[str], reference_missing: int, current_counts: Counter[str], current_missing: int
) -> str | None:
    reference_total = sum(reference_counts.values()) + reference_missing
    current_total = sum(current_counts.values()) + current_missing
    if not reference_total and not current_total:
        return None
    shares = Counter({category: count / max(reference_total, 1) for category, count in reference_counts.items()})
    shares.update({category: count / max(current_total, 1) for category, count in current_counts.items()})
    shown = [category for category, _ in shares.most_common(MAX_PLOTTED_CATEGORIES)]
    bars = [(category, reference_counts.get(category, 0), current_counts.get(category, 0)) for category in shown]
    if len(shares) > len(shown):
        hidden = set(shares).difference(shown)
        bars.append((OTHER_BAR, sum(reference_counts[c] for c in hidden), sum(current_counts[c] for c in hidden)))
    if reference_missing or current_missing:
        bars.append((MISSING_BAR, reference_missing, current_missing))
    row_height, label_width, bar_width = 26, 170, CHART_WIDTH - 170 - 60
    height = 30 + row_height * len(bars)
    parts = []
    for index, (category, in_reference, in_current) in enumerate(bars):
        y = 24 + index * row_height
        parts.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">{_escape(_short(category))}</text>')
        for offset, count, total, colour in ((0, in_reference, reference_total, REFERENCE_COLOUR), (11, in_current, current_total, CURRENT_COLOUR)):
            share = count / max(total, 1)
            parts.append(f'<rect x="{label_width}" y="{y + offset}" width="{share * bar_width:.1f}" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{label_width + share * bar_width + 4:.1f}" y="{y + offset + 9}">{share:.1%}</text>')
    legend = f"reference n={reference_total}, current n={current_total}; share of rows per category"
    return _svg(feature, parts, legend, height=height)


def _trend_chart(feature: str, past: Sequence[TrendPoint], run: DriftRun, results: Sequence[FeatureTestResult]) -> str:
    """Effect (dot, coloured by verdict) and upper bound (whisker) of the feature's main test per
    run, oldest left, this run last; the floor as a dashed line."""
    main = next((result for result in results if is_main_test(result.test)), None)
    if main is None:
        return ""
    points = [*past, TrendPoint(run.window.end, main.effect_size, main.effect_upper, main.effect_floor, main.verdict.value)]
    tops = [value for point in points for value in (point.effect_size, point.effect_upper, point.effect_floor) if value is not None]
    top = max(max(tops, default=0.0) * 1.1, 0.05)
    left, right, plot_top, plot_bottom = PLOT_LEFT, CHART_WIDTH - 20, 24, TREND_HEIGHT - 30
    step = (right - left) / max(len(points), 2)

    def y(value: float) -> float:
        return plot_bottom - value / top * (plot_bottom - plot_top)

    parts = [f'<rect x="{left}" y="{plot_top}" width="{right - left}" height="{plot_bottom - plot_top}" fill="none" stroke="#999"/>',
             f'<text x="{left}" y="14">effect of the {_escape(main.test)} test per weekly run (whisker: upper bound; dashed: floor)</text>']
    for value in _nice_ticks(0.0, top, 3):
        parts.append(f'<text x="{left - 4}" y="{y(float(value)) + 4:.1f}" text-anchor="end">{_number(float(value))}</text>')
    floors = []
    for index, point in enumerate(points):
        x = left + step * (index + 0.5)
        if point.effect_floor is not None:
            floors.append(f"{x - step / 2:.1f},{y(point.effect_floor):.1f} {x + step / 2:.1f},{y(point.effect_floor):.1f}")
        if point.effect_upper is not None and point.effect_size is not None:
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(point.effect_size):.1f}" y2="{y(point.effect_upper):.1f}" stroke="#777"/>')
        if point.effect_size is not None:
            colour = _VERDICT_COLOUR.get(point.verdict, "#555")
            parts.append(f'<circle cx="{x:.1f}" cy="{y(point.effect_size):.1f}" r="4" fill="{colour}"><title>{_escape(point.verdict)}</title></circle>')
        parts.append(f'<text x="{x:.1f}" y="{plot_bottom + 14}" text-anchor="middle">{point.window_end:%m-%d}</text>')
    if floors:
        parts.append(f'<polyline points="{" ".join(floors)}" fill="none" stroke="#c0392b" stroke-dasharray="4 3"/>')
    caption = f"{len(points)} run(s), window ends (UTC) {points[0].window_end:%Y-%m-%d} to {points[-1].window_end:%Y-%m-%d}"
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" role="img" width="{CHART_WIDTH}" height="{TREND_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {TREND_HEIGHT}" font-size="11" font-family="sans-serif"><title>trend of {_escape(feature)}</title>'
        f'{"".join(parts)}</svg><figcaption>{_escape(caption)}</figcaption></figure>'
    )


class _Panel:
    """One x/y plot area of a chart: axes, a few ticks and polylines, in SVG user units."""

    def __init__(self, title: str, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.title, self.x_range, self.y_range = title, x_range, y_range
        self.lines: list[str] = []

    def line(self, xs: np.ndarray, ys: np.ndarray, colour: str, *, filled: bool = False) -> None:
        points = " ".join(map("{:.1f},{:.1f}".format, self._x(xs).tolist(), self._y(ys).tolist()))
        if filled:
            baseline = self._y(np.array([self.y_range[0]]))[0]
            first, last = self._x(xs[:1])[0], self._x(xs[-1:])[0]
            points = f"{first:.1f},{baseline:.1f} {points} {last:.1f},{baseline:.1f}"
            self.lines.append(f'<polygon points="{points}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>')
        else:
            self.lines.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')

    def render(self, left: float) -> str:
        x_ticks = "".join(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PLOT_BOTTOM}" y2="{PLOT_BOTTOM + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{PLOT_BOTTOM + 16}" text-anchor="middle">{_number(value)}</text>'
            for value, x in zip(*self._ticks(self.x_range, self._x))
        )
        y_ticks = "".join(
            f'<text x="{PLOT_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_number(value)}</text>'
            for value, y in zip(*self._ticks(self.y_range, self._y))
        )
        frame = f'<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{PANEL_WIDTH - PLOT_LEFT - 10}" height="{PLOT_BOTTOM - PLOT_TOP}" fill="none" stroke="#999"/>'
        title = f'<text x="{PANEL_WIDTH / 2:.0f}" y="{PLOT_TOP - 6}" text-anchor="middle">{_escape(self.title)}</text>'
        return f'<g transform="translate({left:.0f},0)">{title}{"".join(self.lines)}{frame}{x_ticks}{y_ticks}</g>'

    def _x(self, values: np.ndarray) -> np.ndarray:
        return PLOT_LEFT + _fraction(values, self.x_range) * (PANEL_WIDTH - PLOT_LEFT - 10)

    def _y(self, values: np.ndarray) -> np.ndarray:
        return PLOT_BOTTOM - _fraction(values, self.y_range) * (PLOT_BOTTOM - PLOT_TOP)

    @staticmethod
    def _ticks(value_range: tuple[float, float], to_position: Any) -> tuple[list[float], list[float]]:
        low, high = value_range
        values = [float(value) for value in _nice_ticks(low, high)]
        return values, list(to_position(np.array(values)))


def _fraction(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Where ``values`` lie in ``value_range`` (0 at its low end, 1 at its high end), computed on
    halves so that neither ``high - low`` nor ``value - low`` overflows near the float limits."""
    low, high = value_range
    span = high / 2 - low / 2
    return (np.asarray(values, dtype=float) / 2 - low / 2) / (span or 1.0)


def _nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside ``[low, high]``; just the
    two ends where no such step is a usable double (ranges at the float limits, or too narrow)."""
    raw_step = (high / 2 - low / 2) / count * 2
    if not (math.isfinite(raw_step) and raw_step > 0):
        return np.array([low, high] if high > low else [low])
    magnitude = 10.0 ** math.floor(math.log10(raw_step))
    step = next((factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw_step), math.inf)
    if not (math.isfinite(step) and step > 0):
        return np.array([low, high])
    first = math.ceil(low / step) * step
    # How many steps fit, counted on halves so that nothing overflows near the float limits.
    fitting = (high / 2 - first / 2) / (step / 2)
    if not (math.isfinite(first) and math.isfinite(fitting) and 0 <= fitting <= 4 * count):
        return np.array([low, high])
    return (first / 2 + step / 2 * np.arange(math.floor(fitting + 1e-9) + 1)) * 2


def _svg(feature: str, parts: Sequence[str], caption: str, *, height: int = CHART_HEIGHT) -> str:
    width = CHART_WIDTH
    legend = (
        f'<rect x="{width - 190}" y="2" width="10" height="10" fill="{REFERENCE_COLOUR}"/><text x="{width - 176}" y="11">reference</text>'
        f'<rect x="{width - 100}" y="2" width="10" height="10" fill="{CURRENT_COLOUR}"/><text x="{width - 86}" y="11">current</text>'
    )
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-size="11" font-family="sans-serif"><title>reference and current distributions of {_escape(feature)}</title>'
        f'{legend}{"".join(parts)}</svg><figcaption>{_escape(caption)}</figcaption></figure>'
    )


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)
