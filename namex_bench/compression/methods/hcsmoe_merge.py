"""HC-SMoE: hierarchical clustering of experts by their outputs, frequency-weighted merge (Chen et al., ICML 2025)."""

from __future__ import annotations

from ..base import CompressionMethod, LayerInputs, LayerPlan, merged
from ..clustering import LINKAGES, agglomerative_clusters, nearest_to_mean
from ..registry import register_compressor


@register_compressor("hcsmoe_merge")
class HCSMoEMerge(CompressionMethod):
    """Agglomerative clustering (average linkage) of the experts' mean outputs into M clusters; frequency-weighted merge within each.

    Feature of expert ``j``: its mean output over the calibration tokens, ``o_j = (1/T) Σ_t
    f_j(x_t)`` — every token, not only those routed to ``j`` (a seeded subset of them, see
    ``calibration.py``). Clusters: bottom-up on Euclidean distances with ``linkage``
    (``average`` by default; ``single``, ``complete``, ``ward``), cut at ``M``. Each cluster is
    merged as ``Σ_j f_j θ_j / Σ_j f_j`` (routing frequencies; uniform if no member was chosen)
    and takes the router row of its member nearest the cluster's mean feature (HC-SMoE's
    representative expert).
    """

    kind = "merge"

    def __init__(self, linkage: str = "average"):
        super().__init__()
        if linkage not in LINKAGES:
            raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
        self.linkage = linkage

    def clusters(self, inputs: LayerInputs, num_kept: int) -> tuple[list[list[int]], list[int]]:
        """The clusters of expert indices and each cluster's representative (router row)."""
        features = inputs.calibration.output_mean
        groups = agglomerative_clusters(features, num_kept, self.linkage)
        return groups, [nearest_to_mean(features, g) for g in groups]

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:
        groups, representatives = self.clusters(inputs, num_kept)
        frequency = inputs.calibration.frequency
        weights = [frequency[g] if frequency[g].sum() > 0 else frequency.new_ones(len(g)) for g in groups]
        return merged(inputs, groups, weights, representatives)
