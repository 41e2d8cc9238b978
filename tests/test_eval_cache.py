"""Evaluation computes each merge's parameter-only parts once (``moe/eval_cache.py``).

On a model of several MoE layers (4, so that namex_mom's momentum acts on a base), every
method's outputs inside a :class:`MergeCache` are bit-identical to the uncached pass — in
float32 and under bf16 autocast — while the cache is actually read; the cache is recomputed
when a parameter changes (an optimizer step, ``load_state_dict``, a lower layer only), when an
ablation is active, and never read with gradients on; and the task runners evaluate inside one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from namex_bench import ExpertSpec, MergeCache, MoELayer
from namex_bench.methods.camex import CurvatureParts
from namex_bench.methods.registry import get_method

D_MODEL, D_HIDDEN, N, LAYERS = 16, 32, 4, 4

# every method, its presets, and the placements whose merge takes fixed weights (one merged expert)
CONFIGS = [
    ("smoe", None, {}),
    ("smear", None, {}),
    ("smear", "reference", {}),
    ("topk_merge", None, {}),
    ("camex", None, {}),
    ("camex", "reference", {}),
    ("ep_camex", None, {}),
    ("ep_camex", "reference", {}),
    ("namex", None, {}),
    ("namex", None, {"placement": "merge"}),
    ("namex", None, {"placement": "both", "curvature_rank": 2}),
    ("namex_mom", None, {}),
    ("namex_mom", None, {"placement": "both"}),
]


def config_id(config) -> str:
    method, preset, options = config
    return "-".join([method, *([preset] if preset else []), *(f"{k}={v}" for k, v in options.items())])


class Stack(nn.Module):
    """``LAYERS`` MoE layers passing the propagation state up: ``h ← h + y``."""

    def __init__(self, method: str, preset: str | None = None, options: dict | None = None, seed: int = 0):
        super().__init__()
        cls = get_method(method)
        opts = cls.given_options(preset, options or {})
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(MoELayer(ExpertSpec(D_MODEL, D_HIDDEN), N, method, opts, moe_index=i, seed=seed) for i in range(LAYERS))
        with torch.no_grad():  # away from the initialisation: curvature, bases and experts all differ
            for p in self.parameters():
                p.add_(0.05 * torch.randn_like(p))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        state = None
        for layer in self.layers:
            out = layer(h, state, mask)
            h, state = h + out.y, out.state
        return h


def batches(count: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of different sizes and lengths, with padding."""
    g = torch.Generator().manual_seed(1)
    out = []
    for b, t in [(3, 10), (2, 7), (5, 12)][:count]:
        mask = torch.ones(b, t, dtype=torch.bool)
        mask[0, t - 3 :] = False
        out.append((torch.randn(b, t, D_MODEL, generator=g), mask))
    return out


def evaluate(model: nn.Module, data, autocast: torch.dtype | None = None) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        return [model(x, mask) for x, mask in data]


def assert_all_equal(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a, b), float((a - b).abs().max())


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_cached_evaluation_is_bit_identical_to_the_uncached_pass(config, autocast):
    model = Stack(*config)
    data = batches()
    uncached = evaluate(model, data, autocast)
    with MergeCache(model) as cache:
        first = evaluate(model, data, autocast)
        again = evaluate(model, data, autocast)
        kept = [cache.parts_of(layer) for layer in model.layers]
    assert_all_equal(first, uncached)
    assert_all_equal(again, uncached)
    if config[0] == "smoe":
        assert cache.computed == 0  # token routing: nothing parameter-only
    else:
        assert cache.computed == LAYERS  # once per layer, for six batches of three shapes
        assert cache.reused == LAYERS * (2 * len(data) - 1)
    if config[0] in ("smear", "topk_merge"):  # the experts' mean, the center of a merge in bf16
        assert all((part is None) == (autocast is None) for part in kept)
    assert all(layer.merge_cache is None for layer in model.layers)  # detached on exit


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[0] not in ("smoe", "smear", "topk_merge")], ids=config_id)
def test_cached_parts_stay_float32_under_autocast(config):
    model = Stack(*config)
    with MergeCache(model) as cache:
        evaluate(model, batches(1), torch.bfloat16)
        parts = [cache.parts_of(layer) for layer in model.layers]
    for part in parts:
        assert isinstance(part, CurvatureParts)
        tensors = [*part.base.values(), *part.terms.values(), *(part.state.base or {}).values(), *part.stats.values()]
        assert tensors and all(t.dtype == torch.float32 for t in tensors)
        if part.shared is not None:  # namex's α̂ in the merge: the one merged expert per stage is kept too
            assert all(t.dtype == torch.float32 and t.shape[0] == 1 for m in part.shared.values() for t in m.parts[1].values())


