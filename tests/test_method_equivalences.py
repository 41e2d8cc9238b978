"""Equivalences between merging methods, propagation arithmetic, gradients, curvature.

Every identity tested here follows from METHODS.md: ``namex_mom`` with ``β = 0`` is
``namex``; ``ep_camex`` with ``γ = 0`` is ``camex`` sharing one base; ``smear`` is
``topk_merge`` with ``k = N``; ``namex`` equals ``ep_camex`` for orthogonal domain
vectors of equal norm; the momentum recursion ``μ' = βμ + d``, ``E' = E + γ Re μ'``;
the Kronecker-factored curvature ``M(W) = Σ_r (A ⊗ B) W (C ⊗ D)ᵀ``; the TIES mask;
and the convergence of complex momentum on a rotational linear system.

A stack of MoE layers is run explicitly, passing the propagation state up:
``state = None; for layer in layers: out = layer(h, state); h = h + out.y; state = out.state``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from namex_bench import ExpertSpec, MoELayer, PropagationState, nash_bargaining
from namex_bench.methods.curvature import KroneckerCurvature, near_square_factors
from namex_bench.methods.namex_mom import complex_momentum_step

D_MODEL, D_HIDDEN, N, B, T = 8, 16, 4, 2, 6
DT = torch.float64


# ----------------------------------------------------------------------------- helpers


def flatten(params):
    """Every parameter of each expert concatenated into one vector: ``[N, ...] → [N, P]``."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], dim=1)


def make_layers(method, n_layers=3, *, spec=None, num_experts=N, options=None, seed=0, **layer_kwargs):
    """``n_layers`` MoE layers of one method (``moe_index = i``), float64, deterministic."""
    spec = spec or ExpertSpec(D_MODEL, D_HIDDEN)
    torch.manual_seed(seed)
    return [
        MoELayer(spec, num_experts, method, dict(options or {}), moe_index=i, **layer_kwargs).double()
        for i in range(n_layers)
    ]


def run_stack(layers, h, state=None):
    """The explicit stack: ``h ← h + y`` layer by layer; returns the final ``h`` and every output."""
    outs = []
    for layer in layers:
        out = layer(h, state)
        h = h + out.y
        state = out.state
        outs.append(out)
    return h, outs


def inputs(seed=123, d_model=D_MODEL):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d_model, generator=g, dtype=DT)


