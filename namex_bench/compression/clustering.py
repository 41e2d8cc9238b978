"""Grouping experts: agglomerative clustering of feature vectors (HC-SMoE), and assignment of
experts to dominant ones by similarity (M-SMoE)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LINKAGES = ("average", "single", "complete", "ward")


def agglomerative_clusters(features: Tensor, num_clusters: int, linkage: str = "average") -> list[list[int]]:
    """Bottom-up hierarchical clustering of the rows of ``features [N, D]`` on Euclidean
    distances, stopped at ``num_clusters`` clusters (SciPy's ``linkage`` + ``cut_tree``).

    ``average`` (UPGMA): ``d(A, B) = (1/|A||B|) Σ_{a∈A, b∈B} ‖a − b‖``; ``single``: the
    closest pair; ``complete``: the farthest pair; ``ward``: the merge that least increases the
    within-cluster variance. Returns the clusters as sorted lists of rows, ordered by their
    first row.
    """
    from scipy.cluster.hierarchy import cut_tree
    from scipy.cluster.hierarchy import linkage as scipy_linkage

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    n = features.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"cannot cluster {n} experts into {num_clusters} clusters")
    if num_clusters == n:
        return [[i] for i in range(n)]
    if num_clusters == 1:
        return [list(range(n))]
    tree = scipy_linkage(features.double().cpu().numpy(), method=linkage, metric="euclidean")
    labels = cut_tree(tree, n_clusters=num_clusters).reshape(-1)
    clusters: dict[int, list[int]] = {}
    for row, label in enumerate(labels.tolist()):
        clusters.setdefault(label, []).append(row)
    return sorted(clusters.values(), key=lambda members: members[0])


def assign_to_dominant(similarity: Tensor, dominant: list[int]) -> list[list[int]]:
    """Each expert joins the dominant expert most similar to it (``similarity [N, N]``; ties:
    the dominant expert listed first); a dominant expert is in its own group. Groups are
    listed in the order of ``dominant``, each with the dominant expert first."""
    groups = {d: [d] for d in dominant}
    candidates = torch.tensor(dominant, dtype=torch.long)
    for j in range(similarity.shape[0]):
        if j in groups:
            continue
        best = int(np.argmax(similarity[j, candidates].cpu().numpy()))
        groups[dominant[best]].append(j)
    return [groups[d] for d in dominant]


def nearest_to_mean(features: Tensor, members: list[int]) -> int:
    """The member whose feature vector is closest (Euclidean) to the members' mean."""
    rows = features[torch.tensor(members, dtype=torch.long)]
    distances = (rows - rows.mean(dim=0)).norm(dim=1)
    return members[int(torch.argmin(distances))]
