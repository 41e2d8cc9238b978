"""EP-CAMEx: CAMEx with expert propagation across layers (CAMEx's dynamic variant)."""

from __future__ import annotations

from torch import Tensor

from ..moe.experts import ExpertParams, combine
from ..moe.state import PropagationState
from .base import BaseExpert, MergeInputs, MergeOutput, ModelFacts
from .camex import CAMEx
from .registry import register_method


@register_method("ep_camex")
class EPCAMEx(CAMEx):
    """Expert propagation: only the first layer owns E_m; E_m^{l+1} = E_m^l + γ·(1/N) Σ_i τ̃_i^l.

    Layer ``l`` merges around ``E_m^l`` exactly as ``camex``. Needs MoE layers of one
    shape. Options: those of ``camex``, and

        gamma (float, 1.0): ``γ``, the step of the base expert from one layer to the next.
    """

    base_expert = BaseExpert.FIRST_LAYER
    ablations = {"propagation": "γ = 0: every MoE layer merges around the first layer's base"}

    def __init__(self, spec, num_experts, gamma: float = 1.0, **camex_options):
        super().__init__(spec, num_experts, **camex_options)
        self.gamma = gamma

    @property
    def effective_gamma(self) -> float:
        """``γ``, or 0 under the ``"propagation"`` ablation."""
        return 0.0 if self.is_ablated("propagation") else self.gamma

    @classmethod
    def reduces_to(cls, options, model: ModelFacts) -> str | None:
        if model.num_moe_layers == 1:
            return "camex (a single MoE layer: no layer receives the propagated base)"
        return None

    def direction(self, tau_tilde: ExpertParams) -> tuple[ExpertParams, dict[str, Tensor]]:
        """``d^l = (1/N) Σ_i τ̃_i^l``, the step towards the experts' centroid, and diagnostics."""
        return {name: t.mean(0) for name, t in tau_tilde.items()}, {}

    def propagate(self, state: PropagationState, base: ExpertParams, d: ExpertParams) -> PropagationState:
        """``E_m^{l+1} = E_m^l + γ · d^l``."""
        return state.advanced(base=combine(base, d, lambda b, step: b + self.effective_gamma * step))

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        tau, tau_tilde = self.domain_vectors(inputs.bank.params(), inputs.base)
        merged = self.merge(inputs.base, tau, tau_tilde, inputs.scores)
        d, stats = self.direction(tau_tilde)
        state = self.propagate(inputs.state, inputs.base, d)
        return MergeOutput(self.apply_merged(inputs.tokens, merged), state, stats)
