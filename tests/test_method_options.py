"""The options that reproduce the reference code, beyond what the parity fixtures pin (they run
in eval mode): expert dropout in training, the top-k fallback, a router per weight matrix and
its contract, and the optimiser's treatment of method parameters."""

from __future__ import annotations

import pytest
import torch

from namex_bench import ExpertSpec, MergingMethod, MoELayer, register_method
from namex_bench.methods import MergeInputs, MergeOutput
from namex_bench.moe.aux_loss import aux_loss
from namex_bench.moe.experts import ffn, weighted_sum
from namex_bench.suite.schema import TrainConfig
from namex_bench.tasks.training import make_optimizer

D, H, N = 8, 12, 4
DT = torch.float64


def layer_of(method="camex", options=None, **kw) -> MoELayer:
    torch.manual_seed(0)
    layer = MoELayer(ExpertSpec(D, H), N, method, options or {}, **kw).to(DT)
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1)
        layer.experts.w_in.add_(0.1 * torch.randn_like(layer.experts.w_in))
    return layer


def x_of(B=3, T=5, seed=1):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ----------------------------------------------------------------------------- expert dropout


def test_expert_dropout_drops_whole_group_expert_terms_in_training_only():
    """Dropout2d over the (group, expert) terms: the merge sees ``s_gi · keep_gi / (1 − p)``."""
    p = 0.5
    layer = layer_of(options={"expert_dropout": p, "mask": "none"})
    method = layer.method
    base = layer.base.expert(0)
    tau, tau_tilde = method.domain_vectors(layer.experts.params(), base)
    scores = torch.full((200, N), 1.0 / N, dtype=DT)
    method.eval()
    torch.testing.assert_close(method.merge(base, tau, tau_tilde, scores).materialise(), weighted_sum(scores, tau_tilde, offset=base))
    method.train()
    torch.manual_seed(3)
    merged = method.merge(base, tau, tau_tilde, scores).materialise()["w_in"]
    # recover the effective weights of every group from its merged matrix: a least-squares solve
    flat = tau_tilde["w_in"].reshape(N, -1).T  # [P, N]
    weights = torch.linalg.lstsq(flat, (merged - base["w_in"]).reshape(200, -1).T).solution.T  # [G, N]
    kept = weights.abs() > 1e-9
    torch.testing.assert_close(weights[kept], torch.full_like(weights[kept], 1.0 / N / (1 - p)))
    assert 0.35 < kept.double().mean() < 0.65  # about 1 − p of the terms survive


# ------------------------------------------------------------------------------ top-k fallback


def test_topk_fallback_merges_the_plain_top_k_sum_when_2k_is_below_n():
    """When ``2k < N`` the CAMEx code merges ``Σ_{i∈topk} s_gi E_i``: neither base nor curvature."""
    fallback = layer_of(options={"topk_fallback": True, "curvature_rank": 2}, top_k=1).eval()
    plain = layer_of("topk_merge", top_k=1).eval()
    plain.load_state_dict({k: v for k, v in fallback.state_dict().items() if k.startswith(("router.", "experts."))})
    x = x_of()
    with torch.no_grad():
        torch.testing.assert_close(fallback(x).y, plain(x).y)
        no_fallback = layer_of(options={"curvature_rank": 2}, top_k=1).eval()
        assert (no_fallback(x).y - plain(x).y).abs().max() > 1e-3
        # 2k >= N: the curvature-aware merge as usual
        two = layer_of(options={"topk_fallback": True, "curvature_rank": 2}, top_k=2).eval()
        two_plain = layer_of(options={"curvature_rank": 2}, top_k=2).eval()
        torch.testing.assert_close(two(x).y, two_plain(x).y)


# --------------------------------------------------------------------- router per weight matrix


@pytest.mark.parametrize("method", ["smear", "camex", "namex"])
@pytest.mark.parametrize("pooling", ["sequence", "segment"])
def test_router_per_matrix_merges_the_output_matrices_with_the_hidden_states_scores(method, pooling):
    layer = layer_of(method, {"router": "per_matrix"}, pooling=pooling, segment_length=2, aux_loss="cv2").eval()
    assert layer.hidden_router is not None and layer.hidden_router.gate.in_features == H
    seen = []
    layer.hidden_router.register_forward_hook(lambda module, args, routing: seen.append((args[0], routing)))
    x = x_of()
    with torch.no_grad():
        out = layer(x)
    pooled_hidden, hidden_routing = seen[0]  # (segments: a second call routes the zero vector, the prior)
    assert pooled_hidden.shape[-1] == H
    # the same layer with one router differs: the output matrices are merged with other scores
    shared = layer_of(method, pooling=pooling, segment_length=2, aux_loss="cv2").eval()
    shared.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("hidden_router.")})
    with torch.no_grad():
        assert (shared(x).y - out.y).abs().max() > 1e-4
        # the aux loss is the sum of both routers' losses
        groups_valid = torch.ones(hidden_routing.scores.shape[0], dtype=torch.bool)
        want = shared(x).stats["aux_loss_raw"] + aux_loss("cv2", hidden_routing, groups_valid)
    torch.testing.assert_close(out.stats["aux_loss_raw"], want)


