"""CAMEx: curvature-aware merging of experts around a base expert (Nguyen et al., 2025)."""

from __future__ import annotations

import torch

from ..moe.experts import ExpertParams, combine, weighted_sum
from .base import BaseExpert, MergeInputs, MergeOutput, MergingMethod
from .curvature import KroneckerCurvature
from .registry import register_method

MASKS = ("none", "ties")


def ties_mask(tau: ExpertParams) -> ExpertParams:
    """TIES sign election on the raw domain vectors: ``mask_i = [sign(τ_i) = sign(Σ_j τ_j)]``."""
    return {name: (t.sign() == t.sum(0, keepdim=True).sign()).to(t.dtype) for name, t in tau.items()}


@register_method("camex")
class CAMEx(MergingMethod):
    """Curvature-aware merging: Ê_g = E_m + Σ_i s_gi · mask_i ⊙ M_i(E_i − E_m), with a trainable base E_m per layer.

    Options:
        curvature_rank (int, 1): ``R``, the number of Kronecker terms of each ``M_i``.
        curvature_init ("identity" | "camex"): ``M_i = I`` at the start, or every
            factor ``= I`` as in the CAMEx code (``M_i = R·I``).
        mask ("none" | "ties"): the TIES sign-election mask on the raw ``τ``, or none.
    """

    base_expert = BaseExpert.EVERY_LAYER
    ablations = {"curvature": "every M_i replaced by the identity (τ̃ = τ)"}

    def __init__(self, spec, num_experts, curvature_rank: int = 1, curvature_init: str = "identity", mask: str = "none"):
        super().__init__(spec, num_experts)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        self.mask = mask
        self.curvature = KroneckerCurvature(spec, num_experts, rank=curvature_rank, init=curvature_init)

    def domain_vectors(self, experts: ExpertParams, base: ExpertParams) -> tuple[ExpertParams, ExpertParams]:
        """``(τ, τ̃)``: ``τ_i = E_i − E_m`` and ``τ̃_i = M_i(τ_i)``."""
        tau = combine(experts, base, lambda e, b: e - b.unsqueeze(0))
        return tau, tau if self.is_ablated("curvature") else self.curvature(tau)

    def merge(self, base: ExpertParams, tau: ExpertParams, tau_tilde: ExpertParams, scores: torch.Tensor) -> ExpertParams:
        """``Ê_g = E_m + Σ_i s_gi · mask_i ⊙ τ̃_i`` for every group ``g``."""
        if self.mask == "ties":
            tau_tilde = combine(tau_tilde, ties_mask(tau), torch.mul)
        return weighted_sum(scores, tau_tilde, offset=base)

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        tau, tau_tilde = self.domain_vectors(inputs.bank.params(), inputs.base)
        merged = self.merge(inputs.base, tau, tau_tilde, inputs.scores)
        return MergeOutput(self.apply_merged(inputs.tokens, merged), inputs.state.advanced())
