"""Upcycling: right after ``upcycle`` (no noise) every registered method computes the dense FFN.

Dense modules are built offline from configs, with random weights (no downloads).
"""

from __future__ import annotations

import copy
import functools

import pytest
import timm
import torch
import transformers
from torch import nn

import namex_bench
from namex_bench.methods.base import BaseExpert
from namex_bench.moe.upcycle import dense_ffn_params, identify_activation

transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

D, H, N = 32, 64, 4
METHODS = sorted(namex_bench.available_methods())
PROPAGATING = ["ep_camex", "namex", "namex_mom"]
DENSE_KINDS = ["timm_mlp", "timm_swiglu", "gpt2_mlp", "bert_layer", "llama_mlp", "sequential"]


def supports(method: str, unit: str) -> bool:
    return unit in namex_bench.get_method(method).pooling_units


SEGMENT_METHODS = [m for m in METHODS if supports(m, "segment")]
IMAGE_METHODS = [m for m in METHODS if supports(m, "image")]


@functools.cache
def _build(kind: str) -> nn.Module:
    return _make(kind, seed=1234)


def _make(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "timm_mlp":
        return timm.layers.Mlp(D, H)
    if kind == "timm_swiglu":
        return timm.layers.SwiGLU(D, H)
    if kind == "gpt2_mlp":
        config = transformers.GPT2Config(n_embd=D, n_inner=H, n_layer=1, n_head=2, vocab_size=50)
        return transformers.GPT2Model(config).h[0].mlp
    if kind == "bert_layer":
        config = transformers.BertConfig(
            hidden_size=D, intermediate_size=H, num_hidden_layers=1, num_attention_heads=2, vocab_size=50
        )
        return transformers.BertModel(config).encoder.layer[0]
    if kind == "llama_mlp":
        config = transformers.LlamaConfig(
            hidden_size=D, intermediate_size=H, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, vocab_size=50,
        )
        return transformers.LlamaForCausalLM(config).model.layers[0].mlp
    if kind == "sequential":
        return nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, D))
    raise AssertionError(kind)


