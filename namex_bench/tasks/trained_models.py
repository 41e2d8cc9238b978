"""Trained models, kept: a model that one run trains is reused by every run that would train the same one.

Two tasks of a suite often train the same model — the quickstart's lm-eval task fine-tunes
exactly the GPT-MoE its language-modelling task trains, and a compression task pretrains one
model for every compressor, budget and seed. :func:`train_once` trains a model the first time
and keeps its weights; a later run whose training is the same loads them instead.

"The same" is content-addressed: the key is the sha256 of everything that decides the trained
weights bit for bit — what the caller says it trains (model, method and its resolved options,
data, schedule, seed), ``--limit``, the device type, the autocast dtype, the number of processes,
torch's intra-op threads and CPU kernels, the versions of torch and transformers, and a digest
of namex_bench's own source. Anything that could change a bit changes the key, so a reused model
gives the numbers a retrained one gives (the tests check this), and a code change is never
served a stale model.

Weights are kept under ``cache_root()/trained_models/<key>.pt`` (``$NAMEX_BENCH_CACHE``, else
``~/.cache/namex_bench``; written atomically, with the training's :class:`TrainResult`), like
the corruption cache: a cache, safe to delete at any time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import write_bytes_atomic
from . import distributed
from .base import RunContext
from .training import TrainResult


@functools.cache
def source_digest() -> str:
    """sha256 of every ``.py`` file of the installed ``namex_bench`` package (paths and bytes)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def training_key(what: dict[str, Any], ctx: RunContext) -> str:
    """The key of a training: ``what`` (JSON: what is trained, on what, how, with which seed) and
    every setting of this process that changes the trained weights' bits."""
    import transformers

    setting = {
        "what": what, "limit": ctx.limit, "device": ctx.device.type, "autocast": str(ctx.autocast_dtype),
        "processes": distributed.world_size(), "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": [torch.__version__, transformers.__version__], "source": source_digest(),
    }
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:40]


def trained_models() -> Path:
    """Where trained models are kept: ``cache_root()/trained_models``."""
    from ..data.archives import cache_root

    return cache_root() / "trained_models"


def train_once(model: nn.Module, what: dict[str, Any], train: Callable[[], TrainResult], ctx: RunContext) -> tuple[TrainResult, bool]:
    """``train()`` ``model`` in place and keep its weights — or, when a run has already trained the
    same model (:func:`training_key` of ``what``), load them instead. Returns the training's result
    (the original's, when reused) and whether the weights were reused.

    Under ``torchrun`` the kept weights are used only when every rank sees them (none trains then);
    rank 0 writes them. An FSDP-sharded training is not kept (its state is spread over the ranks)."""
    if ctx.parallel == "fsdp" and distributed.world_size() > 1:
        return train(), False
    path = trained_models() / f"{training_key(what, ctx)}.pt"
    found = torch.tensor(float(path.is_file()), device=ctx.device)
    if float(distributed.all_sum(found)) == distributed.world_size():
        kept = torch.load(path, map_location=ctx.device, weights_only=True)
        model.load_state_dict(kept["state"])
        return TrainResult(**kept["result"]), True
    result = train()
    if distributed.is_main():
        buffer = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state": state, "result": dataclasses.asdict(result)}, buffer)
        write_bytes_atomic(path, buffer.getvalue())
    return result, False
