"""The planted task: worlds whose best merge is known, and how close each method gets to it.

For every ``structure`` of the task (``data/planted.py``): build the world (its own
seed — the same world for every method and run seed), draw its training and test
sequences, train the method's student (``models/planted_moe.py``: the world's experts,
frozen; router, base and curvature learnt) on the mean squared error, then score on the
test sequences

* ``<structure>/loss`` — the test MSE relative to the variance of the targets;
* ``<structure>/merge_distance`` — ``‖Ŵ_g^l − W_g^l‖_F / ‖W_g^l‖_F``, the student's merged
  expert against the world's optimum, averaged over layers ``l`` and sequences ``g``
  (merging methods only: ``smoe`` builds no merged expert).

``loss`` (the primary metric) and ``merge_distance`` average these over the structures
(lower is better). Each structure is the generative assumption of one method family, so the
table shows whether each mechanism — the base, the curvature, the Nash weights, the
momentum — recovers the world built on it, and what it costs elsewhere.

The merged matrix of a layer is read through the layer itself: the student's ``d``
probe tokens (left out of routing) are fed the identity, so the layer's output on them
is ``Ŵ_gᵀ`` for each sequence's routing (``y = x Ŵᵀ`` for linear experts).
"""

from __future__ import annotations

import cmath
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..data.limit import limit_dataset
from ..data.planted import PlantedWorld, build_world
from ..models.moe_model import MoEModel, parameter_counts
from ..moe.eval_cache import MergeCache
from ..suite.schema import MethodEntry, ModelEntry, PlantedMergeTask
from . import distributed
from .base import RunContext, TaskResult
from .examples import PerExample
from .training import seeded_model, train

GOALS = {"loss": "min", "merge_distance": "min", "train_loss": "min"}


def world_of(task: PlantedMergeTask, structure: str) -> PlantedWorld:
    cfg = task.world.model_dump()
    radius, angle = cfg.pop("momentum_radius"), cfg.pop("momentum_angle")
    return build_world(structure, momentum=cmath.rect(radius, angle), **cfg)


def with_probes(h: torch.Tensor, probes: torch.Tensor | None = None) -> torch.Tensor:
    """``h [G, L, T, d]`` with ``d`` probe tokens in front of every layer's tokens:
    ``probes [d, d]`` (default zeros)."""
    G, L, _, d = h.shape
    front = torch.zeros(d, d, dtype=h.dtype, device=h.device) if probes is None else probes.to(h.dtype)
    return torch.cat([front.expand(G, L, d, d), h], dim=2)


def probe_loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the real tokens of every layer (the probe tokens are left out)."""
    return F.mse_loss(output[:, :, -targets.shape[2] :].float(), targets.float())


@torch.no_grad()
def evaluate_student(model: MoEModel, world: PlantedWorld, h: torch.Tensor, targets: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Per test sequence and layer (``[G, L]``): ``sq_error`` (mean squared error on the
    real tokens) and ``merge_distance`` (NaN for a method that builds no merged expert)."""
    model.eval()
    device = next(model.parameters()).device
    d = h.shape[-1]
    merging = all(block.layer.pooling != "token" for block in model.backbone.blocks)
    errors, distances = [], []
    for start in range(0, len(h), batch_size):
        hb, tb = h[start : start + batch_size], targets[start : start + batch_size]
        out = model(with_probes(hb.to(device), torch.eye(d))).output.float().cpu()
        errors.append((out[:, :, d:] - tb).square().mean(dim=(2, 3)))
        if merging:
            _, optimum = world.forward(hb[:, 0].double())
            merged = out[:, :, :d].transpose(-1, -2).double()
            distances.append(((merged - optimum).flatten(2).norm(dim=2) / optimum.flatten(2).norm(dim=2)).float())
        else:
            distances.append(torch.full(errors[-1].shape, float("nan")))
    return {"sq_error": torch.cat(errors), "merge_distance": torch.cat(distances)}


def run_planted_merge(task: PlantedMergeTask, model_entry: ModelEntry, method: MethodEntry, seed: int, ctx: RunContext) -> TaskResult:
    metrics: dict[str, float] = {}
    cells: list[dict] = []
    timings = {"train_s": 0.0, "eval_s": 0.0, "train_steps": 0}
    losses, distances, train_losses = [], [], []
    params = {}
    examples = PerExample()
    for number, structure in enumerate(task.structures):
        world = world_of(task, structure)
        h_train, y_train = world.sample(task.train_sequences, task.tokens, seed=2 * task.world.seed)
        h_test, y_test = world.sample(task.test_sequences, task.tokens, seed=2 * task.world.seed + 1)
        train_set = limit_dataset(TensorDataset(with_probes(h_train), y_train), ctx.limit)
        model = seeded_model(model_entry, method, seed, ctx.device, world)
        batch = min(task.train.batch_size, len(train_set))
        result = train(model, distributed.train_loader(train_set, batch, seed), task.train, probe_loss, ctx.device, ctx.autocast_dtype, desc=structure)
        start = time.perf_counter()
        h_eval, y_eval = (h_test, y_test) if ctx.limit is None else (h_test[: ctx.limit], y_test[: ctx.limit])
        with MergeCache(model):  # each merge's parameter-only parts once (moe/eval_cache.py)
            scores = evaluate_student(model, world, h_eval, y_eval, task.eval_batch_size)
        timings["eval_s"] += time.perf_counter() - start
        timings["train_s"] += result.train_s
        timings["train_steps"] += result.steps
        relative = (scores["sq_error"].mean(1) / y_eval.var()).double().numpy()  # per sequence, relative to the targets' variance
        loss = float(relative.mean())
        metrics[f"{structure}/loss"] = loss
        losses.append(relative)
        outcomes = {"relative_error": relative}
        if result.steps:
            train_losses.append(result.final_loss / float(y_train.var()))
        per_layer = scores["merge_distance"].mean(0)
        if not torch.isnan(per_layer).any():
            outcomes["merge_distance"] = scores["merge_distance"].double().mean(1).numpy()
            metrics[f"{structure}/merge_distance"] = float(outcomes["merge_distance"].mean())
            distances.append(outcomes["merge_distance"])
        examples.add(f"planted/{structure}", np.arange(len(relative)), **outcomes)
        examples.metric(f"{structure}/loss", f"planted/{structure}", "relative_error")
        if "merge_distance" in outcomes:
            examples.metric(f"{structure}/merge_distance", f"planted/{structure}", "merge_distance")
        for layer, value in enumerate(per_layer.tolist()):
            cells.append({"structure": structure, "layer": layer, "merge_distance": None if value != value else value})
        if number == 0:
            params = parameter_counts(model)
    sets = [f"planted/{s}" for s in task.structures]  # equal sizes: the mean over structures is the mean over their sequences
    metrics["loss"] = float(np.concatenate(losses).mean())
    examples.metric("loss", sets, "relative_error")
    if len(distances) == len(task.structures):
        metrics["merge_distance"] = float(np.concatenate(distances).mean())
        examples.metric("merge_distance", sets, "merge_distance")
    if train_losses:
        metrics["train_loss"] = sum(train_losses) / len(train_losses)
    goals = {**GOALS, **{f"{s}/{m}": "min" for s in task.structures for m in ("loss", "merge_distance")}}
    bounds = {k: (0.0, None) for k in metrics}
    return TaskResult(metrics=metrics, goals=goals, primary="loss", cells={"layers": cells}, timings=timings, params=params,
                      bounds=bounds, examples=examples)
