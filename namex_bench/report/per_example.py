"""From records and their per-example arrays to the ``[seeds, examples]`` score arrays the
statistics take (:mod:`.bootstrap`).

A record's ``examples.metrics[<metric>]`` spec (``namex_bench/tasks/examples.py``) says which
evaluation sets, score and weight fields and link give the metric. For one method and
metric, :func:`method_scores` stacks its seeds' per-example scores ``score_i / weight_i``
(rows in seed order) with the weights, after checking that

* every seed has the spec and the arrays (else the method has no per-example data);
* every seed scores the same examples in the same order (the sets' names and ``id`` arrays);
* the arrays give the record's value: ``link(Σ score / Σ weight)`` equals the metric to
  ``1e-6`` (relative) — a spec that does not reproduce its metric is not used.

The arrays come in as ``{record key: {set: {field: array}}}``; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bootstrap import LINKS, link_function

__all__ = ["ExampleArrays", "MethodScores", "binary", "method_scores", "same_examples"]

ExampleArrays = Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]  # record key -> set -> field -> array
_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class MethodScores:
    """One method's per-example scores of one metric: ``scores[s, i]`` for ``seeds[s]``, the
    example ``weights`` (``None``: equal), the ``link``, and the examples' identity
    (``sets`` and the concatenated ``ids``)."""

    seeds: tuple[Hashable, ...]
    scores: np.ndarray
    weights: np.ndarray | None
    link: str
    sets: tuple[str, ...]
    ids: np.ndarray

    @property
    def examples(self) -> int:
        return int(self.scores.shape[1])

    def on(self, seeds: tuple[Hashable, ...]) -> np.ndarray:
        """The rows of ``seeds`` (each must be one of :attr:`seeds`), in that order."""
        row = {s: i for i, s in enumerate(self.seeds)}
        return self.scores[[row[s] for s in seeds]]


def binary(scores: MethodScores) -> bool:
    """Whether the scores are 0/1 outcomes with equal weights (accuracy-type: McNemar applies)."""
    return scores.weights is None and bool(np.isin(scores.scores, (0.0, 1.0)).all())


def same_examples(a: MethodScores, b: MethodScores) -> bool:
    """Whether two methods' scores are on the same examples in the same order, with the same weights."""
    if a.sets != b.sets or a.ids.shape != b.ids.shape or not np.array_equal(a.ids, b.ids):
        return False
    if (a.weights is None) != (b.weights is None):
        return False
    return a.weights is None or np.array_equal(a.weights, b.weights)


def _row(record: Mapping[str, Any], arrays: Mapping[str, Mapping[str, np.ndarray]], metric: str) -> tuple | str:
    """``(scores, weights, link, sets, ids)`` of one record's metric, or why there are none."""
    spec = ((record.get("examples") or {}).get("metrics") or {}).get(metric)
    if not isinstance(spec, Mapping):
        return "no per-example spec"
    sets, score, weight, link = spec.get("sets"), spec.get("score"), spec.get("weight"), spec.get("link", "identity")
    if not isinstance(sets, list) or not sets or link not in LINKS:
        return "a malformed per-example spec"
    try:
        parts = [arrays[s] for s in sets]
        values = np.concatenate([np.asarray(p[score], dtype=np.float64) for p in parts])
        weights = None if weight is None else np.concatenate([np.asarray(p[weight], dtype=np.float64) for p in parts])
        ids = np.concatenate([np.asarray(p["id"]).astype(str) for p in parts])
    except (KeyError, TypeError, ValueError):
        return "per-example arrays that do not match their spec"
    if values.size == 0 or ids.shape != values.shape or (weights is not None and (weights.shape != values.shape or np.any(weights <= 0))):
        return "per-example arrays that do not match their spec"
    if not np.all(np.isfinite(values)):
        return "non-finite per-example scores"
    total = values.sum() / (values.size if weights is None else weights.sum())
    value = record.get("metrics", {}).get(metric)
    recomputed = float(link_function(link)(total))
    if not isinstance(value, (int, float)) or abs(recomputed - value) > _TOLERANCE * max(1.0, abs(value)):
        return f"per-example scores that do not reproduce the recorded {metric}"
    per_example = values if weights is None else values / weights
    return per_example, weights, link, tuple(sets), ids


def method_scores(
    seeds: Mapping[Hashable, Mapping[str, Any]], arrays: ExampleArrays, metric: str
) -> MethodScores | str:
    """The per-example scores of one method's ``{seed: record}`` for ``metric``, or a short reason
    why they are not usable (a seed without them, examples that differ between seeds, a spec that
    does not reproduce the record's value)."""
    rows, first = [], None
    order = sorted(seeds, key=lambda s: (str(type(s)), s))
    for seed in order:
        record = seeds[seed]
        found = arrays.get(str(record.get("key")))
        if found is None:
            return "no per-example data"
        row = _row(record, found, metric)
        if isinstance(row, str):
            return row
        if first is None:
            first = row
        elif row[2:4] != first[2:4] or not np.array_equal(row[4], first[4]) or (row[1] is None) != (first[1] is None) or (
            row[1] is not None and not np.array_equal(row[1], first[1])
        ):
            return "seeds scored different examples"
        rows.append(row[0])
    if first is None:
        return "no seeds"
    return MethodScores(tuple(order), np.stack(rows), first[1], first[2], first[3], first[4])
