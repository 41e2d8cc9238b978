"""NAMEx-Mom: NAMEx with complex momentum across depth (Lorraine et al., 2022)."""

from __future__ import annotations

import math

import torch

from ..moe.experts import ExpertParams
from ..moe.state import PropagationState
from .base import ModelFacts
from .namex import NAMEx
from .registry import register_method


def complex_momentum_step(mu_real: torch.Tensor, mu_imag: torch.Tensor, d: torch.Tensor, beta: complex) -> tuple[torch.Tensor, torch.Tensor]:
    """``μ' = β μ + d`` in real arithmetic: ``(Re β·μR − Im β·μI + d, Im β·μR + Re β·μI)``."""
    return beta.real * mu_real - beta.imag * mu_imag + d, beta.imag * mu_real + beta.real * mu_imag


@register_method("namex_mom")
class NAMExMom(NAMEx):
    """NAMEx with complex momentum: μ^{l+1} = β μ^l + d^l, E_m^{l+1} = E_m^l + γ·Re(μ^{l+1}), β = r·e^{iθ}.

    The buffer ``μ`` (two real tensors) starts at 0 in every forward pass. ``β = 0``
    is ``namex``; ``θ = 0`` is heavy-ball momentum. Options: those of ``namex``, and

        momentum_radius (float, 0.7): ``r = |β| < 1``.
        momentum_angle (float, π/4): ``θ = arg β``.

    These defaults are a choice, not the paper's (which are not known): on the
    rotational ("competitive") linear system ``d = J E``, ``J = [[0, 1], [−1, 0]]``, the
    depth recursion with ``β = 0.7·e^{iπ/4}`` contracts for ``γ`` up to about 0.32
    (spectral radius 0.94 at ``γ ≈ 0.29``), where ``β = 0`` and every real ``β``
    diverge; ``0.7·e^{iπ/8}`` does not contract there for any ``γ``.
    """

    ablations = {"momentum": "β = 0: the base moves by the step d^l alone (namex)"}

    def __init__(self, spec, num_experts, momentum_radius: float = 0.7, momentum_angle: float = math.pi / 4, **namex_options):
        super().__init__(spec, num_experts, **namex_options)
        if not 0 <= momentum_radius < 1:
            raise ValueError(f"momentum_radius must be in [0, 1), got {momentum_radius}")
        self.beta = complex(momentum_radius * math.cos(momentum_angle), momentum_radius * math.sin(momentum_angle))

    @classmethod
    def reduces_to(cls, options, model: ModelFacts) -> str | None:
        if model.num_moe_layers is not None and model.num_moe_layers < 3:
            return f"namex ({model.num_moe_layers} MoE layers: μ¹ = d⁰, so β first acts on the third layer's base)"
        if options.get("momentum_radius") == 0:
            return "namex (momentum_radius = 0 is β = 0)"
        if options.get("gamma") == 0:
            return "namex (γ = 0: the momentum scales a step of length 0)"
        return super().reduces_to(options, model)

    def propagate(self, state: PropagationState, base: ExpertParams, d: ExpertParams) -> PropagationState:
        """``μ^{l+1} = β μ^l + d^l``; ``E_m^{l+1} = E_m^l + γ · Re μ^{l+1}``."""
        if state.momentum is None:
            zeros = {name: torch.zeros_like(t) for name, t in d.items()}
            state_real, state_imag = zeros, zeros
        else:
            state_real, state_imag = state.momentum
        beta = 0j if self.is_ablated("momentum") else self.beta
        real, imag = {}, {}
        for name in d:
            real[name], imag[name] = complex_momentum_step(state_real[name], state_imag[name], d[name], beta)
        next_base = {name: base[name] + self.effective_gamma * real[name] for name in base}
        return self.handed_on(state, next_base, momentum=(real, imag))
