"""A model one run trains is reused by a run that would train the same one, and gives the numbers a
retrained model gives (tasks/trained_models.py)."""

from __future__ import annotations

import pytest
import torch
from test_language_suites import records, stand_in

from namex_bench.cli import main

pytestmark = pytest.mark.slow  # a minute on 2 cores


def quickstart_lm(suite):
    """The quickstart's language-modelling task on its GPT-MoE and an lm-eval task finetuning the same way, two methods, one seed."""
    suite["seeds"] = [0]
    suite["methods"] = [{"name": "smear"}, {"name": "namex_mom"}]
    suite["models"] = [m for m in suite["models"] if m["name"] == "gpt_moe_tiny"]
    suite["tasks"] = [t for t in suite["tasks"] if t["name"] == "shakespeare"]
    lm = suite["tasks"][0]
    suite["tasks"].append(
        {
            "name": "mmlu_arc",
            "type": "lm_eval",
            "models": ["gpt_moe_tiny"],
            "ranked": False,
            "tasks": ["arc_easy"],
            "source": "offline",
            "limit": 8,
            "num_fewshot": 0,
            "finetune": {"data": lm["data"], "context": lm["context"], "train": lm["train"]},
        }
    )


def test_the_lm_eval_task_reuses_the_model_the_language_modelling_task_trained(tmp_path, monkeypatch):
    from namex_bench.tasks import trained_models

    kept = tmp_path / "kept"
    monkeypatch.setattr(trained_models, "trained_models", lambda: kept)
    path = stand_in("quickstart", tmp_path, quickstart_lm)
    assert main(["run", str(path), "--limit", "3", "--results", str(tmp_path / "once"), "--no-report"]) == 0
    done = {(r["config"]["task"]["name"], r["config"]["method"]["name"]): r for r in records(tmp_path / "once")}
    assert len(done) == 4 and all(r["status"] == "ok" for r in done.values())
    assert len(list(kept.glob("*.pt"))) == 2  # one model per method, trained once
    for method in ("smear", "namex_mom"):
        lm, evaluated = done[("shakespeare", method)], done[("mmlu_arc", method)]
        assert lm["timings"]["train_reused"] == 0 and evaluated["timings"]["train_reused"] == 1
        assert evaluated["metrics"]["train_loss"] == lm["metrics"]["train_loss"]

    # the lm-eval task alone, with nothing kept: it trains the model itself and scores exactly the same
    monkeypatch.setattr(trained_models, "trained_models", lambda: tmp_path / "empty")
    assert main(["run", str(path), "--tasks", "mmlu_arc", "--limit", "3", "--results", str(tmp_path / "again"), "--no-report"]) == 0
    again = {r["config"]["method"]["name"]: r for r in records(tmp_path / "again")}
    for method, r in again.items():
        assert r["timings"]["train_reused"] == 0
        assert r["metrics"] == done[("mmlu_arc", method)]["metrics"]


def test_the_key_changes_with_what_changes_the_weights():
    from namex_bench.tasks.base import RunContext
    from namex_bench.tasks.trained_models import training_key

    ctx = RunContext(torch.device("cpu"), None)
    what = {"model": "m", "seed": 0}
    key = training_key(what, ctx)
    assert training_key(dict(what), ctx) == key
    assert training_key({**what, "seed": 1}, ctx) != key
    assert training_key(what, RunContext(torch.device("cpu"), torch.bfloat16)) != key
    assert training_key(what, RunContext(torch.device("cpu"), None, limit=3)) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert training_key(what, ctx) != key  # the thread count changes the bits of every step on a CPU
    finally:
        torch.set_num_threads(threads)
