"""Mechanism diagnostics: does each method's own part reach the trained model's outputs?

At the end of a run the task calls :func:`mechanism_diagnostics` on a fixed evaluation batch
(the same examples for every method of the suite). It records, for the run record's
``diagnostics``:

* per MoE layer with Nash weights, ``α̂`` itself, ``nash_min_max = min α̂ / max α̂`` (1 is
  uniform) and the bargaining solver's residual ``max_i |α_i (Gα)_i − 1|``;
* per ablation the method offers (:meth:`MergingMethod.available_ablations` — the base
  expert, the curvature, propagation, the Nash weights, momentum), the change of the outputs
  when that part is replaced by its neutral value in every MoE layer at once:
  ``mean_abs_delta_logit`` and ``max_abs_delta_logit`` over every logit of the batch, and
  ``changed_predictions``, the fraction of positions whose argmax changes (``None`` for a
  single-output regression head). ``logit_std``, the spread of the unablated logits, sets the
  scale.

An ablation whose ``changed_predictions`` is 0 and whose ``mean_abs_delta_logit`` is tiny
against ``logit_std`` did not reach the output: a defect of the defaults, not a finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor

from ..models.moe_model import ModelOutput, MoEModel
from .base import RunContext

#: Examples of a classifier's diagnostic batch: the first this many of its (first) test set.
EXAMPLES = 256
#: Positions of a language model's diagnostic batch: at most this many tokens (whole blocks).
LM_POSITIONS = 512


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@torch.no_grad()
def mechanism_diagnostics(
    model: MoEModel,
    inputs: Tensor | dict[str, Tensor],
    ctx: RunContext,
    source: str,
    logits_of: Callable[[Any], Tensor] = lambda output: output,
) -> dict[str, Any]:
    """The diagnostics of ``model`` (see the module docstring) on the batch ``inputs`` (a tensor,
    or keyword tensors), whose outputs ``logits_of(model output)`` are ``[..., classes]``;
    ``source`` says in words which examples the batch holds."""
    model.eval()
    inputs = {k: v.to(ctx.device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(ctx.device)

    def run() -> tuple[Tensor, ModelOutput]:
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        logits = logits_of(out.output).float()
        return logits.reshape(-1, logits.shape[-1]), out

    reference, out = run()
    layers = []
    for index, stats in enumerate(out.stats):
        if "nbs_weights" in stats:
            weights = stats["nbs_weights"].double()
            layers.append({
                "moe_index": index,
                "nash_weights": weights.tolist(),
                "nash_min_max": _finite(float(weights.min() / weights.max())),
                "nash_residual": _finite(float(stats["nbs_residual"])),
            })
    methods = [layer.method for layer in model.moe_layers]
    offered: dict[str, str] = {}
    for method in methods:
        offered.update(method.available_ablations())
    ablations = {}
    for part, replacement in offered.items():
        with ExitStack() as stack:
            for method in methods:
                if part in method.available_ablations():
                    stack.enter_context(method.ablated(part))
            ablated, _ = run()
        delta = (ablated - reference).abs()
        changed = (ablated.argmax(-1) != reference.argmax(-1)).double().mean() if reference.shape[-1] > 1 else None
        ablations[part] = {
            "replaced_by": replacement,
            "mean_abs_delta_logit": _finite(float(delta.mean())),
            "max_abs_delta_logit": _finite(float(delta.max())),
            "changed_predictions": None if changed is None else float(changed),
        }
    return {
        "batch": {"source": source, "positions": int(reference.shape[0])},
        "logit_std": _finite(float(reference.std())) if reference.numel() > 1 else None,
        "layers": layers,
        "ablations": ablations,
    }


def token_blocks(tokens: Tensor, context: int, positions: int = LM_POSITIONS) -> Tensor:
    """The first whole blocks of ``context`` tokens of a token stream, at most ``positions``
    tokens in all (at least one block; a shorter stream is one shorter block): ``[blocks, T]``."""
    length = min(context, len(tokens))
    blocks = max(1, min(positions // max(1, length), len(tokens) // max(1, length)))
    return tokens[: blocks * length].reshape(blocks, length)
