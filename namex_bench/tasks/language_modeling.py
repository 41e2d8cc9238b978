"""Language modelling: train a causal MoE LM on a corpus, report sliding-window perplexity.

Training: the corpus's training text as one token stream (``data/corpora.py``: texts
joined by the end-of-text token), cut into non-overlapping blocks of ``context + 1``
tokens; each block trains next-token prediction at its ``context`` positions (mean
cross-entropy). Evaluation: perplexity of each held-out text by the sliding-window
protocol of ``metrics/perplexity.py`` (windows of ``eval.context`` tokens, default the
training context, moved by ``eval.stride``, default half a window), optionally on the
first ``eval.max_tokens`` tokens only, or on the first ``eval.tokens_per_text`` tokens of
every held-out text. ``ppl`` is the test split's (the primary metric),
``val_ppl`` the validation split's, ``kjv_ppl`` the King James Bible's (domain shift).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.limit import limit_dataset
from ..metrics.perplexity import sum_in_order, window_nlls
from ..models.hf_moe import HFMoEModel
from ..models.moe_model import parameter_counts
from ..moe.eval_cache import MergeCache
from ..suite.schema import CorpusData, LanguageModelingTask, LMTraining, MethodEntry, ModelEntry
from . import distributed
from .base import RunContext, TaskResult
from .diagnostics import mechanism_diagnostics, token_blocks
from .examples import PerExample
from .trained_models import train_once
from .training import TrainResult, Validator, seeded_model, train


class TokenBlocks(Dataset):
    """Item ``i``: ``(tokens[i·c : i·c + c], tokens[i·c + 1 : i·c + c + 1])`` for ``c = context``."""

    def __init__(self, tokens: torch.Tensor, context: int):
        if len(tokens) < context + 1:
            raise ValueError(f"the training text has {len(tokens)} tokens, fewer than one block of context + 1 = {context + 1}")
        self.tokens, self.context = tokens, context

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.context

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.context
        return self.tokens[start : start + self.context], self.tokens[start + 1 : start + self.context + 1]


def corpus_tokens(data: CorpusData, split: str, tokenizer, tokens_per_text: int | None = None) -> torch.Tensor:
    """The token stream of one split of a corpus (``train``, ``validation``, ``test``), or of the
    King James Bible (``split="kjv"``, any corpus); with ``tokens_per_text``, the first that many
    tokens of every text of the split, joined by the separator (the end-of-text token)."""
    from ..data.corpora import load_kjv, load_shakespeare, load_wikitext, tokenize_corpus

    if split == "kjv":
        texts = load_kjv()
    elif data.source == "shakespeare":
        texts = load_shakespeare(split)
    else:
        texts = load_wikitext(data.name, split, path=data.path)
    if tokens_per_text is None:
        return tokenize_corpus(texts, tokenizer)
    separator = torch.tensor([tokenizer.eos_token_id], dtype=torch.long)
    heads = [tokenize_corpus([text], tokenizer)[:tokens_per_text] for text in texts]
    return torch.cat([part for head in heads for part in (separator, head)][1:])


def next_token_loss(output, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits (``output.logits [B, T, V]``) against the next tokens ``[B, T]``."""
    logits = output.logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_lm(model: HFMoEModel, training: LMTraining, seed: int, ctx: RunContext) -> TrainResult:
    """Train ``model`` on the training split of ``training.data`` in blocks of ``training.context``
    (a language-modelling task is its own :class:`LMTraining`; an lm-eval task has ``finetune``)."""
    blocks = limit_dataset(TokenBlocks(corpus_tokens(training.data, "train", model.tokenizer), training.context), ctx.limit)
    batch = min(training.train.batch_size, len(blocks))
    loader = distributed.train_loader(blocks, batch, seed, device=ctx.device)
    validator = None
    if training.early_stopping is not None:
        stop = training.early_stopping
        tokens = corpus_tokens(training.data, "validation", model.tokenizer)[: stop.tokens]
        validator = Validator(lambda: perplexity(model, tokens, training.context, training.context, ctx, 16)[0]["nll"],
                              stop.every, stop.patience, stop.min_improvement)
    return train(model, loader, training.train, next_token_loss, ctx.device, ctx.autocast_dtype, parallel=ctx.parallel, validator=validator)


