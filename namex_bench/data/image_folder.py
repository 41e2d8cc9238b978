"""Image classification data on disk or from Hugging Face ``datasets``.

Both sources share one transform (:func:`image_transform`), the standard ImageNet
recipe:

- train: ``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip()``;
- eval:  ``Resize(int(image_size / 0.875))`` + ``CenterCrop(image_size)``
  (224 → resize 256, the usual 0.875 crop ratio);

then ``ToTensor()`` and ``Normalize(mean, std)``. Images are converted to RGB
(``channels=3``) or greyscale (``channels=1``) first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

if TYPE_CHECKING:  # torchvision is imported when a transform is built: it adds ~2 s to start-up
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import Compose

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_RATIO = 0.875


class ConvertMode:
    """Convert a PIL image to a mode (``"RGB"`` or ``"L"``); a class, so DataLoader workers can pickle it."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def image_transform(
    image_size: int, train: bool, mean: Sequence[float], std: Sequence[float], channels: int = 3
) -> Compose:
    """The train or eval transform described in the module docstring."""
    from torchvision import transforms as T

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values each for {channels}-channel images, got {list(mean)} and {list(std)}")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if train:
        geometry = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(int(image_size / EVAL_CROP_RATIO)), T.CenterCrop(image_size)]
    return T.Compose([ConvertMode("RGB" if channels == 3 else "L"), *geometry, T.ToTensor(), T.Normalize(mean, std)])


def image_folder_dataset(
    root: str | os.PathLike,
    image_size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels: int = 3,
) -> ImageFolder:
    """A torchvision ``ImageFolder`` (``root/<class>/<image>``) with :func:`image_transform`.

    Raises ``FileNotFoundError`` naming ``root`` when it does not exist, has no class
    folders, or its class folders hold no images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected {root}/<class>/<image files>)")
    if not any(entry.is_dir() for entry in root.iterdir()):
        raise FileNotFoundError(f"image folder {root} has no class folders (expected {root}/<class>/<image files>)")
    from torchvision.datasets import ImageFolder

    transform = image_transform(image_size, train, mean, std, channels)
    try:
        return ImageFolder(str(root), transform=transform)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"image folder {root}: {exc}") from None


class HFImageDataset(Dataset):
    """A Hugging Face ``datasets.Dataset`` of images and integer labels as a torch Dataset.

    Items are ``(transform(image) float32 [C, H, W], label int)``. ``classes`` holds the
    class names when the label column is a ``ClassLabel``, else ``None``.
    """

    def __init__(self, hf_dataset, image_column: str, label_column: str, transform):
        missing = [c for c in (image_column, label_column) if c not in hf_dataset.column_names]
        if missing:
            raise ValueError(
                f"dataset has no column(s) {', '.join(map(repr, missing))}; its columns are: {', '.join(hf_dataset.column_names)}"
            )
        self.data = hf_dataset.select_columns([image_column, label_column])
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        names = getattr(hf_dataset.features[label_column], "names", None)
        self.classes: list[str] | None = list(names) if names else None

    @property
    def targets(self) -> list[int]:
        """All labels, in order (read from the label column only)."""
        return [int(y) for y in self.data[self.label_column]]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.data[int(index)]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return self.transform(image), int(row[self.label_column])


def _is_saved_dataset(path: str) -> bool:
    folder = Path(path).expanduser()
    return folder.is_dir() and ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file())


def hf_image_dataset(
    path: str,
    name: str | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "label",
    image_size: int = 224,
    train: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels: int = 3,
    **load_kwargs,
) -> HFImageDataset:
    """An image dataset from ``datasets`` wrapped with :func:`image_transform`.

    ``path`` is what ``datasets.load_dataset`` takes (a hub name, or a builder such as
    ``"imagefolder"`` with ``data_dir=...`` in ``load_kwargs``), or a folder written by
    ``save_to_disk`` (read with ``datasets.load_from_disk``).
    """
    import datasets

    if _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(Path(path).expanduser()))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"saved dataset {path} has no split {split!r}; its splits are: {', '.join(loaded)}")
            loaded = loaded[split]
    else:
        loaded = datasets.load_dataset(path, name, split=split, **load_kwargs)
    transform = image_transform(image_size, train, mean, std, channels)
    return HFImageDataset(loaded, image_column, label_column, transform)
