"""The Nash-MTL reference procedure (Navon et al., 2022): convex-concave steps in cvxpy/ECOS.

Used only by ``namex-bench bench nbs`` to check and time :func:`nash_bargaining`.
Needs the optional extra ``namex_bench[reference]`` (cvxpy and ECOS).

With ``φ_i(α) = log α_i + log (Gα)_i`` (concave), the solution of ``G α = 1/α`` is the
point where every ``φ_i = 0``. Each step solves the convex problem

    minimise   Σ_i (G α)_i + ∇Φ(α_k)ᵀ α      (Φ = Σ_i φ_i, linearised at α_k)
    subject to φ_i(α) ≥ 0,  α ≥ 0,

on ``G / ‖G‖`` (as Nash-MTL normalises it), and stops when ``‖α_{k+1} − α_k‖ < tol``.
One problem is built per ``N`` and reused with cvxpy parameters, so only the solves
are timed.
"""

from __future__ import annotations

import numpy as np


def _require_cvxpy():
    try:
        import cvxpy as cp
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Nash-MTL reference needs cvxpy and ECOS: pip install 'namex_bench[reference]'"
        ) from None
    if "ECOS" not in cp.installed_solvers():  # pragma: no cover
        raise ImportError("the Nash-MTL reference needs the ECOS solver: pip install ecos")
    return cp


class NashMTLReference:
    """A reusable convex-concave solver for ``G α = 1/α`` at one size ``N``."""

    def __init__(self, n: int, max_iter: int = 50, tol: float = 1e-9):
        cp = _require_cvxpy()
        self.cp, self.n, self.max_iter, self.tol = cp, n, max_iter, tol
        self.alpha = cp.Variable(n, nonneg=True)
        self.G = cp.Parameter((n, n))
        self.linear = cp.Parameter(n)
        G_alpha = self.G @ self.alpha
        objective = cp.Minimize(cp.sum(G_alpha) + self.linear @ self.alpha)
        constraints = [cp.log(self.alpha) + cp.log(G_alpha) >= 0]
        self.problem = cp.Problem(objective, constraints)

    def solve(self, G: np.ndarray) -> tuple[np.ndarray, int]:
        """``(α, steps)`` for one Gram matrix ``G [N, N]`` (float64 numpy)."""
        norm = float(np.linalg.norm(G))
        Gn = G / norm
        self.G.value = Gn
        alpha = np.ones(self.n)
        steps = 0
        for steps in range(1, self.max_iter + 1):  # noqa: B007 - read after the loop: the iterations taken
            G_alpha = Gn @ alpha
            self.linear.value = 1.0 / alpha + Gn.T @ (1.0 / G_alpha)
            self.problem.solve(solver=self.cp.ECOS, abstol=1e-12, reltol=1e-12, feastol=1e-12, max_iters=200)
            new = np.asarray(self.alpha.value, dtype=np.float64)
            if new is None or not np.all(np.isfinite(new)):
                raise RuntimeError(f"ECOS failed on an N={self.n} problem: {self.problem.status}")
            done = np.linalg.norm(new - alpha) < self.tol
            alpha = new
            if done:
                break
        # α for G/‖G‖ is α_G · sqrt(‖G‖).
        return alpha / np.sqrt(norm), steps
