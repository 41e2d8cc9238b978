"""A fixed, small subset of a dataset for ``--limit`` smoke runs."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset


def dataset_labels(ds: Dataset) -> np.ndarray | None:
    """Integer labels of every item when the dataset exposes them cheaply, else ``None``.

    Understood: ``TensorDataset(x, y)`` with 1-D integer ``y``, datasets with a
    ``targets`` attribute (torchvision ``ImageFolder``, ``HFImageDataset``), and
    ``Subset`` of any of these.
    """
    if isinstance(ds, Subset):
        parent = dataset_labels(ds.dataset)
        return None if parent is None else parent[np.asarray(ds.indices, dtype=np.int64)]
    if isinstance(ds, TensorDataset):
        if len(ds.tensors) >= 2 and ds.tensors[1].ndim == 1 and not torch.is_floating_point(ds.tensors[1]):
            return ds.tensors[1].cpu().numpy().astype(np.int64)
        return None
    targets = getattr(ds, "targets", None)
    if targets is None:
        return None
    labels = np.asarray(targets)
    return labels.astype(np.int64) if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer) else None


def limit_order(labels: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    """A deterministic order of ``n`` item indices whose every prefix is as class-balanced as possible.

    With labels: each class's items in a seeded random order, then interleaved
    round-robin over the classes (ascending label). Without: a seeded random order.
    Orders come from ``numpy.random.default_rng(seed).random`` keys (stable argsort).
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.argsort(rng.random(n), kind="stable")
    per_class = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        per_class.append(rows[np.argsort(rng.random(len(rows)), kind="stable")])
    # Item k of class c gets rank (k, position of c): sorting by rank interleaves the classes.
    rank = np.concatenate([np.arange(len(rows)) for rows in per_class])
    klass = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(per_class)])
    rows = np.concatenate(per_class)
    return rows[np.lexsort((klass, rank))]


def limit_dataset(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """The first ``limit`` items of a fixed (stratified when labels are known) order of ``ds``.

    ``None``, or a limit not smaller than ``len(ds)``, returns ``ds`` unchanged. The
    result is a ``Subset`` whose indices are ascending; a smaller limit with the same
    seed always selects a subset of a larger one.
    """
    if limit is None:
        return ds
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    n = len(ds)
    if limit >= n:
        return ds
    chosen = limit_order(dataset_labels(ds), n, seed)[:limit]
    return Subset(ds, np.sort(chosen).tolist())