def perturb_curvature(layers, std=0.1, seed=7):
    """Move every curvature factor away from the identity (random, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            for p in layer.method.curvature.parameters():
                p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


def copy_layers(src, dst):
    for a, b in zip(src, dst):
        b.load_state_dict(a.state_dict())


def assert_params_close(a, b, **kw):
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], **kw)


def nonzero_grad(p) -> bool:
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


# -------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("kind", ("mlp", "glu"))
def test_namex_mom_with_zero_radius_equals_namex(kind):
    spec = ExpertSpec(D_MODEL, D_HIDDEN, kind=kind, activation="silu" if kind == "glu" else "gelu")
    opts = {"gamma": 0.7}
    ref = make_layers("namex", spec=spec, options=opts, seed=1)
    mom = make_layers("namex_mom", spec=spec, options={**opts, "momentum_radius": 0.0}, seed=2)
    perturb_curvature(ref)
    copy_layers(ref, mom)
    x = inputs()
    h_ref, outs_ref = run_stack(ref, x)
    h_mom, outs_mom = run_stack(mom, x)
    torch.testing.assert_close(h_mom, h_ref, rtol=0, atol=1e-10)
    for o_ref, o_mom in zip(outs_ref, outs_mom):
        torch.testing.assert_close(o_mom.y, o_ref.y, rtol=0, atol=1e-10)
        assert_params_close(o_mom.state.base, o_ref.state.base, rtol=0, atol=1e-10)
    assert outs_mom[-1].state.depth == 3
    # the base really moved from layer to layer (so the comparison is not vacuous)
    start = mom[0].base.expert(0)
    moved = max((outs_mom[-1].state.base[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3


def test_ep_camex_with_zero_gamma_equals_camex_sharing_one_base():
    ep = make_layers("ep_camex", options={"gamma": 0.0}, seed=3)
    cam = make_layers("camex", seed=4)
    perturb_curvature(ep)  # otherwise the base cancels out of the merge (see below)
    assert ep[0].base is not None and ep[1].base is None and ep[2].base is None
    base_state = {f"base.{k}": v for k, v in ep[0].base.state_dict().items()}
    for e, c in zip(ep, cam):
        shared = {k: v for k, v in e.state_dict().items() if ".anchor_" not in k}  # anchors: 0, not upcycled
        c.load_state_dict({**shared, **base_state})  # experts, router, curvature, + ep's base
    x = inputs()
    h_ep, outs_ep = run_stack(ep, x)
    h_cam, outs_cam = run_stack(cam, x)
    torch.testing.assert_close(h_ep, h_cam, rtol=0, atol=1e-12)
    for o in outs_ep:  # γ = 0: the base never moves
        assert_params_close(o.state.base, ep[0].base.expert(0), rtol=0, atol=0)


def test_smear_equals_topk_merge_with_k_equal_n():
    sm = make_layers("smear", seed=5)
    tk = make_layers("topk_merge", seed=6, top_k=N)
    copy_layers(sm, tk)
    x = inputs()
    h_sm, _ = run_stack(sm, x)
    h_tk, _ = run_stack(tk, x)
    torch.testing.assert_close(h_sm, h_tk, rtol=0, atol=1e-12)


UNMASKED_IDENTITY = {"mask": "none", "curvature_init": "identity"}


def test_camex_without_mask_at_identity_curvature_equals_smear():
    """With ``M_i = I``, mask none and scores summing to 1, ``Ê = E_m + Σ s_i (E_i − E_m) = Σ s_i E_i``:
    the base expert cancels (so it gets no gradient until the curvature moves). Hence the
    defaults: the TIES mask, and the CAMEx code's curvature initialisation."""
    cam = make_layers("camex", options=UNMASKED_IDENTITY, seed=8)
    sm = make_layers("smear", seed=9)
    for c, s in zip(cam, sm):
        s.load_state_dict({k: v for k, v in c.state_dict().items() if k.startswith(("router.", "experts."))})
    x = inputs()
    torch.testing.assert_close(run_stack(cam, x)[0], run_stack(sm, x)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ("camex", "ep_camex", "namex", "namex_mom"))
def test_default_base_reaches_the_output_at_initialisation(method):
    """Under the default options the base expert matters from the first step: at initialisation
    the method differs from ``smear`` on the same experts and router, and the base's gradient is
    of the order of the experts' (on the first release: 3e-6 against 15)."""
    layers = make_layers(method, 3, seed=40)
    sm = make_layers("smear", 3, seed=41)
    for c, s in zip(layers, sm):
        s.load_state_dict({k: v for k, v in c.state_dict().items() if k.startswith(("router.", "experts."))})
    x = inputs()
    h, _ = run_stack(layers, x)
    h_smear, _ = run_stack(sm, x)
    assert (h - h_smear).abs().max() > 0.05 * (h_smear - x).abs().max()
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(42), dtype=DT)
    (h * w).sum().backward()
    base = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in layers[0].base.parameters()]))
    experts = [torch.linalg.vector_norm(torch.cat([p.grad[i].flatten() for p in layers[0].experts.parameters()])) for i in range(N)]
    mean_expert = sum(experts) / N
    assert 0.1 * mean_expert < base < 10 * mean_expert, (base.item(), mean_expert.item())


def _orthogonal_domain_vectors(spec, num_experts, norm, seed):
    """``N`` mutually orthogonal vectors of equal norm, as expert parameters ``[N, ...]``."""
    shapes = spec.param_shapes
    total = sum(math.prod(s) for s in shapes.values())
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(total, num_experts, generator=g, dtype=DT))
    flat = norm * q.T  # [N, P], orthogonal rows of norm `norm`
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[:, start : start + size].reshape(num_experts, *shape)
        start += size
    return out


