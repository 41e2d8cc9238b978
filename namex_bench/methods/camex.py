"""CAMEx: curvature-aware merging of experts around a base expert (Nguyen et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..moe.experts import ExpertParams, MergedExperts, combine, merge_around, soft_merge, subset
from ..moe.state import PropagationState
from .base import BaseExpert, MergeFn, MergeInputs, MergeOutput, MergingMethod, Preset
from .curvature import KroneckerCurvature
from .registry import register_method

MASKS = ("none", "ties")

#: How the CAMEx scripts run the layer (kpup1710/CAMEx @ 11ba81d, ``tasks/*/run_*.sh``; the layer
#: in ``transformers/models/curve_layer_high_rank.py``). TIES bypasses the code's Dropout2d.
CAMEX_REFERENCE = {
    "curvature_rank": 8,
    "curvature_init": "camex",
    "mask": "ties",
    "expert_dropout": 0.0,
    "topk_fallback": True,
    "router": "per_matrix",
    "routing_padding": "include",
}
CAMEX_REFERENCE_SOURCE = (
    "kpup1710/CAMEx @ 11ba81d (transformers/models/curve_layer_high_rank.py; tasks/*/run_*.sh): rank 8, every "
    "curvature factor I (M = 8·I), TIES, a router per weight matrix, the plain top-k sum when 2k < N, routing "
    "means over padding too, no Dropout2d (the code applies it only without TIES). The scripts' model side is "
    "the suite's to set: num_experts 7 (k = 7), aux_loss cv2 with coefficient 1e-2, first_segment self"
)


@dataclass(frozen=True)
class CurvatureParts:
    """What a CAMEx-family layer computes from parameters alone (:meth:`CAMEx.parameter_parts`):
    the layer's base ``E_m^l``, the merge's terms ``mask_i ⊙ τ̃_i``, the state for the layer above
    and its diagnostics; and where fixed weights ``[N]`` replace the router's scores
    (``merge_weights``: ``namex``'s α̂ in the merge), the merged experts themselves, one shared by
    every group, per name tuple that :meth:`~namex_bench.methods.base.MergingMethod.run_merged` asks for."""

    base: ExpertParams
    terms: ExpertParams
    state: PropagationState
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    merge_weights: torch.Tensor | None = None
    shared: dict[tuple[str, ...], MergedExperts] | None = None


def ties_mask(tau: ExpertParams) -> ExpertParams:
    """TIES sign election on the raw domain vectors: ``mask_i = [sign(τ_i) = sign(Σ_j τ_j)]``."""
    return {name: (t.sign() == t.sum(0, keepdim=True).sign()).to(t.dtype) for name, t in tau.items()}


@register_method("camex")
class CAMEx(MergingMethod):
    """Curvature-aware merging: Ê_g = E_m + Σ_i s_gi · mask_i ⊙ M_i(E_i − E_m), with a trainable base E_m per layer.

    Options (and the routing options of every method):
        curvature_rank (int, 1): ``R``, the number of Kronecker terms of each ``M_i``.
        curvature_init ("camex" | "identity"): every factor ``= I`` as in the CAMEx code
            (``M_i = R·I``; default), or ``M_i = I`` (each factor ``R^{-1/4}·I``).
        mask ("ties" | "none"): the TIES sign-election mask on the raw ``τ`` (default), or none.
            With ``M_i = I``, no mask and scores summing to 1 the base cancels
            (``E_m + Σ s_i (E_i − E_m) = Σ s_i E_i``: ``camex`` would be ``smear``); the mask
            (``Σ_i s_i mask_i ≠ 1`` elementwise) keeps it in the merge from the first step.
        expert_dropout (float, 0): in training, each (group, expert) term ``s_gi·mask_i ⊙ τ̃_i`` is
            dropped with this probability and the others scaled by ``1/(1 − p)`` — the CAMEx
            code's ``Dropout2d(p=0.1)``, which it applies only without TIES.
        topk_fallback (bool, False): when ``2k < N``, merge as the CAMEx code does: the plain
            top-k sum ``Σ_i s_gi E_i``, with neither base nor curvature.

    Preset ``reference``: the layer as the CAMEx scripts run it.
    """

    base_expert = BaseExpert.EVERY_LAYER
    presets = {"reference": Preset(f"as the CAMEx scripts run it — {CAMEX_REFERENCE_SOURCE}", CAMEX_REFERENCE)}
    ablations = {"curvature": "every M_i replaced by the identity (τ̃ = τ)"}

    def __init__(
        self,
        spec,
        num_experts,
        curvature_rank: int = 1,
        curvature_init: Literal["camex", "identity"] = "camex",
        mask: Literal["ties", "none"] = "ties",
        expert_dropout: float = 0.0,
        topk_fallback: bool = False,
        **routing,
    ):
        super().__init__(spec, num_experts, **routing)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if not 0.0 <= expert_dropout < 1.0:
            raise ValueError(f"expert_dropout must be in [0, 1), got {expert_dropout}")
        self.mask = mask
        self.expert_dropout = expert_dropout
        self.topk_fallback = topk_fallback
        self.curvature = KroneckerCurvature(spec, num_experts, rank=curvature_rank, init=curvature_init)

    def domain_vectors(self, experts: ExpertParams, base: ExpertParams) -> tuple[ExpertParams, ExpertParams]:
        """``(τ, τ̃)``: ``τ_i = E_i − E_m`` and ``τ̃_i = M_i(τ_i)``."""
        tau = combine(experts, base, lambda e, b: e - b.unsqueeze(0))
        return tau, tau if self.is_ablated("curvature") else self.curvature(tau)

    def merge_terms(self, tau: ExpertParams, tau_tilde: ExpertParams) -> ExpertParams:
        """The terms the merge weighs: ``mask_i ⊙ τ̃_i`` (TIES), or ``τ̃_i``."""
        return combine(tau_tilde, ties_mask(tau), torch.mul) if self.mask == "ties" else tau_tilde

    def merge(self, base: ExpertParams, tau: ExpertParams, tau_tilde: ExpertParams, scores: torch.Tensor) -> MergedExperts:
        """``Ê_g = E_m + Σ_i s_gi · mask_i ⊙ τ̃_i`` for every group ``g`` (and every parameter of ``tau``),
        each (group, expert) term dropped with probability ``expert_dropout`` in training."""
        return self.merged(base, self.merge_terms(tau, tau_tilde), scores)

    def merged(self, base: ExpertParams, terms: ExpertParams, scores: torch.Tensor) -> MergedExperts:
        """:meth:`merge` from its terms (:meth:`merge_terms`)."""
        scores = F.dropout(scores, self.expert_dropout, self.training) if self.expert_dropout else scores
        return merge_around(base, scores, terms)

    def merge_fn(self, inputs: MergeInputs, base: ExpertParams, terms: ExpertParams) -> MergeFn:
        """``merge(scores, names)`` for :meth:`run_merged`: the curvature-aware merge, or the plain
        top-k sum when ``topk_fallback`` and ``2k < N``."""
        if self.topk_fallback and 2 * (inputs.top_k or self.num_experts) < self.num_experts:
            experts = inputs.bank.params()
            return lambda scores, names: soft_merge(scores, subset(experts, names))
        return lambda scores, names: self.merged(subset(base, names), subset(terms, names), scores)

    def layer_base(self, inputs: MergeInputs) -> ExpertParams:
        """``E_m`` for this layer: the layer's own."""
        return inputs.base

    def handed_up(self, inputs: MergeInputs, base: ExpertParams, tau_tilde: ExpertParams) -> tuple[PropagationState, dict[str, torch.Tensor], torch.Tensor | None]:
        """The state for the layer above, diagnostics, and the weights ``[N]`` that replace every
        group's scores in the merge (``None``: the router's scores merge)."""
        return inputs.state.advanced(), {}, None

    def parameter_parts(self, inputs: MergeInputs) -> CurvatureParts:
        """``E_m^l``, the terms ``mask ⊙ τ̃``, the state for the layer above — and, where fixed
        weights replace the scores (and no expert dropout draws per group), the merged experts."""
        base = self.layer_base(inputs)
        tau, tau_tilde = self.domain_vectors(inputs.bank.params(), base)
        state, stats, weights = self.handed_up(inputs, base, tau_tilde)
        terms = self.merge_terms(tau, tau_tilde)
        shared = None
        if weights is not None and not (self.training and self.expert_dropout):
            merge = self.merge_fn(inputs, base, terms)
            shared = {names: merge(weights.unsqueeze(0), names) for names in self.merged_stages(inputs)}
        return CurvatureParts(base, terms, state, stats, weights, shared)

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        parts = self.parts(inputs)
        if parts.shared is not None:
            merge = lambda scores, names: parts.shared[names]  # noqa: E731
        else:
            merge = self.merge_fn(inputs, parts.base, parts.terms)
            if parts.merge_weights is not None:
                by_scores = merge
                merge = lambda scores, names: by_scores(parts.merge_weights.to(scores.dtype).expand_as(scores), names)  # noqa: E731
        return MergeOutput(self.run_merged(inputs, merge), parts.state, parts.stats)
