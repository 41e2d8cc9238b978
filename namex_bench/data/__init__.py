"""Data sources: pinned offline archives, MNIST-5k, image folders and HF image datasets, ``--limit`` subsets."""

from .archives import (
    ARCHIVES,
    ArchiveError,
    ChecksumMismatchError,
    DataUnavailableError,
    PinnedArchive,
    cache_root,
    fetch_archive,
    fetch_member,
    fetch_tree,
)
from .image_folder import HFImageDataset, hf_image_dataset, image_folder_dataset, image_transform
from .limit import limit_dataset
from .mnist5k import load_mnist5k

__all__ = [
    "ARCHIVES",
    "ArchiveError",
    "ChecksumMismatchError",
    "DataUnavailableError",
    "HFImageDataset",
    "PinnedArchive",
    "cache_root",
    "fetch_archive",
    "fetch_member",
    "fetch_tree",
    "hf_image_dataset",
    "image_folder_dataset",
    "image_transform",
    "limit_dataset",
    "load_mnist5k",
]
