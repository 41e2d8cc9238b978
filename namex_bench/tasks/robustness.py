"""Robustness of an image classifier: ImageNet-C-style corruptions and ImageNet-A/-R.

Corruptions follow Hendrycks & Dietterich (2019): the test images are prepared as for
clean evaluation up to the crop (``Resize(size/0.875)`` + ``CenterCrop(size)`` for
photographs; MNIST as it is), corrupted as uint8 images, then turned into tensors and
normalised — no second resize or crop. Generated corruptions come from the corrupted-
dataset cache, so every method, model and training seed of a suite reads the same
images; the released ImageNet-C files (``<root>/<corruption>/<severity>/<wnid>/*``, already
224²) are read with only ``ToTensor`` + normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..corruptions.cache import CorruptionCache, images_sha256
from ..data.limit import dataset_labels, limit_dataset
from ..metrics.imagenet_subsets import restricted_predictions
from ..metrics.mce import ALEXNET_ERRORS, BENCHMARK_CORRUPTIONS, mce, mean_corruption_error, relative_mce
from ..models.moe_model import MoEModel
from ..progress import progress
from ..suite.schema import CorruptionEval, ImageClassificationTask
from . import distributed
from .base import RunContext
from .examples import PerExample, dataset_ids

CORRUPTION_SETS = "corruptions"


@dataclass
class EvalImages:
    """Test images as uint8 arrays (``[n, H, W]`` or ``[n, H, W, 3]``), their labels, and how
    to turn a batch into the model's input."""

    images: np.ndarray
    labels: np.ndarray
    dataset_id: str
    mean: tuple[float, ...] | None = None  # None: pixels / 255 only
    std: tuple[float, ...] | None = None

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).float() / 255.0
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if self.mean is not None:
            x = (x - torch.tensor(self.mean).view(1, -1, 1, 1)) / torch.tensor(self.std).view(1, -1, 1, 1)
        return x


def eval_images(task: ImageClassificationTask, test_set: Dataset, max_images: int | None) -> EvalImages:
    """The task's test images before normalisation, optionally a fixed class-balanced subset."""
    data = task.data
    test_set = limit_dataset(test_set, max_images)
    keep = np.arange(len(test_set))
    if data.source == "mnist5k":
        base, indices = _unwrap(test_set, keep)
        images = (base.tensors[0][indices, 0] * 255).round().to(torch.uint8).numpy()
        return EvalImages(images, base.tensors[1][indices].numpy(), "mnist5k-test")
    if data.source == "imagefolder":
        from PIL import Image
        from torchvision import transforms

        prepare = transforms.Compose([transforms.Resize(int(data.image_size / 0.875)), transforms.CenterCrop(data.image_size)])
        base, indices = _unwrap(test_set, keep)
        mode = "L" if data.channels == 1 else "RGB"
        images = np.stack([np.asarray(prepare(Image.open(base.samples[i][0]).convert(mode))) for i in indices])
        ids = f"imagefolder-{data.root.resolve()}-{data.test_dir}-{data.image_size}"
        return EvalImages(images, np.asarray([base.samples[i][1] for i in indices]), ids, data.mean, data.std)
    raise ValueError(
        f"generated corruptions need an mnist5k or imagefolder test set, not {data.source!r}; "
        "give eval.corruptions.root (the released ImageNet-C folders) instead"
    )


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any number of ``Subset`` wrappers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _unwrap(dataset: Dataset, keep: np.ndarray) -> tuple[Dataset, np.ndarray]:
    """The underlying dataset and the indices into it of ``dataset[keep]`` (through Subsets)."""
    indices = np.asarray(keep, dtype=np.int64)
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices)[indices]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorDataset) and not hasattr(dataset, "samples"):
        raise TypeError(f"cannot read raw images from a {type(dataset).__name__}")
    return dataset, indices


