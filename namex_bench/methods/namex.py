"""NAMEx: expert propagation whose step is the Nash bargaining solution among the experts."""

from __future__ import annotations

import torch
from torch import Tensor

from ..moe.experts import ExpertParams, gram, weighted_sum
from ..moe.router import at_least_float32
from ..moe.state import PropagationState
from ..nash import nash_bargaining
from .base import MergeInputs, ModelFacts
from .ep_camex import EPCAMEx
from .registry import register_method

PLACEMENTS = ("propagation", "merge", "both")
NORMALISATIONS = ("normalised", "raw")


@register_method("namex")
class NAMEx(EPCAMEx):
    """Nash merging: E_m^{l+1} = E_m^l + γ·Σ_i α̂_i τ̃_i^l, where α solves the Nash bargaining problem Gα = 1/α.

    ``G_ij = ⟨τ̃_i, τ̃_j⟩`` over all parameters of the experts; ``α`` comes from
    :func:`namex_bench.nash_bargaining` and carries no gradient. Options: those of
    ``ep_camex``, and

        normalisation ("normalised" | "raw"): ``α̂ = α / Σ_i α_i`` (default), or ``α``
            itself — then ``‖Σ α_i τ̃_i‖² = N`` whatever the experts' scale, so ``γ`` is
            an absolute step length.
        placement ("propagation" | "merge" | "both"): where ``α̂`` acts — the base
            expert's propagation step (default); the layer's merge, in place of the
            router scores (the router then learns only through the auxiliary loss, and
            the step is ``ep_camex``'s mean); or both.
        nbs_iters (int, 30): Newton iterations of the solver (fixed: no host sync).
    """

    ablations = {"nash_weights": "uniform weights (the mean of α) in place of the Nash bargaining solution"}

    def __init__(self, spec, num_experts, normalisation: str = "normalised", placement: str = "propagation", nbs_iters: int = 30, **ep_options):
        super().__init__(spec, num_experts, **ep_options)
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if isinstance(nbs_iters, bool) or not isinstance(nbs_iters, int) or nbs_iters < 1:
            raise ValueError(f"nbs_iters must be a positive integer, got {nbs_iters!r}")
        self.normalisation = normalisation
        self.placement = placement
        self.nbs_iters = nbs_iters

    def nash_weights(self, tau_tilde: ExpertParams, experts: ExpertParams) -> tuple[Tensor, dict[str, Tensor]]:
        """``α̂`` (or ``α``) for the layer's curvature-aware domain vectors, and diagnostics.

        Domain vectors count as all zero (uniform weights) when ``tr(G)/N`` is below
        ``(1e-6)²`` times the experts' mean squared norm — a tolerance relative to
        the experts' scale, so the weights do not depend on it.
        """
        device = next(iter(tau_tilde.values())).device
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            G = gram({name: at_least_float32(t) for name, t in tau_tilde.items()})
            experts_sq_norm = sum(torch.linalg.vector_norm(at_least_float32(t)).square() for t in experts.values()) / self.num_experts
        alpha, residual = nash_bargaining(G, max_iter=self.nbs_iters, zero_tol=1e-12 * experts_sq_norm)
        if self.normalisation == "normalised":
            alpha = alpha / alpha.sum()
        used = alpha.mean().expand_as(alpha) if self.is_ablated("nash_weights") else alpha
        return used.to(G.dtype), {"nbs_weights": alpha.to(G.dtype), "nbs_residual": residual.to(G.dtype)}

    @classmethod
    def reduces_to(cls, options, model: ModelFacts) -> str | None:
        if model.num_experts == 1:
            return "ep_camex (a single expert: α̂ = 1)"
        if options.get("placement") == "propagation":
            if model.num_moe_layers == 1:
                return "camex (a single MoE layer: the Nash weights only shape the step to the next layer)"
            if options.get("gamma") == 0:
                return "ep_camex with gamma: 0 (γ = 0: the Nash weights scale a step of length 0)"
        return None

    def handed_up(self, inputs: MergeInputs, base: ExpertParams, tau_tilde: ExpertParams) -> tuple[PropagationState, dict[str, Tensor], Tensor | None]:
        """``α̂`` (:meth:`nash_weights`): the step ``d^l = Σ_i α̂_i τ̃_i^l`` of the propagated base, the
        weights of the merge, or both (``placement``); the other uses the mean and the scores."""
        alpha, stats = self.nash_weights(tau_tilde, inputs.bank.params())
        if self.placement in ("propagation", "both"):
            d = {name: t[0] for name, t in weighted_sum(alpha.unsqueeze(0), tau_tilde).items()}
        else:
            d, _ = self.direction(tau_tilde)
        return self.propagate(inputs.state, base, d), stats, alpha if self.placement in ("merge", "both") else None