def train_lm_once(model: HFMoEModel, training: LMTraining, model_entry: ModelEntry, method: MethodEntry | None, seed: int,
                  ctx: RunContext) -> tuple[TrainResult, bool]:
    """:func:`train_lm`, or the weights of a run that trained the same model the same way
    (``tasks/trained_models.py``): the quickstart's lm-eval task reuses the model its
    language-modelling task trained. ``method``: ``None`` for a model without a merging method
    (a compression task's source model). Returns the result and whether it was reused."""
    from ..methods.options import resolved_options
    from ..methods.registry import get_method
    from ..models.registry import get_builder

    what = {
        "model": {"builder": model_entry.builder, "params": get_builder(model_entry.builder).validate(model_entry.params).model_dump(mode="json")},
        "training": LMTraining(data=training.data, context=training.context, train=training.train,
                               early_stopping=training.early_stopping).model_dump(mode="json"),
        "seed": seed,
    }
    if training.early_stopping is None:  # models trained before the option existed keep their address
        del what["training"]["early_stopping"]
    if method is not None:
        cls = get_method(method.name)
        what["method"] = {"name": method.name, "options": resolved_options(cls, cls.given_options(method.preset, method.options))}
    return train_once(model, what, lambda: train_lm(model, training, seed, ctx), ctx)


@torch.no_grad()
def perplexity(model: HFMoEModel, tokens: torch.Tensor, context: int, stride: int, ctx: RunContext,
               batch_size: int = 1) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``ppl``, ``nll`` (mean per scored token) and ``tokens`` scored by the sliding-window protocol
    (``batch_size`` windows per forward pass), and per window: its first scored position (``id``), the NLL of its scored tokens and their number."""
    model.eval()

    def logits(ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            return model(ids.to(ctx.device)).output.logits.float()

    firsts, nlls, counts = window_nlls(logits, tokens, context, stride, batch_size)
    total, count = sum_in_order(nlls), sum(counts)
    windows = {"id": np.asarray(firsts, dtype=np.int64), "nll": np.asarray(nlls, dtype=np.float64), "tokens": np.asarray(counts, dtype=np.int64)}
    return {"ppl": math.exp(total / count), "nll": total / count, "tokens": count}, windows


def lm_diagnostics(model: HFMoEModel, data: CorpusData, context: int, ctx: RunContext) -> dict:
    """:func:`mechanism_diagnostics` on the first blocks of ``context`` tokens of the corpus's test split."""
    ids = token_blocks(corpus_tokens(data, "test", model.tokenizer), context)
    source = f"the first {ids.shape[0]} blocks of {ids.shape[1]} tokens of {data.source}'s test split"
    return mechanism_diagnostics(model, ids, ctx, source, logits_of=lambda output: output.logits)


def run_language_modeling(task: LanguageModelingTask, model_entry: ModelEntry, method: MethodEntry, seed: int, ctx: RunContext) -> TaskResult:
    model = seeded_model(model_entry, method, seed, ctx.device)
    result, reused = train_lm_once(model, task, model_entry, method, seed, ctx)

    start = time.perf_counter()
    context = task.eval.context or task.context
    stride = task.eval.stride or max(1, context // 2)
    max_tokens = task.eval.max_tokens
    if ctx.limit is not None:
        max_tokens = min(max_tokens or ctx.limit * context, ctx.limit * context)
    metrics, goals, cells = {}, {}, {"perplexity": []}
    examples = PerExample()
    with MergeCache(model):  # each merge's parameter-only parts once (moe/eval_cache.py)
        for split, prefix in (("test", ""), ("validation", "val_"), *([("kjv", "kjv_")] if task.eval.kjv else [])):
            tokens = corpus_tokens(task.data, split, model.tokenizer, task.eval.tokens_per_text)[:max_tokens]
            scores, windows = perplexity(model, tokens, context, stride, ctx, task.eval.batch_size)
            metrics.update({prefix + "ppl": scores["ppl"], prefix + "nll": scores["nll"]})
            examples.add(f"perplexity/{split}", windows.pop("id"), **windows)
            examples.metric(prefix + "ppl", f"perplexity/{split}", "nll", weight="tokens", link="exp")
            examples.metric(prefix + "nll", f"perplexity/{split}", "nll", weight="tokens")
            goals.update({prefix + "ppl": "min", prefix + "nll": "min"})
            cells["perplexity"].append({"text": split, **scores, "context": context, "stride": stride})
    if result.steps:
        metrics["train_loss"] = result.final_loss
        goals["train_loss"] = "min"
    timings = {"train_s": 0.0 if reused else result.train_s, "eval_s": time.perf_counter() - start, "step_s": result.step_s,
               "train_steps": result.steps, "train_reused": int(reused)}
    if result.best_step is not None:
        timings["best_step"] = result.best_step
        cells["validation"] = [{"step": step, "nll": nll, "ppl": math.exp(nll)} for step, nll in result.validation]
    start = time.perf_counter()
    diagnostics = lm_diagnostics(model, task.data, task.context, ctx)
    timings["diagnostics_s"] = time.perf_counter() - start
    bounds = {k: ((1.0, None) if k.endswith("ppl") else (0.0, None)) for k in metrics}
    return TaskResult(metrics=metrics, goals=goals, primary="ppl", cells=cells, timings=timings,
                      params=parameter_counts(model), bounds=bounds, examples=examples, diagnostics=diagnostics)