def _set_experts_around_base(layer, tau):
    base = layer.base.expert(0)
    with torch.no_grad():
        for name, p in layer.experts.params().items():
            p.copy_(base[name].unsqueeze(0) + tau[name])


def test_namex_with_orthogonal_equal_norm_domain_vectors_equals_ep_camex():
    spec = ExpertSpec(D_MODEL, D_HIDDEN)
    nx = make_layers("namex", 1, options={"gamma": 0.8, "placement": "propagation"}, seed=10)[0]
    ep = make_layers("ep_camex", 1, options={"gamma": 0.8}, seed=11)[0]
    tau = _orthogonal_domain_vectors(spec, N, norm=0.3, seed=12)
    _set_experts_around_base(nx, tau)
    ep.load_state_dict(nx.state_dict())
    # the domain vectors really are orthogonal and of equal norm (curvature = I at init)
    flat = flatten({k: v - nx.base.expert(0)[k] for k, v in nx.experts.params().items()}).detach()
    torch.testing.assert_close(flat @ flat.T, 0.09 * torch.eye(N, dtype=DT), rtol=0, atol=1e-12)

    x = inputs()
    out_nx, out_ep = nx(x), ep(x)
    torch.testing.assert_close(out_nx.stats["nbs_weights"], torch.full((N,), 1 / N, dtype=DT), rtol=0, atol=1e-10)
    assert_params_close(out_nx.state.base, out_ep.state.base, rtol=0, atol=1e-10)
    torch.testing.assert_close(out_nx.y, out_ep.y, rtol=0, atol=1e-12)  # same merge (router scores)

    # sanity: with non-orthogonal domain vectors the two steps differ
    with torch.no_grad():
        nx.experts.w_in[1].copy_(nx.experts.w_in[0] + 0.01)
    ep.load_state_dict(nx.state_dict())
    diff = (nx(x).state.base["w_in"] - ep(x).state.base["w_in"]).abs().max()
    assert diff > 1e-4


def test_namex_mom_propagation_matches_hand_computation():
    gamma, r, theta = 0.5, 0.7, math.pi / 8
    layers = make_layers("namex_mom", 2, options={"gamma": gamma, "momentum_radius": r, "momentum_angle": theta}, seed=13)
    perturb_curvature(layers, seed=14)
    beta = complex(r * math.cos(theta), r * math.sin(theta))
    x = inputs()
    _, outs = run_stack(layers, x)

    def step(layer, base):
        experts = {k: v.detach() for k, v in layer.experts.params().items()}
        base = {k: v.detach() for k, v in base.items()}
        tau = {k: experts[k] - base[k].unsqueeze(0) for k in experts}
        with torch.no_grad():
            tau_tilde = layer.method.curvature(tau)
        flat = flatten(tau_tilde)
        alpha, _ = nash_bargaining(flat @ flat.T)
        alpha_hat = alpha / alpha.sum()
        d = {k: torch.einsum("n,n...->...", alpha_hat, t) for k, t in tau_tilde.items()}
        return alpha_hat, d

    E0 = {k: v.detach() for k, v in layers[0].base.expert(0).items()}
    a0, d0 = step(layers[0], E0)
    mu1_r, mu1_i = d0, {k: torch.zeros_like(v) for k, v in d0.items()}  # μ¹ = β·0 + d⁰
    E1 = {k: E0[k] + gamma * mu1_r[k] for k in E0}
    a1, d1 = step(layers[1], E1)
    mu2_r = {k: beta.real * mu1_r[k] - beta.imag * mu1_i[k] + d1[k] for k in d1}
    mu2_i = {k: beta.imag * mu1_r[k] + beta.real * mu1_i[k] for k in d1}
    E2 = {k: E1[k] + gamma * mu2_r[k] for k in E1}

    tol = dict(rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(outs[0].stats["nbs_weights"].double(), a0, **tol)
    torch.testing.assert_close(outs[1].stats["nbs_weights"].double(), a1, **tol)
    assert_params_close(outs[0].state.base, E1, **tol)
    assert_params_close(outs[0].state.momentum[0], mu1_r, **tol)
    assert_params_close(outs[0].state.momentum[1], mu1_i, **tol)
    assert_params_close(outs[1].state.base, E2, **tol)
    assert_params_close(outs[1].state.momentum[0], mu2_r, **tol)
    assert_params_close(outs[1].state.momentum[1], mu2_i, **tol)
    assert outs[1].state.depth == 2


# ----------------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", ("camex", "ep_camex", "namex", "namex_mom"))
def test_gradients_reach_router_experts_base_and_curvature(method):
    layer = make_layers(method, 1, seed=20)[0]
    perturb_curvature([layer], seed=21)  # at M = I the base cancels out of the merge
    x = inputs()
    w = torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(22), dtype=DT)
    out = layer(x)
    (out.y * w).sum().backward()
    assert nonzero_grad(layer.router.gate.weight)
    for name, p in layer.experts.named_parameters():
        assert nonzero_grad(p), name
    for name, p in layer.base.named_parameters():
        assert nonzero_grad(p), name
    weight_factors = [p for n, p in layer.method.curvature.named_parameters()]
    assert weight_factors and all(nonzero_grad(p) for p in weight_factors)


