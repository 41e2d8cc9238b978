"""Parity with the authors' own code: every fixture of ``tests/fixtures/reference/``.

The fixtures (their ``README.md`` is the provenance) hold inputs, parameters, outputs and
gradients computed by the reference implementations — CAMEx (kpup1710/CAMEx @ 11ba81d),
SMEAR (r-three/smear @ 6e44c82), Nash-MTL (AvivNavon/nash-mtl @ cce1840) — in float64.
namex_bench reproduces them through its public layer and method options only: an
:class:`MoELayer` built with the options that say what the reference computes, its
parameters loaded from the reference's (a storage mapping: names, and the curvature
factors' ``[R, N, ..]`` layout, ours ``[N, R, ..]``), then forward and backward.

Tolerances (the fixtures' README): outputs and gradients ≤ 1e-10 of each array's largest
magnitude; the auxiliary loss (float32 in the reference) 1e-6 relative; Nash weights 1e-8
relative to the high-accuracy solution, and 1e-5 (normalised) to Nash-MTL's own where it
converged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from namex_bench import ExpertSpec, MoELayer, get_method, nash_bargaining

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
DT = torch.float64
LETTERS = {"A": "curve1_out", "B": "curve2_out", "C": "curve1_in", "D": "curve2_in"}  # ours → reference


def load(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    with np.load(FIXTURES / f"{name}.npz") as npz:
        arrays = {key: torch.from_numpy(npz[key].copy()) for key in npz.files}
    return arrays, json.loads((FIXTURES / f"{name}.json").read_text())


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-10, what: str = "") -> None:
    """``max |got − want| ≤ rel · max |want|``."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = want.abs().max().item()
    err = (got.detach() - want).abs().max().item()
    assert err <= rel * scale, f"{what}: max |diff| = {err:.3g} > {rel:g} · {scale:.3g}"


def fixtures_of(kind: str) -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "verification" and json.loads(p.read_text())["kind"] == kind)


def test_every_fixture_is_covered():
    kinds = {"camex_layer", "conv1d_camex_layer", "t5_dense_act_dense", "smear_adapter_controller", "nash_bargaining"}
    found = {json.loads(p.read_text())["kind"] for p in FIXTURES.glob("*.json") if p.stem != "verification"}
    assert found == kinds
    assert len(fixtures_of("camex_layer")) == 7 and len(fixtures_of("t5_dense_act_dense")) == 3
    assert len(fixtures_of("conv1d_camex_layer")) == 2 and len(fixtures_of("smear_adapter_controller")) == 5


# ------------------------------------------------------------------------------------- CAMEx


def camex_options(config: dict, **extra) -> dict:
    """The method options that compute what a reference ``CAMEx``/``Conv1D_CAMEx`` computes."""
    return {
        "curvature_rank": config["rank_c"],
        "curvature_init": "camex",
        "mask": "ties" if config["mask_type"] == "ties" else "none",
        "routing_padding": "include",
        **extra,
    }


def load_camex_matrix(layer: MoELayer, a: dict, ours: str, prefix: str, router) -> dict[str, tuple[torch.Tensor, str]]:
    """Copy one reference CAMEx layer (``prefix``) into matrix ``ours`` of ``layer``; returns
    ``{reference name: (our parameter, how to map our gradient back)}``."""
    p = lambda name: a[f"param__{prefix}{name}"]  # noqa: E731
    pairs = {}
    with torch.no_grad():
        getattr(layer.experts, ours).copy_(p("weight"))
        getattr(layer.base, ours).copy_(p("res_weight")[None])
        router.gate.weight.copy_(p("w_gate").T)
        pairs[f"{prefix}weight"] = (getattr(layer.experts, ours), "same")
        pairs[f"{prefix}res_weight"] = (getattr(layer.base, ours), "drop_axis")
        pairs[f"{prefix}w_gate"] = (router.gate.weight, "transpose")
        for letter, ref in LETTERS.items():
            factor = getattr(layer.method.curvature, f"{ours}_{letter}")
            factor.copy_(p(ref).permute(1, 0, 2, 3))  # [R, N, s, s] → [N, R, s, s]
            pairs[f"{prefix}{ref}"] = (factor, "swap_rank_expert")
    return pairs


TO_REFERENCE = {
    "same": lambda g: g,
    "drop_axis": lambda g: g[0],
    "transpose": lambda g: g.T,
    "swap_rank_expert": lambda g: g.permute(1, 0, 2, 3),
}


