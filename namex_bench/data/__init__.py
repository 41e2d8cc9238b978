"""Data sources: pinned offline archives, MNIST-5k, image folders and HF image datasets, text
classification sets, LM corpora and tokenizers, ``--limit`` subsets."""

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
from .corpora import load_corpus, load_kjv, load_shakespeare, load_wikitext, shakespeare_works, tokenize_corpus
from .image_folder import HFImageDataset, hf_image_dataset, image_folder_dataset, image_transform
from .limit import limit_dataset
from .mnist5k import load_mnist5k
from .text import (
    GLUE_TASK_COLUMNS,
    TextClassificationDataset,
    load_glue,
    load_glue_validation_offline,
    load_rotten_tomatoes,
    load_sst2_validation,
)
from .tokenizers import gpt2_tokenizer, minilm_path, resolve_pretrained

__all__ = [
    "ARCHIVES",
    "ArchiveError",
    "ChecksumMismatchError",
    "DataUnavailableError",
    "GLUE_TASK_COLUMNS",
    "HFImageDataset",
    "PinnedArchive",
    "TextClassificationDataset",
    "cache_root",
    "fetch_archive",
    "fetch_member",
    "fetch_tree",
    "gpt2_tokenizer",
    "hf_image_dataset",
    "image_folder_dataset",
    "image_transform",
    "limit_dataset",
    "load_corpus",
    "load_glue",
    "load_glue_validation_offline",
    "load_kjv",
    "load_mnist5k",
    "load_rotten_tomatoes",
    "load_shakespeare",
    "load_sst2_validation",
    "load_wikitext",
    "minilm_path",
    "resolve_pretrained",
    "shakespeare_works",
    "tokenize_corpus",
]