def test_an_optimizer_step_inside_the_cache_invalidates_it():
    model = Stack("namex_mom")
    reference = Stack("namex_mom")
    data = batches()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with MergeCache(model) as cache:
        before = evaluate(model, data)
        model.train()
        loss = model(*data[0]).square().mean()  # gradients on: the cache is neither read nor written
        loss.backward()
        assert cache.computed == LAYERS and all(p.grad is not None for p in model.layers[2].method.curvature.parameters())
        optimizer.step()
        after = evaluate(model, data)
    reference.load_state_dict(model.state_dict())
    assert_all_equal(after, evaluate(reference, data))
    assert not torch.equal(after[0], before[0])
    assert cache.computed == 2 * LAYERS


@pytest.mark.parametrize("assign", [False, True], ids=["copy", "assign"])
def test_load_state_dict_inside_the_cache_invalidates_it(assign):
    model, other = Stack("namex", seed=0), Stack("namex", seed=1)
    data = batches()
    want = evaluate(other, data)
    with MergeCache(model):
        before = evaluate(model, data)
        model.load_state_dict(other.state_dict(), assign=assign)
        after = evaluate(model, data)
    assert not torch.equal(before[0], want[0])
    assert_all_equal(after, want)


def test_a_change_in_a_lower_layer_reaches_every_layer_above():
    """Layer 3 has parameters of its own unchanged, but the base propagated to it moved."""
    model, reference = Stack("ep_camex"), Stack("ep_camex")
    data = batches(1)
    with MergeCache(model) as cache:
        evaluate(model, data)
        with torch.no_grad():
            model.layers[0].base.w_in.mul_(1.5)  # the first layer's base: propagated to every layer above
        after = evaluate(model, data)
    reference.load_state_dict(model.state_dict())
    assert_all_equal(after, evaluate(reference, data))
    assert cache.computed == 2 * LAYERS


@pytest.mark.parametrize("method", ["camex", "ep_camex", "namex", "namex_mom"])
def test_ablations_are_computed_not_read_from_the_cache(method):
    model = Stack(method)
    data = batches()
    parts = sorted(model.layers[0].method.available_ablations())
    want = {}
    for part in parts:  # uncached, each ablation in every layer
        with ablated(model, part):
            want[part] = evaluate(model, data)
    plain = evaluate(model, data)
    with MergeCache(model):
        assert_all_equal(evaluate(model, data), plain)
        for part in parts:
            with ablated(model, part):
                got = evaluate(model, data)
            assert_all_equal(got, want[part])
            assert not torch.equal(got[0], plain[0]), part
            assert_all_equal(evaluate(model, data), plain)  # and back


def ablated(model: Stack, part: str):
    from contextlib import ExitStack

    stack = ExitStack()
    for layer in model.layers:
        if part in layer.method.available_ablations():
            stack.enter_context(layer.method.ablated(part))
    return stack


def test_gradients_on_never_read_the_cache():
    """A write through ``.data`` is invisible to the version counters (the documented blind spot):
    the no-grad pass then reads the stale parts, a pass with gradients computes afresh."""
    model, reference = Stack("namex_mom"), Stack("namex_mom")
    x, mask = batches(1)[0]
    with MergeCache(model) as cache:
        stale = evaluate(model, [(x, mask)])[0]
        model.layers[0].method.curvature.w_in_A.data.mul_(1.2)
        assert torch.equal(evaluate(model, [(x, mask)])[0], stale)  # read from the cache
        with torch.enable_grad():
            fresh = model(x, mask)
        reused = cache.reused
        cache.clear()
        cleared = evaluate(model, [(x, mask)])[0]
    reference.load_state_dict(model.state_dict())
    with torch.enable_grad():
        want = reference.eval()(x, mask)
    assert torch.equal(fresh, want) and not torch.equal(fresh, stale)
    assert fresh.requires_grad and reused == LAYERS  # the grad pass neither read nor counted
    assert torch.equal(cleared, want.detach())


