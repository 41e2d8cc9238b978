"""Low precision: every method under bf16/fp16 autocast, the merge kept exact, precision in keys.

Autocast is simulated on the CPU (``torch.autocast("cpu", dtype=...)``), which rounds the
same operations to the same types as on a GPU. Tolerances are in units of the compute
type's epsilon ``ε`` (2⁻⁷ for bf16, 2⁻¹⁰ for fp16) and are stated in
``namex_bench/selfcheck/numerics.py`` (``TOLERANCES``).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from namex_bench.cli import main
from namex_bench.device import autocast_dtype, describe_precision, precision_config
from namex_bench.methods.registry import available_methods
from namex_bench.moe.experts import MergedExperts, ffn, soft_merge
from namex_bench.moe.router import Router
from namex_bench.moe.upcycle import upcycle
from namex_bench.runner.records import read_records
from namex_bench.selfcheck import numerics
from namex_bench.selfcheck.checks import write_tiny_suite
from namex_bench.suite.expand import expand, machine_precision
from namex_bench.suite.loader import load_suite

BF16_EPS = torch.finfo(torch.bfloat16).eps


# --------------------------------------------------------------- every method, both types


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=("bf16", "fp16"))
@pytest.mark.parametrize("experts", numerics.EXPERT_SETS)
@pytest.mark.parametrize("method", sorted(available_methods()))  # the registry: a new method is covered
def test_every_method_under_autocast_is_finite_and_within_tolerance_of_float32(method, experts, dtype):
    errors = numerics.comparable_errors(method, experts, dtype)
    assert errors.finite
    assert errors.routing_changes == 0, "every seed routed some group differently from float32"
    assert numerics.violations(errors) == [], errors.in_eps()
    if method != "smoe":
        assert errors.merge is not None  # the merge error is measured, not skipped


def test_tolerances_can_fail():
    """The check is not vacuous: an error above a tolerance is reported."""
    errors = numerics.precision_errors("smear", "upcycled", torch.bfloat16)
    tight = {**errors.__dict__, "output": 10 * BF16_EPS}
    assert numerics.violations(numerics.PrecisionErrors(**tight)) == ["output 10 eps > 2 eps"]


# --------------------------------------------------------------- the merge, 1% apart


def upcycled_layer(method: str, relative_difference: float = 0.01, seed: int = 0):
    torch.manual_seed(seed)
    dense = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
    generator = torch.Generator().manual_seed(seed)
    return upcycle(dense, 4, method, noise_std=relative_difference, generator=generator)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method", ("camex", "smear"))
def test_bf16_merge_of_experts_one_percent_apart_keeps_their_difference_from_the_base(method):
    """``Ê_g − E_m`` (``Ē_g − θ̄`` for SMEAR) as the FFN applies it is within 1 ε of float32's.

    Rounding the merged weights themselves to bf16 — what autocast did to the merge and its
    FFN before — leaves about half of that 1% difference wrong (measured: 35–50%)."""
    layer = upcycled_layer(method)
    experts = layer.experts.params()
    scores = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=-1)

    def merge() -> MergedExperts:
        if method == "smear":
            return soft_merge(scores, experts)
        base = layer.base.expert(0)
        tau, tau_tilde = layer.method.domain_vectors(experts, base)
        return layer.method.merge(base, tau, tau_tilde, scores)

    exact = merge()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = merge()
        low_deltas = low.deltas()
    exact_deltas, center = exact.deltas(), exact.center()
    for name in ("w_in", "w_out"):  # upcycling noise is on the weights; the biases stay copies
        delta = exact_deltas[name].detach()
        assert delta.dtype == low_deltas[name].dtype == torch.float32 and delta.abs().max() > 0
        assert relative(low_deltas[name].to(torch.bfloat16), delta) <= BF16_EPS, name
        rounded = exact.materialise()[name].to(torch.bfloat16).float() - center[name].to(torch.bfloat16).float()
        assert relative(rounded, delta) > 0.2, name

    # applied as center + delta, the FFN's output is as close to float32 as a dense FFN's
    x = torch.randn(6, 10, 64, generator=torch.Generator().manual_seed(2))
    y = ffn(x, exact, layer.spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_low = ffn(x, low, layer.spec)
    assert y_low.dtype == torch.bfloat16 and relative(y_low, y) <= 2 * BF16_EPS


def test_merged_experts_in_float32_are_one_set_of_weights():
    """Outside low precision the merged expert is applied materialised, as one set of weights."""
    layer = upcycled_layer("smear", relative_difference=0.5)
    merged = soft_merge(torch.softmax(torch.randn(3, 4), -1), layer.experts.params())
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(ffn(x, merged, layer.spec), ffn(x, merged.materialise(), layer.spec), rtol=0, atol=0)


def test_bf16_model_without_autocast_runs_the_merge_in_float32():
    """A model loaded in bf16 (a pretrained LLM's checkpoint type) computes in bf16, its merge in float32."""
    layer = upcycled_layer("namex_mom").to(torch.bfloat16)
    x = torch.randn(2, 6, 64, dtype=torch.bfloat16)
    out = layer(x)
    assert out.y.dtype == torch.bfloat16 and torch.isfinite(out.y).all()
    assert all(t.dtype == torch.float32 for t in out.state.base.values())


def test_router_logits_are_float32_whatever_autocast_says():
    torch.manual_seed(0)
    router = Router(64, 8, 2)
    h = torch.randn(32, 64)
    exact = router(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = router(h)
    assert low.logits.dtype == torch.float32
    torch.testing.assert_close(low.logits, exact.logits, rtol=0, atol=0)
    assert torch.equal(low.scores, exact.scores)


# --------------------------------------------------------------- precision in records and keys

FOLDER = "selfcheck-limit32"


def write_suite(folder, precision="fp32", methods=("smear", "namex")):
    """The selfcheck's tiny suite (``selfcheck/checks.py``): a 3-block ViT-MoE, one epoch of MNIST."""
    return write_tiny_suite(folder, "cpu", precision, methods)


def test_the_precision_is_part_of_every_run_key_and_resolves_the_same_twice(tmp_path):
    suite, _ = load_suite(str(write_suite(tmp_path)))
    cpu = torch.device("cpu")
    fp32, bf16 = precision_config(cpu, None), precision_config(cpu, torch.bfloat16)
    assert fp32 == {"autocast": None, "float32_matmul": "highest"} and bf16["autocast"] == "bfloat16"
    assert describe_precision(fp32) == "float32" and describe_precision(bf16) == "bf16 autocast"
    keys32 = {r.key for r in expand(suite, precision=fp32)}
    keys16 = {r.key for r in expand(suite, precision=bf16)}
    assert len(keys32) == len(keys16) == 2 and not keys32 & keys16
    assert {r.key for r in expand(suite)} == keys32 == {r.key for r in expand(suite)}  # this machine, twice
    assert machine_precision(suite) == fp32
    assert all(r.config["precision"] == fp32 for r in expand(suite))
    assert precision_config(torch.device("cuda"), torch.bfloat16)["tf32"].keys() == {"matmul", "cudnn"}
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp16") is torch.float16


def test_a_bf16_suite_runs_every_method_on_the_cpu_and_is_never_taken_for_float32(tmp_path, capsys):
    """The tiny suite with ``precision: bf16``: every registered method runs to completion; its
    records say bf16 and have other keys than the float32 runs, which they supersede, and a
    table of the two never mixes them."""
    methods = tuple(sorted(available_methods()))
    results = tmp_path / "results"
    fp32 = write_suite(tmp_path, "fp32", ("smear", "smoe"))
    assert main(["run", str(fp32), "--results", str(results), "--limit", "32", "--no-report"]) == 0
    before = {r["name"]: r for r in read_records(results, FOLDER)}
    assert {r["config"]["precision"]["autocast"] for r in before.values()} == {None}

    bf16 = write_suite(tmp_path, "bf16", methods)
    capsys.readouterr()
    assert main(["run", str(bf16), "--results", str(results), "--limit", "32"]) == 0
    assert f"{len(methods)} runs finished, 0 already done, 0 failed" in capsys.readouterr().out
    after = {r["name"]: r for r in read_records(results, FOLDER)}
    assert len(after) == len(methods) and all(r["status"] == "ok" for r in after.values())
    assert all(r["config"]["precision"] == {"autocast": "bfloat16", "float32_matmul": "highest"} for r in after.values())
    for name, old in before.items():  # another precision is another run: redone, not skipped
        assert after[name]["key"] != old["key"]
        assert json.loads((results / FOLDER / "runs" / "superseded" / f"{old['key']}.json").read_text())["key"] == old["key"]
    board = (results / FOLDER / "leaderboard.md").read_text()
    assert "Precision: bf16 autocast." in board

    # a float32 record among bf16 ones: the report refuses to rank them together
    old = before["smoe/vit_tiny/mnist/seed0"]
    (results / FOLDER / "runs" / f"{old['key']}.json").write_text(json.dumps({**old, "name": "smoe-fp32"}))
    moved = after["smoe/vit_tiny/mnist/seed0"]
    (results / FOLDER / "runs" / f"{moved['key']}.json").unlink()
    (results / FOLDER / "current_runs.json").unlink()  # else the report leaves the older configuration out (and says so)
    assert main(["report", FOLDER, "--results", str(results)]) == 2
    assert "were computed in different precisions (bf16 autocast; float32)" in capsys.readouterr().err


# --------------------------------------------------------------- training and evaluation


def tiny_vit(method="namex"):
    from namex_bench.models.registry import get_builder

    torch.manual_seed(0)
    builder = get_builder("vit_moe")
    params = builder.validate({"patch_size": 14, "embed_dim": 16, "depth": 3, "num_heads": 2, "num_experts": 2})
    return builder.build(params, method, {}, 10, 1, 28)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=("bf16", "fp16"))
def test_a_model_loaded_in_low_precision_trains_float32_master_weights(dtype):
    from torch.utils.data import DataLoader, TensorDataset

    from namex_bench.suite.schema import TrainConfig
    from namex_bench.tasks.training import train

    model = tiny_vit().to(dtype)
    data = DataLoader(TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))), batch_size=16)
    result = train(model, data, TrainConfig(epochs=1, batch_size=16), F.cross_entropy, torch.device("cpu"), dtype)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_loss))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_lm_eval_runs_in_the_runs_precision_with_float32_logits():
    from transformers import GPT2Config, GPT2LMHeadModel

    from namex_bench.data import gpt2_tokenizer
    from namex_bench.lmeval.model import lm_eval_model

    torch.manual_seed(0)
    tokenizer = gpt2_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    seen = []
    model.transformer.h[0].mlp.register_forward_hook(lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype)))
    with lm_eval_model(model, tokenizer, autocast_dtype=torch.bfloat16) as lm:
        logits = lm.model(ids).logits
    assert seen == [(True, torch.bfloat16)] and logits.dtype == torch.float32
    with lm_eval_model(model, tokenizer) as lm:
        lm.model(ids)
    assert seen[-1] == (False, torch.float32)