@pytest.mark.parametrize("method", ("smear", "topk_merge", "smoe"))
def test_gradients_reach_router_and_experts_without_base(method):
    layer = make_layers(method, 1, seed=23)[0]
    assert layer.base is None
    x = inputs()
    w = torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(24), dtype=DT)
    (layer(x).y * w).sum().backward()
    assert nonzero_grad(layer.router.gate.weight)
    for name, p in layer.experts.named_parameters():
        assert nonzero_grad(p), name


@pytest.mark.parametrize("method", ("ep_camex", "namex", "namex_mom"))
def test_propagated_base_gets_gradient_from_the_top_of_the_stack(method):
    layers = make_layers(method, 3, options={"gamma": 0.5}, seed=25)
    perturb_curvature(layers, seed=26)
    assert layers[0].base is not None
    assert layers[1].base is None and layers[2].base is None
    x = inputs()
    h, outs = run_stack(layers, x)
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(27), dtype=DT)
    (h * w).sum().backward()
    for name, p in layers[0].base.named_parameters():
        assert nonzero_grad(p), name
    for layer in layers:
        assert nonzero_grad(layer.router.gate.weight)
        assert all(nonzero_grad(p) for p in layer.experts.parameters())
    # the gradient through the propagated base alone: a loss on the top layer's output only
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    _, outs = run_stack(layers[:2], x)
    top = layers[2](x, outs[1].state)  # the top layer's input does not depend on the base
    (top.y * w).sum().backward()
    for name, p in layers[0].base.named_parameters():
        assert nonzero_grad(p), name


def test_base_gets_no_gradient_at_identity_curvature_without_mask():
    """Documented consequence of METHODS.md: with ``M_i = I``, no mask and scores summing to 1 the
    merge ``E_m + Σ s_i (E_i − E_m)`` does not depend on ``E_m``, so the base's gradient is exactly
    zero until the curvature factors move away from the identity (not the defaults: see above)."""
    layers = make_layers("ep_camex", 3, options={"gamma": 0.5, **UNMASKED_IDENTITY}, seed=28)
    h, _ = run_stack(layers, inputs())
    h.pow(2).sum().backward()
    scale = max(p.grad.abs().max().item() for p in layers[0].experts.parameters())
    assert scale > 1e-3
    for p in layers[0].base.parameters():
        # zero up to the rounding of the router's scores (Σ s_i = 1 ± ~1e-16 in float64)
        assert p.grad is None or p.grad.abs().max() < 1e-10 * scale
    assert any(nonzero_grad(p) for p in layers[0].method.curvature.parameters())


