"""The training loop every task shares.

AdamW (weight decay on weight matrices only: not on biases, norms or the merging methods'
parameters), linear warmup then cosine decay to ``min_lr_ratio · lr``, gradient-norm
clipping, the run's autocast precision (bf16 where the device supports it; fp16 with a
dynamic loss scale), the MoE auxiliary loss added to the task loss, and a non-finite loss
stopping the run with an error (the runner records it as failed). Weights and optimiser
state are float32: a model loaded in bf16/fp16 (a pretrained LLM's checkpoint dtype) is
converted to float32 master weights before the first step, since AdamW's updates on bf16
weights would round away every step smaller than 2⁻⁸ of a weight. Under ``torchrun`` the
model is wrapped in DDP and every rank sees its own shard of each batch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..methods.base import inert_comparison
from ..methods.options import resolved_options
from ..methods.registry import get_method
from ..models.moe_model import MoEModel, model_facts
from ..models.registry import get_builder
from ..moe.precision import LOW_PRECISION
from ..progress import progress
from ..suite.schema import MAX_TRAIN_STEPS, MethodEntry, ModelEntry, TrainConfig
from . import distributed


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class InertComparisonError(ValueError):
    """The run's method provably computes another method on the run's model."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every GPU) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seeded_model(model_entry: ModelEntry, method: MethodEntry, seed: int, device: torch.device, *build_args: Any) -> MoEModel:
    """A run's model, built by the entry's builder for ``method`` (``build_args``: what the task
    adds, e.g. the number of classes) on ``device``, and the global generators seeded with ``seed``.

    Paired seeds: the builder draws every parameter from a stream of its own keyed on
    ``(seed, component)`` (``namex_bench.seeding``), and the global generators — the training
    run's dropout masks, data augmentation — are seeded only after the model is built, so
    neither depends on how many numbers a method's construction drew.

    Raises :class:`InertComparisonError` when the method provably computes another one on this
    model (e.g. ``namex_mom`` with fewer than 3 MoE layers) — what validation could not know
    before the model was loaded."""
    builder = get_builder(model_entry.builder)
    cls = get_method(method.name)
    options = cls.given_options(method.preset, method.options)
    model = builder.build(builder.validate(model_entry.params), method.name, options, *build_args, seed=seed)
    reduction = cls.reduces_to(resolved_options(cls, options), model_facts(model))
    if reduction:
        raise InertComparisonError(inert_comparison(method.display, reduction, model_entry.name))
    seed_everything(seed)
    return model.to(device)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """``lr · step/warmup`` during warmup, then ``min + (lr − min)·½(1 + cos(π·progress))``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    low = cfg.lr * cfg.min_lr_ratio
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def classification_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy, in float32 (under bf16 autocast too)."""
    return F.cross_entropy(logits.float(), targets)


