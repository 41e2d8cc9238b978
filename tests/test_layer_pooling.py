"""The MoE layer's pooling units, router and auxiliary losses."""

from __future__ import annotations

import math

import pytest
import torch

import namex_bench
from namex_bench import ExpertSpec, MoELayer
from namex_bench.moe import aux_loss as aux
from namex_bench.moe.pooling import make_groups
from namex_bench.moe.router import Router, Routing

D, H, N = 8, 16, 4
SPEC = ExpertSpec(D, H)
METHODS = sorted(namex_bench.available_methods())
PROPAGATING = ("ep_camex", "namex", "namex_mom")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def sharpen_router(layer: MoELayer, std: float = 1.0) -> MoELayer:
    """Make routing depend strongly on its input (the default init is nearly uniform)."""
    with torch.no_grad():
        layer.router.gate.weight.normal_(0.0, std)
    return layer


def segment_layer(method="smear", first_segment="self", moe_index=0, **kw) -> MoELayer:
    layer = MoELayer(
        SPEC, N, method, pooling="segment", segment_length=4, first_segment=first_segment, moe_index=moe_index, **kw
    )
    return sharpen_router(layer).eval()


def run(layers, x, mask=None):
    state, y = None, x
    for layer in layers:
        out = layer(y, state, padding_mask=mask)
        y, state = out.y, out.state
    return y


# --- segment routing is causal -----------------------------------------------------------------

T = 14  # segment_length 4: segments [0:4], [4:8], [8:12] and a short last one [12:14]
SEGMENTS = [range(0, 4), range(4, 8), range(8, 12), range(12, 14)]


def perturb(x: torch.Tensor, t: int) -> torch.Tensor:
    x2 = x.clone()
    x2[:, t] += torch.randn_like(x2[:, t])
    return x2


def check_causal(layers, j: int, token: int | None = None):
    """Perturbing one token of segment ``j`` changes no output of earlier segments and no
    other output of segment ``j`` (bit-identical), while the next segment does change."""
    x = torch.randn(2, T, D)
    t = SEGMENTS[j][0] if token is None else token
    x2 = perturb(x, t)
    with torch.no_grad():
        y, y2 = run(layers, x), run(layers, x2)
    untouched = [s for s in range(SEGMENTS[j].stop) if s != t]
    assert torch.equal(y[:, untouched], y2[:, untouched])
    assert not torch.equal(y[:, t], y2[:, t])
    if j + 1 < len(SEGMENTS):  # sanity: routing does depend on the tokens (so the test could fail)
        later = list(SEGMENTS[j + 1])
        assert not torch.equal(y[:, later], y2[:, later])


@pytest.mark.parametrize("first_segment", ["self", "prior"])
@pytest.mark.parametrize("j", [1, 2, 3])
def test_segment_routing_never_uses_a_future_token(j, first_segment):
    layer = segment_layer(first_segment=first_segment)
    for token in SEGMENTS[j]:
        check_causal([layer], j, token)


def test_first_segment_prior_is_strictly_causal():
    layer = segment_layer(first_segment="prior")
    for token in SEGMENTS[0]:
        check_causal([layer], 0, token)


def test_first_segment_defaults_to_the_strictly_causal_prior():
    assert MoELayer(SPEC, N, "smear").first_segment == "prior"
    assert make_groups(torch.randn(1, T, D), "segment", segment_length=4).first_segment == "prior"


