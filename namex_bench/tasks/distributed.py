"""Multi-process data parallelism under ``torchrun`` (DDP: gloo on CPU, nccl on GPU).

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op
and the process is rank 0 of 1.

**A run fails on every rank or on none.** Every collective of a run made here
(:func:`all_sum`, :func:`wrap`, :func:`check_peers`) is preceded by a failure check: an
all-reduce of one integer on a separate gloo *control* group (CPU, no device sync). A rank
whose run raises announces the failure with that same all-reduce (:func:`agreed_error`),
so the other ranks learn of it at their next collective — they raise :class:`PeerFailure`
instead of waiting for a rank that will never come — and at the end of every run all
ranks agree on its outcome and on the error to record (the failing rank's own). The only
collectives outside this protocol are DDP's gradient all-reduces inside ``backward()``: a
failure on one rank *during* a backward pass that the others complete is caught by the
process group's timeout, and ends the job (finished records are kept).
"""

from __future__ import annotations

import os
import traceback
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

# Agreement all-reduces wait as long as a rank's legitimate work between two collectives can
# take — e.g. the first process of a node filling the corruption cache while the others wait.
CONTROL_TIMEOUT = timedelta(hours=6)
_control: list = []  # the gloo control group, once created


class PeerFailure(RuntimeError):
    """Another rank's run failed; this rank stops the run too."""


def launched() -> bool:
    """True when started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    """Join the process group (once) and create the control group; GPU ranks use their ``LOCAL_RANK`` device."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(local_rank())
    if dist.is_initialized() and not _control:
        _control.append(dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT))


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if dist.is_initialized() else 0


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for GPU runs under torchrun."""
    if launched() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def failed_ranks(failed: bool) -> int:
    """How many ranks report a failure (an all-reduce on the control group; ``failed`` itself
    outside torchrun)."""
    if not dist.is_initialized():
        return int(failed)
    flag = torch.tensor([int(failed)], dtype=torch.int64)
    dist.all_reduce(flag, group=_control[0] if _control else None)
    return int(flag.item())


def check_peers() -> None:
    """Wait for every rank here; raise :class:`PeerFailure` if another rank's run has failed."""
    if failed_ranks(False):
        raise PeerFailure(f"rank {rank()} stopped: the run failed on another rank")


def agreed_error(exc: BaseException | None) -> dict | None:
    """The outcome of a run, the same on every rank: ``None`` if it succeeded everywhere, else
    the error to record — the failing rank's own (``type``, ``message``, ``traceback``, and
    under torchrun ``rank``: the lowest failing rank, ``failed_ranks``: all of them).

    Every rank calls this once at the end of each run, with the exception its run raised
    (``None`` if none). A rank that saw the failure through :class:`PeerFailure` has already
    taken part in the announcing all-reduce, so it does not take part again."""
    own = None
    if exc is not None and not isinstance(exc, PeerFailure):
        own = {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(traceback.format_exception(exc))}
    if not dist.is_initialized():
        return own
    if not isinstance(exc, PeerFailure) and failed_ranks(own is not None) == 0:
        return None
    errors: list = [None] * world_size()
    dist.all_gather_object(errors, own, group=_control[0] if _control else None)
    failing = [r for r, e in enumerate(errors) if e is not None]
    return {**errors[failing[0]], "rank": failing[0], "failed_ranks": failing}


