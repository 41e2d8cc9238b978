"""Image classification: train a ViT-MoE (optionally) and report top-1, top-5 and loss."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.augment import RandomAffine
from ..data.image_folder import hf_image_dataset, image_folder_dataset
from ..data.limit import limit_dataset
from ..data.mnist5k import load_mnist5k
from ..models.moe_model import MoEModel, parameter_counts
from ..moe.eval_cache import MergeCache
from ..progress import progress
from ..suite.schema import ImageClassificationTask, MethodEntry, ModelEntry
from . import distributed
from .base import RunContext, TaskResult
from .diagnostics import EXAMPLES, mechanism_diagnostics
from .examples import PerExample, dataset_ids
from .robustness import base_dataset, corruption_metrics, evaluate_corruptions, evaluate_natural_shift
from .training import classification_loss, seeded_model, train


def image_datasets(task: ImageClassificationTask) -> tuple[Dataset, Dataset, int, int, int]:
    """``(train, test, num_classes, channels, image_size)`` for the task's data source."""
    data = task.data
    if data.source == "mnist5k":
        train_set, test_set = load_mnist5k("train"), load_mnist5k("test")
        return train_set, test_set, 10, 1, 28
    if data.source == "imagefolder":
        common = dict(image_size=data.image_size, mean=data.mean, std=data.std)
        train_set = image_folder_dataset(data.root / data.train_dir, train=True, **common)
        test_set = image_folder_dataset(data.root / data.test_dir, train=False, **common)
        return train_set, test_set, len(train_set.classes), data.channels, data.image_size
    common = dict(path=data.path, name=data.name, image_column=data.image_column, label_column=data.label_column,
                  image_size=data.image_size, mean=data.mean, std=data.std, channels=data.channels)
    train_set = hf_image_dataset(split=data.train_split, train=True, **common)
    test_set = hf_image_dataset(split=data.test_split, train=False, **common)
    return train_set, test_set, train_set.num_classes, data.channels, data.image_size


@torch.no_grad()
def evaluate_classifier(model: MoEModel, loader: DataLoader, device: torch.device, autocast_dtype, desc: str = "eval") -> dict[str, np.ndarray]:
    """Per example, in dataset order (gathered from every rank): top-1 and top-5 hits (uint8) and
    the cross-entropy (float32): ``{"correct", "correct5", "loss"}``."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"correct": [], "correct5": [], "loss": []}
    for inputs, targets in progress(loader, desc=desc, unit="batch", enabled=distributed.is_main()):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(inputs).output.float()
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices == targets.unsqueeze(-1)
        parts["correct"].append(hits[:, 0].to(torch.uint8).cpu().numpy())
        parts["correct5"].append(hits.any(-1).to(torch.uint8).cpu().numpy())
        parts["loss"].append(F.cross_entropy(logits, targets, reduction="none").cpu().numpy())
    empty = {"correct": np.uint8, "correct5": np.uint8, "loss": np.float32}
    return {k: distributed.gather_strided(np.concatenate(v) if v else np.zeros(0, dtype=empty[k])) for k, v in parts.items()}


def classifier_metrics(outcomes: dict[str, np.ndarray]) -> dict[str, float]:
    """``top1``, ``top5`` and the mean ``loss`` of :func:`evaluate_classifier`'s per-example outcomes."""
    return {"top1": float(outcomes["correct"].mean()), "top5": float(outcomes["correct5"].mean()),
            "loss": float(outcomes["loss"].astype(np.float64).mean())}


def run_image_classification(task: ImageClassificationTask, model_entry: ModelEntry, method: MethodEntry, seed: int, ctx: RunContext) -> TaskResult:
    train_set, test_set, num_classes, channels, image_size = image_datasets(task)
    train_set, test_set = limit_dataset(train_set, ctx.limit), limit_dataset(test_set, ctx.limit)
    model = seeded_model(model_entry, method, seed, ctx.device, num_classes, channels, image_size)

    batch = min(task.train.batch_size, len(train_set))
    loader = distributed.train_loader(train_set, batch, seed, device=ctx.device)
    aug = task.augment
    augment = None if aug is None else RandomAffine(aug.rotate, aug.scale, aug.shift, seed, distributed.rank())
    result = train(model, loader, task.train, classification_loss, ctx.device, ctx.autocast_dtype, transform=augment)
    with MergeCache(model):  # each merge's parameter-only parts once (moe/eval_cache.py)
        start = time.perf_counter()
        outcomes = evaluate_classifier(model, distributed.eval_loader(test_set, task.eval.batch_size, device=ctx.device), ctx.device, ctx.autocast_dtype)
        metrics = classifier_metrics(outcomes)
        metrics["clean_error"] = 1.0 - metrics["top1"]
        examples = PerExample()
        examples.add("test", dataset_ids(test_set), **outcomes)
        for metric, score, link in (("top1", "correct", "identity"), ("top5", "correct5", "identity"), ("loss", "loss", "identity"),
                                    ("clean_error", "correct", "complement")):
            examples.metric(metric, "test", score, link=link)
        if result.steps:
            metrics["train_loss"] = result.final_loss
        eval_s = time.perf_counter() - start
        cells = {}
        timings = {"train_s": result.train_s, "eval_s": eval_s, "step_s": result.step_s, "train_steps": result.steps}
        start = time.perf_counter()
        count = min(EXAMPLES, len(test_set))
        images = torch.stack([test_set[i][0] for i in range(count)])
        diagnostics = mechanism_diagnostics(model, images, ctx, f"the first {count} test images")
        timings["diagnostics_s"] = time.perf_counter() - start
        class_to_idx = getattr(base_dataset(train_set), "class_to_idx", None)  # the model's classes, by wnid
        if task.eval.corruptions is not None:
            start = time.perf_counter()
            cells["corruptions"] = evaluate_corruptions(model, task, test_set, ctx, class_to_idx, examples)
            metrics.update(corruption_metrics(cells["corruptions"], task.eval.corruptions, metrics["clean_error"]))
            timings["corruption_eval_s"] = time.perf_counter() - start
        for prefix in ("imagenet_a", "imagenet_r"):
            folder = getattr(task.eval, prefix)
            if folder is not None:
                metrics.update(evaluate_natural_shift(model, folder, task, test_set, ctx, class_to_idx, prefix, examples))
    return TaskResult(metrics=metrics, goals=GOALS, primary="top1", cells=cells, timings=timings, params=parameter_counts(model),
                      bounds=BOUNDS, examples=examples, diagnostics=diagnostics)


GOALS = {
    "top1": "max", "top5": "max", "loss": "min", "train_loss": "min", "clean_error": "min",
    "corruption_error": "min", "corruption_error_all": "min", "mce": "min", "relative_mce": "min",
    "imagenet_a_top1": "max", "imagenet_a_clean_top1": "max", "imagenet_r_top1": "max", "imagenet_r_clean_top1": "max",
}
# every metric's range: rates and errors in [0, 1], losses and AlexNet-normalised errors from 0 up
BOUNDS = {k: ((0.0, None) if k in ("loss", "train_loss", "mce", "relative_mce") else (0.0, 1.0)) for k in GOALS}