# ----------------------------------------------------------------------- curvature


CURV_SPECS = (ExpertSpec(4, 6), ExpertSpec(9, 12), ExpertSpec(4, 6, kind="glu", activation="silu"))


def _random_tau(spec, num_experts, seed):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(num_experts, *shape, generator=g, dtype=DT) for name, shape in spec.param_shapes.items()}


@pytest.mark.parametrize("spec", CURV_SPECS, ids=lambda s: f"{s.kind}-{s.d_model}x{s.d_hidden}")
@pytest.mark.parametrize("rank", (1, 2, 3))
def test_identity_curvature_is_identity(spec, rank):
    curv = KroneckerCurvature(spec, 3, rank=rank, init="identity").double()
    tau = _random_tau(spec, 3, seed=rank)
    # The factors R^{-1/4}·I are created in float32, so after .double() the map is the
    # identity only to float32 precision when R^{-1/4} is not a float (R = 2, 3): ~1.3e-7.
    tol = 1e-12 if rank == 1 else 1e-6
    assert_params_close(curv(tau), tau, rtol=tol, atol=tol)
    # built in float64 from the start, it is the identity to float64 precision
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        curv64 = KroneckerCurvature(spec, 3, rank=rank, init="identity")
    finally:
        torch.set_default_dtype(default)
    assert_params_close(curv64(tau), tau, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", CURV_SPECS, ids=lambda s: f"{s.kind}-{s.d_model}x{s.d_hidden}")
@pytest.mark.parametrize("rank", (1, 2, 3))
def test_camex_curvature_is_rank_times_identity(spec, rank):
    curv = KroneckerCurvature(spec, 3, rank=rank, init="camex").double()
    tau = _random_tau(spec, 3, seed=10 + rank)
    out = curv(tau)
    for name in spec.matrix_shapes:
        torch.testing.assert_close(out[name], rank * tau[name], rtol=1e-12, atol=1e-12)
    for name in set(spec.param_shapes) - set(spec.matrix_shapes):  # biases pass through
        torch.testing.assert_close(out[name], tau[name], rtol=0, atol=0)


@pytest.mark.parametrize("spec", CURV_SPECS[:2], ids=lambda s: f"{s.kind}-{s.d_model}x{s.d_hidden}")
@pytest.mark.parametrize("rank", (1, 2))
def test_kronecker_curvature_matches_explicit_formula(spec, rank):
    n = 3
    curv = KroneckerCurvature(spec, n, rank=rank).double()
    g = torch.Generator().manual_seed(30 + rank)
    with torch.no_grad():
        for p in curv.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    tau = _random_tau(spec, n, seed=40 + rank)
    out = curv(tau)
    # the shapes asked for: (out=6, in=4), (out=4, in=6), (out=12, in=9), (out=9, in=12)
    for name, (o, i) in spec.matrix_shapes.items():
        A, Bf, C, Df = curv.factors(name)
        assert A.shape[-1] * Bf.shape[-1] == o and C.shape[-1] * Df.shape[-1] == i
        for e in range(n):
            expected = sum(
                torch.kron(A[e, r], Bf[e, r]) @ tau[name][e] @ torch.kron(C[e, r], Df[e, r]).T for r in range(rank)
            )
            torch.testing.assert_close(out[name][e], expected, rtol=1e-10, atol=1e-10)


def test_near_square_factors():
    assert near_square_factors(1024) == (32, 32)
    assert near_square_factors(12) == (3, 4)
    assert near_square_factors(7) == (1, 7)
    assert near_square_factors(6) == (2, 3)
    assert near_square_factors(9) == (3, 3)
    assert near_square_factors(1) == (1, 1)
    for n in range(1, 200):
        a, b = near_square_factors(n)
        assert a * b == n and a <= math.isqrt(n)


# ----------------------------------------------------------------------------- TIES


def test_ties_mask_drops_a_disagreeing_expert():
    spec = ExpertSpec(D_MODEL, D_HIDDEN)
    layer = make_layers("camex", 1, num_experts=3, options={"mask": "ties"}, seed=31)[0]
    method = layer.method
    with torch.no_grad():
        layer.base.w_in.zero_()
        layer.experts.w_in[:, 0, 0] = torch.tensor([-5.0, 3.0, 4.0], dtype=DT)  # sum +2: expert 0 disagrees
    scores = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], dtype=DT)
    base = layer.base.expert(0)

    def merged_for(experts):
        tau, tau_tilde = method.domain_vectors(experts, base)
        return method.merge(base, tau, tau_tilde, scores).materialise()

    merged = merged_for(layer.experts.params())
    expected = scores[:, 1] * 3.0 + scores[:, 2] * 4.0  # expert 0 contributes nothing there
    torch.testing.assert_close(merged["w_in"][:, 0, 0], expected, rtol=0, atol=1e-12)

    # hand-computed merge everywhere: Ê = E_m + Σ s_i mask_i τ_i  (curvature = I)
    experts = layer.experts.params()
    for name in spec.param_shapes:
        tau = experts[name] - base[name].unsqueeze(0)
        mask = (tau.sign() == tau.sum(0, keepdim=True).sign()).to(DT)
        want = base[name].unsqueeze(0) + torch.einsum("gn,n...->g...", scores, mask * tau)
        torch.testing.assert_close(merged[name], want, rtol=1e-12, atol=1e-12)

    # moving the disagreeing value (keeping the sum's sign) changes nothing at that element
    with torch.no_grad():
        changed = {k: v.clone() for k, v in experts.items()}
        changed["w_in"][0, 0, 0] = -6.5
    torch.testing.assert_close(merged_for(changed)["w_in"][:, 0, 0], expected, rtol=0, atol=1e-12)

    # and the whole layer runs with the mask, differing from the unmasked layer
    plain = make_layers("camex", 1, num_experts=3, options={"mask": "none"}, seed=32)[0]
    plain.load_state_dict(layer.state_dict())
    x = inputs()
    y_ties, y_plain = layer(x).y, plain(x).y
    assert torch.isfinite(y_ties).all()
    assert (y_ties - y_plain).abs().max() > 1e-6


