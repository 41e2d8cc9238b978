"""Auxiliary load-balancing losses over the valid groups of one MoE layer.

Groups with no real token (all padding) are left out by weighting, not indexing, so
that no host synchronisation is needed on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .router import Routing


def switch_loss(routing: Routing, valid: Tensor) -> Tensor:
    """Switch Transformer loss ``N · Σ_i f_i · P_i``.

    ``f_i`` is the fraction of groups whose top-1 expert (argmax of the router's
    probabilities) is ``i``, as in Switch's top-1 dispatch, whatever the layer's ``k``
    — so the loss still balances dense-routing (``k = N``) merging methods; ``P_i``
    is the mean router probability of expert ``i``. Equals 1 when balanced.
    """
    w = valid.to(routing.probs.dtype).unsqueeze(-1)
    top1 = routing.probs.argmax(-1, keepdim=True)
    selected = torch.zeros_like(routing.probs).scatter(-1, top1, 1.0) * w
    f = selected.sum(0) / selected.sum().clamp_min(1.0)
    p = (routing.probs * w).sum(0) / w.sum().clamp_min(1.0)
    return routing.probs.shape[-1] * (f * p).sum()


def cv_squared(v: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation ``Var(v) / (mean(v)² + ε)`` over the ``N`` experts, with the
    unbiased variance (``1/(N−1)``) as the CAMEx reference code (and the implementation of Shazeer's
    loss it builds on) computes it; 0 for a single expert."""
    if v.shape[-1] < 2:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + eps)


def importance_load_loss(routing: Routing, valid: Tensor) -> Tensor:
    """Shazeer et al. (2017): ``cv²(importance) + cv²(load)``.

    ``importance_i = Σ_g s_{g,i}``; ``load_i = Σ_g P(i selected for g)`` — smooth under
    noisy gating, the 0/1 selection count otherwise (which then carries no gradient).
    """
    w = valid.to(routing.scores.dtype).unsqueeze(-1)
    return cv_squared((routing.scores * w).sum(0)) + cv_squared((routing.load * w).sum(0))


AUX_LOSSES: dict[str, Callable[[Routing, Tensor], Tensor]] = {
    "switch": switch_loss,
    "cv2": importance_load_loss,
}


def aux_loss(name: str, routing: Routing, valid: Tensor) -> Tensor:
    """The named load-balancing loss, or 0 for ``"none"``."""
    if name == "none":
        return routing.probs.new_zeros(())
    try:
        fn = AUX_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown aux loss {name!r}; known: none, {', '.join(AUX_LOSSES)}") from None
    return fn(routing, valid)