def test_first_segment_self_merges_segment_0_with_its_own_detached_scores():
    """``self`` (the CAMEx reference code): segment 0 is merged with its own scores, detached — so
    one of its tokens changes the other outputs of segment 0 (through routing), but that use sends
    no gradient to the tokens or the router; the router learns from segment 0's scores only where
    segment 1 uses them."""
    layer = segment_layer(first_segment="self")
    x = torch.randn(1, T, D)
    x2 = perturb(x, 1)
    with torch.no_grad():
        y, y2 = layer(x).y, layer(x2).y
    assert not torch.equal(y[:, [0, 2, 3]], y2[:, [0, 2, 3]])

    # a loss on the output of token 2 reaches token 2 only: no other token, and not the router
    x = x.clone().requires_grad_(True)
    layer(x).y[0, 2].sum().backward()
    assert torch.count_nonzero(x.grad[0, [0, 1, 3]]) == 0
    assert torch.count_nonzero(x.grad[0, 2]) > 0
    assert torch.count_nonzero(x.grad[0, 4:]) == 0
    assert layer.router.gate.weight.grad is None or layer.router.gate.weight.grad.abs().sum() == 0
    # a loss on segment 1 reaches the router (and segment 0's tokens) through segment 0's scores
    layer.zero_grad()
    x.grad = None
    layer(x).y[0, 5].sum().backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0
    assert torch.count_nonzero(x.grad[0, :4]) == 4 * D

    groups = make_groups(x, "segment", segment_length=4, first_segment="self")
    torch.testing.assert_close(groups.route_input[0], x[0, :4].mean(0))
    scores = torch.softmax(torch.randn(len(SEGMENTS), N, requires_grad=True), -1)
    used = groups.scores_in_use(scores, prior=lambda: pytest.fail("self does not use the prior"))
    assert torch.equal(used[0], scores[0]) and torch.equal(used[1:], scores[:-1])
    (grad,) = torch.autograd.grad(used[0].sum(), scores, allow_unused=True)
    assert grad is None or not grad.any()  # segment 0's own scores, detached


def test_first_segment_prior_merges_segment_0_with_the_scores_of_zero():
    x = torch.randn(2, T, D, requires_grad=True)
    groups = make_groups(x, "segment", segment_length=4, first_segment="prior")
    S = len(SEGMENTS)
    for b in range(2):  # every segment is routed by its own mean (the last, short one too)
        for j in range(S):
            torch.testing.assert_close(groups.route_input[b * S + j], x[b, SEGMENTS[j]].mean(0))
    layer = segment_layer(first_segment="prior")
    scores = layer.router(groups.route_input).scores
    used = groups.scores_in_use(scores, prior=lambda: layer.router(torch.zeros(1, D)).scores)
    prior = layer.router(torch.zeros(1, D)).scores[0]
    for b in range(2):
        assert torch.equal(used[b * S], prior)
        assert torch.equal(used[b * S + 1 : (b + 1) * S], scores[b * S : (b + 1) * S - 1])


@pytest.mark.parametrize("method", PROPAGATING)
@pytest.mark.parametrize("first_segment", ["self", "prior"])
def test_causal_propagating_stack(method, first_segment):
    """A 2-layer stack with segment pooling: earlier segments' outputs never change."""
    layers = [segment_layer(method, first_segment, moe_index=i) for i in range(2)]
    for j in (1, 2, 3):
        check_causal(layers, j, token=SEGMENTS[j][-1])
    if first_segment == "prior":
        check_causal(layers, 0, token=2)


# --- sequence and image pooling ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["smear", "topk_merge", "camex", "namex"])
def test_sequence_pooling_ignores_padding(method):
    layer = sharpen_router(MoELayer(SPEC, N, method, pooling="sequence")).eval()
    x = torch.randn(2, 6, D)
    with torch.no_grad():
        ref = layer(x)
        pad = 1e3 * torch.randn(2, 3, D)
        mask = torch.tensor([[True] * 6 + [False] * 3] * 2)
        out = layer(torch.cat([x, pad], 1), padding_mask=mask)
    assert torch.allclose(out.y[:, :6], ref.y, atol=1e-6, rtol=0)
    assert torch.allclose(out.aux_loss, ref.aux_loss, atol=1e-7)
    # sequences of different lengths in one batch: each equals the sequence run alone
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    x[0, 4:] = 50.0
    with torch.no_grad():
        y = layer(x, padding_mask=mask).y
        alone = layer(x[:1, :4]).y
    assert torch.allclose(y[0, :4], alone[0], atol=1e-6, rtol=0)
    # the padding really is left out: without the mask the routing (and output) changes
    with torch.no_grad():
        assert not torch.allclose(layer(x).y[0, :4], alone[0], atol=1e-4)


