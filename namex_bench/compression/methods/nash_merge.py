"""Nash merging of clustered experts: HC-SMoE's clusters, merged with Nash bargaining weights (the NAMEx idea, one-shot)."""

from __future__ import annotations

import torch

from ...moe.experts import gram
from ...nash import nash_bargaining
from ..base import LayerInputs, LayerPlan, merged
from ..registry import register_compressor
from .hcsmoe_merge import HCSMoEMerge


@register_compressor("nash_merge")
class NashMerge(HCSMoEMerge):
    """HC-SMoE's clusters, each merged with Nash bargaining weights over its members' domain vectors around the layer's mean expert.

    For a cluster ``C``: domain vectors ``τ_j = θ_j − θ̄`` (``θ̄`` the mean of the layer's ``N``
    experts, every parameter flattened), Gram matrix ``G_ij = ⟨τ_i, τ_j⟩``, ``α > 0`` with
    ``G α = 1/α`` (``namex_bench.nash_bargaining``), and the merged expert
    ``θ̄ + Σ_j α̂_j τ_j = Σ_j α̂_j θ_j`` with ``α̂ = α / Σ α``: members that agree with each
    other weigh less than one that stands apart, whatever their routing frequencies. The
    router row is the cluster representative's, as in ``hcsmoe_merge``.

    Why around the layer's mean and not the cluster's own: for any centre ``c = Σ_j w_j θ_j``
    inside the cluster (``w ≥ 0``, ``Σ w = 1``), ``Σ_j w_j τ_j = 0``, so no move can raise every
    member's utility ``⟨τ_j, Δ⟩``: ``G`` is singular with a positive null vector and the
    bargaining problem has no interior solution (the ridge-regularised solver then returns
    uniform weights, a plain average). Around ``θ̄`` the members of a cluster share a direction.
    ``nbs_iters``: Newton iterations of the solver.
    """

    def __init__(self, linkage: str = "average", nbs_iters: int = 30):
        super().__init__(linkage)
        self.nbs_iters = int(nbs_iters)

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:
        groups, representatives = self.clusters(inputs, num_kept)
        mean = {k: v.mean(dim=0) for k, v in inputs.experts.items()}
        weights = []
        for group in groups:
            if len(group) == 1:
                weights.append(torch.ones(1))
                continue
            tau = {k: v[group].double() - mean[k].double() for k, v in inputs.experts.items()}
            weights.append(nash_bargaining(gram(tau), max_iter=self.nbs_iters).weights)
        return merged(inputs, groups, weights, representatives)
