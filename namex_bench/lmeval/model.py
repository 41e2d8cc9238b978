"""namex_bench causal LMs as lm-eval models.

lm-eval's ``HFLM`` takes an in-memory ``transformers`` ``PreTrainedModel`` whose call
returns ``.logits``. A plain causal LM is passed as is. An
:class:`~namex_bench.models.moe_model.MoEModel` (e.g. a merged LLM from
:func:`~namex_bench.models.hf_moe.adapt_moe_llm`) is passed as its ``backbone`` inside
:meth:`MoEModel.standalone`, so that each call HFLM makes runs one MoE forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from ..models.moe_model import MoEModel
from ..moe.eval_cache import MergeCache


def causal_lm_backbone(model: nn.Module) -> nn.Module:
    """The ``transformers`` causal LM that HFLM will call: ``model`` itself, or an MoEModel's backbone."""
    from transformers import PreTrainedModel

    backbone = model.backbone if isinstance(model, MoEModel) else model
    if not isinstance(backbone, PreTrainedModel):
        what = f"an MoEModel around {type(backbone).__name__}" if backbone is not model else type(model).__name__
        raise TypeError(f"lm-eval needs a transformers PreTrainedModel causal LM (or an MoEModel around one); got {what}")
    return backbone


def resolve_tokenizer(model: nn.Module, tokenizer: Any | None) -> Any:
    """``tokenizer``, or the model's own ``tokenizer`` attribute when ``None``."""
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"no tokenizer given and {type(model).__name__} has no `tokenizer` attribute")
    return tokenizer


def _float32_logits(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook: the causal LM's ``logits`` in float32, whatever the precision of the pass
    (lm-eval takes their log-softmax, which CPU autocast would leave in bf16)."""
    if getattr(output, "logits", None) is not None:
        output.logits = output.logits.float()
    return output


@contextmanager
def lm_eval_model(model: nn.Module, tokenizer: Any | None = None, *, batch_size: int = 8, device: str | None = "cpu",
                  autocast_dtype: torch.dtype | None = None) -> Iterator[Any]:
    """Yield an lm-eval ``HFLM`` around ``model`` (moved to ``device`` — ``None``: left where it
    is, e.g. spread over several GPUs — in eval mode, no grad, under ``autocast_dtype`` autocast
    if given — a run evaluates in its own precision — with float32 logits, and each MoE layer's
    parameter-only parts computed once: :class:`~namex_bench.moe.eval_cache.MergeCache`).

    For an :class:`MoEModel` the backbone is wrapped inside ``model.standalone()``. The
    model's training flag is restored on exit (its device is not)."""
    from lm_eval.models.huggingface import HFLM

    backbone = causal_lm_backbone(model)
    tokenizer = resolve_tokenizer(model, tokenizer)
    was_training = model.training
    if device is not None:
        model.to(device)
    model.eval()
    standalone = model.standalone() if isinstance(model, MoEModel) else nullcontext()
    precision = torch.autocast(torch.device(device).type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None)
    hook = backbone.register_forward_hook(_float32_logits)
    try:
        with standalone, MergeCache(model), torch.no_grad(), precision:
            yield HFLM(pretrained=backbone, tokenizer=tokenizer, batch_size=batch_size)
    finally:
        hook.remove()
        model.train(was_training)
