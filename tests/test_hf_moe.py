"""Pretrained MoE LLM adapters (namex_bench.models.hf_moe) on tiny random transformers configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from tiny_moe_llms import ARCHS, CONFIGS, build, tokens  # noqa: E402

from namex_bench.models.hf_moe import (  # noqa: E402
    HFMoEBlock,
    HFRouter,
    HFRouting,
    adapt_moe_llm,
    read_experts,
    routing_from_config,
)


@pytest.mark.parametrize("arch", ARCHS)
def test_smoe_reproduces_logits(arch):
    model = build(arch)
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
    n_blocks = sum(1 for m in model.modules() if (hasattr(m, "gate") or hasattr(m, "router")) and hasattr(m, "experts"))
    adapted = adapt_moe_llm(model, "smoe").eval()
    assert len(adapted.moe_layers) == n_blocks > 0
    assert all(isinstance(m, HFMoEBlock) for m in adapted.backbone.modules() if hasattr(m, "slot"))
    with torch.no_grad():
        out = adapted(ids, attention_mask=mask)
    torch.testing.assert_close(out.output.logits, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out.aux_loss)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,options", [("smear", {}), ("namex", {}), ("camex", {})])
def test_merging_method_differs_but_finite(arch, method, options):
    model = build(arch)
    ids = tokens()
    with torch.no_grad():
        ref = model(ids).logits
    adapted = adapt_moe_llm(model, method, options, segment_length=4).eval()
    assert all(layer.pooling == "segment" for layer in adapted.moe_layers)
    with torch.no_grad():
        out = adapted(ids).output.logits
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_segment_pooling_is_causal(arch):
    adapted = adapt_moe_llm(build(arch), "namex", segment_length=4).eval()
    ids = tokens(length=12)
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 7) % 61 + 3  # change the future (third segment)
    with torch.no_grad():
        a, b = adapted(ids).output.logits, adapted(changed).output.logits
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=1e-5)  # first two segments untouched


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["smoe", "namex"])
def test_gradients_flow(arch, method):
    adapted = adapt_moe_llm(build(arch), method, segment_length=4).train()
    ids = tokens()
    out = adapted(input_ids=ids, labels=ids)
    (out.output.loss + out.aux_loss).backward()
    layer = adapted.moe_layers[0]
    assert layer.router.gate.weight.grad is not None and layer.router.gate.weight.grad.abs().sum() > 0
    assert layer.experts.w_down.grad is not None and layer.experts.w_down.grad.abs().sum() > 0
    assert adapted.backbone.get_input_embeddings().weight.grad.abs().sum() > 0
    if method == "namex":
        assert layer.base.w_gate.grad is not None and torch.isfinite(layer.base.w_gate.grad).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_shot_every_method(arch):
    """Right after adaptation, with no training, every registered method evaluates finite LM losses."""
    from namex_bench.methods.registry import available_methods

    ids = tokens()
    for method in available_methods():
        adapted = adapt_moe_llm(build(arch), method, segment_length=4).eval()
        with torch.no_grad():
            out = adapted(input_ids=ids, labels=ids)
        assert torch.isfinite(out.output.logits).all(), method
        assert torch.isfinite(out.output.loss), method


def test_routing_semantics_from_config():
    if "deepseek_v2_group" in CONFIGS:
        r = routing_from_config(CONFIGS["deepseek_v2_group"]())
        assert r == HFRouting(3, normalize_top_k=False, routed_scaling_factor=2.0, group_limited=(2, 1))
    if "mixtral" in CONFIGS:
        assert routing_from_config(CONFIGS["mixtral"]()).normalize_top_k
    if "qwen2_moe" in CONFIGS:
        assert not routing_from_config(CONFIGS["qwen2_moe"]()).normalize_top_k


def test_hf_router_matches_router_when_normalized():
    from namex_bench.moe.router import Router

    torch.manual_seed(0)
    ours, theirs = Router(16, 8, 3), HFRouter(16, 8, 3, normalize_top_k=True)
    theirs.gate.weight.data.copy_(ours.gate.weight.data * 50)
    ours.gate.weight.data.mul_(50)
    h = torch.randn(5, 16)
    torch.testing.assert_close(theirs(h).scores, ours(h).scores)
    grouped = HFRouter(16, 8, 2, normalize_top_k=False, group_limited=(4, 1))
    grouped.gate.weight.data.copy_(ours.gate.weight.data)
    s = grouped(h).scores
    nz = (s > 0).reshape(5, 4, 2).any(-1).sum(-1)
    assert (nz == 1).all()  # all selected experts lie in one group


def test_base_expert_from_shared_or_mean():
    if "qwen2_moe" not in CONFIGS or "mixtral" not in CONFIGS:
        pytest.skip("needs Qwen2-MoE and Mixtral")
    model = build("qwen2_moe")
    shared = model.model.layers[0].mlp.shared_expert.gate_proj.weight.detach().clone()
    adapted = adapt_moe_llm(model, "camex", segment_length=4)
    torch.testing.assert_close(adapted.moe_layers[0].base.w_gate[0], shared)
    # a shared expert of another width (Qwen1.5-MoE-A2.7B's case): the experts' mean
    model = build("qwen2_moe_norm")
    w = model.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    adapted = adapt_moe_llm(model, "ep_camex", segment_length=4)
    torch.testing.assert_close(adapted.moe_layers[0].base.w_gate[0], w[:, :16].mean(0))
    assert adapted.moe_layers[1].base is None  # propagated from the first layer
    # offset propagation anchors every layer's base at that layer's own initial base
    assert torch.equal(adapted.moe_layers[0].method.anchor()["w_gate"], adapted.moe_layers[0].base.w_gate[0])
    layer1 = adapted.moe_layers[1]
    assert torch.allclose(layer1.method.anchor()["w_gate"], layer1.experts.w_gate.mean(0))
    with pytest.raises(ValueError, match="router"):
        adapt_moe_llm(build("qwen2_moe_norm"), "smear", {"router": "per_matrix"}, segment_length=4)
    with pytest.raises(ValueError, match="shape"):
        adapt_moe_llm(build("qwen2_moe_norm"), "camex", base="shared")
    with pytest.raises(ValueError, match="no shared expert"):
        adapt_moe_llm(build("mixtral"), "camex", base="shared")


def test_rejects_noncausal_pooling():
    arch = ARCHS[0]
    with pytest.raises(ValueError, match="future"):
        adapt_moe_llm(build(arch), "smear", pooling="sequence")


def test_per_expert_modulelist_layout():
    """The older layout (a ModuleList of per-expert MLPs) reads the same weights as the stacked one."""
    if "mixtral" not in CONFIGS:
        pytest.skip("needs Mixtral")
    experts = build("mixtral").model.layers[0].mlp.experts
    spec, stacked = read_experts(experts, 32)

    class MLP(nn.Module):
        def __init__(self, i):
            super().__init__()
            inter = spec.d_hidden
            self.w1, self.w3, self.w2 = nn.Linear(32, inter, bias=False), nn.Linear(32, inter, bias=False), nn.Linear(inter, 32, bias=False)
            self.w1.weight.data.copy_(stacked["w_gate"][i])
            self.w3.weight.data.copy_(stacked["w_up"][i])
            self.w2.weight.data.copy_(stacked["w_down"][i])
            self.act_fn = nn.SiLU()

    spec2, listed = read_experts(nn.ModuleList(MLP(i) for i in range(4)), 32)
    assert spec2 == spec
    for name in stacked:
        torch.testing.assert_close(listed[name], stacked[name])


def test_group_limited_routing_matters():
    """The group-limited config really exercises the constraint: plain greedy routing gives other logits."""
    if "deepseek_v2_group" not in CONFIGS:
        pytest.skip("needs DeepSeek-V2")
    model = build("deepseek_v2_group")
    ids = tokens()
    with torch.no_grad():
        ref = model(ids).logits
    greedy = adapt_moe_llm(model, "smoe", routing=HFRouting(3, normalize_top_k=False, routed_scaling_factor=2.0)).eval()
    with torch.no_grad():
        assert (greedy(ids).output.logits - ref).abs().max() > 1e-4
