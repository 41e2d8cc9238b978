"""Perplexity of a fixed-length causal LM by the sliding-window protocol.

The protocol of the Hugging Face guide "Perplexity of fixed-length models": a window of at
most ``context`` tokens slides over the sequence ``x_0 … x_{N−1}`` by ``stride`` tokens; each
window is one forward pass, and only the tokens the previous window did not score contribute,
so every token is scored once, conditioned on at least ``context − stride`` preceding tokens
(``stride == context``: non-overlapping chunks; smaller strides: more context, more passes).

Window ``k`` feeds the model ``x[b_k : e_k]`` with

    b_k = k · stride,     e_k = min(b_k + context, N − 1)

(at most ``context`` tokens, never a token after ``x_{e_k − 1}``). The logits at window position
``j`` predict the next token ``x_{b_k + j + 1}``, so window ``k`` can score ``x_{b_k + 1} … x_{e_k}``
and scores the new ones, ``x_t`` for ``e_{k−1} < t ≤ e_k`` (``e_{−1} = 0``). The last window is
the first with ``e_k = N − 1`` and may be shorter than ``context``. Hence ``x_0`` is never scored
(it has no context) and every other token is scored exactly once:

    NLL = − Σ_{t=1}^{N−1} log p(x_t | x_{b(t)} … x_{t−1})     (log-softmax and sum in float64)
    PPL = exp(NLL / (N − 1))

One difference from the guide's code, which is deliberate: the guide passes ``x[b_k : b_k +
context]`` and scores targets inside it, discarding the logits of the last position, so with
``stride == context`` the first token of every window after the first is silently left out.
Here the last position's logits score the token right after the window (a target, never an
input), so each pass of ``context`` tokens scores up to ``context`` tokens and ``stride ==
context`` is the usual non-overlapping chunk evaluation. Each scored token therefore has one
more token of context than in the guide's code, for the same model input length.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ModelFn = Callable[[torch.Tensor], torch.Tensor]  # input_ids [B, L] → logits [B, L, V]


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows ``(begin, end, first_target)`` of the protocol for a sequence of ``n_tokens``:
    the model reads ``x[begin:end]`` and scores the targets ``x[first_target : end + 1]``."""
    if context < 1:
        raise ValueError(f"context must be at least 1, got {context}")
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in 1..context ({context}), got {stride}")
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least two tokens, got {n_tokens}")
    windows, prev_end, begin = [], 0, 0
    while prev_end < n_tokens - 1:
        end = min(begin + context, n_tokens - 1)
        windows.append((begin, end, prev_end + 1))
        prev_end, begin = end, begin + stride
    return windows


@torch.no_grad()
def window_nlls(model_fn: ModelFn, token_ids: torch.Tensor, context: int, stride: int,
                batch_size: int = 1) -> tuple[list[int], list[float], list[int]]:
    """Per window of the protocol: ``(first scored position, NLL of its scored tokens, their number)``
    — three lists, one entry per window, in order; the NLLs sum to the sequence's NLL. Up to
    ``batch_size`` consecutive windows of the same length go through ``model_fn`` as one batch
    (each row is its own sequence: the NLLs are those of one window at a time, up to the
    rounding of a batched matmul)."""
    if token_ids.ndim != 1:
        raise ValueError(f"token_ids must be one-dimensional [N], got shape {tuple(token_ids.shape)}")
    if token_ids.dtype != torch.long:
        raise ValueError(f"token_ids must be a LongTensor, got {token_ids.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    firsts, nlls, counts = [], [], []
    for batch in _same_length_batches(sliding_windows(token_ids.numel(), context, stride), batch_size):
        length = batch[0][1] - batch[0][0]
        logits = model_fn(torch.stack([token_ids[begin:end] for begin, end, _ in batch]))
        if logits.ndim != 3 or logits.shape[:2] != (len(batch), length):
            raise ValueError(f"model_fn must return logits [{len(batch)}, {length}, V], got {tuple(logits.shape)}")
        for row, (begin, end, first_target) in zip(logits, batch):
            # position j predicts x[begin + j + 1]; score targets first_target … end
            scored = row[first_target - 1 - begin : end - begin].to(torch.float64)
            targets = token_ids[first_target : end + 1].to(scored.device)
            log_probs = torch.log_softmax(scored, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
            firsts.append(first_target)
            nlls.append(-float(log_probs.sum()))
            counts.append(targets.numel())
    return firsts, nlls, counts


def _same_length_batches(windows: list[tuple[int, int, int]], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """``windows`` in order, in runs of at most ``batch_size`` with the same length ``end − begin``."""
    batches: list[list[tuple[int, int, int]]] = []
    for window in windows:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and last[0][1] - last[0][0] == window[1] - window[0]:
            last.append(window)
        else:
            batches.append([window])
    return batches


def sliding_window_nll(model_fn: ModelFn, token_ids: torch.Tensor, context: int, stride: int, batch_size: int = 1) -> tuple[float, int]:
    """``(total_nll, n_scored_tokens)`` of ``token_ids`` (a 1-D LongTensor of ``N`` ids) under
    ``model_fn``, by the sliding-window protocol of this module; ``n_scored_tokens = N − 1``."""
    _, nlls, counts = window_nlls(model_fn, token_ids, context, stride, batch_size)
    return sum_in_order(nlls), sum(counts)


def sum_in_order(values: list[float]) -> float:
    """``((v_0 + v_1) + v_2) + …`` in float64: the windows' NLLs summed in order, so the total is
    the same in every Python (``sum`` compensates its rounding from Python 3.12 on)."""
    total = 0.0
    for v in values:
        total += v
    return total


def perplexity_from_nll(total_nll: float, n_scored_tokens: int) -> float:
    """``exp(total_nll / n_scored_tokens)``."""
    if n_scored_tokens < 1:
        raise ValueError("no scored tokens")
    return math.exp(total_nll / n_scored_tokens)


def sliding_window_perplexity(model_fn: ModelFn, token_ids: torch.Tensor, context: int, stride: int) -> float:
    """Perplexity of ``token_ids`` under ``model_fn`` by the sliding-window protocol."""
    return perplexity_from_nll(*sliding_window_nll(model_fn, token_ids, context, stride))
