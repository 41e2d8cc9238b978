"""Each method's own part can be switched off, and the diagnostics in every record measure what that does.

An ablation replaces one part by its neutral value: the base expert by the experts' mean, the
curvature by the identity, propagation by γ = 0, the Nash weights by uniform ones, momentum by
β = 0. Each must compute exactly the configuration it names (tested against that configuration
built directly), change the outputs of a model whose parts are not neutral, and be undone on
leaving the ``with`` block.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from namex_bench import ExpertSpec, MoELayer
from namex_bench.methods.registry import available_methods
from namex_bench.models.registry import get_builder
from namex_bench.report.mechanisms import mechanism_rows, mechanism_section_markdown
from namex_bench.tasks.base import RunContext
from namex_bench.tasks.diagnostics import mechanism_diagnostics, token_blocks

SPEC = ExpertSpec(12, 24)
N = 4
EXPECTED = {
    "smoe": set(), "smear": set(), "topk_merge": set(),
    "camex": {"base", "curvature"},
    "ep_camex": {"base", "curvature", "propagation"},
    "namex": {"base", "curvature", "propagation", "nash_weights"},
    "namex_mom": {"base", "curvature", "propagation", "nash_weights", "momentum"},
}


def layers_of(method, options=None, seed=0, n_layers=3):
    """``n_layers`` float64 layers with distinct experts, a base away from their mean, curvature
    away from the identity and a sharp router: no part of the method is neutral."""
    torch.manual_seed(seed)
    layers = [MoELayer(SPEC, N, method, options, moe_index=i).double() for i in range(n_layers)]
    with torch.no_grad():
        for layer in layers:
            layer.router.gate.weight.normal_(0.0, 1.0)
            for p in layer.method.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return layers


def run(layers, x):
    state, y = None, x
    for layer in layers:
        out = layer(y, state)
        y, state = y + out.y, out.state
    return y


def copy_into(target, source):
    for t, s in zip(target, source):
        t.load_state_dict(s.state_dict())
    return target


X = torch.randn(3, 5, SPEC.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_every_method_declares_its_ablations():
    for name, cls in available_methods().items():
        if name in EXPECTED:
            assert set(cls.available_ablations()) == EXPECTED[name], name
            assert all(isinstance(text, str) and text for text in cls.available_ablations().values())
    with pytest.raises(ValueError, match="no ablation 'momentum'; it has: base, curvature"):
        with layers_of("camex")[0].method.ablated("momentum"):
            pass


def equivalent(method: str, part: str, layers):
    """The configuration an ablation must compute, built directly from the same parameters."""
    if part == "momentum":  # β = 0 is namex
        return copy_into(layers_of("namex"), layers)
    if part == "nash_weights":  # uniform α̂ = 1/N is ep_camex's mean step (for namex_mom: below, with momentum)
        return None if method == "namex_mom" else copy_into(layers_of("ep_camex"), layers)
    if part == "propagation":
        return copy_into(layers_of(method, {"gamma": 0.0}), layers)
    twin = copy_into(layers_of(method), layers)
    with torch.no_grad():
        for layer in twin:
            if part == "curvature":  # the default initialisation is M_i = I
                layer.method.curvature.load_state_dict(MoELayer(SPEC, N, method).double().method.curvature.state_dict())
            elif part == "base" and layer.base is not None:
                for name, p in layer.base.params().items():
                    p.copy_(layer.experts.params()[name].mean(0, keepdim=True))
    return twin


@pytest.mark.parametrize("method,part", [(m, p) for m in ("camex", "ep_camex", "namex", "namex_mom") for p in sorted(EXPECTED[m])])
def test_an_ablation_computes_what_it_names_and_is_undone(method, part):
    layers = layers_of(method)
    with torch.no_grad():
        full = run(layers, X)
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(layer.method.ablated(part))
            ablated = run(layers, X)
        again = run(layers, X)
        twin = equivalent(method, part, layers)
        if twin is not None:
            torch.testing.assert_close(ablated, run(twin, X), rtol=1e-10, atol=1e-10)
    assert (ablated - full).abs().max() > 1e-6, f"{method}: ablating {part} changes nothing"
    assert torch.equal(again, full)


def test_ablations_compose_namex_mom_without_nash_weights_and_momentum_is_ep_camex():
    layers = layers_of("namex_mom")
    with torch.no_grad(), ExitStack() as stack:
        for layer in layers:
            stack.enter_context(layer.method.ablated("nash_weights"))
            stack.enter_context(layer.method.ablated("momentum"))
        ablated = run(layers, X)
        expected = run(copy_into(layers_of("ep_camex"), layers), X)
    torch.testing.assert_close(ablated, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------- diagnostics


def vit(method: str):
    builder = get_builder("vit_moe")
    params = builder.validate({"patch_size": 7, "embed_dim": 16, "depth": 3, "num_heads": 2, "num_experts": 4, "moe_blocks": "every"})
    model = builder.build(params, method, {}, 10, 1, 28, seed=0).eval()
    with torch.no_grad():  # a "trained" model: no part at its neutral value
        for layer in model.moe_layers:
            layer.router.gate.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(layer.moe_index))
            for p in list(layer.method.parameters()) + list(layer.experts.parameters()):
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def test_diagnostics_measure_every_ablation_on_a_fixed_batch():
    images = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ctx = RunContext(torch.device("cpu"), None)
    model = vit("namex_mom")
    with torch.no_grad():
        before = model(images).output
    diagnostics = mechanism_diagnostics(model, images, ctx, "16 random images")
    with torch.no_grad():
        assert torch.equal(model(images).output, before)  # nothing stays switched off
    assert diagnostics["batch"] == {"source": "16 random images", "positions": 16}
    assert set(diagnostics["ablations"]) == EXPECTED["namex_mom"]
    assert [layer["moe_index"] for layer in diagnostics["layers"]] == [0, 1, 2]
    for layer in diagnostics["layers"]:
        weights = torch.tensor(layer["nash_weights"])
        assert weights.sum().item() == pytest.approx(1) and layer["nash_min_max"] == pytest.approx((weights.min() / weights.max()).item())
        assert layer["nash_residual"] < 1e-6
    # the recorded change is the change of the logits when the part is off in every layer
    with ExitStack() as stack, torch.no_grad():
        for layer in model.moe_layers:
            stack.enter_context(layer.method.ablated("momentum"))
        delta = (model(images).output - before).abs()
    momentum = diagnostics["ablations"]["momentum"]
    assert momentum["mean_abs_delta_logit"] == pytest.approx(delta.mean().item()) and momentum["mean_abs_delta_logit"] > 0
    assert momentum["max_abs_delta_logit"] == pytest.approx(delta.max().item())
    assert 0 <= momentum["changed_predictions"] <= 1 and diagnostics["logit_std"] > 0
    plain = mechanism_diagnostics(vit("smear"), images, ctx, "16 random images")
    assert plain["ablations"] == {} and plain["layers"] == []


def test_token_blocks_take_whole_blocks_up_to_the_budget():
    tokens = torch.arange(1000)
    assert token_blocks(tokens, 64).shape == (8, 64)
    assert token_blocks(tokens, 1024).shape == (1, 1000)  # a short stream is one shorter block
    assert token_blocks(tokens, 300, positions=512).shape == (1, 300)
    assert torch.equal(token_blocks(tokens, 64)[1], tokens[64:128])


def record(method: str, seed: int, deltas: dict[str, tuple[float, float]], nash: list[float] | None = None) -> dict:
    layers = [] if nash is None else [{"moe_index": 0, "nash_weights": nash, "nash_min_max": min(nash) / max(nash), "nash_residual": 1e-12}]
    return {
        "status": "ok", "key": f"{method}{seed}", "name": f"{method}/m/t/seed{seed}",
        "config": {"method": {"label": method}, "model": {"name": "m"}, "task": {"name": "t"}, "seed": seed},
        "diagnostics": {
            "batch": {"source": "the first 4 test images", "positions": 4}, "logit_std": 2.0, "layers": layers,
            "ablations": {part: {"mean_abs_delta_logit": d, "changed_predictions": c, "replaced_by": "x"} for part, (d, c) in deltas.items()},
        },
    }


def test_the_mechanism_table_averages_over_seeds_and_omits_methods_without_parts():
    records = [
        record("camex", 0, {"base": (0.2, 0.1), "curvature": (0.4, 0.0)}),
        record("camex", 1, {"base": (0.4, 0.3), "curvature": (0.2, 0.0)}),
        record("namex_mom", 0, {"nash_weights": (0.01, 0.0), "momentum": (0.5, 0.25)}, nash=[0.2, 0.3, 0.5]),
        record("smear", 0, {}),
    ]
    header, rows = mechanism_rows(records, "t", "m")
    assert header == ["method", "base off", "curvature off", "nash_weights off", "momentum off", "α̂ min/max", "NBS residual", "logit std", "n"]
    assert rows == [
        ["camex", "0.3 (20.0%)", "0.3 (0.0%)", "", "", "", "", "2", "2"],
        ["namex_mom", "", "", "0.01 (0.0%)", "0.5 (25.0%)", "0.4", "1e-12", "2", "1"],
    ]
    markdown = mechanism_section_markdown(records, "t", "m")
    assert "### Mechanisms" in markdown and "the first 4 test images" in markdown and "smear" not in markdown
    assert mechanism_section_markdown([record("smear", 0, {})], "t", "m") == ""