def test_the_cache_follows_the_compute_dtype():
    """SMEAR keeps the experts' mean only where its merge runs in bf16/fp16."""
    model = Stack("smear")
    data = batches(1)
    want32, want16 = evaluate(model, data), evaluate(model, data, torch.bfloat16)
    with MergeCache(model) as cache:
        assert_all_equal(evaluate(model, data), want32)
        assert cache.parts_of(model.layers[0]) is None
        assert_all_equal(evaluate(model, data, torch.bfloat16), want16)
        mean = cache.parts_of(model.layers[0])
        assert mean is not None and torch.equal(mean["w_in"], model.layers[0].experts.w_in.mean(0))
        assert_all_equal(evaluate(model, data), want32)
    assert cache.computed == 3 * LAYERS


def test_a_state_moved_to_another_device_is_moved_once():
    """Layers spread over several GPUs (``device_map``): the layer after a device boundary receives
    the cached state below it moved — the same copy at every pass, so its own cache holds."""
    model = Stack("namex_mom")
    with MergeCache(model) as cache:
        evaluate(model, batches(1))
        state = cache.parts_of(model.layers[1]).state
    moved = state.to("meta")
    assert moved is state.to(torch.device("meta")) and moved is not state
    assert all(t.device.type == "meta" for t in moved.tensors()) and len(moved.tensors()) == 3 * len(state.base)  # base, Re μ, Im μ
    assert state.to("cpu") is state


def test_a_fully_sharded_model_is_not_cached():
    from torch.distributed.fsdp import FSDPModule

    model = Stack("namex")
    model.__class__ = type("FSDPStack", (Stack, FSDPModule), {})  # what fully_shard does to a module's class
    with MergeCache(model) as cache:
        evaluate(model, batches(1))
    assert cache.layers == [] and cache.computed == 0


# ------------------------------------------------------------------------------ the task runners


@pytest.fixture
def caches_entered(monkeypatch):
    """Every MergeCache a runner leaves: ``(MoE layers, computed, reused)``."""
    seen = []
    real_exit = MergeCache.__exit__

    def exit_(self, *exc):
        seen.append((len(self.layers), self.computed, self.reused))
        return real_exit(self, *exc)

    monkeypatch.setattr(MergeCache, "__exit__", exit_)
    return seen


def uncached(monkeypatch) -> None:
    """From here on, every layer computes its parts in every pass (as before the cache)."""
    monkeypatch.setattr(MergeCache, "for_layer", lambda self, layer, state, tokens: None)


def assert_same_result(a, b) -> None:
    """Two TaskResults with the same numbers: metrics, cells, per-example outcomes, diagnostics."""
    import numpy as np

    assert a.metrics == b.metrics and a.cells == b.cells and a.diagnostics == b.diagnostics
    if a.examples is not None:
        assert a.examples.metrics == b.examples.metrics and set(a.examples.sets) == set(b.examples.sets)
        for name, fields in a.examples.sets.items():
            for field, values in fields.items():
                np.testing.assert_array_equal(values, b.examples.sets[name][field], err_msg=f"{name}/{field}")


@pytest.mark.slow
def test_image_classification_evaluates_clean_and_corrupted_images_with_one_cache(image_folder, monkeypatch, caches_entered):
    from namex_bench.suite.schema import ImageClassificationTask, MethodEntry, ModelEntry
    from namex_bench.tasks import RunContext
    from namex_bench.tasks.image_classification import run_image_classification

    task = ImageClassificationTask.model_validate({
        "name": "folder", "type": "image_classification",
        "data": {"source": "imagefolder", "root": str(image_folder), "image_size": 28},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3},
        "eval": {"batch_size": 2, "corruptions": {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}},
    })
    model = ModelEntry(name="vit", builder="vit_moe", params={"patch_size": 7, "embed_dim": 16, "depth": LAYERS, "num_heads": 2,
                                                             "moe_blocks": "every", "num_experts": N})

    def run():
        return run_image_classification(task, model, MethodEntry(name="namex_mom"), 0, RunContext(torch.device("cpu"), None))

    cached = run()
    ((layers, computed, reused),) = caches_entered
    # one cache over the clean test set (2 batches), the diagnostics (one batch, plain and under each of
    # namex_mom's 5 ablations) and 4 corruption cells (2 batches each): per layer, the parts computed for
    # the clean set, for each ablation and once more after them; read in every other pass
    assert layers == LAYERS and computed == LAYERS * (1 + 5 + 1) and reused == LAYERS * (1 + 1 + 4 * 2 - 1)
    uncached(monkeypatch)
    assert_same_result(cached, run())


