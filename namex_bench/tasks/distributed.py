"""Multi-process data parallelism under ``torchrun`` (DDP: gloo on CPU, nccl on GPU).

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op
and the process is rank 0 of 1.
"""

from __future__ import annotations

import os

import numpy as np
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


def wrap(model: nn.Module) -> nn.Module:
    """``model`` inside DDP when running distributed (unused parameters allowed: token
    routing can leave an expert without tokens in a batch), else ``model`` itself."""
    if not dist.is_initialized():
        return model
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


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


def gather_strided(values: np.ndarray) -> np.ndarray:
    """The per-example ``values`` of every rank in dataset order: rank ``r`` of ``W`` holds
    examples ``r, r + W, …`` (as :func:`eval_loader` deals them), so the result has
    ``result[r::W] = values of rank r``. Unchanged when not distributed."""
    if not dist.is_initialized():
        return values
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, np.asarray(values))
    out = np.empty(sum(len(p) for p in parts), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns it unchanged when not distributed)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values
