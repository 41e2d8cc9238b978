"""The compression task in suites: validation, expansion into content-addressed runs, the
quickstart's compression family and suites/compress_llm.yaml dry-run on tiny stand-ins."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from test_language_suites import records, stand_in

from namex_bench.cli import main

SUITES = Path(__file__).resolve().parents[1] / "suites"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
TINY_MIXTRAL = {"model_type": "mixtral", **TINY, "intermediate_size": 16, "num_local_experts": 8, "num_experts_per_tok": 2}
TINY_QWEN3 = {"model_type": "qwen3_moe", **TINY, "head_dim": 8, "intermediate_size": 64, "moe_intermediate_size": 16,
              "num_experts": 8, "num_experts_per_tok": 2}


def test_compress_llm_validates(capsys):
    assert main(["validate", "compress_llm"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "44 compression runs = 44 runs" in out  # 4 models × (uncompressed + 5 methods × 2 budgets)


def test_compression_runs_are_content_addressed():
    """A run's key depends on its own compressor, budget and the task's settings — not on which
    other compressors or budgets the task lists."""
    from namex_bench.suite.expand import expand
    from namex_bench.suite.loader import load_suite

    suite, _ = load_suite(str(SUITES / "compress_llm.yaml"))
    runs = expand(suite)
    keys = {r.name: r.key for r in runs}
    assert len(set(keys.values())) == len(runs)
    smaller = suite.model_copy(update={"tasks": [suite.tasks[0].model_copy(update={"compressors": suite.tasks[0].compressors[1:2], "removed": [0.5]})]})
    for run in expand(smaller):
        assert keys[run.name] == run.key, run.name
    assert {r.name.split("/")[0] for r in expand(smaller)} == {"uncompressed", "reap_prune@-50%"}
    run = next(r for r in runs if r.name.startswith("nash_merge@-25%/mixtral"))
    assert run.config["method"] == {"label": "nash_merge@-25%", "name": "nash_merge", "options": {"linkage": "average", "nbs_iters": 30}}
    assert run.config["budget"] == {"removed": 0.25} and run.reference == "uncompressed"
    assert "compressors" not in run.config["task"] and "removed" not in run.config["task"]
    longer = suite.model_copy(update={"tasks": [suite.tasks[0].model_copy(update={"calibration": suite.tasks[0].calibration.model_copy(update={"samples": 64})})]})
    assert {r.name: r.key for r in expand(longer)}[run.name] != run.key  # what the run does is in its key


@pytest.mark.parametrize("edit,field,words", [
    (lambda t: t["compressors"].append({"name": "magic_prune"}), "tasks[0].compressors[5].name", ["unknown compression method 'magic_prune'", "reap_prune"]),
    (lambda t: t["compressors"].__setitem__(0, {"name": "hcsmoe_merge", "label": "hc", "options": {"linkage": "median"}}), "tasks[0].compressors[0].options", ["linkage"]),
    (lambda t: t.update(experts=[4]), "tasks[0]", ["exactly one of experts"]),
    (lambda t: t["eval"]["lm_eval"].update(source="offline"), "tasks[0]", ["boolq", "no offline data"]),
    (lambda t: t["compressors"].append({"name": "reap_prune"}), "tasks[0]", ["unique", "reap_prune"]),
])
def test_bad_compression_tasks_are_one_clean_error(tmp_path, capsys, edit, field, words):
    path = stand_in("compress_llm", tmp_path, lambda s: edit(s["tasks"][0]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and all(w in err for w in words) and "Traceback" not in err, err


def test_a_compression_task_needs_a_transformers_moe_llm(tmp_path, capsys):
    def edit(suite):
        suite["models"].append({"name": "gpt", "builder": "gpt_moe", "params": {"n_layer": 1, "n_embd": 32, "n_head": 2}})

    assert main(["validate", str(stand_in("compress_llm", tmp_path, edit))]) == 2
    err = capsys.readouterr().err
    assert "tasks[0].type" in err and "'gpt' is built by gpt_moe" in err


def c4_copy(tmp_path: Path) -> Path:
    """A stand-in for C4's first English shard (JSON lines with `text`), made of Shakespeare's lines."""
    from namex_bench.data.corpora import load_shakespeare

    lines = [line for line in "\n".join(load_shakespeare("validation")).splitlines() if line.strip()][:3000]
    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(path, "wt") as f:
        for i in range(0, len(lines), 20):
            f.write(json.dumps({"text": "\n".join(lines[i : i + 20]), "url": f"doc{i}"}) + "\n")
    return path


def test_compress_llm_dry_runs_on_tiny_stand_ins(tmp_path, hf_offline):
    from datasets import Dataset, DatasetDict

    from namex_bench.data.corpora import load_shakespeare

    wikitext = tmp_path / "wikitext2"
    lines = [line + "\n" for line in "\n".join(load_shakespeare("test")[:1]).splitlines()[:600]]
    DatasetDict({s: Dataset.from_dict({"text": lines}) for s in ("train", "validation", "test")}).save_to_disk(str(wikitext))
    c4 = c4_copy(tmp_path)

    def edit(suite):
        suite["models"] = [{"name": "mixtral_stand_in", "builder": "moe_llm", "params": {"config": TINY_MIXTRAL, "dtype": "float32"}}]
        task = suite["tasks"][0]
        task["compressors"] = [{"name": "reap_prune"}, {"name": "hcsmoe_merge"}]
        task["calibration"].update(path=str(c4), seq_len=128, output_tokens=64)
        task["eval"]["perplexity"].update(wikitext_path=str(wikitext), context=64)
        task["eval"]["lm_eval"].update(source="offline", tasks=["arc_easy"], batch_size=4)

    path = stand_in("compress_llm", tmp_path, edit)
    assert main(["run", str(path), "--limit", "2", "--results", str(tmp_path / "results")]) == 0
    done = {r["config"]["method"]["label"]: r for r in records(tmp_path / "results")}
    assert sorted(done) == ["hcsmoe_merge@-25%", "hcsmoe_merge@-50%", "reap_prune@-25%", "reap_prune@-50%", "uncompressed"]
    assert all(r["status"] == "ok" and r["reference"] == "uncompressed" and r["primary"] == "wikitext2_ppl" for r in done.values())
    for label, kept in (("uncompressed", 8), ("reap_prune@-25%", 6), ("hcsmoe_merge@-50%", 4)):
        assert [layer["experts_after"] for layer in done[label]["cells"]["compression"]] == [kept, kept]
        assert math.isfinite(done[label]["metrics"]["wikitext2_ppl"]) and 0 <= done[label]["metrics"]["arc_easy/acc"] <= 1
    calibration = done["reap_prune@-25%"]["cells"]["calibration"][0]
    assert calibration["source"] == "c4" and calibration["samples"] == 2 and calibration["seq_len"] == 128 and calibration["tokens"] == 256
    assert done["reap_prune@-50%"]["params"]["routed_experts"] * 2 == done["uncompressed"]["params"]["routed_experts"]
    report = tmp_path / "results" / "compress_llm-limit2"
    assert (report / "plots" / "zero_shot__mixtral_stand_in__compression.png").is_file()
    leaderboard = (report / "leaderboard.md").read_text()
    assert "Paired comparison with `uncompressed`" in leaderboard and "zero_shot__mixtral_stand_in__compression.png" in leaderboard


@pytest.mark.slow  # end to end, ~40 s or more on 2 cores
def test_the_quickstart_compression_family_runs(tmp_path, monkeypatch):
    """The quickstart's compression task at --limit 4: the small MoE LM is trained once (cached),
    compressed 8 → 4 by every method; compressed models score worse than the model they came from."""
    from namex_bench.tasks import trained_models

    monkeypatch.setattr(trained_models, "trained_models", lambda: tmp_path / "models")

    def edit(suite):
        suite["seeds"] = [0]
        suite["tasks"] = [t for t in suite["tasks"] if t["type"] == "compression"]
        suite["models"] = [m for m in suite["models"] if m["name"] == "moe_lm_tiny"]

    path = stand_in("quickstart", tmp_path, edit)
    assert main(["run", str(path), "--limit", "4", "--results", str(tmp_path / "results")]) == 0
    done = {r["config"]["method"]["label"]: r for r in records(tmp_path / "results")}
    assert sorted(done) == sorted(["uncompressed", *(f"{m}@4" for m in ("frequency_prune", "reap_prune", "msmoe_merge", "hcsmoe_merge", "nash_merge"))])
    assert sum("pretrain_s" in r["timings"] for r in done.values()) == 1  # trained once, then read from the cache
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    base = done["uncompressed"]["metrics"]
    for label, r in done.items():
        assert r["status"] == "ok" and set(r["metrics"]) == {"shakespeare_ppl", "shakespeare_nll", "kjv_ppl", "kjv_nll"}
        if label != "uncompressed":
            assert r["metrics"]["shakespeare_ppl"] != base["shakespeare_ppl"]
            assert [layer["experts_after"] for layer in r["cells"]["compression"]] == [4, 4, 4, 4]
    assert len({round(r["metrics"]["shakespeare_ppl"], 6) for r in done.values()}) == len(done)  # every method gives its own model


def test_the_compression_papers_zero_shot_tasks_are_lm_eval_hub_tasks():
    from namex_bench.lmeval.tasks import check_task_names

    tasks = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "mmlu", "openbookqa", "rte", "winogrande"]
    assert check_task_names(tasks, "hub") == tasks
    with pytest.raises(ValueError, match="'hellaswag' offline: they have no offline data"):
        check_task_names(["arc_easy", "hellaswag"], "offline")