def test_the_planted_task_evaluates_with_one_cache(monkeypatch, caches_entered):
    from namex_bench.suite.schema import MethodEntry, ModelEntry, PlantedMergeTask
    from namex_bench.tasks import RunContext
    from namex_bench.tasks.planted import run_planted_merge

    task = PlantedMergeTask.model_validate({
        "name": "planted", "type": "planted_merge", "structures": ["nash_momentum"], "tokens": 8, "train_sequences": 64,
        "test_sequences": 32, "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0}, "eval_batch_size": 8,
    })

    def run():
        return run_planted_merge(task, ModelEntry(name="student", builder="planted_moe", params={}), MethodEntry(name="namex_mom"), 0,
                                 RunContext(torch.device("cpu"), None))

    cached = run()
    ((layers, computed, reused),) = caches_entered
    assert layers == LAYERS and computed == LAYERS and reused == LAYERS * 3  # 4 batches of 8 test sequences
    uncached(monkeypatch)
    assert_same_result(cached, run())


@pytest.mark.slow
def test_perplexity_and_text_classification_evaluate_with_one_cache(monkeypatch, caches_entered):
    from namex_bench.suite.schema import LanguageModelingTask, MethodEntry, ModelEntry, TextClassificationTask
    from namex_bench.tasks import RunContext
    from namex_bench.tasks.language_modeling import run_language_modeling
    from namex_bench.tasks.text_classification import run_text_classification

    lm_task = LanguageModelingTask.model_validate({
        "name": "lm", "type": "language_modeling", "data": {"source": "shakespeare"}, "context": 32,
        "train": {"epochs": 1, "batch_size": 2, "lr": 1e-3}, "eval": {"max_tokens": 96, "batch_size": 2},
    })
    lm = ModelEntry(name="gpt", builder="gpt_moe", params={"n_layer": LAYERS, "n_embd": 32, "n_head": 2, "n_positions": 64,
                                                          "num_experts": N, "segment_length": 8})
    text_task = TextClassificationTask.model_validate({
        "name": "rt", "type": "text_classification", "data": {"source": "rotten_tomatoes", "max_length": 16, "train_examples": 8,
                                                              "test_examples": 12, "sst2": True},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3}, "eval": {"batch_size": 4},
    })
    encoder = ModelEntry(name="bert", builder="text_moe", params={
        "config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": LAYERS, "num_attention_heads": 4, "intermediate_size": 64,
                   "max_position_embeddings": 64},
        "tokenizer": "all-MiniLM-L6-v2", "num_experts": N})

    def runs():
        return (run_language_modeling(lm_task, lm, MethodEntry(name="namex_mom"), 0, RunContext(torch.device("cpu"), None, limit=4)),
                run_text_classification(text_task, encoder, MethodEntry(name="namex_mom"), 0, RunContext(torch.device("cpu"), None)))

    cached = runs()
    (lm_layers, lm_computed, lm_reused), (text_layers, text_computed, text_reused) = caches_entered
    assert lm_layers == text_layers == LAYERS
    assert lm_computed == LAYERS and lm_reused > 4 * LAYERS  # every window of 3 texts, one computation
    # text: the diagnostics first (plain, then each of 5 ablations), then 2 test sets of 3 batches
    assert text_computed == LAYERS * (1 + 5 + 1) and text_reused == LAYERS * (3 + 3 - 1)
    uncached(monkeypatch)
    for a, b in zip(cached, runs()):
        assert_same_result(a, b)


@pytest.mark.slow
def test_lm_eval_scores_with_one_cache(monkeypatch, caches_entered):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("lm_eval")
    from namex_bench.data.tokenizers import gpt2_tokenizer
    from namex_bench.lmeval import evaluate_lm_eval
    from namex_bench.models.hf_moe import adapt_moe_llm

    torch.manual_seed(0)
    config = transformers.Qwen2MoeConfig(
        vocab_size=50257, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=N,
        num_experts_per_tok=2, max_position_embeddings=1024,
    )
    llm = transformers.Qwen2MoeForCausalLM(config)
    with torch.no_grad():
        for p in llm.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model = adapt_moe_llm(llm, "namex_mom").eval()

    def run():
        return evaluate_lm_eval(model, gpt2_tokenizer(), ["arc_easy"], source="offline", limit=4, batch_size=4)

    cached = run()
    ((layers, computed, reused),) = caches_entered
    assert layers == LAYERS and computed == LAYERS and reused > computed
    uncached(monkeypatch)
    again = run()
    assert cached.metrics == again.metrics and cached.samples.keys() == again.samples.keys()
    for task, fields in cached.samples.items():
        for field, values in fields.items():
            assert list(values) == list(again.samples[task][field]), (task, field)