def wrap(model: nn.Module, parallel: str = "ddp") -> nn.Module:
    """``model`` inside DDP when running distributed (unused parameters allowed: token
    routing can leave an expert without tokens in a batch), sharded by :func:`shard` with
    ``parallel="fsdp"``; else ``model`` itself.

    No buffers are broadcast before each forward (``broadcast_buffers=False``): the models
    have no buffers that training changes, and a collective there would be outside the
    failure protocol (module docstring)."""
    if not dist.is_initialized():
        return model
    check_peers()
    if parallel == "fsdp":
        return shard(model)
    if parallel != "ddp":
        raise ValueError(f"training under torchrun needs parallel: ddp or fsdp, got {parallel!r}")
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True, broadcast_buffers=False)


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 (``fully_shard``), in place: every decoder layer (``model.decoder_layers``, whose
    merged MoE blocks are inside it) is one unit whose parameters are all-gathered for its
    forward and backward and resharded after; the root unit holds the rest (embeddings, head).
    Parameters, gradients and AdamW's state are 1/W per rank; the forward and backward compute
    what the unsharded model computes on each rank's batch, and gradients are averaged over ranks
    (reduce-scatter) as DDP's all-reduce does. Every rank must then run the same forward passes
    (evaluation is not split: perplexity and lm-eval score everything on every rank)."""
    from torch.distributed.fsdp import fully_shard

    layers = getattr(model, "decoder_layers", None)
    if not layers:
        raise ValueError(f"parallel: fsdp needs a model with decoder layers (a causal LM); {type(model).__name__} has none")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def spread_over_devices(model: nn.Module, max_memory: dict | None = None) -> nn.Module:
    """Place ``model`` (an :class:`~namex_bench.models.hf_moe.HFMoEModel` on the CPU) over this
    node's GPUs for inference, as ``from_pretrained(device_map="auto")`` does: accelerate's
    ``infer_auto_device_map`` assigns whole decoder layers to GPUs in order, filling each (up
    to ``max_memory``) before the next (what fits on no GPU stays on the CPU), and
    ``dispatch_model`` moves each layer's inputs to its device. One process; the layers run
    one after another. The cross-layer state of the MoE layers follows the hidden states
    (``PropagationState.to``)."""
    from accelerate import dispatch_model, infer_auto_device_map

    backbone = model.backbone
    device_map = infer_auto_device_map(backbone, max_memory=max_memory, no_split_module_classes=list(backbone._no_split_modules or ()))
    dispatch_model(backbone, device_map=device_map)
    return model


def loader_options(device: torch.device | None, seed: int = 0, persistent: bool = False) -> dict:
    """DataLoader settings for batches bound for ``device``.

    On a GPU: worker processes (up to 4 per process of the node, within its cores) whose
    random streams derive from ``seed``, pinned memory (so that ``non_blocking`` copies
    overlap the compute), and ``persistent`` workers for loaders iterated once per epoch.
    Elsewhere none of these: batches are loaded in the training process, as on a CPU every
    core already computes."""
    if device is None or device.type != "cuda":
        return {}
    node_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = max(1, min(4, (os.cpu_count() or 1) // node_processes))
    return {"num_workers": workers, "pin_memory": True, "persistent_workers": persistent,
            "generator": torch.Generator().manual_seed(seed)}


def train_loader(dataset: Dataset, batch_size: int, seed: int, collate_fn=None, device: torch.device | None = None) -> DataLoader:
    """Shuffled batches whose union over the ``W`` ranks is the same global batch of
    ``batch_size`` for every ``W`` (each rank loads ``batch_size / W`` of it), so that a
    run under torchrun follows the single-process run (the last partial batch is dropped).
    ``device``: where the batches go (:func:`loader_options`)."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
    if len(dataset) < batch_size:
        raise ValueError(f"the training set has {len(dataset)} examples, fewer than one batch of {batch_size}")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank(), shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True, collate_fn=collate_fn,
                      **loader_options(device, seed, persistent=True))


def eval_loader(dataset: Dataset, batch_size: int, collate_fn=None, device: torch.device | None = None) -> DataLoader:
    """Rank ``r`` of ``W`` evaluates examples ``r, r + W, …`` — every example exactly once
    (no padding); combine the ranks' sums with :func:`all_sum`."""
    world = world_size()
    shard = dataset if world == 1 else Subset(dataset, range(rank(), len(dataset), world))
    return DataLoader(shard, batch_size=max(1, batch_size // world), shuffle=False, collate_fn=collate_fn, **loader_options(device))


def set_epoch(data: DataLoader, epoch: int) -> None:
    if isinstance(data.sampler, DistributedSampler):
        data.sampler.set_epoch(epoch)


def gather_strided(values: np.ndarray) -> np.ndarray:
    """The per-example ``values`` of every rank in dataset order: rank ``r`` of ``W`` holds
    examples ``r, r + W, …`` (as :func:`eval_loader` deals them), so the result has
    ``result[r::W] = values of rank r``. Unchanged when not distributed; raises
    :class:`PeerFailure` instead if another rank's run has failed (the failure protocol)."""
    if not dist.is_initialized():
        return values
    check_peers()
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, np.asarray(values))
    out = np.empty(sum(len(p) for p in parts), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns it unchanged when not distributed); raises
    :class:`PeerFailure` instead if another rank's run has failed."""
    if dist.is_initialized():
        check_peers()
        values = values.clone()
        dist.all_reduce(values)
    return values
