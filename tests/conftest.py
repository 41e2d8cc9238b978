"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest


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