def as_reference(grad: torch.Tensor, how: str) -> torch.Tensor:
    return TO_REFERENCE[how](grad)


def check_backward(out_y: torch.Tensor, x: torch.Tensor, a: dict, pairs: dict, probe: torch.Tensor | None = None) -> None:
    (out_y * (a["input__grad_probe"] if probe is None else probe)).sum().backward()
    close(x.grad, a["grad__input__x"], what="grad x")
    for ref, (param, how) in pairs.items():
        close(as_reference(param.grad, how), a[f"grad__param__{ref}"], what=f"grad {ref}")


@pytest.mark.parametrize("name", fixtures_of("camex_layer"))
def test_camex_layer_matches_reference(name):
    """``CAMEx`` (the T5 layer): one merged linear map per sequence, routed on its mean."""
    a, meta = load(name)
    args = meta["constructor"]["args"]
    config = args["config"]
    spec = ExpertSpec(args["input_size"], args["output_size"], kind="linear", bias=False)
    layer = MoELayer(spec, config["n_experts"], "camex", camex_options(config), top_k=config["k"], pooling="sequence", aux_loss="cv2", aux_loss_coef=1e-2)
    layer = layer.to(DT).eval()
    pairs = load_camex_matrix(layer, a, "w", "", layer.router)
    x = a["input__x"].clone().requires_grad_(True)
    out = layer(x)
    close(out.y, a["output__y"], what="y")
    close(out.aux_loss, a["output__aux_loss"], rel=1e-6, what="aux loss")
    check_backward(out.y, x, a, pairs)


def test_camex_ties_zero_differences_mask():
    """The edge cases of the TIES election (zero, cancelling and all-equal differences) give the
    reference's mask — read back from the fixture's merged weights."""
    a, meta = load("camex_t5_ties_zero_differences")
    from namex_bench.methods.camex import ties_mask

    tau = a["param__weight"] - a["param__res_weight"]
    mask = ties_mask({"w": tau})["w"]
    close(mask, a["intermediate__ties_mask"].to(DT), rel=0, what="ties mask")
    cases = meta["zero_difference_cases"]
    for key, positions in (("mask_at_all_equal", cases["all_equal_positions_[out,in]"]), ("mask_at_exact_cancel", cases["exact_cancel_positions_[out,in]"]), ("mask_at_one_zero", cases["one_zero_positions_[out,in]"])):
        for (o, i), want in zip(positions, cases[key]):
            assert mask[:, o, i].tolist() == want, (key, o, i)


@pytest.mark.parametrize("name", fixtures_of("conv1d_camex_layer"))
def test_conv1d_camex_segments_match_reference(name):
    """``Conv1D_CAMEx`` (GPT-2): causal segments of ``T`` tokens, segment ``s`` merged with segment
    ``s − 1``'s gates and segment 0 with its own, detached (``first_segment="self"``)."""
    a, meta = load(name)
    args = meta["constructor"]["args"]
    config = args["config"]
    T = meta["constructor"].get("set_attributes_after_construction", {}).get("T", 256)
    spec = ExpertSpec(args["input_size"], args["output_size"], kind="linear", bias=False)
    layer = MoELayer(
        spec, config["n_experts"], "camex", camex_options(config), top_k=config["k"], pooling="segment",
        segment_length=T, first_segment="self", aux_loss="cv2", aux_loss_coef=1e-5,
    ).to(DT).eval()
    pairs = load_camex_matrix(layer, a, "w", "", layer.router)
    x = a["input__x"].clone().requires_grad_(True)
    out = layer(x)
    close(out.y, a["output__y"], what="y")
    close(out.aux_loss, a["output__aux_loss"], rel=1e-6, what="aux loss")
    check_backward(out.y, x, a, pairs)  # grad of w_gate: the first segment's gates are detached


def t5_ffn_layer(a: dict, meta: dict, **options) -> tuple[MoELayer, dict]:
    config = meta["constructor"]["args"]["config"]
    spec = ExpertSpec(config["d_model"], config["d_ff"], kind="mlp", activation=config["dense_act_fn"], bias=False)
    preset = get_method("camex").preset_options("reference")
    assert preset["router"] == "per_matrix" and preset["routing_padding"] == "include"
    method_options = {**preset, **camex_options(config), **options}
    layer = MoELayer(spec, config["n_experts"], "camex", method_options, top_k=config["k"], pooling="sequence", aux_loss="cv2", aux_loss_coef=1e-2)
    layer = layer.to(DT).eval()
    pairs = {**load_camex_matrix(layer, a, "w_in", "wi.", layer.router), **load_camex_matrix(layer, a, "w_out", "wo.", layer.hidden_router)}
    return layer, pairs


