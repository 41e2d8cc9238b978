"""Compression of a pretrained MoE LLM: calibrate, compress to a budget, score the result.

One run = one model × one compressor (or none: the model as it is, ``uncompressed``) × one
budget × one seed:

1. **The model** (``builder: moe_llm``): a checkpoint, or a ``config:`` stand-in initialised with
   the task's ``model_seed``; with ``pretrain`` it is first trained as an LM (the training loop
   of the language-modelling task). It is the same model in every run of the task; a trained
   stand-in is kept (``tasks/trained_models.py``: keyed by everything that determines its
   weights), so the runs of a suite train it once.
2. **Calibration** (:mod:`namex_bench.compression.calibration`): ``samples`` windows of
   ``seq_len`` tokens drawn with the run's seed — random windows of Shakespeare's training works
   or of the King James Bible, or C4 documents in a random order, concatenated (separated by the
   tokenizer's end-of-text token) and cut into windows.
3. **Compression** (:func:`~namex_bench.compression.compress.compress_moe_llm`) to ``experts`` kept
   per block or ``removed`` of each block's experts, per block or over the model (``layer_budget``).
4. **Evaluation**: perplexity in non-overlapping windows of ``context`` tokens on each held-out
   text (``<text>_ppl``, ``<text>_nll``; the compression papers' protocol: every window scored
   on its own, all its tokens but the first scored — see ``metrics/perplexity.py`` with
   ``stride = context``), and lm-eval's tasks (``<task>/acc``, …). The primary metric is the
   first text's perplexity, or without perplexity the first lm-eval task's ``acc``.

The record's cells hold, per block, the experts before and after and the original experts each
new one came from (``compression``), the calibration's routing frequencies and REAP saliencies
with its settings (``calibration``), and the perplexity windows (``perplexity``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..compression.blocks import parameter_counts
from ..compression.calibration import CalibrationSettings, calibrate
from ..compression.compress import compress_moe_llm
from ..metrics.perplexity import sliding_window_nll
from ..models.hf_moe import HFMoEModel
from ..models.moe_llm import load_causal_lm
from ..models.moe_model import PassHolder
from ..models.registry import get_builder
from ..suite.schema import CalibrationData, CompressionRun, CompressionTask, FixedLengthPerplexity, ModelEntry, ShakespeareData
from .base import RunContext, TaskResult
from .language_modeling import corpus_tokens, train_lm_once
from .training import seed_everything

# --------------------------------------------------------------------------- the model


def source_model(task: CompressionTask, model_entry: ModelEntry, ctx: RunContext, timings: dict[str, float]) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the task's model before compression, on ``ctx.device``, in eval mode."""
    seed_everything(task.model_seed)
    model, tokenizer = load_causal_lm(get_builder(model_entry.builder).validate(model_entry.params))
    model.to(ctx.device)
    if task.pretrain is None:
        return model.eval(), tokenizer
    lm = HFMoEModel(model, PassHolder())  # the plain transformers model: it routes its own experts
    lm.tokenizer = tokenizer
    result, reused = train_lm_once(lm, task.pretrain, model_entry, None, task.model_seed, ctx)
    if reused:
        timings["pretrain_cached"] = 1
    else:
        timings.update(pretrain_s=result.train_s, pretrain_steps=result.steps, pretrain_loss=result.final_loss)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- calibration text


def calibration_windows(data: CalibrationData, tokenizer, seed: int, limit: int | None = None) -> torch.Tensor:
    """``[samples, seq_len]`` token windows of the calibration text, drawn with ``seed``
    (``limit`` caps the number of windows)."""
    samples = data.samples if limit is None else min(data.samples, limit)
    generator = torch.Generator().manual_seed(seed)
    length = data.seq_len
    if data.source == "c4":
        from ..data.c4 import load_c4

        documents = load_c4(data.path)
        need, stream = samples * length, []
        order = torch.randperm(len(documents), generator=generator).tolist()
        for start in range(0, len(order), 64):
            batch = [documents[i] for i in order[start : start + 64]]
            for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
                stream += [*ids, tokenizer.eos_token_id]
            if len(stream) >= need:
                break
        if len(stream) < need:
            raise ValueError(f"the C4 documents give {len(stream)} tokens, fewer than {samples} windows of {length}")
        return torch.tensor(stream[:need], dtype=torch.long).view(samples, length)
    tokens = corpus_tokens(ShakespeareData(source="shakespeare"), "train" if data.source == "shakespeare" else "kjv", tokenizer)
    if len(tokens) < length:
        raise ValueError(f"the {data.source} text has {len(tokens)} tokens, fewer than one window of seq_len = {length}")
    starts = torch.randint(0, len(tokens) - length + 1, (samples,), generator=generator)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])


# --------------------------------------------------------------------------- evaluation


