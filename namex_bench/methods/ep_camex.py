"""EP-CAMEx: CAMEx with expert propagation across layers (CAMEx's dynamic variant)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..moe.experts import ExpertParams, combine
from ..moe.state import PropagationState
from .base import BaseExpert, MergeInputs, ModelFacts, Preset
from .camex import CAMEX_REFERENCE, CAMEX_REFERENCE_SOURCE, CAMEx
from .registry import register_method

PROPAGATIONS = ("offset", "paper")


@register_method("ep_camex")
class EPCAMEx(CAMEx):
    """Expert propagation: only the first layer owns E_m; E_m^{l+1} = E_m^l + γ·(1/N) Σ_i τ̃_i^l.

    Layer ``l`` merges around ``E_m^l`` exactly as ``camex``. Needs MoE layers of one
    shape. Options: those of ``camex``, and

        gamma (float, 1.0): ``γ``, the step of the base expert from one layer to the next.
        propagation ("offset" | "paper"): how the base moves between layers of an *upcycled*
            model, whose layers start from different dense FFNs ``B^l``. ``paper`` reads the
            recursion literally: layer ``l+1`` merges around a base derived from layer ``l``'s
            FFN, so the upcycled model no longer equals its dense model unless ``M_i = I``.
            ``offset`` (default) propagates the base's offset from each layer's own start:
            ``E_m^{l+1} = B^{l+1} + (E_m^l − B^l) + γ·d^l``, with ``B^l`` a frozen copy of
            layer ``l``'s dense FFN taken at upcycling (its *anchor*). An upcycled model then
            equals its dense model at initialisation under any options, and the base of every
            layer starts among that layer's experts. A model not upcycled has zero anchors, and
            ``offset`` is ``paper`` exactly.
    """

    base_expert = BaseExpert.FIRST_LAYER
    presets = {
        "reference": Preset(
            "CAMEx's layer as its scripts run it, the propagation read literally (propagation: paper), everything "
            "else as METHODS.md specifies (the method's defaults). The layer: " + CAMEX_REFERENCE_SOURCE,
            {**CAMEX_REFERENCE, "propagation": "paper"},
        )
    }
    ablations = {"propagation": "γ = 0: every MoE layer merges around the first layer's base"}

    def __init__(self, spec, num_experts, gamma: float = 1.0, propagation: Literal["offset", "paper"] = "offset", **camex_options):
        super().__init__(spec, num_experts, **camex_options)
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
        self.gamma = gamma
        self.propagation = propagation
        if propagation == "offset":
            for name, shape in spec.param_shapes.items():
                self.register_buffer(f"anchor_{name}", torch.zeros(shape))

    def anchor(self) -> ExpertParams | None:
        """``B^l``, this layer's frozen starting point (``offset`` propagation), or ``None`` (``paper``)."""
        if self.propagation != "offset":
            return None
        return {name: getattr(self, f"anchor_{name}") for name in self.spec.param_shapes}

    def init_from_dense(self, dense: ExpertParams) -> None:
        anchor = self.anchor()
        if anchor is not None:
            with torch.no_grad():
                for name, value in dense.items():
                    anchor[name].copy_(value)

    def layer_base(self, inputs: MergeInputs) -> ExpertParams:
        """``E_m^l``: the first layer's own base; in a later layer the propagated one, plus the
        layer's anchor ``B^l`` (``offset``: what arrives is ``E_m^l − B^l``)."""
        anchor = self.anchor()
        if inputs.moe_index == 0 or anchor is None:
            return inputs.base
        return combine(inputs.base, anchor, torch.add)

    def handed_on(self, state: PropagationState, next_base: ExpertParams, **changes) -> PropagationState:
        """The state for the layer above, carrying ``E_m^{l+1}`` — minus this layer's anchor ``B^l``
        under ``offset`` (the layer above adds its own)."""
        anchor = self.anchor()
        if anchor is not None:
            next_base = combine(next_base, anchor, torch.sub)
        return state.advanced(base=next_base, **changes)

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
        return self.handed_on(state, combine(base, d, lambda b, step: b + self.effective_gamma * step))

    def handed_up(self, inputs: MergeInputs, base: ExpertParams, tau_tilde: ExpertParams) -> tuple[PropagationState, dict[str, Tensor], Tensor | None]:
        """The propagated base ``E_m^{l+1}`` (:meth:`propagate` along :meth:`direction`); the scores merge."""
        d, stats = self.direction(tau_tilde)
        return self.propagate(inputs.state, base, d), stats, None