@pytest.mark.parametrize("name", fixtures_of("t5_dense_act_dense"))
def test_t5_ffn_with_a_router_per_matrix_matches_reference(name):
    """The T5 FFN of the CAMEx code: ``wi`` and ``wo`` are two CAMEx layers, each with its own
    router; ``wo``'s routes on the mean of the *activated* hidden states. One namex_bench layer
    with the ``camex`` preset ``reference`` (``router="per_matrix"``) computes it."""
    a, meta = load(name)
    layer, pairs = t5_ffn_layer(a, meta)
    x = a["input__x"].clone().requires_grad_(True)
    out = layer(x)
    close(out.y, a["output__y"], what="y")
    close(out.aux_loss, a["output__aux_loss"], rel=1e-6, what="aux loss (wi + wo)")
    check_backward(out.y, x, a, pairs)

    # the two routers really differ: the output matrices' scores are the reference's wo gates
    with torch.no_grad():
        scores_wo = layer.hidden_router(a["intermediate__wo.routing_input"]).scores
    close(scores_wo, a["intermediate__wo.gates"], what="wo gates")
    assert (a["intermediate__wo.gates"] - a["intermediate__wi.gates"]).abs().max() > 1e-3


def test_t5_ffn_padding_averaged_or_padding_aware():
    """With padding, the reference averages it into both routers' means (``routing_padding="include"``
    reproduces it); namex_bench's default excludes it, and then reproduces the reference run on
    each sequence alone, truncated to its length."""
    a, meta = load("camex_t5_ffn_r2_ties_padded")
    mask = a["input__padding_mask"].bool()
    for padding in ("include", "exclude"):
        layer, pairs = t5_ffn_layer(a, meta, routing_padding=padding)
        x = a["input__x"].clone().requires_grad_(True)
        out = layer(x, padding_mask=mask)
        if padding == "include":
            close(out.y, a["output__y"], what="y, padding averaged")
            check_backward(out.y, x, a, pairs)
        else:
            want = a["output__y_per_sequence_unpadded"]
            close(out.y * mask[..., None], want, what="y, padding-aware")
            assert (out.y - a["output__y"])[mask].abs().max() > 1e-6  # the two readings really differ


# ------------------------------------------------------------------------------------- SMEAR


def smear_layer(a: dict, meta: dict, routing_padding: str = "include") -> tuple[MoELayer, dict]:
    config = meta["constructor"]["args"]["config"]
    C, down, N = config["model_dim"], config["model_dim"] // config["reduction_factor"], config["num_adapters"]
    normalised = not config["use_load_balancing"] and config["normalize_router_weights"]
    options = {**get_method("smear").preset_options("reference"), "routing_padding": routing_padding}
    if not normalised:
        options["router_norm"] = "none"
    spec = ExpertSpec(C, down, kind="mlp", activation="silu", bias=True)
    layer = MoELayer(spec, N, "smear", options, pooling="sequence", aux_loss="none").to(DT).eval()
    p = lambda name: a[f"param__{name}"]  # noqa: E731
    pairs = {}
    with torch.no_grad():
        layer.experts.w_in.copy_(p("multi_adapters.down_samplers_weights")[0].transpose(1, 2))
        layer.experts.b_in.copy_(p("multi_adapters.down_samplers_bias")[0])
        layer.experts.w_out.copy_(p("multi_adapters.up_samplers_weights")[0].transpose(1, 2))
        layer.experts.b_out.zero_()  # SMEAR's parameter averaging adds no up-sampler bias
        layer.router.gate.weight.copy_(p("multi_routers.router_weights")[0].T)
        pairs["multi_adapters.down_samplers_weights"] = (layer.experts.w_in, lambda g: g.transpose(1, 2)[None])
        pairs["multi_adapters.down_samplers_bias"] = (layer.experts.b_in, lambda g: g[None])
        pairs["multi_adapters.up_samplers_weights"] = (layer.experts.w_out, lambda g: g.transpose(1, 2)[None])
        pairs["multi_routers.router_weights"] = (layer.router.gate.weight, lambda g: g.T[None])
        if normalised:
            for ours, ref in ((layer.router.input_norm, "multi_router_layer_norms.0"), (layer.router.weight_norm, "multi_router_weights_layer_norms.0")):
                for attr in ("weight", "bias"):
                    getattr(ours, attr).copy_(p(f"multi_routers.{ref}.{attr}"))
                    pairs[f"multi_routers.{ref}.{attr}"] = (getattr(ours, attr), lambda g: g)
    return layer, pairs


