"""Tests of the batched Nash bargaining solver ``namex_bench.nash_bargaining``.

The facts pinned here are those of METHODS.md ("namex"): at the solution
``α_i (Gα)_i = 1``, ``α > 0``, ``Gα > 0``, ``αᵀGα = N``; scale and permutation
equivariance; uniform weights for orthogonal equal-norm vectors; larger weight for an
expert that stands apart; no NaN on degenerate inputs; no gradient through ``α``.
"""

from __future__ import annotations

import math

import pytest
import torch

from namex_bench import nash_bargaining
from namex_bench.nash import first_order_residual

SIZES = (2, 4, 8, 16, 32, 64)


def random_gram(n: int, seed: int, dim: int | None = None, dtype=torch.float64) -> torch.Tensor:
    """``G = V Vᵀ`` for ``n`` random vectors of dimension ``dim`` (PD when ``dim >= n``)."""
    gen = torch.Generator().manual_seed(seed)
    dim = dim or 2 * n + 3
    v = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return (v @ v.T).to(dtype)


def utilities(G: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return (G @ alpha.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------------- solution


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", (0, 1))
def test_first_order_condition(n, seed):
    G = random_gram(n, seed=100 * n + seed)
    alpha, residual = nash_bargaining(G)
    assert alpha.shape == (n,) and alpha.dtype == torch.float64
    err = (alpha * utilities(G, alpha) - 1).abs().max().item()
    assert err <= 1e-6
    assert residual.item() <= 1e-6
    # the reported residual is the same quantity, computed on the caller's G
    assert residual.item() == pytest.approx(first_order_residual(G, alpha).item(), abs=1e-15)


@pytest.mark.parametrize("n", SIZES)
def test_positive_weights_and_utilities(n):
    G = random_gram(n, seed=7 * n)
    alpha, _ = nash_bargaining(G)
    assert torch.all(alpha > 0)
    assert torch.all(utilities(G, alpha) > 0)


@pytest.mark.parametrize("n", SIZES)
def test_quadratic_form_equals_n(n):
    G = random_gram(n, seed=11 * n)
    alpha, _ = nash_bargaining(G)
    quad = (alpha @ G @ alpha).item()
    assert quad == pytest.approx(n, rel=1e-8)


def test_ill_conditioned_still_solves():
    # nearly collinear vectors: a badly conditioned (but PD) Gram matrix
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(1, 40, generator=gen, dtype=torch.float64)
    v = base + 1e-2 * torch.randn(16, 40, generator=gen, dtype=torch.float64)
    G = v @ v.T
    alpha, residual = nash_bargaining(G)
    assert torch.isfinite(alpha).all() and torch.all(alpha > 0)
    assert residual.item() <= 1e-6


# ------------------------------------------------------------------------ equivariance


@pytest.mark.parametrize("c", (1e-3, 0.5, 7.0, 1e4))
def test_scale_equivariance(c):
    G = random_gram(8, seed=21)
    alpha, _ = nash_bargaining(G)
    alpha_c, residual_c = nash_bargaining(c * c * G)  # every vector scaled by c
    torch.testing.assert_close(alpha_c, alpha / c, rtol=1e-10, atol=0)
    torch.testing.assert_close(alpha_c / alpha_c.sum(), alpha / alpha.sum(), rtol=1e-10, atol=0)
    assert residual_c.item() <= 1e-6


def test_per_vector_scale_equivariance():
    n = 6
    G = random_gram(n, seed=22)
    c = torch.tensor([0.1, 0.5, 1.0, 2.0, 10.0, 300.0], dtype=torch.float64)
    alpha, _ = nash_bargaining(G)
    alpha_c, residual_c = nash_bargaining(c[:, None] * G * c[None, :])  # vector i scaled by c_i
    torch.testing.assert_close(alpha_c, alpha / c, rtol=1e-10, atol=0)
    assert residual_c.item() <= 1e-6


@pytest.mark.parametrize("n", (4, 16))
def test_permutation_equivariance(n):
    G = random_gram(n, seed=31 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    alpha, _ = nash_bargaining(G)
    alpha_p, _ = nash_bargaining(G[perm][:, perm])
    torch.testing.assert_close(alpha_p, alpha[perm], rtol=1e-10, atol=0)


# ------------------------------------------------------------------------- fairness


@pytest.mark.parametrize("n", (2, 3, 5, 8))
def test_orthogonal_equal_norm_gives_uniform_weights(n):
    gen = torch.Generator().manual_seed(n)
    q, _ = torch.linalg.qr(torch.randn(20, n, generator=gen, dtype=torch.float64))
    v = 2.5 * q.T  # n orthogonal vectors of norm 2.5
    alpha, residual = nash_bargaining(v @ v.T)
    torch.testing.assert_close(alpha / alpha.sum(), torch.full((n,), 1.0 / n, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha, torch.full((n,), 1 / 2.5, dtype=torch.float64), rtol=1e-10, atol=0)
    assert residual.item() <= 1e-10


def test_expert_standing_apart_gets_larger_weight():
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e3 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    a = e1
    b = (e1 + 0.05 * e2) / math.hypot(1.0, 0.05)  # nearly aligned with a, same norm
    c = e3  # orthogonal to both, same norm
    v = torch.stack([a, b, c])
    alpha, residual = nash_bargaining(v @ v.T)
    assert residual.item() <= 1e-10
    assert alpha[2] > alpha[0] and alpha[2] > alpha[1]
    assert alpha[0] == pytest.approx(alpha[1].item(), rel=1e-10)  # the aligned pair is symmetric
    # closed form: α_c = 1, α_a = α_b = 1/sqrt(1 + cos)
    cos = (a @ b).item()
    assert alpha[2].item() == pytest.approx(1.0, rel=1e-10)
    assert alpha[0].item() == pytest.approx(1 / math.sqrt(1 + cos), rel=1e-10)


# --------------------------------------------------------------------------- batching


def test_batched_equals_separate():
    n = 5
    G = torch.stack([torch.stack([random_gram(n, seed=10 * i + j) for j in range(4)]) for i in range(3)])
    assert G.shape == (3, 4, n, n)
    alpha, residual = nash_bargaining(G)
    assert alpha.shape == (3, 4, n) and residual.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            a_ij, r_ij = nash_bargaining(G[i, j])
            torch.testing.assert_close(alpha[i, j], a_ij, rtol=1e-12, atol=0)
            assert residual[i, j].item() == pytest.approx(r_ij.item(), abs=1e-12)


def test_batch_with_a_degenerate_member():
    G = torch.stack([random_gram(4, seed=1), torch.zeros(4, 4, dtype=torch.float64)])
    alpha, residual = nash_bargaining(G)
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(alpha[1], torch.ones(4, dtype=torch.float64))
    assert residual[1].item() == 0.0
    torch.testing.assert_close(alpha[0], nash_bargaining(G[0]).weights, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- degenerate


def test_zero_gram_gives_uniform_weights():
    alpha, residual = nash_bargaining(torch.zeros(4, 4, dtype=torch.float64))
    assert not torch.isnan(alpha).any()
    torch.testing.assert_close(alpha / alpha.sum(), torch.full((4,), 0.25, dtype=torch.float64))
    assert residual.item() == 0.0


def test_identical_vectors_singular_gram():
    v = torch.randn(1, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64).expand(4, 10)
    alpha, residual = nash_bargaining(v @ v.T)
    assert torch.isfinite(alpha).all() and torch.isfinite(residual).all()
    assert torch.all(alpha > 0)
    torch.testing.assert_close(alpha, alpha[:1].expand(4), rtol=1e-10, atol=0)
    assert residual.item() <= 1e-6


def test_opposed_vectors():
    tau1 = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = torch.stack([tau1, -tau1])
    alpha, residual = nash_bargaining(v @ v.T)
    assert torch.isfinite(alpha).all() and torch.isfinite(residual).all()
    assert not torch.isnan(alpha).any()
    assert torch.all(alpha > 0)


@pytest.mark.xfail(strict=True, reason="known defect: a float32 Gram of nearly opposed vectors, solved in float64 with "
                   "float64's ridge (2e-15), is indefinite by float32 rounding (~1e-7) and gives NaN; NAMEx passes float32 "
                   "Grams (seen when its base is ablated to the experts' mean in a 3-step model)")
def test_nearly_opposed_float32_gram_solved_in_float64():
    # the Gram of two opposed unit vectors as float32 rounding can leave it: |G_01| one ulp above 1
    G = torch.tensor([[1.0, -1.0000001], [-1.0000001, 1.0]])
    alpha, residual = nash_bargaining(G)
    assert torch.isfinite(alpha).all() and torch.isfinite(residual).all()


@pytest.mark.parametrize("case", ("random", "zero", "identical", "opposed"))
def test_float32(case):
    gen = torch.Generator().manual_seed(2)
    if case == "random":
        G = random_gram(8, seed=2, dtype=torch.float32)
    elif case == "zero":
        G = torch.zeros(8, 8)
    elif case == "identical":
        v = torch.randn(1, 12, generator=gen).expand(8, 12)
        G = v @ v.T
    else:
        t = torch.randn(12, generator=gen)
        v = torch.stack([t, -t])
        G = v @ v.T
    alpha, residual = nash_bargaining(G, dtype=torch.float32)
    assert alpha.dtype == torch.float32 and residual.dtype == torch.float32
    assert torch.isfinite(alpha).all() and torch.isfinite(residual).all()
    assert torch.all(alpha > 0)
    if case == "random":
        # The default float32 ridge (10·eps ≈ 1.2e-6, added to the unit-diagonal scaled G)
        # biases the solution slightly: on this well-conditioned G the residual is ≈ 1.1e-5
        # (≈ 1e-6 with ridge=0).
        assert residual.item() <= 5e-5
        assert nash_bargaining(G, dtype=torch.float32, ridge=0.0).residual.item() <= 1e-5


# ------------------------------------------------------------------- options / api


@pytest.mark.parametrize("n", (4, 32))
def test_tol_early_exit_matches_full_run(n):
    G = random_gram(n, seed=41 * n)
    full, _ = nash_bargaining(G)
    early, residual = nash_bargaining(G, tol=1e-12)
    torch.testing.assert_close(early, full, rtol=0, atol=1e-10)
    assert residual.item() <= 1e-10


def test_warm_start_gives_same_answer():
    G = random_gram(8, seed=50)
    alpha, _ = nash_bargaining(G)
    warm, residual = nash_bargaining(G, init=alpha * 3.0, max_iter=5)
    torch.testing.assert_close(warm, alpha, rtol=1e-10, atol=0)
    assert residual.item() <= 1e-10


def test_no_gradient_through_weights():
    v = torch.randn(4, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    G = v @ v.T
    assert G.requires_grad
    alpha, residual = nash_bargaining(G)
    assert alpha.requires_grad is False
    assert residual.requires_grad is False


@pytest.mark.parametrize("shape", ((3, 4), (4,), (2, 3, 5)))
def test_non_square_raises(shape):
    with pytest.raises(ValueError):
        nash_bargaining(torch.ones(shape, dtype=torch.float64))