def test_router_per_matrix_hand_computed_for_smear():
    layer = layer_of("smear", {"router": "per_matrix"}, aux_loss="none").eval()
    x = x_of(B=2)
    experts = layer.experts.params()
    with torch.no_grad():
        s_in = layer.router(x.mean(1)).scores
        hidden = torch.nn.functional.gelu(torch.einsum("bld,bhd->blh", x, weighted_sum(s_in, {"w": experts["w_in"]})["w"]) + weighted_sum(s_in, {"b": experts["b_in"]})["b"][:, None])
        s_out = layer.hidden_router(hidden.mean(1)).scores
        merged_out = weighted_sum(s_out, {"w_out": experts["w_out"], "b_out": experts["b_out"]})
        want = torch.einsum("blh,bdh->bld", hidden, merged_out["w_out"]) + merged_out["b_out"][:, None]
        torch.testing.assert_close(layer(x).y, want)


def test_router_per_matrix_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="per weight matrix"):
        MoELayer(ExpertSpec(D, H), N, "smoe", {"router": "per_matrix"})
    with pytest.raises(ValueError, match="per weight matrix"):
        MoELayer(ExpertSpec(D, H, kind="linear"), N, "smear", {"router": "per_matrix"})
    with pytest.raises(ValueError, match="router must be one of"):
        MoELayer(ExpertSpec(D, H), N, "smear", {"router": "per_expert"})


class OneStageMerge(MergingMethod):
    """A method that merges every matrix at once (ignores a router per weight matrix)."""

    fixed_top_k_is_n = True

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        merged = weighted_sum(inputs.scores, inputs.bank.params())
        return MergeOutput(ffn(inputs.tokens, merged, self.spec), inputs.state.advanced())


def test_a_method_that_ignores_the_output_matrices_router_is_one_clear_error(clean_registry):
    register_method("test_one_stage_merge")(OneStageMerge)  # registered for this test only
    layer = MoELayer(ExpertSpec(D, H), N, "test_one_stage_merge", {"router": "per_matrix"})
    with pytest.raises(RuntimeError, match="run_merged"):
        layer(torch.randn(2, 3, D))
    MoELayer(ExpertSpec(D, H), N, "test_one_stage_merge")(torch.randn(2, 3, D))  # one router: fine


def test_smear_router_layernorm_ignores_the_scale_of_input_and_weights():
    layer = layer_of("smear", {"router_norm": "layernorm"}).eval()
    torch.testing.assert_close(layer.router.weight_norm.weight, torch.full((D,), 0.01, dtype=DT))  # SMEAR's router_init_scale
    h = torch.randn(5, D, dtype=DT)
    logits = layer.router.clean_logits(h)
    with torch.no_grad():
        layer.router.gate.weight.mul_(7.0)
    torch.testing.assert_close(layer.router.clean_logits(3.0 * h), logits, rtol=1e-4, atol=1e-7)  # up to LayerNorm's ε


# ---------------------------------------------------------------------------- weight decay


def test_method_parameters_get_no_weight_decay():
    """Curvature factors start at I and are not weight matrices: AdamW must not pull them to 0
    (the CAMEx code does not decay them). Experts, base and router weights are decayed."""
    from namex_bench.models import get_builder

    builder = get_builder("vit_moe")
    torch.manual_seed(0)
    model = builder.build(builder.validate({"patch_size": 14, "embed_dim": 16, "depth": 2, "num_heads": 2, "moe_blocks": "every", "num_experts": 4}), "namex", {"curvature_rank": 2}, 10, 1, 28)
    decay, no_decay = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed, exempt = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    for layer in model.moe_layers:
        factors = list(layer.method.curvature.parameters())
        assert factors and all(p.ndim == 4 and id(p) in exempt for p in factors)
        assert id(layer.experts.w_in) in decayed and id(layer.router.gate.weight) in decayed
    assert id(model.moe_layers[0].base.w_in) in decayed
    assert len(decayed) + len(exempt) == sum(1 for p in model.parameters() if p.requires_grad)
