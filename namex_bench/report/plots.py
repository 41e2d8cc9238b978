"""Bar charts of a leaderboard: the primary metric's mean per method with 95% CI error bars.

The PNG bytes are a function of the leaderboard alone: matplotlib's default style (not
the user's ``matplotlibrc``), a fixed figure size and dpi, the Agg canvas without
pyplot (no global figure state, no backend switch), and no ``Software`` text chunk
(which would carry matplotlib's version).
"""

from __future__ import annotations

import io

from .leaderboard import Leaderboard

__all__ = ["FIGURE_DPI", "FIGURE_SIZE", "primary_metric_png"]

FIGURE_SIZE = (6.4, 4.0)
FIGURE_DPI = 100
_COLOUR = "#4c72b0"
_REFERENCE_COLOUR = "#dd8452"


def primary_metric_png(board: Leaderboard, reference: str | None = None) -> bytes:
    """PNG bytes: one bar per method (rank order) at the primary metric's mean, 95% CI as error bars.

    Bars start at zero (a cut axis would exaggerate differences; the error bars show
    them). The ``reference`` method, when it is on the board, is drawn in another colour
    and hatched. Methods without a value of the primary metric are left out; a method with
    one seed has no error bar. Each bar is labelled with its ``mean ± ci`` as in the tables.
    """
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    mean_column, ci_column = f"{board.primary}_mean", f"{board.primary}_ci95"
    table = board.table[board.table[mean_column].notna()]
    methods = list(table["method"])
    means = [float(v) for v in table[mean_column]]
    errors = [0.0 if v != v else float(v) for v in table[ci_column]]  # NaN (one seed): no bar

    with matplotlib.style.context("default"):
        figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        is_reference = [m == reference for m in methods]
        bars = axes.bar(
            range(len(methods)),
            means,
            yerr=errors,
            capsize=4,
            color=[_REFERENCE_COLOUR if r else _COLOUR for r in is_reference],
            edgecolor="black",
            linewidth=0.6,
            error_kw={"elinewidth": 1.0, "ecolor": "black"},
        )
        label_box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
        axes.bar_label(bars, labels=list(table[board.primary]), label_type="center", fontsize="small", bbox=label_box)
        for patch, ref in zip(axes.patches, is_reference):
            if ref:
                patch.set_hatch("//")
        tilt = len(methods) > 4
        axes.set_xticks(range(len(methods)), methods, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        better = "higher" if board.goal == "max" else "lower"
        axes.set_ylabel(f"{board.primary} ({better} is better)")
        axes.set_title(f"{board.task} / {board.model}: mean ± 95% CI over seeds")
        if any(is_reference):
            marker = Patch(facecolor=_REFERENCE_COLOUR, edgecolor="black", hatch="//", label=f"reference: {reference}")
            figure.legend(handles=[marker], loc="outside upper right", fontsize="small")
        axes.grid(axis="y", linewidth=0.4, alpha=0.6)
        axes.set_axisbelow(True)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()