def smear_adapter(layer: MoELayer, a: dict, x: torch.Tensor, meta: dict, **kw) -> torch.Tensor:
    """The adapter around the merged FFN: ``x + LN_post(FFN(x))`` (LN only where configured)."""
    y = layer(x, **kw).y
    if meta["constructor"]["args"]["config"]["add_layer_norm_after_adapter"]:
        y = torch.nn.functional.layer_norm(y, y.shape[-1:], a["param__post_layer_norm.weight"], a["param__post_layer_norm.bias"])
    return x + y


@pytest.mark.parametrize("name", fixtures_of("smear_adapter_controller"))
def test_smear_matches_reference(name):
    """SMEAR's ``parameter_averaging_routing`` adapter: the ``smear`` preset ``reference`` (router
    LayerNorms, padding averaged) is its merged FFN."""
    a, meta = load(name)
    layer, pairs = smear_layer(a, meta)
    x = a["input__x"].clone().requires_grad_(True)
    kw = {}
    if "input__given_hidden_states" in a:
        kw["routing_states"] = a["input__given_hidden_states"].clone().requires_grad_(True)
    if "input__padding_mask" in a:
        kw["padding_mask"] = a["input__padding_mask"].bool()
    y = smear_adapter(layer, a, x, meta, **kw)
    close(y, a["output__y"], what="y")
    (y * a["input__grad_probe"]).sum().backward()
    close(x.grad, a["grad__input__x"], what="grad x")
    if "routing_states" in kw:
        close(kw["routing_states"].grad, a["grad__input__given_hidden_states"], what="grad given_hidden_states")
    scale = max(a[f"grad__param__{ref}"].abs().max().item() for ref in pairs)
    for ref, (param, to_reference) in pairs.items():
        got, want = to_reference(param.grad), a[f"grad__param__{ref}"]
        if ref == "multi_routers.multi_router_weights_layer_norms.0.bias":  # mathematically zero: rounding noise
            assert (got - want).abs().max() <= 1e-12 * scale
        else:
            close(got, want, what=f"grad {ref}")


@pytest.mark.parametrize("name", ["smear_default_padded", "smear_no_layernorm_padded"])
def test_smear_padding_aware_routing_matches_each_sequence_alone(name):
    a, meta = load(name)
    layer, _ = smear_layer(a, meta, routing_padding="exclude")
    mask = a["input__padding_mask"].bool()
    with torch.no_grad():
        y = smear_adapter(layer, a, a["input__x"], meta, padding_mask=mask)
    close(y * mask[..., None], a["output__y_per_sequence_unpadded"], what="y, padding-aware")


# -------------------------------------------------------------------------------------- Nash


def nash_problems() -> tuple[dict, list[dict]]:
    a, meta = load("nash_mtl")
    return a, meta["problems"]


def test_nash_bargaining_matches_the_high_accuracy_solution():
    """Every problem (n = 2..32, cond(G) up to 1.8e9): ``α`` within 1e-8 of the high-accuracy solution."""
    a, problems = nash_problems()
    assert len(problems) == 30
    for problem in problems:
        key = problem["key"]
        G = a[f"{key}__G"]
        alpha, _ = nash_bargaining(G)
        close(alpha, a[f"{key}__alpha_highacc"], rel=1e-8, what=f"{key} ({problem['category']}, n={problem['n']})")


def test_nash_bargaining_agrees_with_nash_mtl_where_it_converged():
    a, problems = nash_problems()
    converged = [p for p in problems if p["nashmtl"]["converged"]]
    assert len(converged) == 25
    for problem in converged:
        key = problem["key"]
        alpha, _ = nash_bargaining(a[f"{key}__G"])
        ref = a[f"{key}__alpha_nashmtl"]
        close(alpha / alpha.sum(), ref / ref.sum(), rel=1e-5, what=key)
