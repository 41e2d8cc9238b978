"""The schema of a suite file: what to run, never how.

    name: quickstart
    description: every method on offline data, CPU, minutes
    seeds: [0, 1]
    reference: smear                  # paired comparisons are against this method
    plugins: [my_methods]             # modules imported so that their methods register
    methods:
      - name: namex_mom
        options: {momentum_angle: 0.785}
    models:
      - name: vit_moe_tiny
        builder: vit_moe
        params: {img_size: 28, patch_size: 7, embed_dim: 64, depth: 4, num_experts: 4}
    tasks:
      - name: mnist
        type: image_classification
        data: {source: mnist5k}
        train: {epochs: 3, batch_size: 64, lr: 1.0e-3}

Every field is checked before any work starts; unknown fields are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

NonNegativeFloat = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodEntry(Strict):
    """A merging method and its options; ``label`` names it in tables (default: ``name``)."""

    name: str
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


class ModelEntry(Strict):
    """A model: a registered builder and its parameters (checked by the builder's own schema)."""

    name: str
    builder: str
    params: dict[str, Any] = Field(default_factory=dict)


class Mnist5kData(Strict):
    """The 5,000 real MNIST digits shipped in a pinned archive (offline; fixed 4000/1000 split)."""

    source: Literal["mnist5k"]


class ImagePreprocessing(Strict):
    """Resize/crop to ``image_size`` and normalise (ImageNet's mean and std by default)."""

    image_size: PositiveInt = 224
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


class ImageFolderData(ImagePreprocessing):
    """``root/<train_dir>/<class>/*`` and ``root/<test_dir>/<class>/*`` on disk."""

    source: Literal["imagefolder"]
    root: Path
    train_dir: str = "train"
    test_dir: str = "val"

    @model_validator(mode="after")
    def _root_exists(self) -> "ImageFolderData":
        for sub in (self.root, self.root / self.train_dir, self.root / self.test_dir):
            if not sub.is_dir():
                raise ValueError(f"directory {sub} does not exist")
        return self


class HFImageData(ImagePreprocessing):
    """An image classification dataset through HF ``datasets.load_dataset``."""

    source: Literal["hf"]
    path: str
    name: str | None = None
    train_split: str = "train"
    test_split: str = "validation"
    image_column: str = "image"
    label_column: str = "label"


ImageData = Annotated[Union[Mnist5kData, ImageFolderData, HFImageData], Field(discriminator="source")]


class TrainConfig(Strict):
    """AdamW with linear warmup then cosine decay, gradient clipping; ``epochs: 0`` evaluates only."""

    epochs: NonNegativeFloat = 1
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    weight_decay: NonNegativeFloat = 0.05
    warmup_steps: NonNegativeInt = 0
    grad_clip: PositiveFloat | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)


class CorruptionEval(Strict):
    """Evaluation under the ImageNet-C corruptions, generated (and cached) or read from disk.

    ``corruptions``: ``all`` (15 benchmark + 4 extra), ``benchmark`` (the 15) or a list.
    ``images``: per (corruption, severity), a fixed class-balanced subset of the test set
    of this size (default: all of it). ``root``: the released ImageNet-C folders
    (``<root>/<corruption>/<severity>/<wnid>/*``) instead of generating. ``alexnet``:
    also report mCE and relative mCE normalised by AlexNet (ImageNet only).
    """

    corruptions: Literal["all", "benchmark"] | list[str] = "all"
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    seed: NonNegativeInt = 0
    images: PositiveInt | None = None
    root: Path | None = None
    alexnet: bool = False
    workers: PositiveInt | None = None

    @property
    def names(self) -> list[str]:
        from ..metrics.mce import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS

        if self.corruptions == "all":
            return [*BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS]
        if self.corruptions == "benchmark":
            return list(BENCHMARK_CORRUPTIONS)
        return list(self.corruptions)

    @model_validator(mode="after")
    def _check(self) -> "CorruptionEval":
        from ..metrics.mce import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS

        known = (*BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS)
        unknown = [c for c in self.names if c not in known]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if self.alexnet and (not set(BENCHMARK_CORRUPTIONS) <= set(self.names) or sorted(self.severities) != [1, 2, 3, 4, 5]):
            raise ValueError("alexnet normalisation needs the 15 benchmark corruptions at severities 1-5")
        if self.root is not None and not self.root.is_dir():
            raise ValueError(f"directory {self.root} does not exist")
        return self


class EvalConfig(Strict):
    """Clean evaluation, and optionally corrupted (ImageNet-C style) and ImageNet-A/-R."""

    batch_size: PositiveInt = 256
    corruptions: CorruptionEval | None = None
    imagenet_a: Path | None = None  # the released ImageNet-A folder: <root>/<wnid>/*
    imagenet_r: Path | None = None  # the released ImageNet-R folder: <root>/<wnid>/*

    @model_validator(mode="after")
    def _folders_exist(self) -> "EvalConfig":
        for name in ("imagenet_a", "imagenet_r"):
            folder = getattr(self, name)
            if folder is not None and not folder.is_dir():
                raise ValueError(f"{name}: directory {folder} does not exist")
        return self


class ImageClassificationTask(Strict):
    """Train (optionally) and evaluate a classifier: top-1 and top-5 accuracy, loss."""

    name: str
    type: Literal["image_classification"]
    data: ImageData
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


Task = Annotated[Union[ImageClassificationTask], Field(discriminator="type")]


class Suite(Strict):
    name: str
    description: str = ""
    seeds: list[int] = Field(min_length=1)
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    reference: str | None = None
    plugins: list[str] = Field(default_factory=list)
    methods: list[MethodEntry] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        """A device torch can parse ("auto", "cpu", "cuda", "cuda:1", ...); whether this machine
        has it is checked when the suite runs, so a GPU suite validates on a laptop."""
        if device != "auto":
            import torch

            try:
                torch.device(device)
            except RuntimeError:
                raise ValueError(f"invalid device {device!r} (auto, cpu, cuda, cuda:1, mps, ...)") from None
        return device

    @model_validator(mode="after")
    def _unique_names(self) -> "Suite":
        for field, names in (
            ("methods", [m.display for m in self.methods]),
            ("models", [m.name for m in self.models]),
            ("tasks", [t.name for t in self.tasks]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{field}: names must be unique (give a `label` to tell methods apart); repeated: {', '.join(duplicates)}")
        if self.reference is not None and self.reference not in [m.display for m in self.methods]:
            raise ValueError(f"reference: {self.reference!r} is not one of the suite's methods")
        return self
