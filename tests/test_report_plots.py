"""Every plot kind renders without a warning, its labels do not overlap, its intervals stay inside
the metric's range and the axis is fitted to the data; the mCE plot is ordered by mCE."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from namex_bench.report.across_tasks import across_tasks
from namex_bench.report.leaderboard import sections
from namex_bench.report.plots import (
    _across_tasks_figure,
    _mean_ce_figure,
    _primary_figure,
    _profile_figure,
    _severity_figure,
    across_tasks_png,
    mean_ce_png,
    primary_metric_png,
    profile_png,
    severity_png,
)
from namex_bench.report.robustness import robustness_table
from namex_bench.runner.records import run_key

METHODS = {"smear": 0.0, "camex": 0.004, "namex": 0.006, "namex_mom_with_a_long_label": -0.01}
SEEDS, EXAMPLES = 3, 400


def records_and_arrays():
    """Two tasks (accuracy near 1, so a symmetric interval would pass 1; perplexity), four methods,
    three seeds, per-example data; the first task also has corruption cells."""
    rng = np.random.default_rng(0)
    records, arrays = [], {}
    q = rng.uniform(0.97, 1.0, EXAMPLES)
    for method, delta in METHODS.items():
        for seed in range(SEEDS):
            correct = (rng.uniform(size=EXAMPLES) < np.clip(q + delta, 0, 1)).astype(np.uint8)
            nll = rng.normal(3.0 - 10 * delta, 0.3, 64) * 16
            for task, metrics, spec, sets in (
                ("acc_task", {"top1": float(correct.mean())}, {"top1": {"sets": ["test"], "score": "correct", "link": "identity"}},
                 {"test": {"id": np.arange(EXAMPLES), "correct": correct}}),
                ("lm_task", {"ppl": float(np.exp(nll.sum() / (16 * 64)))},
                 {"ppl": {"sets": ["w"], "score": "nll", "weight": "tokens", "link": "exp"}},
                 {"w": {"id": np.arange(64), "nll": nll, "tokens": np.full(64, 16)}}),
            ):
                config = {"method": {"label": method, "name": method}, "model": {"name": "m"}, "task": {"name": task}, "seed": seed}
                primary = next(iter(metrics))
                record = {
                    "key": run_key(config), "suite": "s", "name": f"{method}/{task}/{seed}", "status": "ok", "config": config,
                    "metrics": metrics, "goals": {"top1": "max", "ppl": "min"}, "primary": primary, "reference": "smear",
                    "bounds": {"top1": [0.0, 1.0], "ppl": [1.0, None]}, "examples": {"metrics": spec}, "cells": {},
                }
                if task == "acc_task":
                    record["cells"]["corruptions"] = [
                        {"corruption": c, "severity": s, "error": float(np.clip(0.3 + 0.1 * s - 2 * delta + rng.normal(0, 0.01), 0, 1))}
                        for c in ("gaussian_noise", "fog", "pixelate") for s in (1, 3, 5)
                    ]
                records.append(record)
                arrays[record["key"]] = sets
    return records, arrays


@pytest.fixture(scope="module")
def report():
    records, arrays = records_and_arrays()
    found = sections(records, None, arrays)
    return records, {s.task: s for s in found}


def rendered(build, *args):
    """The figure of ``build(*args)``, drawn, with every warning raised on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = build(*args)
        figure.canvas.draw()
    assert not caught, [str(w.message) for w in caught]
    return figure


def assert_no_overlapping_text(figure):
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    undrawn = set()  # labels of ticks outside the view: matplotlib keeps them visible but does not draw them
    for axis in figure.findobj(Axis):
        low, high = sorted(axis.get_view_interval())
        undrawn |= {id(label) for tick in axis.get_major_ticks() + axis.get_minor_ticks() if not low <= tick.get_loc() <= high
                    for label in (tick.label1, tick.label2)}
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    assert boxes
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    width, height = figure.canvas.get_width_height()
    for text, box in boxes:  # nothing cut off at the figure's edge
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text


def interval_lines(axes):
    """The horizontal interval segments ``(low, high)`` of a forest plot."""
    return [tuple(sorted(line.get_xdata())) for line in axes.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() == "-"]


def test_the_primary_metric_plot_shows_intervals_inside_the_range_on_a_fitted_axis(report):
    _, found = report
    section = found["acc_task"]
    figure = rendered(_primary_figure, section.leaderboard, section.paired)
    assert_no_overlapping_text(figure)
    values, deltas = figure.axes
    for low, high in interval_lines(values):
        assert 0.0 <= low <= high <= 1.0
        assert values.get_xlim()[0] <= low and high <= values.get_xlim()[1]
    assert values.get_xlim()[0] > 0.5  # fitted to the data, not started at 0
    assert values.get_xlim()[1] <= 1.0
    lo, hi = deltas.get_xlim()
    assert lo < 0 < hi and hi - lo < 0.2  # the differences' scale, with 0 in view
    labels = [t.get_text() for t in values.get_yticklabels()]
    assert labels == [*(m if m != "smear" else "smear (baseline)" for m in section.leaderboard.methods)]
    assert primary_metric_png(section.leaderboard, section.paired)[:8] == b"\x89PNG\r\n\x1a\n"
    rendered(_primary_figure, section.leaderboard)  # no reference: one panel


def test_perplexity_plot_renders(report):
    _, found = report
    section = found["lm_task"]
    figure = rendered(_primary_figure, section.leaderboard, section.paired)
    assert_no_overlapping_text(figure)
    for low, high in interval_lines(figure.axes[0]):
        assert 1.0 <= low <= high


def test_the_mce_plot_is_ordered_by_mce_and_stays_in_range(report):
    records, found = report
    rob = robustness_table(records, "acc_task", "m", board=found["acc_task"].leaderboard)
    figure = rendered(_mean_ce_figure, rob)
    assert_no_overlapping_text(figure)
    axes = figure.axes[0]
    order = list(rob.table.sort_values("corruption_error_mean")["method"])
    assert [t.get_text().replace(" (baseline)", "") for t in axes.get_yticklabels()] == order
    assert order != rob.methods  # the leaderboard's order (by top-1) is not the mCE order here
    for low, high in interval_lines(axes):
        assert 0.0 <= low <= high <= 1.0
    assert mean_ce_png(rob)[:8] == b"\x89PNG\r\n\x1a\n"
    severity = rendered(_severity_figure, rob)
    assert_no_overlapping_text(severity)
    bottom, top = severity.axes[0].get_ylim()
    assert 0.0 <= bottom and top <= 1.0
    assert severity_png(rob)[:8] == b"\x89PNG\r\n\x1a\n"


def test_across_tasks_plots_render(report):
    records, found = report
    agg = across_tasks(records, list(found.values()), "smear")
    assert agg is not None and agg.tasks == ("acc_task / m", "lm_task / m")
    for build, png in ((_across_tasks_figure, across_tasks_png), (_profile_figure, profile_png)):
        figure = rendered(build, agg)
        assert_no_overlapping_text(figure)
        assert png(agg)[:8] == b"\x89PNG\r\n\x1a\n"
    left, right = _across_tasks_figure(agg).axes
    for low, high in interval_lines(right):
        assert 0.0 <= low <= high <= 1.0
    assert left.get_xlim()[0] > 0


def test_plots_are_byte_deterministic(report):
    _, found = report
    section = found["acc_task"]
    assert primary_metric_png(section.leaderboard, section.paired) == primary_metric_png(section.leaderboard, section.paired)
