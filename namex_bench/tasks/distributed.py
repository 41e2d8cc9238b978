"""Multi-process data parallelism under ``torchrun`` (DDP: gloo on CPU, nccl on GPU).

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op
and the process is rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset


def launched() -> bool:
    """True when started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    """Join the process group (once); GPU ranks use their ``LOCAL_RANK`` device."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


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


def wrap(model: nn.Module, parallel: str = "ddp") -> nn.Module:
    """``model`` inside DDP when running distributed (unused parameters allowed: token
    routing can leave an expert without tokens in a batch), sharded by :func:`shard` with
    ``parallel="fsdp"``; else ``model`` itself."""
    if not dist.is_initialized():
        return model
    if parallel == "fsdp":
        return shard(model)
    if parallel != "ddp":
        raise ValueError(f"training under torchrun needs parallel: ddp or fsdp, got {parallel!r}")
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


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


def train_loader(dataset: Dataset, batch_size: int, seed: int, collate_fn=None) -> DataLoader:
    """Shuffled batches whose union over the ``W`` ranks is the same global batch of
    ``batch_size`` for every ``W`` (each rank loads ``batch_size / W`` of it), so that a
    run under torchrun follows the single-process run (the last partial batch is dropped)."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
    if len(dataset) < batch_size:
        raise ValueError(f"the training set has {len(dataset)} examples, fewer than one batch of {batch_size}")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank(), shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True, collate_fn=collate_fn)


def eval_loader(dataset: Dataset, batch_size: int, collate_fn=None) -> DataLoader:
    """Rank ``r`` of ``W`` evaluates examples ``r, r + W, …`` — every example exactly once
    (no padding); combine the ranks' sums with :func:`all_sum`."""
    world = world_size()
    shard = dataset if world == 1 else Subset(dataset, range(rank(), len(dataset), world))
    return DataLoader(shard, batch_size=max(1, batch_size // world), shuffle=False, collate_fn=collate_fn)


def set_epoch(data: DataLoader, epoch: int) -> None:
    if isinstance(data.sampler, DistributedSampler):
        data.sampler.set_epoch(epoch)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns it unchanged when not distributed)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values