# --------------------------------------------------------------------------- errors


def test_ep_camex_layers_of_different_shapes_rejected():
    l0 = MoELayer(ExpertSpec(D_MODEL, 16), N, "ep_camex", moe_index=0).double()
    l1 = MoELayer(ExpertSpec(D_MODEL, 32), N, "ep_camex", moe_index=1).double()
    x = inputs()
    out = l0(x)
    with pytest.raises(ValueError, match="one shape"):
        l1(x + out.y, out.state)


@pytest.mark.parametrize("method", ("ep_camex", "namex", "namex_mom"))
def test_later_layer_without_state_raises(method):
    layer = MoELayer(ExpertSpec(D_MODEL, D_HIDDEN), N, method, moe_index=1).double()
    assert layer.base is None
    with pytest.raises(RuntimeError):
        layer(inputs())
    with pytest.raises(RuntimeError):
        layer(inputs(), PropagationState())


def test_smear_rejects_top_k_below_n():
    with pytest.raises(ValueError):
        MoELayer(ExpertSpec(D_MODEL, D_HIDDEN), N, "smear", top_k=2)


def test_smoe_rejects_sequence_pooling():
    with pytest.raises(ValueError):
        MoELayer(ExpertSpec(D_MODEL, D_HIDDEN), N, "smoe", pooling="sequence")


# ------------------------------------------------------------------ complex momentum

