"""MMLU / ARC through lm-eval: score a causal MoE LM (optionally fine-tuned as an LM first).

lm-eval computes everything — prompts, multiple-choice log-likelihoods, metrics and their
stderr (``namex_bench/lmeval``); the record keeps its numbers as it reports them
(``mmlu/acc``, ``arc_easy/acc_norm`` as metrics; with their ``…_stderr`` and sample counts
per task, MMLU subject and group in the cells; ``cells["lm_eval_truncation"]`` counts the
model inputs lm-eval cut from the left to fit the model's context). The primary metric is
the first task's ``acc``. Under ``--limit N`` lm-eval scores at most ``N`` examples per task
(per MMLU subject) — the suite's own ``limit`` is the cap when it is smaller.
The mechanism diagnostics (``tasks/diagnostics.py``) run on the fine-tuning corpus's test
split, or — for a zero-shot model — on Shakespeare's (an offline archive), in blocks of 128 tokens.
"""

from __future__ import annotations

import math
import time

import torch

from ..models.moe_model import parameter_counts
from ..suite.schema import LMEvalTask, MethodEntry, ModelEntry, ShakespeareData
from . import distributed
from .base import RunContext, TaskResult
from .examples import PerExample
from .language_modeling import lm_diagnostics, train_lm_once
from .training import seeded_model


def run_lm_eval(task: LMEvalTask, model_entry: ModelEntry, method: MethodEntry, seed: int, ctx: RunContext) -> TaskResult:
    from ..lmeval import evaluate_lm_eval

    if ctx.parallel == "device_map":  # larger than one GPU: built on the CPU, then spread over the node's GPUs
        model = distributed.spread_over_devices(seeded_model(model_entry, method, seed, torch.device("cpu")))
        device = None
    else:
        model = seeded_model(model_entry, method, seed, ctx.device)
        device = str(ctx.device)
    timings: dict[str, float] = {}
    metrics: dict[str, float] = {}
    if task.finetune is not None:
        result, reused = train_lm_once(model, task.finetune, model_entry, method, seed, ctx)
        timings.update(train_s=0.0 if reused else result.train_s, step_s=result.step_s, train_steps=result.steps, train_reused=int(reused))
        if result.steps:
            metrics["train_loss"] = result.final_loss
    limits = [n for n in (task.limit, ctx.limit) if n is not None]
    limit = min(limits) if limits else None
    start = time.perf_counter()
    scores = evaluate_lm_eval(
        model, model.tokenizer, list(task.tasks), source=task.source, limit=limit, num_fewshot=task.num_fewshot,
        batch_size=task.batch_size, device=device, seed=seed, autocast_dtype=ctx.autocast_dtype,
    )
    timings["eval_s"] = time.perf_counter() - start
    # The headline values are metrics; their stderr stays in the cells, next to each task's n.
    # (lm-eval has no stderr for a single example: "N/A", read as NaN; records hold None.)
    metrics.update({k: v for k, v in scores.metrics.items() if not k.endswith("_stderr") and math.isfinite(v)})
    cells = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in scores.cells]
    goals = {k: ("min" if k == "train_loss" else "max") for k in metrics}
    # lm-eval cuts a model input longer than the model's context from the left (HFLM's behaviour): say how often
    truncation = [{k: scores.settings[k] for k in ("max_length", "truncated_inputs")}]
    start = time.perf_counter()
    corpus, context = (task.finetune.data, task.finetune.context) if task.finetune is not None else (ShakespeareData(source="shakespeare"), 128)
    diagnostics = lm_diagnostics(model, corpus, context, ctx)
    timings["diagnostics_s"] = time.perf_counter() - start
    bounds = {k: ((0.0, None) if k == "train_loss" else (0.0, 1.0)) for k in metrics}
    examples = PerExample()
    for name, fields in scores.samples.items():
        examples.add(f"lm_eval/{name}", fields.pop("id"), **fields)
    for name, leaves in scores.leaves.items():  # a task's metric is the mean over its (subjects') documents
        for metric in ("acc", "acc_norm"):
            if f"{name}/{metric}" in metrics and all(metric in scores.samples.get(leaf, {}) for leaf in leaves):
                examples.metric(f"{name}/{metric}", [f"lm_eval/{leaf}" for leaf in leaves], metric)
    return TaskResult(
        metrics=metrics, goals=goals, primary=f"{task.tasks[0]}/acc", cells={"lm_eval": cells, "lm_eval_truncation": truncation},
        timings=timings, params=parameter_counts(model), bounds=bounds, examples=examples, diagnostics=diagnostics,
    )
