"""A batched Nash bargaining solver on the tensors' own device.

The Nash bargaining solution among ``N`` players whose utilities for a move ``Δ`` are
``u_i(Δ) = ⟨τ_i, Δ⟩`` (disagreement point ``Δ = 0``, ``‖Δ‖ ≤ ε``) is
``Δ* ∝ Σ_i α_i τ_i``, where ``α > 0`` solves ``G α = 1/α`` elementwise and
``G_ij = ⟨τ_i, τ_j⟩`` (Navon et al., 2022). That equation is the stationarity
condition of the strictly convex

    f(α) = ½ αᵀ G α − Σ_i log α_i          on α > 0,

so :func:`nash_bargaining` minimises ``f`` by damped Newton steps

    p = −(G + diag(1/α²))⁻¹ (G α − 1/α),     α ← α + t p,

with the step length ``t = 1/(1 + λ)`` of Nesterov's damped Newton method, where
``λ = sqrt(pᵀ H p)`` is the Newton decrement. ``f`` is self-concordant (a quadratic plus
a log barrier), so this step decreases ``f`` by at least ``λ − log(1 + λ)`` and
converges quadratically near the solution; and since ``H ⪰ diag(1/α²)``, a step of
``H``-norm ``λ/(1+λ) < 1`` has ``|t p_i| < α_i`` — it can never leave ``α > 0``. It is a
line search in closed form: no trial points, no host synchronisation. Everything is
batched over the leading axes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class NashSolution(NamedTuple):
    """``weights`` — ``α [..., N]`` (positive); ``residual`` — ``max_i |α_i (Gα)_i − 1|`` ``[...]``."""

    weights: Tensor
    residual: Tensor


def first_order_residual(G: Tensor, alpha: Tensor) -> Tensor:
    """``max_i |α_i (G α)_i − 1|``: zero exactly when ``G α = 1/α``; invariant to the scale of ``G``."""
    return (alpha * (G @ alpha.unsqueeze(-1)).squeeze(-1) - 1).abs().amax(-1)


def nash_bargaining(
    G: Tensor,
    *,
    max_iter: int = 30,
    tol: float | None = None,
    ridge: float | None = None,
    zero_tol: float | Tensor = 1e-12,
    init: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> NashSolution:
    """Solve ``G α = 1/α``, ``α > 0``, for a batch of Gram matrices ``G [..., N, N]``.

    Args:
        G: Gram matrices of the players' vectors (symmetric positive semi-definite).
        max_iter: the most Newton iterations. A handful reach float64 precision on
            well-conditioned problems; ill-conditioned ones at N = 64 take up to ~20.
        tol: stop early once every problem's residual is ``≤ tol``. Checking costs a
            host synchronisation per iteration (free on CPU); ``None`` (default) runs
            exactly ``max_iter`` iterations with none.
        ridge: ``G`` is scaled to unit diagonal (``D G D``, ``D = diag(G)^(-1/2)``)
            and ``ridge · I`` is added, so that a singular ``G`` (identical or opposed
            vectors) still has a unique, finite solution. Default ``10 · eps(dtype)``
            (2e-15 in float64, 1e-6 in float32). Scale-relative: scaling vector ``i``
            by ``c_i`` scales ``α_i`` by exactly ``1/c_i``.
        zero_tol: where ``tr(G)/N ≤ zero_tol`` (every vector is ~0, e.g. experts just
            upcycled from one dense FFN) there is nothing to bargain over; ``α = 1``
            (uniform weights) is returned with residual 0. An absolute threshold; a
            tensor (broadcast over the batch) lets the caller make it relative to its
            vectors' scale without a host synchronisation.
        init: optional warm start ``α₀ [..., N] > 0`` (e.g. the previous step's
            solution). The default start is ``α₀ = D 1`` (exact for orthogonal
            vectors); either is first rescaled along its ray to the optimal length
            ``sqrt(N / α₀ᵀGα₀)``.
        dtype: the precision of the solve, whatever the input's (autocast is off).

    Returns:
        :class:`NashSolution` ``(weights, residual)`` in ``dtype``, on ``G``'s device;
        ``weights`` carries no gradient. At the solution ``αᵀ G α = N`` and every
        ``α_i (Gα)_i = 1``.
    """
    if G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"nash_bargaining expects G of shape (..., N, N), got {tuple(G.shape)}")
    n = G.shape[-1]
    ridge = 10 * torch.finfo(dtype).eps if ridge is None else ridge
    with torch.autocast(G.device.type, enabled=False), torch.no_grad():
        G = G.detach().to(dtype)
        G = 0.5 * (G + G.transpose(-1, -2))
        eye = torch.eye(n, dtype=dtype, device=G.device)
        diag = torch.diagonal(G, dim1=-2, dim2=-1)
        degenerate = diag.mean(-1) <= zero_tol  # [...]
        # Jacobi scaling: with D = diag(G)^(-1/2), β solves (D G D) β = 1/β iff α = D β does
        # G α = 1/α. The scaled problem has a unit diagonal, whatever the vectors' norms.
        floor = torch.finfo(dtype).eps * diag.mean(-1, keepdim=True)
        d = torch.where(degenerate.unsqueeze(-1), torch.ones_like(diag), diag.clamp_min(floor).rsqrt())
        Gs = torch.where(degenerate[..., None, None], eye, G * d.unsqueeze(-1) * d.unsqueeze(-2)) + ridge * eye

        beta = torch.ones_like(d) if init is None else init.detach().to(dtype).clamp_min(torch.finfo(dtype).tiny) / d
        beta = beta * (n / _quad(Gs, beta)).sqrt().unsqueeze(-1)
        for _ in range(max_iter):
            beta = _damped_newton_step(Gs, beta)
            if tol is not None and bool((first_order_residual(Gs, beta) <= tol).all()):
                break

        alpha = torch.where(degenerate.unsqueeze(-1), torch.ones_like(beta), d * beta)
        residual = torch.where(degenerate, torch.zeros_like(diag[..., 0]), first_order_residual(G, alpha))
    return NashSolution(alpha, residual)


def _quad(G: Tensor, x: Tensor) -> Tensor:
    """``xᵀ G x`` over the batch."""
    return (x * (G @ x.unsqueeze(-1)).squeeze(-1)).sum(-1)


def _damped_newton_step(G: Tensor, alpha: Tensor) -> Tensor:
    """``α + p / (1 + λ)`` with ``p = −H⁻¹ ∇f(α)``, ``H = G + diag(1/α²)``, ``λ² = −∇f(α)ᵀ p``."""
    inv = 1.0 / alpha
    grad = (G @ alpha.unsqueeze(-1)).squeeze(-1) - inv
    hessian = G + torch.diag_embed(inv * inv)
    p = -torch.linalg.solve_ex(hessian, grad.unsqueeze(-1))[0].squeeze(-1)
    decrement = (-(grad * p).sum(-1, keepdim=True)).clamp_min(0).sqrt()
    return alpha + p / (1 + decrement)