@torch.no_grad()
def _correct(model: MoEModel, batches, ctx: RunContext, subset: list[int] | None = None) -> np.ndarray:
    """Whether each example's top-1 prediction is right (uint8), over ``(inputs, targets)`` batches
    dealt to the ranks as :func:`~namex_bench.tasks.distributed.eval_loader` does, in dataset order."""
    model.eval()
    hits = []
    for inputs, targets in batches:
        inputs, targets = inputs.to(ctx.device), targets.to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            logits = model(inputs).output.float()
        predicted = logits.argmax(-1) if subset is None else restricted_predictions(logits, subset)
        hits.append((predicted == targets).to(torch.uint8).cpu().numpy())
    return distributed.gather_strided(np.concatenate(hits) if hits else np.zeros(0, dtype=np.uint8))


def _array_batches(source: EvalImages, images: np.ndarray, batch_size: int):
    """This rank's share of ``images`` (every W-th, no padding) in batches."""
    rank, world = distributed.rank(), distributed.world_size()
    for start in range(rank, len(images), batch_size * world):
        idx = np.arange(start, min(start + batch_size * world, len(images)), world)
        yield source.to_tensor(images[idx]), torch.from_numpy(source.labels[idx])


def evaluate_corruptions(model: MoEModel, task: ImageClassificationTask, test_set: Dataset, ctx: RunContext,
                         class_to_idx: dict[str, int] | None, examples: PerExample | None = None) -> list[dict]:
    """Per (corruption, severity): top-1 and error (``{"corruption", "severity", "top1", "error"}``);
    each cell's per-example outcomes go to ``examples`` as the set ``corruptions/<name>/<severity>``."""
    cfg: CorruptionEval = task.eval.corruptions
    cells = []

    def cell(name: str, severity: int, ids: np.ndarray, correct: np.ndarray) -> None:
        top1 = float(correct.mean())
        cells.append({"corruption": name, "severity": severity, "top1": top1, "error": 1 - top1})
        if examples is not None:
            examples.add(f"{CORRUPTION_SETS}/{name}/{severity}", ids, correct=correct)

    if cfg.root is None:
        source = eval_images(task, test_set, cfg.images)  # test_set is already cut to --limit
        ids = dataset_ids(limit_dataset(test_set, cfg.images))
        digest = images_sha256(source.images)
        entries = [(name, severity) for name in cfg.names for severity in cfg.severities]
        with CorruptionCache() as cache:

            def corrupted(name: str, severity: int, progress: bool) -> np.ndarray:
                return cache.get_or_compute(source.dataset_id, source.images, name, severity, cfg.seed,
                                            workers=cfg.workers, progress=progress, images_hash=digest)

            if distributed.world_size() > 1:
                # The first process of each node fills the cache on all its cores while the others
                # wait here (no collective of the run is pending meanwhile); then every rank reads.
                if distributed.local_rank() == 0:
                    for name, severity in entries:
                        corrupted(name, severity, progress=True)
                distributed.check_peers()
            for name, severity in entries:
                images = corrupted(name, severity, progress=distributed.is_main())
                cell(name, severity, ids, _correct(model, _array_batches(source, images, task.eval.batch_size), ctx))
    else:
        for name in cfg.names:
            for severity in progress(cfg.severities, desc=name, enabled=distributed.is_main()):
                folder = _released_folder(cfg.root / name / str(severity), task, class_to_idx, ctx.limit)
                cell(name, severity, dataset_ids(folder), _correct(model, distributed.eval_loader(folder, task.eval.batch_size, device=ctx.device), ctx))
    if examples is not None:
        for metric, names in (("corruption_error", [c for c in cfg.names if c in BENCHMARK_CORRUPTIONS]), ("corruption_error_all", cfg.names)):
            if names:
                sets = [f"{CORRUPTION_SETS}/{n}/{s}" for n in names for s in cfg.severities]
                examples.metric(metric, sets, "correct", link="complement")
    return cells


