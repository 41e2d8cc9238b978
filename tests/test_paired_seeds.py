"""Paired seeds: the same seed gives every method the same non-method parameters, batches and dropout masks.

Two runs that differ only in their method must start from identical embeddings, attention,
heads, routers, experts and upcycling noise, see the same batches (augmentation included) and
drop the same units — whatever each method draws for itself (a base expert per layer or only
in the first, noisy gating or none).
"""

from __future__ import annotations

import pytest
import torch

from namex_bench.methods.registry import available_methods
from namex_bench.models.registry import get_builder
from namex_bench.seeding import component_seed, seeded
from namex_bench.suite.schema import ImageClassificationTask, MethodEntry, ModelEntry
from namex_bench.tasks import RunContext
from namex_bench.tasks import image_classification as image_task
from namex_bench.tasks.training import seeded_model

METHODS = sorted(available_methods())
OTHERS = [m for m in METHODS if m != "smoe"]

TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 64}
QWEN = {"model_type": "qwen2_moe", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16, "num_experts": 4,
        "num_experts_per_tok": 2, "max_position_embeddings": 64}

# builder, params, what the task adds to build()
BUILDS = {
    "vit_moe from scratch": ("vit_moe", {"patch_size": 14, "embed_dim": 16, "depth": 3, "num_heads": 2, "moe_blocks": "every",
                                         "num_experts": 4, "noisy_gating": True, "drop_rate": 0.1}, (10, 1, 28)),
    "text_moe upcycled with noise": ("text_moe", {"config": TINY_BERT, "tokenizer": "all-MiniLM-L6-v2", "moe_blocks": "every",
                                                  "num_experts": 4, "upcycle_noise": 0.05}, (2,)),
    "gpt_moe from scratch": ("gpt_moe", {"n_layer": 3, "n_embd": 32, "n_head": 4, "n_positions": 64, "num_experts": 4,
                                         "segment_length": 8, "dropout": 0.1}, ()),
    "moe_llm stand-in": ("moe_llm", {"config": QWEN}, ()),
}


def is_method_tensor(name: str) -> bool:
    """The method's own parameters (curvature, …) and the base expert only some methods have."""
    return ".method." in name or ".base." in name


def non_method_state(builder: str, params: dict, args: tuple, method: str, seed: int) -> dict[str, torch.Tensor]:
    b = get_builder(builder)
    torch.manual_seed(1234 + len(method))  # the global generator's state must not matter
    model = b.build(b.validate(params), method, {}, *args, seed=seed)
    return {k: v for k, v in model.state_dict().items() if not is_method_tensor(k)}


@pytest.mark.parametrize("build", list(BUILDS))
def test_every_method_gets_the_same_non_method_parameters(build):
    builder, params, args = BUILDS[build]
    reference = non_method_state(builder, params, args, "smoe", seed=3)
    assert any(".experts." in k for k in reference) and any(".router." in k for k in reference)
    for method in OTHERS:
        state = non_method_state(builder, params, args, method, seed=3)
        assert state.keys() == reference.keys(), method
        differing = [k for k in state if not torch.equal(state[k], reference[k])]
        assert not differing, f"{method} vs smoe, same seed: {differing[:5]}"
    other_seed = non_method_state(builder, params, args, "smoe", seed=4)
    assert any(not torch.equal(other_seed[k], reference[k]) for k in reference)  # the seed does matter


def test_the_base_expert_is_paired_too_where_methods_share_it():
    """camex owns a base in every layer, the EP family only in the first: the first layers' bases agree."""
    builder, params, args = BUILDS["vit_moe from scratch"]
    b = get_builder(builder)
    bases = {m: b.build(b.validate(params), m, {}, *args, seed=0).moe_layers[0].base.state_dict() for m in ("camex", "ep_camex", "namex_mom")}
    for method in ("ep_camex", "namex_mom"):
        assert all(torch.equal(bases[method][k], bases["camex"][k]) for k in bases["camex"]), method


