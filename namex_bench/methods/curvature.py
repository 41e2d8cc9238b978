"""Kronecker-factored curvature matrices ``M_i`` of the CAMEx family.

For every weight matrix ``W ∈ R^{out×in}`` of expert ``i``:

    M_i(W) = Σ_{r=1..R} (A_ri ⊗ B_ri) · W · (C_ri ⊗ D_ri)ᵀ

with ``out = o1·o2`` and ``in = i1·i2`` near-square factorisations (``o1`` the largest
divisor of ``out`` not above ``√out``), ``A ∈ R^{o1×o1}``, ``B ∈ R^{o2×o2}``,
``C ∈ R^{i1×i1}``, ``D ∈ R^{i2×i2}``. Writing ``W`` as a tensor ``W[a, b, c, d]``
(``out = (a, b)``, ``in = (c, d)``, row-major), this is

    M(W)[a, b, c, d] = Σ_r A_r[a, a'] B_r[b, b'] C_r[c, c'] D_r[d, d'] W[a', b', c', d'],

applied as four mode products — the Kronecker products are never built. It costs
``R·(o1 + o2 + i1 + i2)`` multiply-adds per weight. Biases pass through unchanged
(``M_i`` acts on weight matrices only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..moe.experts import ExpertParams, ExpertSpec
from ..moe.precision import at_least_float32, full_precision

CURVATURE_INITS = ("identity", "camex")


def near_square_factors(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a·b = n`` and ``a`` the largest divisor of ``n`` not above ``√n``."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a, n // a


class KroneckerCurvature(nn.Module):
    """Learned ``M_i`` for each of ``N`` experts and each weight matrix, rank ``R``.

    ``init="identity"`` (default) makes ``M_i = I`` at the start: each factor is
    ``R^{-1/4}·I``, so the ``R`` terms sum to ``W``. ``init="camex"`` sets every factor to
    ``I`` as the CAMEx code does, which makes ``M_i = R·I``.
    """

    def __init__(self, spec: ExpertSpec, num_experts: int, rank: int = 1, init: str = "identity"):
        super().__init__()
        if rank < 1:
            raise ValueError(f"curvature rank must be >= 1, got {rank}")
        if init not in CURVATURE_INITS:
            raise ValueError(f"curvature init must be one of {CURVATURE_INITS}, got {init!r}")
        self.rank = rank
        self.shapes: dict[str, tuple[int, int, int, int]] = {}
        value = rank**-0.25 if init == "identity" else 1.0
        for name, (out, inp) in spec.matrix_shapes.items():
            o1, o2 = near_square_factors(out)
            i1, i2 = near_square_factors(inp)
            self.shapes[name] = (o1, o2, i1, i2)
            for letter, size in zip("ABCD", (o1, o2, i1, i2)):
                eye = torch.eye(size).expand(num_experts, rank, size, size)
                self.register_parameter(f"{name}_{letter}", nn.Parameter(value * eye.clone()))

    def factors(self, name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(getattr(self, f"{name}_{letter}") for letter in "ABCD")  # type: ignore[return-value]

    def forward(self, tau: ExpertParams) -> ExpertParams:
        """``τ̃_i = M_i(τ_i)`` for every matrix of ``τ [N, ...]``; biases unchanged.

        Computed with autocast off, in float32 or wider, like the merge it feeds: the
        domain vectors stay as exact as the experts they are the differences of.
        """
        out = dict(tau)
        for name, shape in self.shapes.items():
            w = at_least_float32(tau[name])
            with full_precision(w):
                out[name] = sum(kronecker_apply(w, *(f[:, r] for f in self.factors(name)), shape) for r in range(self.rank))
        return out


def kronecker_apply(w: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """``(A_i ⊗ B_i) W_i (C_i ⊗ D_i)ᵀ`` for every expert ``i`` of ``w [N, out, in]``.

    Four mode products, each one (broadcast) batched matmul on a contiguous view of the
    running result, so no permutation is ever copied.
    """
    n = w.shape[0]
    o1, o2, i1, i2 = shape
    A, B, C, D = (f.to(w.dtype) for f in (A, B, C, D))
    t = A @ w.reshape(n, o1, o2 * i1 * i2)  # mode a
    t = B.unsqueeze(1) @ t.reshape(n, o1, o2, i1 * i2)  # mode b
    t = C.unsqueeze(1) @ t.reshape(n, o1 * o2, i1, i2)  # mode c
    t = t.reshape(n, o1 * o2 * i1, i2) @ D.transpose(1, 2)  # mode d
    return t.reshape_as(w)
