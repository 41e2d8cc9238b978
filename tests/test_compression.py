"""One-shot compression of pretrained MoE LLMs (namex_bench.compression) on tiny random
transformers models of every architecture: each method reduces N → M, the result is a normal
model of its architecture (config, save_pretrained / from_pretrained), and the identities hold."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from tiny_moe_llms import CONFIGS, build, tokens  # noqa: E402

from namex_bench.compression import (  # noqa: E402
    CalibrationSettings,
    available_compressors,
    calibrate,
    compress_moe_llm,
    find_sparse_blocks,
    save_compressed,
)
from namex_bench.compression.blocks import EXPERT_COUNT_FIELDS, parameter_counts  # noqa: E402

METHODS = ["frequency_prune", "reap_prune", "msmoe_merge", "hcsmoe_merge", "nash_merge"]
# every architecture once (qwen2_moe_norm and deepseek_v2_group only vary routing options)
ARCHS = [a for a in ("qwen2_moe", "qwen3_moe", "olmoe", "mixtral", "deepseek_v2", "deepseek_v3", "gpt_oss", "deepseek_v2_group") if a in CONFIGS]
KEPT = {"mixtral": 2, "deepseek_v2_group": 6}  # of 4 (mixtral); top-3 within the best of 2 groups of 4 needs 3 per group


def windows(seed: int = 3, samples: int = 6, length: int = 12) -> torch.Tensor:
    return torch.randint(3, 64, (samples, length), generator=torch.Generator().manual_seed(seed))


_CALIBRATED: dict[str, tuple] = {}


def calibrated(arch: str):
    """(model, its calibration statistics), computed once per architecture; callers get a copy of the model."""
    if arch not in _CALIBRATED:
        model = build(arch)
        _CALIBRATED[arch] = (model, calibrate(model, windows(), CalibrationSettings(batch_size=3, output_tokens=10), progress=False))
    model, stats = _CALIBRATED[arch]
    return copy.deepcopy(model), stats


def expert_count(config) -> int:
    return next(getattr(config, f) for f in EXPERT_COUNT_FIELDS if getattr(config, f, None) is not None)


def test_every_method_is_registered_and_listed(capsys):
    from namex_bench.cli import main

    assert set(METHODS) <= set(available_compressors())
    assert main(["list", "compression"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in available_compressors())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_each_method_reduces_experts_and_the_saved_model_reloads(arch, method, tmp_path):
    model, stats = calibrated(arch)
    n, m = find_sparse_blocks(model)[0].num_experts, KEPT.get(arch, 4)
    result = compress_moe_llm(model, method, stats, experts=m)
    assert result.experts_before == [n] * len(stats) and result.experts_after == [m] * len(stats)
    assert expert_count(model.config) == m
    for block in find_sparse_blocks(model):
        assert block.num_experts == m and all(v.shape[0] == m for v in block.experts_params().values())
        assert all(v.shape[0] == m for v in block.router_params().values())
    groups = [sorted(j for g in layer["groups"] for j in g) for layer in result.layers]
    if method.endswith("_merge"):
        assert all(g == list(range(n)) for g in groups)  # every expert is in exactly one merged expert
    else:
        assert all(len(g) == m and len(set(g)) == m for g in groups)
    ids = tokens()
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    save_compressed(model, result, tmp_path / "compressed")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "compressed").eval()
    assert expert_count(reloaded.config) == m
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_frequency_prune_keeping_every_expert_is_the_identity(arch):
    model, stats = calibrated(arch)
    ids = tokens()
    with torch.no_grad():
        before = model(ids).logits
    n = find_sparse_blocks(model)[0].num_experts
    compress_moe_llm(model, "frequency_prune", stats, experts=n)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


@pytest.mark.parametrize("method", ["msmoe_merge", "hcsmoe_merge", "nash_merge"])
@pytest.mark.parametrize("arch", ["mixtral", "gpt_oss"])
def test_merging_identical_experts_gives_that_expert(arch, method):
    model = build(arch)
    for block in find_sparse_blocks(model):  # every expert a copy of expert 0 (router rows stay distinct)
        first = {k: v[:1].expand_as(v).clone() for k, v in block.experts_params().items()}
        block.rewrite(first, {k: v.clone() for k, v in block.router_params().items()})
    expert0 = [{k: v[0].clone() for k, v in b.experts_params().items()} for b in find_sparse_blocks(model)]
    stats = calibrate(model, windows(), CalibrationSettings(batch_size=3), progress=False)
    compress_moe_llm(model, method, stats, experts=3)
    for block, expected in zip(find_sparse_blocks(model), expert0):
        for name, value in block.experts_params().items():
            for m in range(3):
                torch.testing.assert_close(value[m], expected[name], atol=1e-6, rtol=1e-6)


def test_deepseek_groups_each_keep_their_share():
    """Group-limited routing (DeepSeek-V3: 8 experts in 2 groups): each group keeps M / n_group experts of its own."""
    model, stats = calibrated("deepseek_v3")
    for method in METHODS:
        result = compress_moe_llm(copy.deepcopy(model), method, stats, experts=4)
        for layer in result.layers:
            assert [sorted({j // 4 for j in g}) for g in layer["groups"]] == [[0], [0], [1], [1]], (method, layer["groups"])
    with pytest.raises(ValueError, match="expert groups"):
        compress_moe_llm(copy.deepcopy(model), "frequency_prune", stats, experts=5)
    # DeepSeek-V3 scores a group by its two best experts: one expert per group cannot be routed
    four_groups = build("deepseek_v3")
    four_groups.config.n_group = 4
    for block in find_sparse_blocks(four_groups):
        block.router.num_group, block.router.topk_group = 4, 2
    stats4 = calibrate(four_groups, windows(), CalibrationSettings(batch_size=3), progress=False)
    with pytest.raises(ValueError, match="cannot route over 4 experts in 4 groups"):
        compress_moe_llm(four_groups, "frequency_prune", stats4, experts=4)
    assert find_sparse_blocks(four_groups)[0].num_experts == 8  # refused before anything changed


def test_budgets_removed_fraction_global_and_errors(tmp_path):
    model, stats = calibrated("qwen2_moe")
    result = compress_moe_llm(copy.deepcopy(model), "reap_prune", stats, removed=0.25)
    assert result.experts_after == [6, 6]
    # global: each block keeps its top_k = 2 most salient experts, the other 4 of the 8 slots go to the most salient left anywhere
    saliency = [s.reap_saliency.tolist() for s in stats]
    saliency[1] = [3.0 * v for v in saliency[1]]  # make block 1's experts the more salient ones
    stats[1].reap_sum *= 3.0
    result = compress_moe_llm(global_model := copy.deepcopy(model), "reap_prune", stats, experts=4, layer_budget="global")
    stats[1].reap_sum /= 3.0
    floors = {(layer, j) for layer, s in enumerate(saliency) for j in sorted(range(8), key=lambda j: -s[j])[:2]}
    rest = sorted(((s[j], layer, j) for layer, s in enumerate(saliency) for j in range(8) if (layer, j) not in floors), reverse=True)
    expected = floors | {(layer, j) for _, layer, j in rest[:4]}
    assert {(layer, g[0]) for layer, entry in enumerate(result.layers) for g in entry["groups"]} == expected
    assert result.experts_after == [sum(1 for layer, _ in expected if layer == i) for i in range(2)] != [4, 4]
    with pytest.raises(ValueError, match="different numbers of experts"):
        save_compressed(global_model, result, tmp_path / "x")
    with pytest.raises(ValueError, match="each token is routed to 2"):
        compress_moe_llm(copy.deepcopy(model), "frequency_prune", stats, experts=1)
    with pytest.raises(ValueError, match="exactly one of"):
        compress_moe_llm(copy.deepcopy(model), "frequency_prune", stats, experts=4, removed=0.5)


def test_parameter_counts_follow_the_expert_count():
    model, stats = calibrated("mixtral")
    before = parameter_counts(model)
    compress_moe_llm(model, "hcsmoe_merge", stats, experts=2)  # 4 → 2
    after = parameter_counts(model)
    assert after["routed_experts"] * 2 == before["routed_experts"]
    assert before["active_per_token"] - after["active_per_token"] == 2 * 2 * 32  # top-2 either way; fewer router rows
    assert before["total"] - after["total"] == before["routed_experts"] // 2 + 2 * 2 * 32  # experts and router rows


class LegacyMixtralBlock(nn.Module):
    """A transformers-4-style Mixtral block: an nn.Linear gate and a ModuleList of w1/w3/w2 experts."""

    def __init__(self, hidden: int = 32, inter: int = 16, experts: int = 4, top_k: int = 2):
        super().__init__()
        self.top_k, self.num_experts = top_k, experts
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(Expert(hidden, inter) for _ in range(experts))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen = self.gate(flat).softmax(-1).topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(flat)
        for slot in range(self.top_k):
            for e in chosen[:, slot].unique().tolist():
                rows = chosen[:, slot] == e
                out[rows] += weights[rows, slot, None] * self.experts[e](flat[rows])
        return out.view_as(x)


class Expert(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.w1, self.w3, self.w2 = nn.Linear(hidden, inter, bias=False), nn.Linear(hidden, inter, bias=False), nn.Linear(inter, hidden, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.w2(self.act_fn(self.w1(x)) * self.w3(x))


def test_the_older_per_expert_layout_is_compressed_too():
    model = build("mixtral")
    for layer in model.model.layers:
        layer.mlp = LegacyMixtralBlock()
        with torch.no_grad():
            for p in layer.mlp.parameters():
                p.normal_(0.0, 0.2)
    blocks = find_sparse_blocks(model)
    assert [b.layout for b in blocks] == ["per_expert", "per_expert"]
    x = torch.randn(5, 32)
    routing = blocks[0].route(x)  # routed by Mixtral's rule from the gate's weight, as the block does
    expected = blocks[0].block(x.unsqueeze(0)).squeeze(0)
    outputs = blocks[0].expert_outputs(x.repeat_interleave(2, 0), routing.indices.reshape(-1)).view(5, 2, -1)
    torch.testing.assert_close((outputs * routing.weights.unsqueeze(-1)).sum(1), expected, atol=1e-6, rtol=1e-5)
    stats = calibrate(model, windows(), CalibrationSettings(batch_size=3), progress=False)
    for method in METHODS:
        pruned = copy.deepcopy(model)
        compress_moe_llm(pruned, method, stats, experts=3)
        for block in find_sparse_blocks(pruned):
            assert len(block.experts) == 3 and block.router.weight.shape == (3, 32) and block.router.out_features == 3
        with torch.no_grad():
            assert torch.isfinite(pruned(tokens()).logits).all()
    assert pruned.config.num_local_experts == 3


def test_calibration_memory_does_not_grow_with_the_calibration_tokens():
    """The per-block state is N·H + N² + 3N numbers however many tokens are seen, and no expert
    computation takes more than chunk_rows rows at once."""
    model = build("qwen3_moe")
    calls = []
    for block in find_sparse_blocks(model):
        original = block.experts.forward

        def spy(x, *args, _original=original, **kwargs):
            calls.append(x.shape[0])
            return _original(x, *args, **kwargs)

        block.experts.forward = spy
    small = calibrate(model, windows(samples=2), CalibrationSettings(batch_size=2, output_tokens=5, chunk_rows=16), progress=False)
    calls.clear()
    large = calibrate(model, windows(samples=12, length=40), CalibrationSettings(batch_size=4, output_tokens=5, chunk_rows=16), progress=False)
    model_calls = [c for c in calls if c == 4 * 40]  # the model's own forward: one batch
    assert max(c for c in calls if c not in model_calls) <= 16
    for s, big in zip(small, large):
        sizes = [t.numel() for t in (s.frequency, s.gate_sum, s.reap_sum, s.logit_gram, s.output_sum)]
        assert sizes == [t.numel() for t in (big.frequency, big.gate_sum, big.reap_sum, big.logit_gram, big.output_sum)]
        assert sum(sizes) == 8 * 32 + 8 * 8 + 3 * 8
        assert big.tokens == 12 * 40 and big.output_tokens == 3 * 5 and big.frequency.sum() == 2 * big.tokens


def test_calibration_is_seeded():
    model = build("olmoe")
    a = calibrate(model, windows(), CalibrationSettings(batch_size=3, output_tokens=4, seed=1), progress=False)
    b = calibrate(model, windows(), CalibrationSettings(batch_size=3, output_tokens=4, seed=1), progress=False)
    c = calibrate(model, windows(), CalibrationSettings(batch_size=3, output_tokens=4, seed=2), progress=False)
    assert torch.equal(a[0].output_sum, b[0].output_sum) and not torch.equal(a[0].output_sum, c[0].output_sum)
    assert torch.equal(a[0].reap_sum, c[0].reap_sum)  # REAP uses every routed token


def test_calibration_bench_runs_and_reports_memory():
    from namex_bench.bench.calibration import CalibrationBenchConfig, run_calibration_bench

    layer = {"hidden_size": 64, "moe_intermediate_size": 32, "num_experts": 16, "num_experts_per_tok": 4,
             "shared_expert_intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64}
    cfg = CalibrationBenchConfig(samples=2, seq_len=64, batch_size=2, output_tokens=16, layer=layer, repeats=1)
    rows, setup = run_calibration_bench(cfg, torch.device("cpu"), torch.float32)
    assert [r["pass"] for r in rows] == ["forward (no statistics)", "namex_bench calibrate", "all outputs held [N, T, H]"]
    assert all(r["tokens/s"] > 0 and r["peak memory above the model (MB)"] >= 0 for r in rows)
    assert "N = 16 experts" in setup and "state per block" in setup