def test_component_seeds_are_fixed_and_distinct():
    assert component_seed(0, "backbone") == component_seed(0, "backbone") < 2**63
    assert len({component_seed(s, c) for s in (0, 1) for c in ("backbone", "head", "moe0.router", "moe1.router")}) == 8
    with seeded(0, "x"):
        a = torch.rand(3)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with seeded(0, "x"):
        assert torch.equal(torch.rand(3), a)
    assert torch.equal(torch.get_rng_state(), before)  # the outer stream is untouched


# ---------------------------------------------------------------------------- one training run


def first_steps(image_folder, method: str, monkeypatch) -> dict[str, list[torch.Tensor]]:
    """The batches the model was given and every dropout mask it drew, in the first training steps."""
    seen: dict[str, list[torch.Tensor]] = {"batches": [], "dropout": []}
    real = seeded_model

    def recording_model(*args, **kwargs):
        model = real(*args, **kwargs)

        def record_batch(module, inputs):
            if module.training:
                seen["batches"].append(inputs[0].detach().clone())

        def record_mask(module, inputs, output):
            if module.training:
                seen["dropout"].append(output == 0)

        model.register_forward_pre_hook(record_batch)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.register_forward_hook(record_mask)
        return model

    monkeypatch.setattr(image_task, "seeded_model", recording_model)
    task = ImageClassificationTask.model_validate({
        "name": "folder", "type": "image_classification",
        "data": {"source": "imagefolder", "root": str(image_folder), "image_size": 28},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3}, "eval": {"batch_size": 4},
    })
    params = {"patch_size": 7, "embed_dim": 16, "depth": 3, "num_heads": 2, "moe_blocks": "every", "num_experts": 4,
              "noisy_gating": True, "drop_rate": 0.25}
    image_task.run_image_classification(task, ModelEntry(name="vit", builder="vit_moe", params=params), MethodEntry(name=method), 0,
                                        RunContext(torch.device("cpu"), None))
    return seen


def test_first_training_batches_and_dropout_masks_are_the_same_for_every_method(image_folder, monkeypatch):
    reference = first_steps(image_folder, "smoe", monkeypatch)  # noisy top-2 gating: the router draws noise
    assert len(reference["batches"]) == 4 and reference["dropout"]
    assert not torch.equal(reference["batches"][0], reference["batches"][1])
    for method in ("smear", "camex", "namex_mom"):  # dense routing draws none; a base in every layer / in the first
        seen = first_steps(image_folder, method, monkeypatch)
        assert len(seen["batches"]) == len(reference["batches"]), method
        for step, (got, want) in enumerate(zip(seen["batches"], reference["batches"])):
            assert torch.equal(got, want), f"{method}: training batch {step} (random crops and flips) differs from smoe's"
        assert len(seen["dropout"]) == len(reference["dropout"]), method
        for i, (got, want) in enumerate(zip(seen["dropout"], reference["dropout"])):
            assert torch.equal(got, want), f"{method}: dropout mask {i} differs from smoe's"


def test_a_methods_own_random_draws_do_not_move_the_backbones_dropout(monkeypatch):
    """A method that draws random numbers in its forward pass (here: noise on its output) leaves
    the backbone's dropout masks as they are: each MoE call runs on a stream of its own."""
    from namex_bench.methods.base import MergeOutput
    from namex_bench.methods.smear import SMEAR

    class NoisySMEAR(SMEAR):
        """SMEAR plus noise (a test method that draws from the global generator)."""

        def forward(self, inputs):
            out = super().forward(inputs)
            return MergeOutput(out.output + 1e-3 * torch.randn_like(out.output), out.state, out.stats)

    builder, params, args = BUILDS["gpt_moe from scratch"]
    b = get_builder(builder)
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    masks = {}
    for method in ("smear", NoisySMEAR):
        model = b.build(b.validate(params), method if isinstance(method, str) else "smear", {}, seed=0)
        if not isinstance(method, str):
            for layer in model.moe_layers:
                layer.method.__class__ = method
        drawn = masks[str(method)] = []
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.register_forward_hook(lambda m, i, o, drawn=drawn: drawn.append(o == 0))
        torch.manual_seed(7)
        model.train()(ids)
    smear, noisy = masks.values()
    assert len(smear) == len(noisy) > 0
    assert all(torch.equal(a, b) for a, b in zip(smear, noisy))
