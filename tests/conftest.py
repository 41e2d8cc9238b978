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