def to_device(inputs: Tensor | dict[str, Tensor], device: torch.device) -> Tensor | dict[str, Tensor]:
    """A batch's inputs — a tensor, or keyword tensors (``input_ids``, ``attention_mask``, …) — on ``device``."""
    if isinstance(inputs, dict):
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=True)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: not on vectors (biases, norms), and not on
    the merging methods' own parameters (e.g. CAMEx's curvature factors, whose neutral value is
    ``I``, not 0 — the CAMEx code does not decay them)."""
    method_params = {id(p) for layer in getattr(model, "moe_layers", ()) for p in layer.method.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2 and id(p) not in method_params]
    no_decay = [p for p in trainable if p.ndim < 2 or id(p) in method_params]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class TrainResult:
    steps: int
    train_s: float
    step_s: float
    final_loss: float
    mean_aux_loss: float
    best_step: int | None = None  # with a Validator: the step whose weights were kept
    validation: list[tuple[int, float]] | None = None  # with a Validator: (step, validation loss) of every check


@dataclass
class Validator:
    """Early stopping for :func:`train`: ``loss()`` (lower is better; the model is in eval mode while it
    runs) every ``every`` steps and after the last; training stops once ``patience`` checks in a row
    have not gone below ``best · (1 − min_improvement)``, and the best check's weights are restored."""

    loss: Callable[[], float]
    every: int
    patience: int
    min_improvement: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)
    best: float = math.inf
    best_step: int | None = None
    best_state: dict[str, Tensor] | None = None
    stale: int = 0  # checks since the best

    def should_stop(self, model: nn.Module, step: int) -> bool:
        """Check at ``step``: keep the weights if they are the best so far; whether to stop."""
        value = self.loss()
        model.train()
        self.history.append((step, value))
        if self.best_step is None or value < self.best * (1 - self.min_improvement):
            self.best, self.best_step, self.stale = value, step, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best check's weights into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def train(
    model: MoEModel,
    loader: DataLoader,
    cfg: TrainConfig,
    loss_fn: Callable[[Any, Tensor], Tensor],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    desc: str = "train",
    parallel: str = "ddp",
    transform: Callable[[Any, int], Any] | None = None,
    validator: Validator | None = None,
) -> TrainResult:
    """Train ``model`` in place (as float32 master weights) for ``cfg.epochs`` passes over ``loader``.

    ``loader`` yields ``(inputs, targets)``: ``inputs`` a tensor, or a dict passed as keyword
    arguments; ``loss_fn(model output, targets)`` (computed in float32 or wider). Under
    ``torchrun``, ``parallel`` is ``ddp`` or ``fsdp`` (:func:`distributed.wrap`). ``transform(inputs,
    step)``: applied to each batch's inputs on the device (e.g. seeded augmentation). ``validator``:
    early stopping (:class:`Validator`); the weights kept are its best check's."""
    total = math.ceil(cfg.epochs * len(loader)) if cfg.epochs > 0 else 0
    if total > MAX_TRAIN_STEPS:
        raise ValueError(f"train.epochs: {cfg.epochs:g} epochs of {len(loader):,} batches is {total:,} training steps, "
                         f"more than the {MAX_TRAIN_STEPS:,} a run may take")
    if total == 0:
        return TrainResult(0, 0.0, 0.0, float("nan"), float("nan"))
    if any(p.dtype in LOW_PRECISION for p in model.parameters()):
        model.float()  # float32 master weights (module docstring)
    net = distributed.wrap(model, parallel)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    model.train()
    step, losses, aux_losses = 0, [], []
    start = time.perf_counter()
    bar = progress(total=total, desc=desc, unit="step", enabled=distributed.is_main())
    epoch = 0
    while step < total:
        distributed.set_epoch(loader, epoch)
        for inputs, targets in loader:
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
            if transform is not None:
                inputs = transform(inputs, step)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = net(**inputs) if isinstance(inputs, dict) else net(inputs)
                task_loss = loss_fn(out.output, targets)
                loss = task_loss + out.aux_loss.float()
            # Losses of the global batch (the mean over ranks): the logged losses do not depend
            # on the number of processes, and a non-finite loss on any rank stops every rank at
            # the same step (none is left waiting in DDP's gradient all-reduce).
            local = torch.stack([loss, task_loss, out.aux_loss.float()]).detach()
            value, task_value, aux_value = (distributed.all_sum(local) / distributed.world_size()).tolist()
            if not math.isfinite(value):
                raise NonFiniteLossError(f"non-finite training loss ({value}) at step {step} of {total}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(task_value)
            aux_losses.append(aux_value)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if validator is not None and (step % validator.every == 0 or step == total) and validator.should_stop(model, step):
                total = step  # stop: validation stopped improving
        epoch += 1
    bar.close()
    elapsed = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    if validator is None:
        return TrainResult(step, elapsed, elapsed / step, float(np.mean(tail)), float(np.mean(aux_losses)))
    validator.restore(model)
    return TrainResult(step, elapsed, elapsed / step, float(np.mean(tail)), float(np.mean(aux_losses)), validator.best_step,
                       list(validator.history))