def held_out_tokens(ppl: FixedLengthPerplexity, text: str, tokenizer) -> torch.Tensor:
    """The token stream of a held-out text (module docstring)."""
    from ..data.corpora import load_kjv, load_shakespeare, load_wikitext, tokenize_corpus

    if text == "shakespeare":
        texts = load_shakespeare("test")
    elif text == "kjv":
        texts = load_kjv()
    else:
        texts = load_wikitext("wikitext-2-raw-v1", "test", path=ppl.wikitext_path)
    return tokenize_corpus(texts, tokenizer)


@torch.no_grad()
def fixed_length_perplexity(model, tokens: torch.Tensor, context: int, ctx: RunContext, batch_size: int = 1) -> dict[str, float]:
    """``ppl``, ``nll`` (mean per scored token) and ``tokens`` in non-overlapping windows of ``context``
    tokens, ``batch_size`` windows per forward pass."""

    def logits(ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            return model(input_ids=ids.to(ctx.device), use_cache=False).logits.float()

    total, count = sliding_window_nll(logits, tokens, context, context, batch_size)
    return {"ppl": math.exp(total / count), "nll": total / count, "tokens": count}


def evaluate(model, tokenizer, task: CompressionTask, seed: int, ctx: RunContext) -> tuple[dict, dict, dict, str]:
    """``(metrics, goals, cells, primary)`` of the (compressed) model."""
    metrics: dict[str, float] = {}
    cells: dict[str, list] = {}
    primary = None
    model.eval()
    if task.eval.perplexity is not None:
        ppl = task.eval.perplexity
        max_tokens = ppl.max_tokens
        if ctx.limit is not None:
            max_tokens = min(max_tokens or ctx.limit * ppl.context, ctx.limit * ppl.context)
        cells["perplexity"] = []
        for text in ppl.texts:
            scores = fixed_length_perplexity(model, held_out_tokens(ppl, text, tokenizer)[:max_tokens], ppl.context, ctx, ppl.batch_size)
            metrics.update({f"{text}_ppl": scores["ppl"], f"{text}_nll": scores["nll"]})
            cells["perplexity"].append({"text": text, **scores, "context": ppl.context})
        primary = f"{ppl.texts[0]}_ppl"
    if task.eval.lm_eval is not None:
        from ..lmeval import evaluate_lm_eval

        scoring = task.eval.lm_eval
        limits = [n for n in (scoring.limit, ctx.limit) if n is not None]
        scores = evaluate_lm_eval(
            model, tokenizer, list(scoring.tasks), source=scoring.source, limit=min(limits) if limits else None,
            num_fewshot=scoring.num_fewshot, batch_size=scoring.batch_size, device=str(ctx.device), seed=seed,
        )
        metrics.update({k: v for k, v in scores.metrics.items() if not k.endswith("_stderr") and math.isfinite(v)})
        cells["lm_eval"] = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in scores.cells]
        primary = primary or f"{scoring.tasks[0]}/acc"
    goals = {k: ("min" if k.endswith(("_ppl", "_nll")) else "max") for k in metrics}
    return metrics, goals, cells, primary


# --------------------------------------------------------------------------- the run


def run_compression(task: CompressionTask, model_entry: ModelEntry, run: CompressionRun, seed: int, ctx: RunContext) -> TaskResult:
    timings: dict[str, float] = {}
    model, tokenizer = source_model(task, model_entry, ctx, timings)
    cells: dict[str, list] = {}
    if run.compressor is None:
        from ..compression.blocks import find_sparse_blocks

        cells["compression"] = [{"layer": b.name, "experts_before": b.num_experts, "experts_after": b.num_experts, "groups": None}
                                for b in find_sparse_blocks(model)]
    else:
        start = time.perf_counter()
        windows = calibration_windows(task.calibration, tokenizer, seed, ctx.limit)
        settings = CalibrationSettings(task.calibration.batch_size, task.calibration.output_tokens, seed=seed)
        stats = calibrate(model, windows, settings)
        timings["calibration_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = compress_moe_llm(model, run.compressor.name, stats, options=run.compressor.options, experts=run.experts,
                                  removed=run.removed, layer_budget=task.layer_budget)
        timings["compress_s"] = time.perf_counter() - start
        cells["compression"] = result.layers
        cells["calibration"] = [{"samples": len(windows), "seq_len": windows.shape[1], "source": task.calibration.source,
                                 "output_tokens": task.calibration.output_tokens, **s.to_record()} for s in stats]
    start = time.perf_counter()
    metrics, goals, eval_cells, primary = evaluate(model, tokenizer, task, seed, ctx)
    timings["eval_s"] = time.perf_counter() - start
    cells.update(eval_cells)
    return TaskResult(metrics=metrics, goals=goals, primary=primary, cells=cells, timings=timings, params=parameter_counts(model))
