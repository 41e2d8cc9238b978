"""A planted world: MoE layers whose best merge is known by construction.

The world is a stack of ``L`` residual layers of ``N`` *linear* experts on ``R^d``.
Expert ``i`` of layer ``l`` is the matrix ``E_i^l = B_l + τ_i^l``: a base ``B_l`` plus a
planted domain vector ``τ_i^l`` (Frobenius norm ``domain_norm``) whose Gram matrix is a
fixed pattern of cooperating (positive inner products) and competing (negative) experts:

    cos(τ_i, τ_j) = +0.6  for i ≠ j in {0, 1, 2}     three experts cooperate
    cos(τ_i, τ_3) = −0.4  for i in {0, 1, 2}          expert 3 competes with all of them

so that the Nash bargaining weights (``G α = 1/α``) are far from uniform: the expert that
stands apart gets 0.39, each of the three that agree 0.20 (the centroid gives 0.25 each,
and its step differs from the Nash step by 40% of its norm). A teacher
merges the experts of layer ``l`` for each sequence ``g`` with its own planted router
``w_g = softmax(R_l · mean_t h_t)``:

    W_g^l = B_l + Σ_i w_gi τ̃_i^l,  τ̃ = λ·τ      the known optimum of layer l for sequence g
    h^{l+1} = h^l + h^l (W_g^l)ᵀ

(``λ``, the world's ``scale``, plays the part of a scalar curvature ``M_i = λ·I``).
Each layer is its own regression problem: the task feeds every layer the teacher's
input ``h^l`` and asks for the teacher's output ``h^l (W_g^l)ᵀ`` (plus noise), so a
layer's merged expert is identifiable — a residual stack trained end to end could trade
errors between layers — while the layers stay coupled through what a method carries
from one to the next (the propagated base expert).

``structure`` says how the bases relate across layers — each is the generative
assumption of one method family, so each family has a world it should recover:

* ``convex``       — ``λ = 1``: ``W_g = Σ_i w_gi E_i``, the base cancels (SMEAR's world);
* ``extrapolated`` — ``λ`` as given, independent bases per layer (CAMEx's world);
* ``centroid``     — ``B_{l+1} = B_l + γ·(1/N) Σ_i τ̃_i^l`` (EP-CAMEx's world);
* ``nash``         — ``B_{l+1} = B_l + γ·Σ_i α̂_i τ̃_i^l``, ``α`` the Nash bargaining
  solution of ``G_ij = ⟨τ̃_i^l, τ̃_j^l⟩``, ``α̂ = α/Σα`` (NAMEx's world);
* ``nash_momentum`` — ``μ^{l+1} = β μ^l + Σ_i α̂_i τ̃_i^l``, ``B_{l+1} = B_l + γ·Re μ^{l+1}``,
  ``β = r e^{iθ}`` (NAMEx-Mom's world).

Inputs make each sequence's domain mix visible to a router: ``x_t = z_t + c·Σ_k p_gk u_k``
with ``z_t ~ N(0, I)``, ``p_g ~ Dirichlet(a·1)`` and ``u_k`` orthonormal.
Everything is drawn from generators seeded by the world's own ``seed``, so a world is
data: the same for every method and every run seed.
"""

from __future__ import annotations

import cmath
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..nash import nash_bargaining

STRUCTURES = ("convex", "extrapolated", "centroid", "nash", "nash_momentum")

#: cosines between the planted domain vectors of one layer (N = 4; larger N repeats the pattern)
_COSINES = ((1.0, 0.6, 0.6, -0.4), (0.6, 1.0, 0.6, -0.4), (0.6, 0.6, 1.0, -0.4), (-0.4, -0.4, -0.4, 1.0))


def planted_cosines(n: int) -> Tensor:
    """The ``N × N`` cosine pattern of the domain vectors: blocks of the 4-expert pattern
    (three cooperating experts and one competitor) on the diagonal, 0 between blocks."""
    cos = torch.zeros(n, n, dtype=torch.float64)
    block = torch.tensor(_COSINES, dtype=torch.float64)
    for start in range(0, n, 4):
        size = min(4, n - start)
        cos[start : start + size, start : start + size] = block[:size, :size]
    return cos


def nash_direction(tau: Tensor) -> tuple[Tensor, Tensor]:
    """``(Σ_i α̂_i τ_i, α̂)`` for domain vectors ``tau [N, ...]``: the normalised Nash
    bargaining weights of their Gram matrix and the combination they give."""
    flat = tau.reshape(tau.shape[0], -1).double()
    alpha, _ = nash_bargaining(flat @ flat.T, max_iter=100)
    alpha = alpha / alpha.sum()
    return torch.einsum("i,i...->...", alpha.to(tau.dtype), tau), alpha


