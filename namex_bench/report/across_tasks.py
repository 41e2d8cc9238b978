"""The suite's methods across its tasks (Agarwal et al., 2021; the functions are :mod:`.aggregate`).

Each task/model whose reference method ran is one task. A run's score is its primary
metric normalised by the reference's mean on that task (:func:`~.aggregate.normalised_scores`:
1 = the reference, above 1 = better, whatever the goal). For every method that ran every
such task: the interquartile mean of its normalised runs with a 95% stratified-bootstrap
interval, and the probability of improvement over the reference, ``P(method > reference)``,
with its interval; every pair's ``P(A > B)`` goes to the CSV. Pure: sections in, tables out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import iqm, normalised_scores, probability_of_improvement, stratified_bootstrap
from .comparison import rng_for
from .leaderboard import Section, _by_method, _group, _metric_value
from .statistics import format_interval

__all__ = ["AcrossTasks", "across_tasks"]


@dataclass(frozen=True, eq=False)
class AcrossTasks:
    """The cross-task aggregates of a suite.

    ``table``: one row per method (by IQM, best first): ``method``, ``IQM`` and ``P(> ref)``
    (formatted ``"estimate [low, high]"``), ``tasks`` and the raw ``iqm``, ``iqm_low``,
    ``iqm_high``, ``p_improvement``, ``p_improvement_low``, ``p_improvement_high``.
    ``pairs``: ``P(A > B)`` with its interval for every ordered pair. ``scores``: ``{method:
    [normalised runs per task]}`` in ``tasks`` order, for the plots.
    """

    reference: str
    tasks: tuple[str, ...]
    table: pd.DataFrame
    pairs: pd.DataFrame
    scores: dict[str, list[np.ndarray]]

    @property
    def display_columns(self) -> list[str]:
        return ["method", "IQM", f"P(> {self.reference})", "tasks"]


def _runs(records: list[Mapping[str, Any]], section: Section) -> dict[str, np.ndarray]:
    board = section.leaderboard
    by_method = _by_method(_group(records, section.task, section.model), f"task {section.task!r}")
    out = {}
    for label, seeds in by_method.items():
        values = [v for s in sorted(seeds, key=lambda s: (str(type(s)), s)) if (v := _metric_value(seeds[s], board.primary)) is not None]
        if values:
            out[label] = np.asarray(values, dtype=np.float64)
    return out


def across_tasks(records: Iterable[Mapping[str, Any]], sections: Sequence[Section], reference: str | None) -> AcrossTasks | None:
    """The aggregates over the sections whose reference ran; ``None`` with fewer than two such tasks."""
    if reference is None:
        return None
    records = list(records)
    tasks: list[str] = []
    per_task: list[dict[str, np.ndarray]] = []
    for section in sections:
        if section.leaderboard is None or not section.leaderboard.ranked:
            continue
        runs = _runs(records, section)
        if reference not in runs:
            continue
        reference_mean = float(np.mean(runs[reference]))
        try:
            normalised = {m: normalised_scores(v, reference_mean, section.leaderboard.goal) for m, v in runs.items()}
        except ValueError:  # a zero to normalise by: this task cannot be put on the common scale
            continue
        tasks.append(f"{section.task} / {section.model}")
        per_task.append(normalised)
    if len(tasks) < 2:
        return None
    methods = sorted(set.intersection(*(set(t) for t in per_task)))
    scores = {m: [t[m] for t in per_task] for m in methods}
    rows = []
    for m in methods:
        est, low, high = stratified_bootstrap(iqm, scores[m], rng=rng_for("iqm", *tasks, m))
        p, p_low, p_high = stratified_bootstrap(probability_of_improvement, scores[m], scores[reference], rng=rng_for("poi", *tasks, m))
        rows.append({"method": m, "IQM": format_interval(est, low, high), f"P(> {reference})": format_interval(p, p_low, p_high),
                     "tasks": len(tasks), "iqm": est, "iqm_low": low, "iqm_high": high,
                     "p_improvement": p, "p_improvement_low": p_low, "p_improvement_high": p_high})
    rows.sort(key=lambda r: (-r["iqm"], r["method"]))
    table = pd.DataFrame(rows)
    pair_rows = []
    for a in methods:
        for b in methods:
            if a != b:
                p, low, high = stratified_bootstrap(probability_of_improvement, scores[a], scores[b], rng=rng_for("poi", *tasks, a, b))
                pair_rows.append({"first": a, "second": b, "p_improvement": p, "low": low, "high": high})
    return AcrossTasks(reference, tuple(tasks), table.reset_index(drop=True), pd.DataFrame(pair_rows), scores)

