"""Text classification: fine-tune an encoder-MoE classifier and score it with GLUE's metrics.

Each test set is scored with the metrics GLUE defines for its task (``metrics/glue.py``):
MCC for CoLA, Pearson/Spearman for STS-B (a regression: one output, MSE loss), F1 and
accuracy for MRPC/QQP, accuracy elsewhere; Rotten Tomatoes and SST-2 are scored like
SST-2. The first test set's metrics are reported as they are named (``accuracy``, …),
the others prefixed by the set (``sst2_accuracy``, ``mismatched_accuracy``). Every rank
scores every test set in full (they are small), so the metrics need no gathering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.limit import limit_dataset
from ..metrics.glue import GLUE_TASKS, glue_metrics
from ..models.moe_model import parameter_counts
from ..moe.eval_cache import MergeCache
from ..progress import progress
from ..suite.schema import MethodEntry, ModelEntry, TextClassificationTask
from . import distributed
from .base import RunContext, TaskResult
from .diagnostics import EXAMPLES, mechanism_diagnostics
from .examples import PerExample, dataset_ids
from .training import classification_loss, seeded_model, to_device, train


@dataclass
class TestSet:
    name: str  # "" for the main test set, else the prefix of its metrics
    dataset: Dataset
    glue_task: str  # whose metrics score it


def text_datasets(task: TextClassificationTask) -> tuple[Dataset, list[TestSet]]:
    """The training set and the test sets of the task's data source."""
    from ..data.text import load_glue, load_rotten_tomatoes, load_sst2_validation

    data = task.data
    if data.source == "rotten_tomatoes":
        tests = [TestSet("", load_rotten_tomatoes("test"), "sst2")]
        if data.sst2:
            tests.append(TestSet("sst2", load_sst2_validation(), "sst2"))
        return load_rotten_tomatoes("train"), tests
    if data.task == "mnli":
        tests = [TestSet("", load_glue("mnli", "validation_matched", path=data.path), "mnli_matched"),
                 TestSet("mismatched", load_glue("mnli", "validation_mismatched", path=data.path), "mnli_mismatched")]
    else:
        tests = [TestSet("", load_glue(data.task, "validation", path=data.path), data.task)]
    return load_glue(data.task, "train", path=data.path), tests