def test_sequence_pooling_ignores_non_finite_padding():
    layer = MoELayer(SPEC, N, "smear", pooling="sequence").eval()
    x = torch.randn(1, 6, D)
    padded = torch.cat([x, torch.full((1, 2, D), float("nan"))], 1)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    with torch.no_grad():
        y = layer(padded, padding_mask=mask).y
        ref = layer(x).y
    assert torch.allclose(y[:, :6], ref, atol=1e-6)


@pytest.mark.parametrize("method", ["smear", "camex"])
def test_image_pooling_leaves_prefix_tokens_out_of_the_routing(method):
    layer = sharpen_router(MoELayer(SPEC, N, method, pooling="image", num_prefix_tokens=1)).eval()
    x = torch.randn(2, 10, D)
    x2 = x.clone()
    x2[:, 0] = 100.0 * torch.randn(2, D)
    with torch.no_grad():
        y, y2 = layer(x).y, layer(x2).y
    assert torch.equal(y[:, 1:], y2[:, 1:])  # the routing of the image is unchanged
    assert not torch.equal(y[:, 0], y2[:, 0])  # the prefix token itself uses the merged expert
    # a patch token, by contrast, moves the routing of its whole image
    x3 = x.clone()
    x3[:, 5] += 5.0 * torch.randn(2, D)
    with torch.no_grad():
        y3 = layer(x3).y
    assert not torch.equal(y[:, [1, 2, 3]], y3[:, [1, 2, 3]])
    groups = make_groups(x, "image", num_prefix_tokens=1)
    assert torch.allclose(groups.route_input, x[:, 1:].mean(1))


def test_image_pooling_respects_padding_mask_and_prefix():
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    groups = make_groups(x, "image", mask, num_prefix_tokens=2)
    assert torch.allclose(groups.route_input[0], x[0, 2:].mean(0))
    assert torch.allclose(groups.route_input[1], x[1, 2:4].mean(0))
    only_prefix = make_groups(x, "image", num_prefix_tokens=6)
    assert not only_prefix.valid.any()


# --- make_groups shapes and ungroup ------------------------------------------------------------


@pytest.mark.parametrize(
    "unit, tokens_shape, route_shape",
    [
        ("token", (2 * 14, 1, D), (2 * 14, D)),
        ("sequence", (2, 14, D), (2, D)),
        ("image", (2, 14, D), (2, D)),
        ("segment", (2 * 4, 4, D), (2 * 4, D)),
    ],
)
def test_make_groups_shapes_and_ungroup(unit, tokens_shape, route_shape):
    x = torch.randn(2, 14, D)
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[1, 10:] = False
    groups = make_groups(x, unit, mask, segment_length=4, num_prefix_tokens=1)
    assert tuple(groups.tokens.shape) == tokens_shape
    assert tuple(groups.route_input.shape) == route_shape
    assert tuple(groups.valid.shape) == route_shape[:1] and groups.valid.dtype == torch.bool
    assert (groups.batch, groups.length) == (2, 14)
    assert torch.equal(groups.ungroup(groups.tokens), x)
    if unit == "token":
        assert torch.equal(groups.valid, mask.reshape(-1))
    if unit == "segment":
        # batch 1: tokens 10..13 are padding, so its last segment [12:14] has no real token
        assert groups.valid.tolist() == [True] * 4 + [True, True, True, False]


def test_make_groups_segment_length_dividing_and_longer_than_t():
    x = torch.randn(1, 8, D)
    g = make_groups(x, "segment", segment_length=4)
    assert g.tokens.shape == (2, 4, D) and torch.equal(g.ungroup(g.tokens), x)
    g = make_groups(x, "segment", segment_length=32)
    assert g.tokens.shape == (1, 32, D) and torch.equal(g.ungroup(g.tokens), x)


def test_make_groups_rejects_unknown_unit_and_first_segment():
    x = torch.randn(1, 4, D)
    with pytest.raises(ValueError, match="pooling unit"):
        make_groups(x, "sentence")
    with pytest.raises(ValueError, match="first_segment"):
        make_groups(x, "segment", first_segment="future")
    with pytest.raises(ValueError, match="first_segment"):
        MoELayer(SPEC, N, "smear", pooling="segment", first_segment="future")