def corruption_metrics(cells: list[dict], cfg: CorruptionEval, clean_error: float | None) -> dict[str, float]:
    """``corruption_error`` (mean error over the benchmark corruptions' cells),
    ``corruption_error_all`` (every cell), and AlexNet-normalised ``mce`` / ``relative_mce``."""
    errors = {(c["corruption"], c["severity"]): c["error"] for c in cells}
    metrics = {"corruption_error_all": mean_corruption_error(errors)}
    if any(c in BENCHMARK_CORRUPTIONS for c, _ in errors):
        metrics["corruption_error"] = mean_corruption_error(errors, BENCHMARK_CORRUPTIONS)
    if cfg.alexnet:
        metrics["mce"] = mce(errors, ALEXNET_ERRORS)
        if clean_error is not None:
            metrics["relative_mce"] = relative_mce(errors, clean_error)
    return metrics


def _released_folder(folder, task: ImageClassificationTask, class_to_idx: dict[str, int] | None, limit: int | None) -> Dataset:
    """A released ImageNet-C (severity) folder: ``ToTensor`` + normalisation only, labels
    mapped to the model's classes by wnid."""
    from torchvision import datasets, transforms

    if class_to_idx is None:
        raise ValueError("released corruption folders need a test set with named classes (imagefolder data)")
    if not folder.is_dir():
        raise FileNotFoundError(f"missing corruption folder {folder}")
    data = task.data
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    dataset.target_transform = _model_classes(dataset.classes, class_to_idx, folder).__getitem__
    return limit_dataset(dataset, limit)


def _model_classes(classes: list[str], class_to_idx: dict[str, int], folder) -> list[int]:
    """The model's class index of each of a folder's wnid classes (all must be the model's)."""
    unknown = [c for c in classes if c not in class_to_idx]
    if unknown:
        raise ValueError(f"{folder}: classes not among the model's: {', '.join(unknown[:5])}")
    return [class_to_idx[c] for c in classes]


def evaluate_natural_shift(model: MoEModel, folder, task: ImageClassificationTask, test_set: Dataset, ctx: RunContext,
                           class_to_idx: dict[str, int] | None, prefix: str, examples: PerExample | None = None) -> dict[str, float]:
    """ImageNet-A/-R: top-1 with the logits restricted to the set's classes, and the clean
    top-1 on the same classes (the test images of those classes, logits restricted alike);
    the per-example outcomes go to ``examples`` as the sets ``<prefix>`` and ``<prefix>_clean``."""
    from torchvision import datasets

    from ..data.image_folder import image_transform

    if class_to_idx is None:
        raise ValueError(f"{prefix} needs a model trained on an imagefolder dataset with wnid classes")
    data = task.data
    shifted = datasets.ImageFolder(str(folder), transform=image_transform(data.image_size, False, data.mean, data.std, data.channels))
    subset = _model_classes(shifted.classes, class_to_idx, folder)
    shifted = limit_dataset(shifted, ctx.limit)
    correct = _correct(model, distributed.eval_loader(shifted, task.eval.batch_size, device=ctx.device), ctx, subset)
    position = {index: i for i, index in enumerate(subset)}
    labels = dataset_labels(test_set)
    same_classes = [i for i, label in enumerate(labels) if int(label) in position]
    clean = Subset(test_set, same_classes)
    clean_batches = ((x, torch.tensor([position[int(t)] for t in y])) for x, y in distributed.eval_loader(clean, task.eval.batch_size, device=ctx.device))
    metrics = {f"{prefix}_top1": float(correct.mean())}
    if examples is not None:
        examples.add(prefix, dataset_ids(shifted), correct=correct)
        examples.metric(f"{prefix}_top1", prefix, "correct")
    if same_classes:
        clean_correct = _correct(model, clean_batches, ctx, subset)
        metrics[f"{prefix}_clean_top1"] = float(clean_correct.mean())
        if examples is not None:
            examples.add(f"{prefix}_clean", dataset_ids(clean), correct=clean_correct)
            examples.metric(f"{prefix}_clean_top1", f"{prefix}_clean", "correct")
    return metrics
