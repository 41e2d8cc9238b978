"""MMLU / ARC through lm-eval (namex_bench.lmeval) on tiny random models, offline data."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.models.huggingface import HFLM  # noqa: E402

from namex_bench.data.tokenizers import gpt2_tokenizer  # noqa: E402
from namex_bench.lmeval import evaluate_lm_eval, offline_task_manager  # noqa: E402
from namex_bench.lmeval.offline import derive_offline_configs, hub_offline  # noqa: E402
from namex_bench.lmeval.tasks import TASKS, hub_task_manager, task_closure  # noqa: E402
from namex_bench.models.hf_moe import adapt_moe_llm  # noqa: E402

SEEDS = dict(random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
DATA_KEYS = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split"}


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()  # GPT-2's BPE, 50,257 tokens, from the pinned archive


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_layer=2, n_embd=32, n_head=4, n_positions=1024)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def merged_llm():
    """A tiny random Qwen2-MoE, its MoE blocks driven by namex_mom (merged experts)."""
    torch.manual_seed(0)
    config = transformers.Qwen2MoeConfig(
        vocab_size=50257, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
        num_experts_per_tok=2, max_position_embeddings=1024,
    )
    model = transformers.Qwen2MoeForCausalLM(config)
    with torch.no_grad():  # routers start at zero: make routing decisive
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return adapt_moe_llm(model, "namex_mom").eval()


def _direct(backbone, tokenizer, tasks, limit):
    """lm-eval called directly on the offline tasks, the way its docs show."""
    with hub_offline():
        return lm_eval.simple_evaluate(
            model=HFLM(pretrained=backbone, tokenizer=tokenizer, batch_size=8),
            tasks=tasks, task_manager=offline_task_manager(), limit=limit, log_samples=False, **SEEDS,
        )


def _assert_same_numbers(ours, direct):
    """Every metric and stderr lm-eval reported directly is in our cells, unchanged ("N/A" as nan)."""
    cells = {cell["task"]: cell for cell in ours.cells}
    assert set(cells) == set(direct["results"])
    for task, reported in direct["results"].items():
        for key, value in reported.items():
            metric, _, filt = key.partition(",")
            if filt != "none":
                continue
            expected = math.nan if value == "N/A" else float(value)
            got = cells[task][metric]
            assert got == expected or (math.isnan(got) and math.isnan(expected)), (task, key, got, expected)


@pytest.mark.slow
def test_wrapper_matches_lm_eval_called_directly(gpt2, tokenizer):
    # mmlu_stem: 19 MMLU subjects and their size-weighted group aggregate (the mmlu group's
    # mechanism, at a third of the cost); limit is per subject
    tasks = ["mmlu_stem", "arc_easy"]
    env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    ours = evaluate_lm_eval(gpt2, tokenizer, tasks, limit=3, seed=0)
    assert env == {k: os.environ.get(k) for k in env}  # the offline switch is undone
    direct = _direct(gpt2, tokenizer, tasks, limit=3)
    _assert_same_numbers(ours, direct)
    assert ours.metrics["mmlu_stem/acc"] == direct["results"]["mmlu_stem"]["acc,none"]
    assert ours.metrics["mmlu_stem/acc_stderr"] == direct["results"]["mmlu_stem"]["acc_stderr,none"]
    assert set(ours.metrics) == {
        "mmlu_stem/acc", "mmlu_stem/acc_stderr",
        "arc_easy/acc", "arc_easy/acc_stderr", "arc_easy/acc_norm", "arc_easy/acc_norm_stderr",
    }
    cells = {c["task"]: c for c in ours.cells}
    assert cells["mmlu_stem"]["kind"] == "group" and cells["mmlu_stem"]["n"] == 19 * 3
    assert cells["arc_easy"]["split"] == "validation" and cells["arc_easy"]["n"] == 3 and cells["arc_easy"]["n_total"] == 570
    assert cells["mmlu_anatomy"]["split"] == "test" and cells["mmlu_anatomy"]["n_total"] == 135
    assert ours.versions["arc_easy"] == {"version": direct["versions"]["arc_easy"], "n_shot": 0}


@pytest.mark.slow
def test_merged_llm_end_to_end(merged_llm, tokenizer):
    result = evaluate_lm_eval(merged_llm, tokenizer, list(TASKS), limit=2)
    for task in TASKS:
        assert 0.0 <= result.metrics[f"{task}/acc"] <= 1.0
        assert math.isfinite(result.metrics[f"{task}/acc_stderr"])
    for task in ("arc_easy", "arc_challenge"):
        assert 0.0 <= result.metrics[f"{task}/acc_norm"] <= 1.0
        assert math.isfinite(result.metrics[f"{task}/acc_norm_stderr"])
    assert {c["task"]: c["n_total"] for c in result.cells}["mmlu"] == 14042
    assert merged_llm._passes.current is None and not merged_llm.backbone._forward_hooks  # standalone undone
    with pytest.raises(RuntimeError, match="outside MoEModel.forward"):
        merged_llm.backbone(torch.tensor([[1, 2, 3]]))


def test_merged_llm_matches_lm_eval_called_directly(merged_llm, tokenizer):
    ours = evaluate_lm_eval(merged_llm, tokenizer, ["arc_challenge"], limit=6)
    with merged_llm.standalone() as backbone:
        direct = _direct(backbone, tokenizer, ["arc_challenge"], limit=6)
    _assert_same_numbers(ours, direct)
    assert all(math.isfinite(v) for v in ours.metrics.values())


def test_standalone_runs_one_pass_per_backbone_call(merged_llm):
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    seen = []
    slot = next(m for m in merged_llm.backbone.modules() if type(m).__name__ == "MoESlot")
    handle = slot.register_forward_pre_hook(lambda m, a: seen.append(m._passes.current.padding_mask))
    try:
        with torch.no_grad():
            expected = merged_llm(input_ids=ids, attention_mask=mask).output.logits
            with merged_llm.standalone() as backbone:
                got = backbone(input_ids=ids, attention_mask=mask).logits
                again = merged_llm(input_ids=ids, attention_mask=mask).output.logits  # through forward: left alone
    finally:
        handle.remove()
    assert torch.equal(got, expected) and torch.equal(again, expected)
    assert all(torch.equal(m, mask.bool()) for m in seen)
    assert merged_llm._passes.current is None
    assert not merged_llm.backbone._forward_hooks and not merged_llm.backbone._forward_pre_hooks


def test_offline_data_sizes_and_configs():
    with hub_offline():
        loaded = offline_task_manager().load(list(TASKS))["tasks"]
        sizes = {name: len(task.eval_docs) for name, task in loaded.items()}
    mmlu = {name: n for name, n in sizes.items() if name.startswith("mmlu_")}
    assert len(mmlu) == 57 and sum(mmlu.values()) == 14042
    assert sizes["arc_easy"] == 570 and sizes["arc_challenge"] == 299

    # the offline configs are lm-eval's, but for the data source
    offline = derive_offline_configs()
    for name, entry in task_closure(hub_task_manager()).items():
        if entry.cfg is None:  # a tag
            continue
        hub = entry.cfg
        assert {k: v for k, v in offline[name].items() if k not in DATA_KEYS} == {k: v for k, v in hub.items() if k not in DATA_KEYS}
    assert offline["mmlu_anatomy"]["test_split"] == "test" and offline["mmlu_anatomy"]["fewshot_split"] == "dev"
    assert offline["arc_easy"]["test_split"] is None and offline["arc_easy"]["validation_split"] == "validation"
    assert hub_task_manager().task_index["arc_easy"].cfg["dataset_path"] == "allenai/ai2_arc"

    # and the YAML files lm-eval reads are exactly these configs
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = Path(offline_task_manager().include_path)
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(offline)
    assert all(load_yaml(folder / f"{name}.yaml") == config for name, config in offline.items())


def test_hub_source_never_falls_back_to_offline_data(gpt2, tokenizer):
    with hub_offline():  # the hub is unreachable: lm-eval's own task must fail, not read the archive
        try:
            result = evaluate_lm_eval(gpt2, tokenizer, ["arc_easy"], source="hub", limit=1)
        except ConnectionError:
            return
    assert result.cells[0]["split"] == "test"  # the hub dataset was cached locally: lm-eval's test split


def test_unknown_task_and_source(gpt2, tokenizer):
    with pytest.raises(ValueError, match="known tasks: mmlu, arc_easy, arc_challenge"):
        evaluate_lm_eval(gpt2, tokenizer, ["hellaswag"])
    with pytest.raises(ValueError, match="choose one of hub, offline"):
        evaluate_lm_eval(gpt2, tokenizer, ["arc_easy"], source="cache")
    with pytest.raises(TypeError, match="PreTrainedModel"):
        evaluate_lm_eval(torch.nn.Linear(2, 2), tokenizer, ["arc_easy"])


def test_expected_notices_are_counted_not_shown_and_others_pass(caplog):
    from namex_bench.lmeval.notices import counted_notices

    evaluator, hf = logging.getLogger("lm_eval.evaluator"), logging.getLogger("lm_eval.models.huggingface")
    with caplog.at_level(logging.INFO), counted_notices() as counts:
        evaluator.warning("Overwriting default num_fewshot of %s from %s to %s", "mmlu_anatomy", None, 0)
        hf.warning("Combined length of context (129) and continuation (1) exceeds model's maximum length (128). Truncating 3 tokens from the left.")
        evaluator.warning("Combined length of context (129) and continuation (1) exceeds")  # another logger: not lm-eval's notice
        hf.warning("a notice nobody expected")
    assert dict(counts) == {"num_fewshot overrides": 1, "truncated inputs": 1}
    assert [r.getMessage() for r in caplog.records] == ["Combined length of context (129) and continuation (1) exceeds", "a notice nobody expected"]
    evaluator.warning("Overwriting default num_fewshot of x from None to 0")  # the filter is gone afterwards
    assert caplog.records[-1].getMessage().startswith("Overwriting default num_fewshot")


def test_truncation_is_counted_in_the_result_and_stated_in_one_line(tokenizer, capfd, caplog):
    """A 64-token model on MMLU's long passages: lm-eval cuts every request from the left.
    Our wrapper says so in one line and in its settings (the count lm-eval's own warnings give);
    lm-eval's per-request and per-task notices are not printed."""
    torch.manual_seed(0)
    short = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50257, n_layer=1, n_embd=16, n_head=2, n_positions=64)).eval()
    tasks = ["mmlu_high_school_european_history"]
    ours = evaluate_lm_eval(short, tokenizer, tasks, limit=2, num_fewshot=0)
    err = capfd.readouterr().err
    with caplog.at_level(logging.WARNING, logger="lm_eval"), hub_offline():
        lm_eval.simple_evaluate(model=HFLM(pretrained=short, tokenizer=tokenizer, batch_size=8), tasks=tasks,
                                task_manager=offline_task_manager(), limit=2, num_fewshot=0, log_samples=False, **SEEDS)
    truncated = sum(r.getMessage().startswith("Combined length of context") for r in caplog.records)
    assert truncated > 0  # lm-eval warns once per model input it cuts (MMLU's 4 one-token answers share one input)
    assert ours.settings["truncated_inputs"] == truncated and ours.settings["max_length"] == 64
    assert "Overwriting default num_fewshot" not in err and "Combined length" not in err and "`pretrained`" not in err
    summary = [line for line in err.splitlines() if line.startswith("lm-eval:")]
    assert summary == [f"lm-eval: 1 num_fewshot overrides, 2 pre-built model notices not shown; {truncated} inputs cut from the left to the model's 64-token context"]