# --- the router --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_router_scores_are_top_k_softmax(k):
    router = Router(D, N, k, init_std=1.0)
    h = torch.randn(20, D)
    r = router(h)
    assert torch.allclose(r.scores.sum(-1), torch.ones(20), atol=1e-6)
    assert ((r.scores > 0).sum(-1) == k).all()
    assert (r.scores >= 0).all()
    assert torch.allclose(r.probs, r.logits.softmax(-1))
    # the nonzero scores sit on the k largest logits
    top = r.logits.topk(k, -1).indices
    assert torch.equal((r.scores > 0), torch.zeros_like(r.scores, dtype=torch.bool).scatter(-1, top, True))
    if k == N:
        assert torch.allclose(r.scores, r.logits.softmax(-1), atol=1e-7)
        assert torch.allclose(r.scores, r.probs, atol=1e-7)


def test_router_rejects_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        Router(D, N, 0)
    with pytest.raises(ValueError, match="top_k"):
        Router(D, N, N + 1)
    with pytest.raises(ValueError, match="top_k"):
        MoELayer(SPEC, N, "smear", top_k=2)  # smear merges with dense routing


def test_noisy_gating_only_in_training():
    router = Router(D, N, 2, noisy_gating=True)  # default init: small logits, so the load is not saturated
    h = torch.randn(16, D)
    router.eval()
    a, b = router(h), router(h)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.logits, router.gate(h))
    assert set(a.load.unique().tolist()) <= {0.0, 1.0}
    router.train()
    c, d = router(h), router(h)
    assert not torch.equal(c.logits, d.logits)
    assert torch.equal(c.probs, a.probs)  # probs come from the clean logits
    assert ((c.load > 0) & (c.load < 1)).all()
    assert torch.allclose(c.scores.sum(-1), torch.ones(16), atol=1e-6)
    assert ((c.scores > 0).sum(-1) == 2).all()
    # the smooth load carries gradient to the noise network
    c.load.sum().backward()
    assert router.noise.weight.grad is not None and router.noise.weight.grad.abs().sum() > 0


def test_no_noise_without_noisy_gating_or_with_dense_routing():
    h = torch.randn(8, D)
    for router in (Router(D, N, 2, noisy_gating=False), Router(D, N, N, noisy_gating=True)):
        router.train()
        assert torch.equal(router(h).scores, router(h).scores)


# --- auxiliary losses --------------------------------------------------------------------------


def make_routing(probs: torch.Tensor, selected: torch.Tensor, load: torch.Tensor | None = None) -> Routing:
    """A hand-made routing: top-1 ``selected`` experts (scores 1), router ``probs``."""
    G, n = probs.shape
    scores = torch.zeros(G, n).scatter(-1, selected.unsqueeze(-1), 1.0)
    return Routing(logits=probs.log(), scores=scores, probs=probs, load=scores if load is None else load, top_k=1)


def test_switch_loss_is_one_when_balanced_and_larger_when_collapsed():
    valid = torch.ones(8, dtype=torch.bool)
    balanced = make_routing(torch.full((8, N), 1.0 / N), torch.arange(8) % N)
    assert aux.switch_loss(balanced, valid).item() == pytest.approx(1.0, abs=1e-6)
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).expand(8, N)
    collapsed = make_routing(collapsed_probs, torch.zeros(8, dtype=torch.long))
    assert aux.switch_loss(collapsed, valid).item() == pytest.approx(N * 0.97, rel=1e-5)
    assert aux.switch_loss(collapsed, valid) > 1.0


def test_switch_loss_with_top_k_selection_balanced():
    # top-2 over 4 experts, each expert chosen equally often, uniform probabilities
    scores = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    probs = torch.full((4, N), 0.25)
    r = Routing(logits=probs.log(), scores=scores, probs=probs, load=(scores > 0).float(), top_k=2)
    assert aux.switch_loss(r, torch.ones(4, dtype=torch.bool)).item() == pytest.approx(1.0, abs=1e-6)


