"""The router: a linear map from a pooled hidden vector to expert scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import at_least_float32, full_precision


def wide_linear(h: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(h)`` with autocast off and every operand in float32 or wider."""
    with full_precision(h):
        return F.linear(at_least_float32(h), at_least_float32(layer.weight), None if layer.bias is None else at_least_float32(layer.bias))


@dataclass
class Routing:
    """What the router decided for ``G`` groups over ``N`` experts.

    ``scores``  — ``s``: softmax over the top-k logits, zero elsewhere (rows sum to 1);
    ``probs``   — softmax over all (clean) logits, for the load-balancing losses;
    ``load``    — per group and expert, the probability of being selected (a smooth
                  estimate under noisy gating, the 0/1 selection otherwise).
    """

    logits: Tensor
    scores: Tensor
    probs: Tensor
    load: Tensor
    top_k: int


ROUTER_NORMS = ("none", "layernorm")


class Router(nn.Module):
    """``logits = W_r h (+ noise)``; ``s = softmax(top-k logits)`` (``k = N`` is dense routing).

    ``norm="layernorm"`` is SMEAR's router (its default config): ``logits = LN_h(h) · LN_w(W_r)ᵀ``,
    a LayerNorm (affine) on the pooled input and each expert's weight row LayerNorm-ed over
    ``d`` with a second LayerNorm's affine parameters (its gain initialised to 0.01, as
    SMEAR's ``router_init_scale``); no bias.

    Noisy top-k gating (Shazeer et al., 2017), when enabled and training:
    ``H_i = (W_r h)_i + ε_i · softplus((W_noise h)_i)``, ``ε ~ N(0, 1)``, and the
    load of expert ``i`` is ``Φ((clean_i − kth_i) / σ_i)``, where ``kth_i`` is the
    k-th largest noisy logit among the other experts (the (k+1)-th when ``i`` is in the top k).
    """

    def __init__(self, d_model: int, num_experts: int, top_k: int, noisy_gating: bool = False, init_std: float = 0.02, norm: str = "none"):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if norm not in ROUTER_NORMS:
            raise ValueError(f"router norm must be one of {ROUTER_NORMS}, got {norm!r}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.noisy_gating = noisy_gating
        self.gate = nn.Linear(d_model, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=init_std)
        self.noise = nn.Linear(d_model, num_experts, bias=False) if noisy_gating else None
        if self.noise is not None:
            nn.init.zeros_(self.noise.weight)
        self.input_norm = self.weight_norm = None
        if norm == "layernorm":
            self.input_norm = nn.LayerNorm(d_model)
            self.weight_norm = nn.LayerNorm(d_model)
            nn.init.constant_(self.weight_norm.weight, 0.01)

    def clean_logits(self, h: Tensor) -> Tensor:
        """``W_r h``, or ``LN_h(h) · LN_w(W_r)ᵀ`` with ``norm="layernorm"``; in float32 or wider
        with autocast off (see :meth:`forward`)."""
        if self.input_norm is None:
            return wide_linear(h, self.gate)
        with full_precision(h):
            return F.linear(self.input_norm(at_least_float32(h)), at_least_float32(self.weight_norm(self.gate.weight)))

    def forward(self, h: Tensor) -> Routing:
        """Route pooled vectors ``h [..., d]`` → :class:`Routing` with ``[..., N]`` tensors.

        The logits are computed in float32 (or wider) whatever autocast says, as Switch
        Transformer's "selective precision" does: a ``d × N`` matmul costs nothing, and
        bf16 logits would flip top-k choices and add rounding to every routing gradient.
        """
        clean = self.clean_logits(h)
        noisy = self.noise is not None and self.training and self.top_k < self.num_experts
        if noisy:
            sigma = F.softplus(wide_linear(h, self.noise)) + 1e-2
            logits = clean + torch.randn_like(clean) * sigma
        else:
            logits = clean
        top_vals, top_idx = logits.topk(self.top_k, dim=-1)
        selected = torch.zeros_like(logits).scatter(-1, top_idx, 1.0)
        scores = torch.zeros_like(logits).scatter(-1, top_idx, top_vals.softmax(dim=-1))
        probs = clean.softmax(dim=-1)
        load = self._smooth_load(clean, logits, sigma) if noisy else selected
        return Routing(logits=logits, scores=scores, probs=probs, load=load, top_k=self.top_k)

    def _smooth_load(self, clean: Tensor, noisy: Tensor, sigma: Tensor) -> Tensor:
        k = self.top_k
        top = noisy.topk(k + 1, dim=-1).values
        kth_in, kth_out = top[..., k : k + 1], top[..., k - 1 : k]
        is_in = noisy > kth_in
        threshold = torch.where(is_in, kth_in, kth_out)
        normal = torch.distributions.Normal(0.0, 1.0)
        return normal.cdf((clean - threshold) / sigma)