class TextCollator:
    """Tokenises a batch of ``(text, text_pair, label)`` items: ``(inputs, labels)`` with inputs
    ``input_ids``, ``attention_mask`` (and ``token_type_ids``), padded to the longest, at most
    ``max_length`` tokens (pairs truncated longest-first)."""

    def __init__(self, tokenizer: Any, max_length: int, regression: bool):
        self.tokenizer, self.max_length, self.regression = tokenizer, max_length, regression

    def __call__(self, items: list[tuple[str, str | None, Any]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [t for t, _, _ in items]
        pairs = [p for _, p, _ in items]
        encoded = self.tokenizer(
            texts, pairs if pairs[0] is not None else None, truncation=True, max_length=self.max_length,
            padding=True, return_tensors="pt",
        )
        labels = torch.tensor([y for _, _, y in items], dtype=torch.float32 if self.regression else torch.long)
        return dict(encoded), labels


def regression_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the single output (STS-B)."""
    return F.mse_loss(outputs.float().squeeze(-1), targets.float())


@torch.no_grad()
def predict(model, loader: DataLoader, device: torch.device, autocast_dtype, regression: bool, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predictions, labels, per-example losses)`` over the whole loader (cross-entropy, or squared error for a regression)."""
    model.eval()
    predictions, labels, losses = [], [], []
    for inputs, targets in progress(loader, desc=desc, unit="batch", enabled=distributed.is_main()):
        inputs, targets = to_device(inputs, device), targets.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(**inputs).output.float()
        if regression:
            losses.append(F.mse_loss(outputs.squeeze(-1), targets, reduction="none").cpu().numpy())
            predictions.append(outputs.squeeze(-1).cpu().numpy())
        else:
            losses.append(F.cross_entropy(outputs, targets, reduction="none").cpu().numpy())
            predictions.append(outputs.argmax(-1).cpu().numpy())
        labels.append(targets.cpu().numpy())
    return np.concatenate(predictions), np.concatenate(labels), np.concatenate(losses)


def run_text_classification(task: TextClassificationTask, model_entry: ModelEntry, method: MethodEntry, seed: int, ctx: RunContext) -> TaskResult:
    train_set, tests = text_datasets(task)
    num_labels = train_set.num_labels
    regression = num_labels == 1
    train_set = limit_dataset(limit_dataset(train_set, task.data.train_examples), ctx.limit)
    model = seeded_model(model_entry, method, seed, ctx.device, num_labels)
    collate = TextCollator(model.tokenizer, task.data.max_length, regression)

    batch = min(task.train.batch_size, len(train_set))
    loss_fn = regression_loss if regression else classification_loss
    result = train(model, distributed.train_loader(train_set, batch, seed, collate, ctx.device), task.train, loss_fn, ctx.device, ctx.autocast_dtype)
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    goals: dict[str, str] = {"loss": "min", "train_loss": "min"}
    cells = []
    diagnostics: dict[str, Any] = {}
    examples = PerExample()
    with MergeCache(model):  # each merge's parameter-only parts once (moe/eval_cache.py)
        for test in tests:
            dataset = limit_dataset(limit_dataset(test.dataset, task.data.test_examples), ctx.limit)
            if not diagnostics:  # on the first test set
                count = min(EXAMPLES, len(dataset))
                inputs, _ = collate([dataset[i] for i in range(count)])
                diagnostics = mechanism_diagnostics(model, inputs, ctx, f"the first {count} examples of {test.name or 'the test set'}")
            loader = DataLoader(dataset, batch_size=task.eval.batch_size, shuffle=False, collate_fn=collate, **distributed.loader_options(ctx.device))
            predictions, labels, losses = predict(model, loader, ctx.device, ctx.autocast_dtype, regression, desc=test.name or "test")
            scores = {**glue_metrics(test.glue_task, predictions, labels), "loss": float(losses.astype(np.float64).mean())}
            prefix = f"{test.name}_" if test.name else ""
            metrics.update({prefix + k: v for k, v in scores.items()})
            set_name = test.name or "test"
            outcomes = {"prediction": predictions, "label": labels, "loss": losses}
            if not regression:
                outcomes["correct"] = (predictions == labels).astype(np.uint8)
            examples.add(set_name, dataset_ids(dataset), **outcomes)
            examples.metric(prefix + "loss", set_name, "loss")
            if "accuracy" in scores:  # the GLUE metrics that are means of per-example outcomes
                examples.metric(prefix + "accuracy", set_name, "correct")
            goals.update({prefix + k: GLUE_TASKS[test.glue_task].get(k, "min") for k in scores})
            cells.append({"test_set": test.name or "test", "glue_task": test.glue_task, "examples": len(dataset), **scores})
    if result.steps:
        metrics["train_loss"] = result.final_loss
    timings = {"train_s": result.train_s, "eval_s": time.perf_counter() - start, "step_s": result.step_s, "train_steps": result.steps}
    primary = next(iter(GLUE_TASKS[tests[0].glue_task]))
    bounds = {k: next((b for name, b in GLUE_BOUNDS.items() if k == name or k.endswith("_" + name)), (0.0, None)) for k in metrics}
    return TaskResult(metrics=metrics, goals=goals, primary=primary, cells={"test_sets": cells}, timings=timings,
                      params=parameter_counts(model), bounds=bounds, examples=examples, diagnostics=diagnostics)


# the GLUE metrics' ranges (by name, prefix stripped); losses from 0 up
GLUE_BOUNDS = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "matthews_correlation": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0)}
