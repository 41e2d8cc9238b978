"""A suite may not compare a method where it provably computes another one.

``namex_mom`` on fewer than 3 MoE layers is ``namex`` (``μ¹ = d⁰``: β first acts on the third
layer's base); the EP family on one MoE layer is ``camex``; ``topk_merge`` with ``top_k = N`` is
``smear``; ``namex`` with one expert is ``ep_camex``; and options that switch a method's own
part off (``momentum_radius: 0``, ``gamma: 0`` for the Nash family). Each is one validation
error naming the file, the field and its line — and, for a model only a checkpoint describes, a
failed run with the same message.
"""

from __future__ import annotations

import pytest
import torch

from namex_bench.cli import main
from namex_bench.methods.base import ModelFacts
from namex_bench.methods.registry import get_method
from namex_bench.suite.schema import MethodEntry, ModelEntry
from namex_bench.tasks.training import InertComparisonError, seeded_model


def suite(methods: str, params: str) -> str:
    return f"""\
name: inert
seeds: [0]
methods:
{methods}
models:
  - name: vit_tiny
    builder: vit_moe
    params: {{{params}}}
tasks:
  - name: mnist
    type: image_classification
    data: {{source: mnist5k}}
"""


VIT = "patch_size: 14, embed_dim: 16, num_heads: 2, moe_blocks: every"

# id -> (methods block, model params, field named, fragments)
CASES = {
    "namex_mom on 2 MoE layers": (
        "  - name: smear\n  - name: namex_mom", f"{VIT}, depth: 2, num_experts: 4", "models[0].params",
        ["model 'vit_tiny'", "'namex_mom' computes exactly namex", "2 MoE layers", "third layer"]),
    "namex_mom on 2 of 4 blocks (every other)": (
        "  - name: namex_mom", "patch_size: 14, embed_dim: 16, num_heads: 2, depth: 4, moe_blocks: every_other", "models[0].params",
        ["computes exactly namex"]),
    "ep_camex on one MoE layer": (
        "  - name: ep_camex", f"{VIT}, depth: 1, num_experts: 4", "models[0].params", ["'ep_camex' computes exactly camex", "single MoE layer"]),
    "namex on one MoE layer": (
        "  - name: namex", f"{VIT}, depth: 1, num_experts: 4", "models[0].params", ["'namex' computes exactly camex"]),
    "topk_merge with top_k = N": (
        "  - name: topk_merge", f"{VIT}, depth: 3, num_experts: 4, top_k: 4", "models[0].params", ["'topk_merge' computes exactly smear"]),
    "topk_merge whose default k = 2 is N": (
        "  - name: topk_merge", f"{VIT}, depth: 3, num_experts: 2", "models[0].params", ["computes exactly smear"]),
    "namex with one expert": (
        "  - name: namex", f"{VIT}, depth: 3, num_experts: 1", "models[0].params", ["computes exactly ep_camex", "single expert"]),
    "namex_mom with momentum_radius 0": (
        "  - name: namex_mom\n    options: {momentum_radius: 0.0}", f"{VIT}, depth: 3", "methods[0].options",
        ["'namex_mom' computes exactly namex", "momentum_radius = 0"]),
    "namex with gamma 0": (
        "  - name: namex\n    options: {gamma: 0}", f"{VIT}, depth: 3", "methods[0].options", ["computes exactly ep_camex with gamma: 0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_inert_comparison_is_one_clean_validation_error(case, tmp_path, capsys):
    methods, params, field, fragments = CASES[case]
    path = tmp_path / "inert.yaml"
    path.write_text(suite(methods, params))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"namex-bench: error: {path}: {field}: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    needle = "params:" if field.startswith("models") else "options:"
    expected_line = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
    assert lines[0].endswith(f"(line {expected_line})")


@pytest.mark.parametrize("methods,params", [
    ("  - name: namex_mom\n  - name: ep_camex\n  - name: topk_merge", f"{VIT}, depth: 3, num_experts: 4"),
    ("  - name: namex\n    options: {placement: merge}", f"{VIT}, depth: 1, num_experts: 4"),  # α̂ acts inside the merge
    ("  - name: smear\n  - name: camex\n  - name: smoe", f"{VIT}, depth: 1, num_experts: 2"),
])
def test_comparisons_where_every_part_acts_are_valid(methods, params, tmp_path, capsys):
    path = tmp_path / "fine.yaml"
    path.write_text(suite(methods, params))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_the_check_is_the_methods_own_and_knows_what_it_cannot_know():
    namex_mom = get_method("namex_mom")
    options = {"momentum_radius": 0.7, "gamma": 1.0, "placement": "propagation"}
    assert namex_mom.reduces_to(options, ModelFacts()) is None  # layers unknown: nothing to refuse yet
    assert namex_mom.reduces_to(options, ModelFacts(3, 4, 4)) is None
    assert namex_mom.reduces_to(options, ModelFacts(2, 4, 4)).startswith("namex")
    assert get_method("smear").reduces_to({}, ModelFacts(1, 1, 1)) is None


def test_a_model_only_building_describes_is_checked_when_the_run_builds_it():
    """What validation cannot see (a checkpoint's depth) fails the run, with the same message."""
    entry = ModelEntry(name="vit_tiny", builder="vit_moe", params={"patch_size": 14, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_experts": 4, "moe_blocks": "every"})
    with pytest.raises(InertComparisonError, match="on model 'vit_tiny' the method 'namex_mom' computes exactly namex"):
        seeded_model(entry, MethodEntry(name="namex_mom"), 0, torch.device("cpu"), 10, 1, 28)
    assert seeded_model(entry, MethodEntry(name="namex"), 0, torch.device("cpu"), 10, 1, 28) is not None


def test_moe_llm_stand_ins_are_counted_without_building_them(tmp_path, capsys):
    """A config stand-in's sparse blocks are counted on the meta device: DeepSeek-V2's first layer is dense."""
    deepseek = ("{model_type: deepseek_v2, hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 4, "
                "kv_lora_rank: 16, q_lora_rank: null, qk_rope_head_dim: 4, qk_nope_head_dim: 4, v_head_dim: 8, head_dim: 4, "
                "intermediate_size: 64, moe_intermediate_size: 16, n_shared_experts: 1, n_routed_experts: 4, num_experts_per_tok: 2, "
                "first_k_dense_replace: 1, topk_method: greedy}")
    path = tmp_path / "llm.yaml"
    path.write_text(f"""\
name: llm
seeds: [0]
methods: [{{name: namex_mom}}]
models:
  - name: deepseek_stand_in
    builder: moe_llm
    params: {{config: {deepseek}}}
tasks:
  - name: arc
    type: lm_eval
    tasks: [arc_easy]
    source: offline
""")
    assert main(["validate", str(path)]) == 2
    assert "2 MoE layers" in capsys.readouterr().err
