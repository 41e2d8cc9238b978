"""Score against experts kept, per compression method: the report's view of a compression task.

For the records of a ``compression`` task on one model, :func:`compression_points` gives one
point per compressor and budget — experts kept per MoE block (the mean over blocks, from the
record's ``compression`` cells) against the primary metric (mean ± 95% CI over seeds) — and
the uncompressed model's score; :func:`compression_png` draws them, a line per method and the
uncompressed model as a dashed horizontal line. A pure function of the records, like the rest
of the report (same bytes for the same records: see ``plots.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .leaderboard import ok_records, task_model
from .plots import _LINE_COLOURS, _MARKERS, FIGURE_DPI, _png
from .render import file_stem
from .statistics import summarise

#: The plot's size in inches (matplotlib's default aspect).
FIGURE_SIZE = (6.4, 4.0)

__all__ = ["compression_markdown", "compression_png", "compression_points", "is_compression"]

UNCOMPRESSED = "uncompressed"


def _group(records: Iterable[Mapping[str, Any]], task: str, model: str) -> list[Mapping[str, Any]]:
    return [r for r in ok_records(records) if task_model(r) == (task, model) and r["config"]["task"].get("type") == "compression"]


def is_compression(records: Iterable[Mapping[str, Any]], task: str, model: str) -> bool:
    """Whether ``task`` on ``model`` is a compression task with successful runs."""
    return bool(_group(records, task, model))


def compression_points(records: Iterable[Mapping[str, Any]], task: str, model: str) -> tuple[str, dict[str, list[tuple[float, float, float]]]]:
    """``(primary metric, {method: [(experts kept, mean, ci95), …] sorted by experts kept})``;
    the method ``uncompressed`` is the model as it is."""
    group = _group(records, task, model)
    primary = group[0]["primary"] if group else ""
    values: dict[tuple[str, float], list[float]] = {}
    for r in group:
        kept = [layer["experts_after"] for layer in r["cells"].get("compression", [])]
        value = (r.get("metrics") or {}).get(primary)
        if kept and isinstance(value, (int, float)):
            values.setdefault((r["config"]["method"]["name"], sum(kept) / len(kept)), []).append(float(value))
    points: dict[str, list[tuple[float, float, float]]] = {}
    for (method, kept), vals in sorted(values.items()):
        s = summarise(vals)
        ci = s.ci95 if s.ci95 is not None and math.isfinite(s.ci95) else 0.0  # one seed: no interval
        points.setdefault(method, []).append((kept, s.mean, ci))
    return primary, points


def compression_png(records: Iterable[Mapping[str, Any]], task: str, model: str) -> bytes | None:
    """The plot of :func:`compression_points` (``None`` when there is nothing to plot)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    primary, points = compression_points(records, task, model)
    if not points:
        return None
    with matplotlib.style.context("default"):
        figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        methods = [m for m in points if m != UNCOMPRESSED]
        for i, method in enumerate(methods):
            kept, means, cis = zip(*points[method])
            axes.errorbar(kept, means, yerr=cis, label=method, color=_LINE_COLOURS[i % len(_LINE_COLOURS)],
                          marker=_MARKERS[i % len(_MARKERS)], capsize=3, linewidth=1.2)
        for kept, mean, _ in points.get(UNCOMPRESSED, []):
            axes.axhline(mean, color="black", linestyle="--", linewidth=1.0, label=f"{UNCOMPRESSED} ({kept:g} experts)")
        axes.set_xlabel("experts kept per MoE block")
        axes.set_ylabel(primary)
        axes.set_title(f"{task} / {model}")
        axes.legend(fontsize="small")
        return _png(figure)


def compression_markdown(records: Iterable[Mapping[str, Any]], task: str, model: str, plots_dir: str | None) -> str:
    """The plot's link for a leaderboard section ("" for other tasks or without plots)."""
    if plots_dir is None or not is_compression(records, task, model):
        return ""
    return f"![score against experts kept on {task} / {model}]({plots_dir}/{file_stem(task, model)}__compression.png)\n"