def test_cv2_loss_zero_when_balanced_positive_otherwise():
    valid = torch.ones(8, dtype=torch.bool)
    balanced = make_routing(torch.full((8, N), 1.0 / N), torch.arange(8) % N)
    assert aux.importance_load_loss(balanced, valid).item() == pytest.approx(0.0, abs=1e-6)
    skewed = make_routing(torch.full((8, N), 1.0 / N), torch.tensor([0, 0, 0, 1, 1, 2, 3, 0]))
    assert aux.importance_load_loss(skewed, valid) > 0.1
    v = torch.tensor([1.0, 2.0, 3.0])
    assert aux.cv_squared(v).item() == pytest.approx(v.var(correction=1).item() / 4.0, rel=1e-5)  # unbiased, as the CAMEx code
    assert aux.cv_squared(torch.tensor([3.0])).item() == 0.0


@pytest.mark.parametrize("name", ["switch", "cv2"])
def test_aux_loss_ignores_invalid_groups(name):
    balanced = make_routing(torch.full((4, N), 1.0 / N), torch.arange(4))
    junk_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).expand(3, N)
    junk = make_routing(junk_probs, torch.zeros(3, dtype=torch.long))
    both = Routing(
        logits=torch.cat([balanced.logits, junk.logits]),
        scores=torch.cat([balanced.scores, junk.scores]),
        probs=torch.cat([balanced.probs, junk.probs]),
        load=torch.cat([balanced.load, junk.load]),
        top_k=1,
    )
    valid = torch.tensor([True] * 4 + [False] * 3)
    alone = aux.aux_loss(name, balanced, torch.ones(4, dtype=torch.bool))
    assert aux.aux_loss(name, both, valid).item() == pytest.approx(alone.item(), abs=1e-6)
    assert aux.aux_loss(name, both, torch.ones(7, dtype=torch.bool)).item() != pytest.approx(alone.item(), abs=1e-3)


def test_aux_loss_none_and_unknown():
    r = make_routing(torch.full((2, N), 1.0 / N), torch.arange(2))
    assert aux.aux_loss("none", r, torch.ones(2, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="aux loss"):
        aux.aux_loss("bogus", r, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="aux loss"):
        MoELayer(SPEC, N, "smear", aux_loss="bogus")


@pytest.mark.parametrize("method", ["smoe", "topk_merge", "smear", "namex"])
@pytest.mark.parametrize("name", ["switch", "cv2"])
def test_layer_aux_loss_is_coef_times_raw(method, name):
    layer = sharpen_router(MoELayer(SPEC, N, method, aux_loss=name, aux_loss_coef=0.3))
    out = layer(torch.randn(3, 5, D))
    assert out.aux_loss.shape == ()
    assert torch.allclose(out.aux_loss, 0.3 * out.stats["aux_loss_raw"])
    assert out.stats["expert_load"].shape == (N,)
    none = MoELayer(SPEC, N, method, aux_loss="none")
    assert none(torch.randn(3, 5, D)).aux_loss.item() == 0.0


@pytest.mark.parametrize("method", ["smoe", "topk_merge", "smear", "namex"])
def test_switch_aux_loss_has_gradient_to_router(method):
    """Switch's f_i counts top-1 dispatch, so dense-routing (k = N) methods are balanced too.

    5 sequences of 7 tokens make 5 (sequence pooling) or 35 (token pooling) groups, neither a
    multiple of N = 4: the top-1 dispatch cannot be balanced, whatever the CPU's kernels round,
    so the loss has a gradient to the router (see the next test for why balance matters)."""
    layer = sharpen_router(MoELayer(SPEC, N, method, aux_loss="switch", aux_loss_coef=1.0))
    out = layer(torch.randn(5, 7, D))
    out.aux_loss.backward()
    grad = layer.router.gate.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 1e-3


def test_switch_aux_loss_has_no_gradient_when_dispatch_is_balanced():
    """With ``f_i = 1/N`` the loss is ``Σ_i P_i = 1`` for any logits: d loss / d logits = 0.

    (So a gradient test on a random batch would rely on an imbalance that another CPU's
    kernels may not produce — the reason the test above uses group counts that cannot balance.)"""
    logits = (torch.randn(8, N) + 8.0 * torch.eye(N).repeat(2, 1)).requires_grad_()  # group g prefers expert g mod N
    probs = logits.softmax(-1)
    assert torch.bincount(probs.argmax(-1), minlength=N).tolist() == [2] * N
    routing = Routing(logits=logits, scores=probs, probs=probs, load=probs, top_k=N)
    loss = aux.switch_loss(routing, torch.ones(8, dtype=torch.bool))
    loss.backward()
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
    assert logits.grad.abs().max() < 1e-6


def test_cv2_aux_loss_has_gradient_to_router_with_dense_routing():
    layer = sharpen_router(MoELayer(SPEC, N, "smear", aux_loss="cv2", aux_loss_coef=1.0))
    layer(torch.randn(4, 6, D)).aux_loss.backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0


def test_layer_aux_loss_leaves_out_all_padding_sequences():
    layer = sharpen_router(MoELayer(SPEC, N, "smear", aux_loss="cv2"))
    x = torch.randn(3, 5, D)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False  # a sequence with no real token
    out = layer(x, padding_mask=mask)
    ref = layer(x[:2])
    assert torch.allclose(out.aux_loss, ref.aux_loss, atol=1e-6)
    assert torch.allclose(out.stats["expert_load"], ref.stats["expert_load"])


# --- expert shapes through every method --------------------------------------------------------


def _run_method(spec: ExpertSpec, method: str):
    layers = [sharpen_router(MoELayer(spec, N, method, moe_index=i)) for i in range(2)]
    x = torch.randn(2, 6, spec.d_model, requires_grad=True)
    state, y, aux_total = None, x, 0.0
    for layer in layers:
        out = layer(y, state)
        y, state, aux_total = out.y, out.state, aux_total + out.aux_loss
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y.square().mean() + aux_total).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for layer in layers:
        for name, p in layer.experts.params().items():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    return layers


