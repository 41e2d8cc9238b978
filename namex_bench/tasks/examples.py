"""Per-example outcomes of a run's evaluations, kept beside its record for paired statistics.

An *evaluation set* (``"test"``, ``"sst2"``, ``"corruptions/fog/3"``, ``"perplexity/test"``,
``"lm_eval/arc_easy"``) holds one array per field, all of one length, in the set's fixed
example order (the same for every method and seed of a task): always ``id`` (what the
example is: its index in the dataset, a window's first token, an lm-eval ``doc_id``), and
outcomes such as ``correct`` (0/1), ``loss``, ``nll`` with ``tokens``, ``acc``.

A metric's *spec* says how the per-example outcomes give the record's value on one seed::

    value = link( Σ_i score_i / Σ_i weight_i )      over the examples of ``sets``, in order

with ``weight_i = 1`` unless a ``weight`` field is named (``tokens`` for perplexity) and the
link ``identity``, ``complement`` (``1 − x``: an error from ``correct``) or ``exp`` (a
perplexity from a summed NLL). The report checks each spec against the record's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

__all__ = ["PerExample", "dataset_ids", "metric_spec"]


def metric_spec(sets: str | list[str], score: str, *, link: str = "identity", weight: str | None = None) -> dict[str, Any]:
    """The spec of a metric computed from per-example outcomes (module docstring)."""
    spec: dict[str, Any] = {"sets": [sets] if isinstance(sets, str) else list(sets), "score": score, "link": link}
    if weight is not None:
        spec["weight"] = weight
    return spec


@dataclass
class PerExample:
    """A run's evaluation sets (``{set: {field: array}}``) and the specs of the metrics they give."""

    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, ids: np.ndarray, **outcomes: np.ndarray) -> None:
        """Add the set ``name``: ``ids`` and one array per outcome, all of one length."""
        arrays = {"id": np.asarray(ids), **{k: np.asarray(v) for k, v in outcomes.items()}}
        lengths = {k: v.shape for k, v in arrays.items()}
        if len({s for s in lengths.values()}) != 1 or arrays["id"].ndim != 1:
            raise ValueError(f"evaluation set {name!r}: every field must be one vector of one length, got {lengths}")
        if name in self.sets:
            raise ValueError(f"evaluation set {name!r} added twice")
        self.sets[name] = arrays

    def metric(self, name: str, sets: str | list[str], score: str, *, link: str = "identity", weight: str | None = None) -> None:
        """Declare how the metric ``name`` follows from the sets (see :func:`metric_spec`)."""
        spec = metric_spec(sets, score, link=link, weight=weight)
        missing = [s for s in spec["sets"] if s not in self.sets or score not in self.sets[s] or (weight and weight not in self.sets[s])]
        if missing:
            raise ValueError(f"metric {name!r}: evaluation sets without {score!r}{f' and {weight!r}' if weight else ''}: {missing}")
        self.metrics[name] = spec


def dataset_ids(dataset: Dataset) -> np.ndarray:
    """Each item's index in the dataset under any number of ``Subset`` wrappers (``--limit`` picks
    a subset: its examples keep the ids they have in the full set)."""
    indices = np.arange(len(dataset), dtype=np.int64)
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices, dtype=np.int64)[indices]
        dataset = dataset.dataset
    return indices