# The rotational ("competitive") linear system of Lorraine et al. (2022): z ∈ R², the
# direction d(z) = J z with J = [[0, 1], [-1, 0]] (eigenvalues ±i), and the update
#     μ ← β μ + d(z);   z ← z + γ Re μ.
# Its state (z, Re μ, Im μ) ∈ R⁶ evolves linearly; it converges iff the spectral radius
# of that 6×6 map is below 1.
#
# The package default β = 0.7·e^{iπ/8} does NOT converge on this system for any γ in
# (1e-4, 5] (its spectral radius stays ≥ 1, → 1 as γ → 0); 0.7·e^{iπ/4} does (ρ ≈ 0.946
# at γ = 0.3), so the test uses the default radius with the angle π/4.

J = np.array([[0.0, 1.0], [-1.0, 0.0]])
GAMMA = 0.3
CONVERGING_BETA = 0.7 * complex(math.cos(math.pi / 4), math.sin(math.pi / 4))
GAMMA_GRID = np.concatenate([np.geomspace(1e-3, 0.1, 20), np.linspace(0.1, 3.0, 59)])


def momentum_matrix(beta: complex, gamma: float) -> np.ndarray:
    """The linear update of ``(z, Re μ, Im μ)``, built by applying the package's step to basis vectors."""
    cols = []
    for k in range(6):
        e = torch.zeros(6, dtype=DT)
        e[k] = 1.0
        z, mr, mi = e[:2], e[2:4], e[4:]
        d = torch.as_tensor(J) @ z
        mr, mi = complex_momentum_step(mr, mi, d, beta)
        cols.append(torch.cat([z + gamma * mr, mr, mi]).numpy())
    return np.stack(cols, axis=1)


def spectral_radius(beta: complex, gamma: float) -> float:
    return float(np.abs(np.linalg.eigvals(momentum_matrix(beta, gamma))).max())


def iterate(beta: complex, gamma: float, steps: int = 200) -> float:
    z = torch.tensor([1.0, 0.0], dtype=DT)
    mr, mi = torch.zeros(2, dtype=DT), torch.zeros(2, dtype=DT)
    Jt = torch.as_tensor(J)
    for _ in range(steps):
        mr, mi = complex_momentum_step(mr, mi, Jt @ z, beta)
        z = z + gamma * mr
    return float(z.norm())


def test_complex_momentum_step_is_complex_multiplication():
    g = torch.Generator().manual_seed(50)
    mr, mi, d = (torch.randn(5, generator=g, dtype=DT) for _ in range(3))
    beta = complex(0.3, -0.8)
    new_r, new_i = complex_momentum_step(mr, mi, d, beta)
    want = beta * torch.complex(mr, mi) + d
    torch.testing.assert_close(new_r, want.real)
    torch.testing.assert_close(new_i, want.imag)


def test_momentum_matrix_matches_closed_form():
    beta = CONVERGING_BETA
    br, bi, I2 = beta.real, beta.imag, np.eye(2)
    mu_r_row = np.hstack([J, br * I2, -bi * I2])
    want = np.vstack([np.hstack([I2, 0 * I2, 0 * I2]) + GAMMA * mu_r_row, mu_r_row, np.hstack([0 * I2, bi * I2, br * I2])])
    np.testing.assert_allclose(momentum_matrix(beta, GAMMA), want, atol=1e-15)


@pytest.mark.parametrize("beta", (0.0, 0.5, 0.9), ids=("plain", "heavy-ball-0.5", "heavy-ball-0.9"))
def test_real_momentum_diverges_on_rotation(beta):
    beta = complex(beta, 0.0)
    # no step size makes the real recursion contract
    assert min(spectral_radius(beta, g) for g in GAMMA_GRID) > 1.0
    assert spectral_radius(beta, GAMMA) > 1.0
    assert iterate(beta, GAMMA) > 1e3


def test_complex_momentum_converges_on_rotation():
    assert abs(CONVERGING_BETA) < 1
    assert spectral_radius(CONVERGING_BETA, GAMMA) < 0.96
    assert iterate(CONVERGING_BETA, GAMMA) < 1e-3
