"""Plots of the report: point estimates with their intervals (forest plots), error by severity,
and the cross-task aggregates.

* :func:`primary_metric_png` — per method the primary metric's mean with its 95% interval
  and, beside it, the difference from the reference with its interval (filled marker: the
  difference survives Holm's correction), a line at 0;
* :func:`mean_ce_png` — the mean corruption error per method, ordered by it (lowest first);
* :func:`severity_png` — a panel per corruption, error against severity per method;
* :func:`across_tasks_png` and :func:`profile_png` — IQM and probability of improvement
  across tasks with their intervals, and the performance profiles with bands.

Honest by construction: every interval is drawn as the table prints it (already inside the
metric's range) and the value axis is fitted to the intervals, never forced to start at 0 —
1-point differences stay visible; each value is printed once, as a tick label on the
right of its row, so labels cannot overlap.

The PNG bytes are a function of the tables alone: matplotlib's default style (not the
user's ``matplotlibrc``), fixed figure sizes and dpi, the Agg canvas without pyplot (no
global figure state, no backend switch), and no ``Software`` text chunk (which would carry
matplotlib's version). :func:`_figure` builders return the figure for tests; the ``*_png``
functions its bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from .across_tasks import AcrossTasks
from .aggregate import performance_profile
from .comparison import rng_for
from .leaderboard import Leaderboard, PairedTable
from .robustness import RobustnessTable

__all__ = ["FIGURE_DPI", "across_tasks_png", "mean_ce_png", "primary_metric_png", "profile_png", "severity_png"]

FIGURE_DPI = 100
_COLOUR = "#4c72b0"
_REFERENCE_COLOUR = "#dd8452"
# severity curves and profiles: one colour and marker per method (table order), the same in every panel
_LINE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_PANEL_COLUMNS = 5
_PANEL_SIZE = (2.3, 1.9)
_ROW_HEIGHT = 0.32


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _fitted_limits(lows: Sequence[float], highs: Sequence[float], marks: Sequence[float] = (),
                   bounds: tuple[float | None, float | None] | None = None) -> tuple[float, float]:
    """An axis range around the intervals (and ``marks``, e.g. 0 or the reference), padded by 8%,
    never past the metric's ``bounds``."""
    values = [v for v in (*lows, *highs, *marks) if v is not None and math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.08 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
    low, high = low - pad, high + pad
    if bounds is not None:
        if bounds[0] is not None:
            low = max(low, bounds[0])
        if bounds[1] is not None:
            high = min(high, bounds[1])
    return low, high


def _labelled(method: str, baseline: str | None) -> str:
    """A method's name in a legend or axis, "(baseline)" after the one every Δ is taken against."""
    return f"{method} (baseline)" if method == baseline else method


def _forest(
    axes,
    methods: Sequence[str],
    estimates: Sequence[float],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    values: Sequence[str],
    *,
    highlight: str | None = None,
    filled: Sequence[bool] | None = None,
    line_at: float | None = None,
    bounds: tuple[float | None, float | None] | None = None,
    names: bool = True,
) -> None:
    """One row per method (first at the top): a marker at the estimate and a line over its interval;
    ``values`` printed as tick labels on the right; ``highlight`` (the reference) in its own colour."""
    from matplotlib.ticker import MaxNLocator

    rows = np.arange(len(methods))[::-1]
    for y, m, est, lo, hi, fill in zip(rows, methods, estimates, lows, highs, filled or [True] * len(methods)):
        colour = _REFERENCE_COLOUR if m == highlight else _COLOUR
        if lo is not None and hi is not None:
            axes.plot([lo, hi], [y, y], color=colour, linewidth=2.0, solid_capstyle="butt")
        axes.plot([est], [y], marker="D" if m == highlight else "o", markersize=6, color=colour,
                  markerfacecolor=colour if fill else "white", markeredgewidth=1.4)
    if line_at is not None:
        axes.axvline(line_at, color="#555555", linewidth=0.8, linestyle="--", zorder=0)
    axes.set_ylim(-0.6, len(methods) - 0.4)
    labels = [_labelled(m, highlight) for m in methods]
    axes.set_yticks(rows, labels if names else [""] * len(methods))
    if not names:
        axes.tick_params(axis="y", length=0)
    right = axes.secondary_yaxis("right")
    right.set_yticks(rows, list(values), fontsize="small")
    right.tick_params(length=0)
    axes.set_xlim(*_fitted_limits(lows, highs, [*estimates, *([] if line_at is None else [line_at])], bounds))
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes.grid(axis="x", linewidth=0.4, alpha=0.6)
    axes.set_axisbelow(True)


def _column(table, name: str) -> list[float | None]:
    return [None if v != v else float(v) for v in table[name]]  # NaN -> None


def _primary_figure(board: Leaderboard, paired: PairedTable | None = None):
    import matplotlib.style

    from .statistics import format_interval

    table = board.table[board.table[f"{board.primary}_mean"].notna()]
    methods = list(table["method"])
    better = "higher" if board.goal == "max" else "lower"
    reference = paired.reference if paired is not None else None
    with matplotlib.style.context("default"):
        panels = 2 if paired is not None and paired.table is not None else 1
        figure = _new_figure((5.2 * panels + 0.6, 1.3 + _ROW_HEIGHT * len(methods)))
        grid = figure.subplots(1, panels, squeeze=False)[0]
        _forest(grid[0], methods, _column(table, f"{board.primary}_mean"), _column(table, f"{board.primary}_low"),
                _column(table, f"{board.primary}_high"), list(table[board.primary]), highlight=reference,
                bounds=board.bounds.get(board.primary))
        grid[0].set_xlabel(f"{board.primary} ({better} is better)")
        grid[0].set_title("mean over seeds, 95% interval", fontsize="medium")
        if panels == 2:
            rows = paired.table.set_index("method")
            estimates, lows, highs, labels, filled = [], [], [], [], []
            for m in methods:
                if m == reference:
                    estimates.append(0.0), lows.append(None), highs.append(None), labels.append("baseline"), filled.append(True)
                    continue
                r = rows.loc[m]
                est = None if r["delta_mean"] != r["delta_mean"] else float(r["delta_mean"])
                low = None if r["delta_low"] != r["delta_low"] else float(r["delta_low"])
                high = None if r["delta_high"] != r["delta_high"] else float(r["delta_high"])
                estimates.append(0.0 if est is None else est), lows.append(low), highs.append(high)
                labels.append(format_interval(est, low, high, signed=True))
                filled.append(bool(r["p_holm"] == r["p_holm"] and r["p_holm"] < 0.05))
            _forest(grid[1], methods, estimates, lows, highs, labels, highlight=reference, filled=filled, line_at=0.0, names=False)
            grid[1].set_xlabel(f"Δ {board.primary} vs {reference}")
            grid[1].set_title("difference, 95% interval (filled: Holm p < 0.05)", fontsize="medium")
        figure.suptitle(f"{board.task} / {board.model}", fontsize="medium")
        return figure


def primary_metric_png(board: Leaderboard, paired: PairedTable | None = None) -> bytes:
    """PNG bytes: the primary metric per method (table order) with its interval, and beside it each
    method's difference from the reference with its interval; the reference drawn in its own colour."""
    return _png(_primary_figure(board, paired))


def _mean_ce_figure(rob: RobustnessTable):
    import matplotlib.style

    table = rob.table[rob.table["corruption_error_mean"].notna()].sort_values(["corruption_error_mean", "method"], kind="stable")
    methods = list(table["method"])
    with matplotlib.style.context("default"):
        figure = _new_figure((6.4, 1.3 + _ROW_HEIGHT * len(methods)))
        axes = figure.add_subplot()
        _forest(axes, methods, _column(table, "corruption_error_mean"), _column(table, "corruption_error_low"),
                _column(table, "corruption_error_high"), list(table["mean CE"]), highlight=rob.reference, bounds=(0.0, 1.0))
        axes.set_xlabel("mean CE: top-1 error over the benchmark corruptions (lower is better)")
        axes.set_title(f"{rob.task} / {rob.model}: mean CE, 95% interval, lowest first", fontsize="medium")
        return figure


def mean_ce_png(rob: RobustnessTable) -> bytes:
    """PNG bytes: the mean CE per method with its interval, ordered by mean CE (lowest first)."""
    return _png(_mean_ce_figure(rob))


def _severity_figure(rob: RobustnessTable):
    import matplotlib.style
    from matplotlib.lines import Line2D

    corruptions = list(rob.corruptions)
    methods = rob.methods
    columns = min(_PANEL_COLUMNS, max(1, len(corruptions)))
    rows = max(1, math.ceil(len(corruptions) / columns))
    style = {
        m: {
            "color": _LINE_COLOURS[i % len(_LINE_COLOURS)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": "--" if m == rob.reference else "-",
            "linewidth": 1.2,
            "markersize": 3.5,
        }
        for i, m in enumerate(methods)
    }
    legend_rows = math.ceil(len(methods) / 4)
    size = (_PANEL_SIZE[0] * columns + 0.4, _PANEL_SIZE[1] * rows + 0.6 + 0.25 * legend_rows)
    curves = rob.curves
    errors = [float(v) for v in curves["error_mean"]]
    with matplotlib.style.context("default"):
        figure = _new_figure(size)
        grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
        for index, axes in enumerate(grid.flat):
            if index >= len(corruptions):
                axes.set_visible(False)
                continue
            corruption = corruptions[index]
            panel = curves[curves["corruption"] == corruption]
            for method in methods:
                line = panel[panel["method"] == method].sort_values("severity")
                if len(line):
                    axes.plot(list(line["severity"]), [float(v) for v in line["error_mean"]], **style[method])
            axes.set_title(corruption, fontsize="small")
            axes.tick_params(labelsize="x-small")
            axes.grid(linewidth=0.4, alpha=0.6)
            axes.set_axisbelow(True)
            if index % columns == 0:
                axes.set_ylabel("top-1 error", fontsize="small")
            if index + columns >= len(corruptions):
                axes.set_xlabel("severity", fontsize="small")
                axes.xaxis.set_tick_params(labelbottom=True)
        severities = sorted({int(s) for s in curves["severity"]}) or [1]
        grid.flat[0].set_xticks(severities)
        grid.flat[0].set_ylim(*_fitted_limits(errors, errors, bounds=(0.0, 1.0)))
        handles = [
            Line2D([], [], **style[m], label=_labelled(m, rob.reference)) for m in methods
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(4, max(1, len(methods))), fontsize="small")
        figure.suptitle(f"{rob.task} / {rob.model}: top-1 error by severity (mean over seeds)", fontsize="medium")
        return figure


def severity_png(rob: RobustnessTable) -> bytes:
    """PNG bytes: a grid of small panels, one per corruption (benchmark order, then the extras).

    In each panel x is the severity and y the top-1 error averaged over seeds, one line per
    method with the same colour and marker in every panel (table order; the reference
    dashed); all panels share the y axis, fitted to the errors inside [0, 1], and one legend
    below the grid names the methods. The figure's size depends on the numbers of corruptions
    and methods only.
    """
    return _png(_severity_figure(rob))


def _across_tasks_figure(agg: AcrossTasks):
    import matplotlib.style

    table = agg.table
    methods = list(table["method"])
    with matplotlib.style.context("default"):
        figure = _new_figure((10.6, 1.3 + _ROW_HEIGHT * len(methods)))
        left, right = figure.subplots(1, 2)
        _forest(left, methods, list(table["iqm"]), list(table["iqm_low"]), list(table["iqm_high"]), list(table["IQM"]),
                highlight=agg.reference, line_at=1.0, bounds=(0.0, None))
        left.set_xlabel(f"IQM of scores normalised by {agg.reference} (higher is better)")
        _forest(right, methods, list(table["p_improvement"]), list(table["p_improvement_low"]), list(table["p_improvement_high"]),
                list(table[f"P(> {agg.reference})"]), highlight=agg.reference, line_at=0.5, bounds=(0.0, 1.0), names=False)
        right.set_xlabel(f"P(method > {agg.reference})")
        figure.suptitle(f"across {len(agg.tasks)} tasks: 95% stratified-bootstrap intervals", fontsize="medium")
        return figure


def across_tasks_png(agg: AcrossTasks) -> bytes:
    """PNG bytes: per method the IQM of normalised scores and ``P(method > reference)``, with intervals."""
    return _png(_across_tasks_figure(agg))


def _profile_figure(agg: AcrossTasks):
    import matplotlib.style

    methods = list(agg.table["method"])
    values = np.concatenate([v for m in methods for v in agg.scores[m]])
    low, high = _fitted_limits([float(values.min())], [float(values.max())], [1.0])
    taus = np.linspace(low, high, 121)
    with matplotlib.style.context("default"):
        figure = _new_figure((6.4, 4.4 + 0.25 * math.ceil(len(methods) / 3)))
        axes = figure.add_subplot()
        for i, m in enumerate(methods):
            fraction, lo, hi = performance_profile(agg.scores[m], taus, rng=rng_for("profile", *agg.tasks, m))
            colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
            axes.plot(taus, fraction, color=colour, linewidth=1.4, linestyle="--" if m == agg.reference else "-",
                      label=_labelled(m, agg.reference))
            axes.fill_between(taus, lo, hi, color=colour, alpha=0.15, linewidth=0)
        axes.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":", zorder=0)
        axes.set_xlim(low, high)
        axes.set_ylim(0.0, 1.0)
        axes.set_xlabel(f"normalised score τ (1 = {agg.reference}'s mean on the task)")
        axes.set_ylabel("fraction of runs with score > τ")
        axes.set_title(f"performance profile over {len(agg.tasks)} tasks (95% bands)", fontsize="medium")
        axes.grid(linewidth=0.4, alpha=0.6)
        figure.legend(loc="outside lower center", ncols=min(3, len(methods)), fontsize="small")
        return figure


def profile_png(agg: AcrossTasks) -> bytes:
    """PNG bytes: the performance profile (fraction of runs above each normalised score) of every
    method with stratified-bootstrap bands; the reference dashed."""
    return _png(_profile_figure(agg))
