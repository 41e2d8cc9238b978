"""Fixtures shared by several test files, and the session's data cache.

Tests never write into the user's ``~/.cache/namex_bench``: the session points
``NAMEX_BENCH_CACHE`` (which every cache of namex_bench derives from: data archives,
token streams, corrupted images, lm-eval task configs) at a new temporary folder, removed
at the end — so the data archives (~180 MB) are downloaded again in every session. To
share them between sessions, name a cache folder for the tests in
``NAMEX_BENCH_TEST_CACHE`` (CI does: a folder of its own); a ``NAMEX_BENCH_CACHE`` set
in the environment is ignored by the tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_created_cache: str | None = None


def pytest_configure(config):
    global _created_cache
    shared = os.environ.get("NAMEX_BENCH_TEST_CACHE")
    if shared:
        os.environ["NAMEX_BENCH_CACHE"] = shared
    else:
        _created_cache = tempfile.mkdtemp(prefix="namex_bench-test-cache-")
        os.environ["NAMEX_BENCH_CACHE"] = _created_cache


def pytest_unconfigure(config):
    if _created_cache is not None:
        shutil.rmtree(_created_cache, ignore_errors=True)


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    """Keep `datasets` off the network and out of the user's cache."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return str(tmp_path / "hf-cache")  # the datasets cache folder, inside the test's tmp_path


@pytest.fixture
def check_examples():
    """A checker for a results folder: every successful record names a per-example sidecar whose
    sha256 matches, and every metric it declares is reproduced by its per-example outcomes
    (as the report rebuilds it). Returns ``{record key: {set: {field: array}}}``."""
    import json
    from pathlib import Path

    from namex_bench.report.per_example import MethodScores, method_scores
    from namex_bench.runner.examples import read_examples

    def check(results: Path, metrics: set[str] | None = None) -> dict:
        found = {}
        for path in sorted(Path(results).rglob("runs/*.json")):
            record = json.loads(path.read_text())
            if record["status"] != "ok":
                continue
            arrays = read_examples(path.parent, record)
            assert arrays is not None, f"{record['name']} has no per-example sidecar"
            spec = record["examples"]
            assert spec["file"] == f"{record['key']}.examples.npz"
            assert spec["sets"] == {name: len(fields["id"]) for name, fields in arrays.items()}
            for name, fields in arrays.items():
                assert len(set(fields["id"].tolist())) == len(fields["id"]), f"{name}: ids repeat"
            declared = set(spec["metrics"])
            assert metrics is None or metrics <= declared, (record["name"], sorted(declared))
            for metric in declared:
                scores = method_scores({0: record}, {record["key"]: arrays}, metric)
                assert isinstance(scores, MethodScores), (record["name"], metric, scores)
            found[record["key"]] = arrays
        assert found
        return found

    return check


@pytest.fixture
def clean_registry():
    """Restore the registry (and its loaded flags) after a test that registers methods."""
    import namex_bench
    from namex_bench.methods import registry

    namex_bench.available_methods()  # built-ins loaded before the snapshot
    methods, loaded = dict(registry._METHODS), dict(registry._loaded)
    yield registry
    registry._METHODS.clear()
    registry._METHODS.update(methods)
    registry._loaded.clear()
    registry._loaded.update(loaded)


@pytest.fixture
def image_folder(tmp_path):
    """A tiny ImageFolder (two classes, 8 training and 2 test images each, 40×40 RGB): its training
    transform crops and flips at random."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path