@pytest.mark.parametrize("method", METHODS)
def test_glu_experts_without_bias_run_through_every_method(method):
    spec = ExpertSpec(D, H, kind="glu", activation="silu", bias=False)
    assert set(spec.param_shapes) == {"w_gate", "w_up", "w_down"}
    layers = _run_method(spec, method)
    assert set(layers[0].experts.params()) == {"w_gate", "w_up", "w_down"}


@pytest.mark.parametrize("method", METHODS)
def test_mlp_experts_without_bias_run_through_every_method(method):
    _run_method(ExpertSpec(D, H, kind="mlp", activation="gelu", bias=False), method)


def test_glu_smear_matches_hand_computed_merge():
    spec = ExpertSpec(D, H, kind="glu", activation="silu", bias=False)
    layer = sharpen_router(MoELayer(spec, N, "smear", pooling="sequence")).eval()
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        y = layer(x).y
        s = layer.router(x.mean(1)).scores  # [2, N]
        for b in range(2):
            w = {name: torch.einsum("n,n...->...", s[b], p) for name, p in layer.experts.params().items()}
            ref = (torch.nn.functional.silu(x[b] @ w["w_gate"].T) * (x[b] @ w["w_up"].T)) @ w["w_down"].T
            assert torch.allclose(y[b], ref, atol=1e-5)


def test_glu_smoe_matches_hand_computed_top_k():
    spec = ExpertSpec(D, H, kind="glu", activation="silu", bias=False)
    layer = sharpen_router(MoELayer(spec, N, "smoe")).eval()
    x = torch.randn(1, 5, D)
    with torch.no_grad():
        y = layer(x).y[0]
        s = layer.router(x[0]).scores  # [T, N]
        p = layer.experts.params()
        ref = torch.zeros(5, D)
        for t in range(5):
            for i in range(N):
                if s[t, i] > 0:
                    h = torch.nn.functional.silu(x[0, t] @ p["w_gate"][i].T) * (x[0, t] @ p["w_up"][i].T)
                    ref[t] += s[t, i] * (h @ p["w_down"][i].T)
    assert ((s > 0).sum(-1) == 2).all()
    assert torch.allclose(y, ref, atol=1e-5)


def test_expert_spec_param_counts():
    # guard against silent changes of the expert parameter count formula
    assert ExpertSpec(D, H).num_params == 2 * D * H + H + D
    assert ExpertSpec(D, H, kind="glu", bias=False).num_params == 3 * D * H
    assert math.isclose(ExpertSpec(D, H, kind="glu").num_params, 3 * D * H + 2 * H + D)