@dataclass
class PlantedWorld:
    """The teacher: per layer the experts' bases ``bases[l] [d, d]``, domain vectors
    ``domains[l] [N, d, d]`` and router ``routers[l] [N, d]``; ``scale`` is ``λ``."""

    bases: list[Tensor]
    domains: list[Tensor]
    routers: list[Tensor]
    scale: float
    signatures: Tensor  # [N, d]: u_k
    signal: float  # c
    concentration: float  # a
    noise: float

    @property
    def experts(self) -> list[Tensor]:
        """``E_i^l = B_l + τ_i^l`` per layer: ``[N, d, d]``."""
        return [b.unsqueeze(0) + t for b, t in zip(self.bases, self.domains)]

    def merge(self, layer: int, hidden: Tensor) -> Tensor:
        """The optimum of ``layer`` for each sequence of ``hidden [G, T, d]``: ``[G, d, d]``."""
        w = torch.softmax(hidden.mean(1) @ self.routers[layer].T, dim=-1)
        return self.bases[layer] + self.scale * torch.einsum("gi,ioj->goj", w, self.domains[layer])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher on ``x [G, T, d]``: each layer's input ``[G, L, T, d]`` and merged
        matrix ``[G, L, d, d]`` (``h^{l+1} = h^l + h^l (W_g^l)ᵀ``)."""
        h, inputs, merges = x, [], []
        for layer in range(len(self.bases)):
            merged = self.merge(layer, h)
            inputs.append(h)
            merges.append(merged)
            h = h + h @ merged.transpose(1, 2)
        return torch.stack(inputs, 1), torch.stack(merges, 1)

    def sample(self, sequences: int, tokens: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)``, both ``[sequences, L, tokens, d]``: every layer's input in the
        teacher and its output ``h^l (W_g^l)ᵀ`` plus noise, drawn from NumPy's generator
        seeded with ``seed`` (the same data for every method)."""
        n, d = self.signatures.shape
        rng = np.random.default_rng(seed)
        mix = torch.from_numpy(rng.dirichlet(np.full(n, self.concentration), size=sequences))
        z = torch.from_numpy(rng.standard_normal((sequences, tokens, d)))
        inputs, merges = self.forward(z + self.signal * (mix @ self.signatures).unsqueeze(1))
        clean = inputs @ merges.transpose(-1, -2)
        targets = clean + self.noise * torch.from_numpy(rng.standard_normal(clean.shape))
        return inputs.float(), targets.float()


def _orthonormal_frobenius(n: int, d: int, generator: torch.Generator) -> Tensor:
    """``n`` random ``d × d`` matrices, orthonormal in the Frobenius inner product."""
    q, _ = torch.linalg.qr(torch.randn(d * d, n, generator=generator, dtype=torch.float64))
    return q.T.reshape(n, d, d)


def build_world(
    structure: str,
    *,
    d_model: int = 16,
    num_experts: int = 4,
    layers: int = 4,
    base_norm: float = 0.3,
    domain_norm: float = 0.3,
    scale: float = 2.0,
    gamma: float = 1.0,
    momentum: complex = cmath.rect(0.7, cmath.pi / 4),
    router_scale: float = 2.0,
    signal: float = 2.0,
    concentration: float = 0.5,
    noise: float = 0.01,
    seed: int = 0,
) -> PlantedWorld:
    """A :class:`PlantedWorld` of the given ``structure`` (see the module docstring).

    Norms are Frobenius norms divided by ``√d`` (root-mean-square singular value), so a
    world's scale does not change with ``d``.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    gen = torch.Generator().manual_seed(seed)
    d, n = d_model, num_experts
    root = d**0.5
    chol = torch.linalg.cholesky(planted_cosines(n))
    signatures, _ = torch.linalg.qr(torch.randn(d, n, generator=gen, dtype=torch.float64))
    signatures = signatures.T  # [N, d], orthonormal rows (needs d ≥ N)

    def random_base() -> Tensor:
        b = torch.randn(d, d, generator=gen, dtype=torch.float64)
        return base_norm * root * b / b.norm()

    lam = 1.0 if structure == "convex" else scale
    bases, domains, routers = [random_base()], [], []
    momentum_real = momentum_imag = None
    for layer in range(layers):
        basis = _orthonormal_frobenius(n, d, gen)
        tau = domain_norm * root * torch.einsum("ij,j...->i...", chol, basis)
        domains.append(tau)
        # the router looks at the domain signatures (plus a little of everything else)
        router = router_scale * (signatures + 0.1 * torch.randn(n, d, generator=gen, dtype=torch.float64))
        routers.append(router)
        if layer == layers - 1:
            break
        if structure in ("convex", "extrapolated"):
            bases.append(random_base())
        elif structure == "centroid":
            bases.append(bases[-1] + gamma * lam * tau.mean(0))
        else:
            step, _ = nash_direction(lam * tau)
            if structure == "nash":
                bases.append(bases[-1] + gamma * step)
            else:
                if momentum_real is None:
                    momentum_real, momentum_imag = step, torch.zeros_like(step)
                else:
                    momentum_real, momentum_imag = (
                        momentum.real * momentum_real - momentum.imag * momentum_imag + step,
                        momentum.imag * momentum_real + momentum.real * momentum_imag,
                    )
                bases.append(bases[-1] + gamma * momentum_real)
    return PlantedWorld(
        bases=bases, domains=domains, routers=routers, scale=lam,
        signatures=signatures, signal=signal, concentration=concentration, noise=noise,
    )