def dense_module(kind: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh copy (in eval mode, so dropout is off) of the cached dense module."""
    return copy.deepcopy(_build(kind)).to(dtype).eval()


def dense_output(kind: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if kind == "bert_layer":  # the FFN of a BERT layer, without the residual and LayerNorm
            return module.output.dense(module.intermediate(x))
        return module(x)


def expected_params(kind: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The expert parameters of ``module``, read independently of ``dense_ffn_params``."""

    def linears(**named):
        out = {}
        for short, (lin, transposed) in named.items():
            out["w_" + short] = lin.weight.detach().T if transposed else lin.weight.detach()
            if lin.bias is not None:
                out["b_" + short] = lin.bias.detach()
        return out

    if kind == "timm_mlp":
        return linears(**{"in": (module.fc1, False), "out": (module.fc2, False)})
    if kind == "timm_swiglu":
        return linears(gate=(module.fc1_g, False), up=(module.fc1_x, False), down=(module.fc2, False))
    if kind == "gpt2_mlp":  # Conv1D stores weights as [in, out]
        return linears(**{"in": (module.c_fc, True), "out": (module.c_proj, True)})
    if kind == "bert_layer":
        return linears(**{"in": (module.intermediate.dense, False), "out": (module.output.dense, False)})
    if kind == "llama_mlp":
        return linears(gate=(module.gate_proj, False), up=(module.up_proj, False), down=(module.down_proj, False))
    if kind == "sequential":
        return linears(**{"in": (module[0], False), "out": (module[2], False)})
    raise AssertionError(kind)


EXPECTED_SPEC = {
    "timm_mlp": ("mlp", "gelu", True),
    "timm_swiglu": ("glu", "silu", True),
    "gpt2_mlp": ("mlp", "gelu_tanh", True),
    "bert_layer": ("mlp", "gelu", True),
    "llama_mlp": ("glu", "silu", False),
    "sequential": ("mlp", "relu", True),
}


def inputs(dtype=torch.float32, B=2, T=7, scale=1.0):
    g = torch.Generator().manual_seed(7)
    return scale * torch.randn(B, T, D, generator=g, dtype=torch.float64).to(dtype)


def padding_mask(B=2, T=7):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    return mask


def assert_close(y, ref, atol):
    assert y.shape == ref.shape
    assert y.dtype == ref.dtype
    err = (y - ref).abs().max().item()
    assert err <= atol, f"max |MoE - dense| = {err:.3g} > {atol}"


def run_stack(layers, x, mask=None):
    state, outs = None, []
    for layer in layers:
        out = layer(x, state, padding_mask=mask)
        outs.append(out.y)
        state = out.state
    return outs, state


# --- the spec and parameters of an upcycled layer --------------------------------------------


@pytest.mark.parametrize("kind", DENSE_KINDS)
def test_dense_ffn_params_reads_spec(kind):
    module = dense_module(kind)
    spec, params = dense_ffn_params(module)
    assert (spec.kind, spec.activation, spec.bias) == EXPECTED_SPEC[kind]
    assert (spec.d_model, spec.d_hidden) == (D, H)
    expected = expected_params(kind, module)
    assert set(params) == set(expected)
    for name, value in expected.items():
        assert torch.equal(params[name], value), name


@pytest.mark.parametrize("kind", DENSE_KINDS)
@pytest.mark.parametrize("method", ["smear", "camex", "ep_camex"])
def test_experts_and_base_equal_dense_weights(kind, method):
    module = dense_module(kind)
    layer = namex_bench.upcycle(module, N, method)
    expected = expected_params(kind, module)
    experts = layer.experts.params()
    assert set(experts) == set(expected)
    for name, value in expected.items():
        assert experts[name].shape == (N, *value.shape)
        for i in range(N):
            assert torch.equal(experts[name][i], value), (name, i)
    if namex_bench.get_method(method).base_expert is BaseExpert.NONE:
        assert layer.base is None
    else:
        assert layer.base is not None
        base = layer.base.expert(0)
        for name, value in expected.items():
            assert torch.equal(base[name], value), name


def test_upcycled_parameters_are_copies_not_views():
    module = dense_module("timm_mlp")
    layer = namex_bench.upcycle(module, N, "camex")
    before = module.fc1.weight.detach().clone()
    with torch.no_grad():
        layer.experts.w_in.add_(1.0)
        layer.base.w_in.add_(1.0)
    assert torch.equal(module.fc1.weight, before)
    assert layer.experts.w_in.requires_grad and layer.base.w_in.requires_grad


@pytest.mark.parametrize("kind", ["timm_mlp", "llama_mlp"])
def test_noise_makes_experts_differ_but_base_stays_exact(kind):
    module = dense_module(kind)
    expected = expected_params(kind, module)
    gen = torch.Generator().manual_seed(3)
    layer = namex_bench.upcycle(module, N, "camex", noise_std=0.1, generator=gen)
    experts = layer.experts.params()
    base = layer.base.expert(0)
    for name, value in expected.items():
        assert torch.equal(base[name], value), name
        if name.startswith("w"):
            for i in range(N):
                for j in range(i + 1, N):
                    assert not torch.equal(experts[name][i], experts[name][j]), (name, i, j)
            rel = (experts[name] - value).std() / value.std()
            assert 0.05 < rel.item() < 0.2, rel  # noise std is relative to the weight's scale
    # the same generator seed gives the same experts
    again = namex_bench.upcycle(module, N, "camex", noise_std=0.1, generator=torch.Generator().manual_seed(3))
    for name, p in experts.items():
        assert torch.equal(p, again.experts.params()[name])


def test_noisy_upcycle_no_longer_equals_dense():
    module = dense_module("timm_mlp")
    layer = namex_bench.upcycle(module, N, "smear", noise_std=0.1, generator=torch.Generator().manual_seed(0)).eval()
    x = inputs()
    with torch.no_grad():
        y = layer(x).y
    assert (y - dense_output("timm_mlp", module, x)).abs().max() > 1e-4


# --- every method equals the dense FFN right after upcycling -----------------------------------


@pytest.mark.parametrize("kind", DENSE_KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_upcycled_equals_dense_float32(kind, method):
    """Default pooling, with a padding mask, and (merging methods) segment and image pooling."""
    module = dense_module(kind)
    x, mask = inputs(), padding_mask()  # T = 7
    ref = dense_output(kind, module, x)

    layer = namex_bench.upcycle(module, N, method).eval()
    assert layer.method_name == method
    with torch.no_grad():
        assert_close(layer(x).y, ref, atol=1e-5)
        y = layer(x, padding_mask=mask).y
    assert_close(y[mask], ref[mask], atol=1e-5)
    assert_close(y, ref, atol=1e-5)  # padding tokens too: every merged expert is the dense one

    if supports(method, "segment"):
        for first_segment in ("self", "prior"):  # segment_length 3 with T = 7: a short last segment
            layer = namex_bench.upcycle(
                module, N, method, pooling="segment", segment_length=3, first_segment=first_segment
            ).eval()
            with torch.no_grad():
                assert_close(layer(x).y, ref, atol=1e-5)
                assert_close(layer(x, padding_mask=mask).y, ref, atol=1e-5)

    if supports(method, "image"):
        layer = namex_bench.upcycle(module, N, method, pooling="image", num_prefix_tokens=1).eval()
        with torch.no_grad():
            assert_close(layer(x).y, ref, atol=1e-5)


def test_smoe_is_token_pooled_by_default():
    layer = namex_bench.upcycle(dense_module("timm_mlp"), N, "smoe")
    assert layer.pooling == "token"
    assert layer.router.top_k == 2
    with pytest.raises(ValueError, match="pooling"):
        namex_bench.upcycle(dense_module("timm_mlp"), N, "smoe", pooling="segment")


@pytest.mark.parametrize("kind", DENSE_KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_upcycled_two_layer_stack_equals_dense(kind, method):
    """Both layers of a stack (upcycled from one dense FFN, state passed up) give the dense output."""
    module = dense_module(kind)
    layers = [namex_bench.upcycle(module, N, method, moe_index=i).eval() for i in range(2)]
    if method in PROPAGATING:
        assert layers[0].base is not None and layers[1].base is None
    x, mask = inputs(), padding_mask()
    ref = dense_output(kind, module, x)
    with torch.no_grad():
        outs, state = run_stack(layers, x)
        for y in outs:
            assert_close(y, ref, atol=1e-5)
        outs, _ = run_stack(layers, x, mask)
        for y in outs:
            assert_close(y, ref, atol=1e-5)
    assert state.depth == 2
    if method in PROPAGATING:
        # all domain vectors are 0, so the base moves by nothing: the offset handed on is 0 and
        # each layer's anchor is the dense FFN
        for name, value in expected_params(kind, module).items():
            assert torch.allclose(state.base[name], torch.zeros_like(value), atol=1e-7, rtol=0), name
            for layer in layers:
                assert torch.equal(layer.method.anchor()[name], value), name


# --- a stack of DISTINCT dense layers: the upcycled model equals the dense model ----------------

#: Option sets, each applied to the methods that have all of its options.
OPTION_SETS = {
    "defaults": {},
    "rank3_camex_init": {"curvature_rank": 3},
    "identity_no_mask": {"curvature_rank": 2, "curvature_init": "identity", "mask": "none"},
    "router_per_matrix_layernorm": {"router": "per_matrix", "router_norm": "layernorm", "routing_padding": "include"},
    "topk_fallback": {"topk_fallback": True, "expert_dropout": 0.1},
    "nash_both_raw": {"placement": "both", "normalisation": "raw", "gamma": 0.5},
    "momentum": {"momentum_radius": 0.9, "momentum_angle": 0.3},
    "reference_preset_offset": "reference",
}
STACK_DEPTH = 3  # namex_mom's momentum first acts on the base of the third MoE layer


def option_cases():
    """``(kind, method, options)``: every option set on a GELU MLP, the defaults on a SwiGLU too."""
    for method in METHODS:
        yield pytest.param("llama_mlp", method, {}, id=f"llama_mlp-{method}-defaults")
        cls = namex_bench.get_method(method)
        for label, options in OPTION_SETS.items():
            if options == "reference":
                if "reference" not in cls.presets:
                    continue
                options = {**cls.preset_options("reference")}
                if "propagation" in options:
                    options["propagation"] = "offset"
            if method == "smoe" and options.get("router") == "per_matrix":
                continue
            if set(options) <= set(cls.option_defaults()):
                yield pytest.param("timm_mlp", method, options, id=f"timm_mlp-{method}-{label}")


@functools.cache
def dense_stack(kind: str, depth: int = STACK_DEPTH, dtype=torch.float64) -> list[nn.Module]:
    """``depth`` dense FFNs of one kind with different weights (cached: never modified)."""
    modules = [_make(kind, seed=100 + i).to(dtype).eval() for i in range(depth)]
    first = expected_params(kind, modules[0])
    assert all(not torch.equal(first[n], expected_params(kind, m)[n]) for m in modules[1:] for n in first)
    return modules


def residual_stack(outputs_of, x):
    """``h ← h + f_l(h)`` layer by layer; returns every layer's output."""
    outs, h = [], x
    for f in outputs_of:
        y = f(h)
        outs.append(y)
        h = h + y
    return outs


def moe_stack_fns(layers, mask=None):
    state = {"state": None}

    def make(layer):
        def run(h):
            out = layer(h, state["state"], padding_mask=mask)
            state["state"] = out.state
            return out.y
        return run

    return [make(layer) for layer in layers]


@pytest.mark.parametrize("kind, method, options", list(option_cases()))
def test_upcycled_stack_of_distinct_layers_equals_dense_model(kind, method, options):
    """Each MoE layer upcycled from its own dense FFN: the stack computes the dense model, under
    every method's default options and non-default ones. (Reusing one dense module for every
    layer hides that expert propagation carries layer l's FFN into layer l+1.)"""
    modules = dense_stack(kind)
    layers = [namex_bench.upcycle(m, N, method, method_options=options, moe_index=i).eval() for i, m in enumerate(modules)]
    x, mask = inputs(torch.float64, B=3, scale=2.0), padding_mask(B=3)
    with torch.no_grad():
        ref = residual_stack([functools.partial(dense_output, kind, m) for m in modules], x)
        for got_mask in (None, mask):
            outs = residual_stack(moe_stack_fns(layers, got_mask), x)
            for y, want in zip(outs, ref):
                assert_close(y, want, atol=1e-10)


@pytest.mark.parametrize("method", PROPAGATING)
def test_paper_propagation_in_an_upcycled_stack_equals_dense_only_when_curvature_is_identity(method):
    """The literal reading (``propagation="paper"``): layer l+1 merges around a base derived from
    layer l's FFN. With ``M_i = I`` (rank 1) its merge still gives layer l+1's FFN — every
    expert's τ is the same, so the TIES mask is 1 and ``E_m + Σ s_i τ = B^{l+1}`` — but with the
    CAMEx code's ``M_i = R·I``, R > 1, the upcycled model is no longer the dense one; ``offset``
    (the default) is."""
    modules = dense_stack("timm_mlp")
    x = inputs(torch.float64)
    with torch.no_grad():
        ref = residual_stack([functools.partial(dense_output, "timm_mlp", m) for m in modules], x)

        def outputs(**options):
            layers = [namex_bench.upcycle(m, N, method, method_options=options, moe_index=i).eval() for i, m in enumerate(modules)]
            return residual_stack(moe_stack_fns(layers), x)

        for y, want in zip(outputs(propagation="paper"), ref):
            assert_close(y, want, atol=1e-10)
        paper = outputs(propagation="paper", curvature_rank=2)
        assert_close(paper[0], ref[0], atol=1e-10)  # the first layer merges around its own base
        assert (paper[1] - ref[1]).abs().max() > 1e-2
        for y, want in zip(outputs(propagation="offset", curvature_rank=2), ref):
            assert_close(y, want, atol=1e-10)


@pytest.mark.parametrize("kind", ["gpt2_mlp", "llama_mlp"])
@pytest.mark.parametrize("method", PROPAGATING)
def test_upcycled_two_layer_stack_segment_pooling(kind, method):
    module = dense_module(kind)
    layers = [
        namex_bench.upcycle(module, N, method, moe_index=i, pooling="segment", segment_length=3).eval()
        for i in range(2)
    ]
    x = inputs()
    ref = dense_output(kind, module, x)
    with torch.no_grad():
        outs, _ = run_stack(layers, x, padding_mask())
    for y in outs:
        assert_close(y, ref, atol=1e-5)


def test_propagating_layer_needs_state_from_below():
    layer = namex_bench.upcycle(dense_module("timm_mlp"), N, "namex", moe_index=1)
    with pytest.raises(RuntimeError, match="propagated"):
        layer(inputs())


# float64: the router must keep the model's precision, or the methods whose merged expert is
# Σ_i s_i E_i (smear, topk_merge, smoe) miss the dense output by Σ_i s_i − 1 ≈ 6e-8 (float32
# scores) — a regression test for ``Router.forward`` once casting the logits to float32.


@pytest.mark.parametrize("method", METHODS)
def test_upcycled_equals_dense_float64(method):
    for kind in DENSE_KINDS:
        module = dense_module(kind, torch.float64)
        layer = namex_bench.upcycle(module, N, method).eval()
        assert all(p.dtype == torch.float64 for p in layer.parameters())
        x = inputs(torch.float64, B=4, scale=3.0)
        with torch.no_grad():
            y = layer(x).y
        assert_close(y, dense_output(kind, module, x), atol=1e-10)


def test_router_scores_keep_float64_and_upcast_bfloat16():
    layer = namex_bench.upcycle(dense_module("sequential", torch.float64), N, "smear")
    routing = layer.router(torch.randn(3, D, dtype=torch.float64))
    assert routing.scores.dtype == torch.float64
    assert torch.allclose(routing.scores.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-14, rtol=0)
    layer = namex_bench.upcycle(dense_module("sequential", torch.bfloat16), N, "smear")
    assert layer.router(torch.randn(3, D, dtype=torch.bfloat16)).scores.dtype == torch.float32


@pytest.mark.parametrize("method", PROPAGATING)
def test_upcycled_stack_equals_dense_float64(method):
    module = dense_module("timm_swiglu", torch.float64)
    layers = [namex_bench.upcycle(module, N, method, moe_index=i).eval() for i in range(2)]
    x = inputs(torch.float64)
    with torch.no_grad():
        outs, _ = run_stack(layers, x)
    for y in outs:
        assert_close(y, dense_output("timm_swiglu", module, x), atol=1e-10)


@pytest.mark.parametrize("feed_forward_proj, kind", [("relu", "mlp"), ("gated-gelu", "glu")])
def test_upcycled_t5_ffn_equals_dense(feed_forward_proj, kind):
    """T5's dense (``wi, wo``) and gated (``wi_0, wi_1, wo``) FFNs, also documented as upcycle targets."""
    torch.manual_seed(5)
    config = transformers.T5Config(
        d_model=D, d_ff=H, num_layers=1, num_heads=2, d_kv=16, vocab_size=50, feed_forward_proj=feed_forward_proj
    )
    module = transformers.T5EncoderModel(config).encoder.block[0].layer[-1].DenseReluDense.eval()
    x = inputs()
    ref = dense_output("t5", module, x)
    for method in METHODS:
        layer = namex_bench.upcycle(module, N, method).eval()
        assert layer.spec.kind == kind and not layer.spec.bias
        with torch.no_grad():
            assert_close(layer(x).y, ref, atol=1e-5)


# --- modules that cannot be upcycled, and activations ------------------------------------------


def test_unsupported_module_raises_type_error_naming_class():
    with pytest.raises(TypeError, match="Conv2d"):
        namex_bench.upcycle(nn.Conv2d(3, 3, 3), N, "smear")
    with pytest.raises(TypeError, match="LayerNorm"):
        namex_bench.upcycle(nn.LayerNorm(D), N, "smear")


def test_timm_mlp_with_hidden_norm_is_rejected():
    module = timm.layers.Mlp(D, H, norm_layer=nn.LayerNorm)
    with pytest.raises(ValueError, match="norm"):
        namex_bench.upcycle(module, N, "smear")


def test_sequential_with_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        namex_bench.upcycle(nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, D)), N, "smear")


@pytest.mark.parametrize(
    "act, name",
    [
        (nn.GELU(), "gelu"),
        (nn.GELU(approximate="tanh"), "gelu_tanh"),
        (nn.SiLU(), "silu"),
        (nn.ReLU(), "relu"),
        (transformers.activations.NewGELUActivation(), "gelu_tanh"),
        (transformers.activations.GELUActivation(), "gelu"),
        (torch.nn.functional.silu, "silu"),
    ],
    ids=["gelu", "gelu_tanh", "silu", "relu", "new_gelu", "hf_gelu", "functional_silu"],
)
def test_identify_activation(act, name):
    assert identify_activation(act) == name


def test_identify_activation_rejects_tanh():
    with pytest.raises(ValueError, match="Tanh"):
        identify_activation(nn.Tanh())
