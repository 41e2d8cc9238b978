"""Bar charts of a leaderboard: the primary metric's mean per method with 95% CI error bars;
for corruption tasks, the mean CE per method and the error by severity per corruption.

The PNG bytes are a function of the leaderboard (robustness table) alone: matplotlib's default style (not
the user's ``matplotlibrc``), a fixed figure size and dpi, the Agg canvas without
pyplot (no global figure state, no backend switch), and no ``Software`` text chunk
(which would carry matplotlib's version).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from .leaderboard import Leaderboard
from .robustness import RobustnessTable

__all__ = ["FIGURE_DPI", "FIGURE_SIZE", "mean_ce_png", "primary_metric_png", "severity_png"]

FIGURE_SIZE = (6.4, 4.0)
FIGURE_DPI = 100
_COLOUR = "#4c72b0"
_REFERENCE_COLOUR = "#dd8452"
# severity curves: one colour and marker per method (rank order), the same in every panel
_LINE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_PANEL_COLUMNS = 5
_PANEL_SIZE = (2.3, 1.9)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _bar_png(
    methods: Sequence[str],
    means: Sequence[float],
    errors: Sequence[float],
    labels: Sequence[str],
    *,
    ylabel: str,
    title: str,
    reference: str | None,
) -> bytes:
    """One bar per method at ``means`` with ``errors`` as error bars, each labelled; the reference hatched."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    methods = list(methods)
    with matplotlib.style.context("default"):
        figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        is_reference = [m == reference for m in methods]
        bars = axes.bar(
            range(len(methods)),
            list(means),
            yerr=list(errors),
            capsize=4,
            color=[_REFERENCE_COLOUR if r else _COLOUR for r in is_reference],
            edgecolor="black",
            linewidth=0.6,
            error_kw={"elinewidth": 1.0, "ecolor": "black"},
        )
        label_box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
        axes.bar_label(bars, labels=list(labels), label_type="center", fontsize="small", bbox=label_box)
        for patch, ref in zip(axes.patches, is_reference):
            if ref:
                patch.set_hatch("//")
        tilt = len(methods) > 4
        axes.set_xticks(range(len(methods)), methods, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        if any(is_reference):
            marker = Patch(facecolor=_REFERENCE_COLOUR, edgecolor="black", hatch="//", label=f"reference: {reference}")
            figure.legend(handles=[marker], loc="outside upper right", fontsize="small")
        axes.grid(axis="y", linewidth=0.4, alpha=0.6)
        axes.set_axisbelow(True)
        return _png(figure)


def _means_and_errors(table, key: str, title: str) -> tuple[list[str], list[float], list[float], list[str]]:
    """Methods, means, CI half-widths (0 for one seed) and ``mean ± ci`` labels of the rows with a mean."""
    table = table[table[f"{key}_mean"].notna()]
    errors = [0.0 if v != v else float(v) for v in table[f"{key}_ci95"]]  # NaN (one seed): no bar
    return list(table["method"]), [float(v) for v in table[f"{key}_mean"]], errors, list(table[title])


def primary_metric_png(board: Leaderboard, reference: str | None = None) -> bytes:
    """PNG bytes: one bar per method (rank order) at the primary metric's mean, 95% CI as error bars.

    Bars start at zero (a cut axis would exaggerate differences; the error bars show
    them). The ``reference`` method, when it is on the board, is drawn in another colour
    and hatched. Methods without a value of the primary metric are left out; a method with
    one seed has no error bar. Each bar is labelled with its ``mean ± ci`` as in the tables.
    """
    methods, means, errors, labels = _means_and_errors(board.table, board.primary, board.primary)
    better = "higher" if board.goal == "max" else "lower"
    return _bar_png(
        methods,
        means,
        errors,
        labels,
        ylabel=f"{board.primary} ({better} is better)",
        title=f"{board.task} / {board.model}: mean ± 95% CI over seeds",
        reference=reference,
    )


def mean_ce_png(rob: RobustnessTable) -> bytes:
    """PNG bytes: the mean CE (mean top-1 error over the benchmark corruptions' cells) per method,
    rank order, 95% CI as error bars; drawn like :func:`primary_metric_png`, the reference hatched."""
    methods, means, errors, labels = _means_and_errors(rob.table, "corruption_error", "mean CE")
    return _bar_png(
        methods,
        means,
        errors,
        labels,
        ylabel="mean CE: top-1 error (lower is better)",
        title=f"{rob.task} / {rob.model}: mean CE ± 95% CI over seeds",
        reference=rob.reference,
    )


def severity_png(rob: RobustnessTable) -> bytes:
    """PNG bytes: a grid of small panels, one per corruption (benchmark order, then the extras).

    In each panel x is the severity and y the top-1 error averaged over seeds, one line per
    method with the same colour and marker in every panel (rank order; the reference
    dashed); all panels share the y axis, and one legend below the grid names the methods.
    The figure's size depends on the number of corruptions only.
    """
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
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
    with matplotlib.style.context("default"):
        figure = Figure(figsize=size, dpi=FIGURE_DPI, layout="constrained")
        FigureCanvasAgg(figure)
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
        handles = [
            Line2D([], [], **style[m], label=f"{m} (reference)" if m == rob.reference else m) for m in methods
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(4, max(1, len(methods))), fontsize="small")
        figure.suptitle(f"{rob.task} / {rob.model}: top-1 error by severity (mean over seeds)", fontsize="medium")
        return _png(figure)
