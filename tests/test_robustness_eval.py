"""Corrupted evaluation inside a suite: the corrupted images are computed once, for the
first run, and every later method and seed reads them from the cache."""

from __future__ import annotations

import json

import pytest

import namex_bench.corruptions.cache as cache_module
from namex_bench.cli import main

SUITE = """
name: robust
seeds: [0, 1]
device: cpu
reference: smear
methods: [{name: smear}, {name: namex}]
models:
  - name: vit_tiny
    builder: vit_moe
    params: {patch_size: 14, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 2}
tasks:
  - name: mnist
    type: image_classification
    data: {source: mnist5k}
    train: {epochs: 1, batch_size: 16, lr: 1.0e-3}
    eval:
      batch_size: 64
      corruptions: {corruptions: [gaussian_noise, glass_blur, spatter], severities: [1, 5], images: 10, seed: 3, workers: 1}
"""


def test_corruptions_are_computed_once_for_the_whole_suite(tmp_path, monkeypatch):
    monkeypatch.setenv("NAMEX_BENCH_CACHE", str(tmp_path / "cache"))
    computed = []
    real = cache_module.corrupt

    def counting(image, name, severity, seed):  # workers: 1 corrupts image by image in this process
        computed.append((name, severity, 1))
        return real(image, name, severity, seed)

    monkeypatch.setattr(cache_module, "corrupt", counting)
    path = tmp_path / "robust.yaml"
    path.write_text(SUITE)
    assert main(["run", str(path), "--limit", "64", "--results", str(tmp_path / "results")]) == 0
    # 3 corruptions x 2 severities, each computed by the first run only (10 images each)
    assert sorted({(n, s) for n, s, _ in computed}) == sorted((n, s) for n in ("gaussian_noise", "glass_blur", "spatter") for s in (1, 5))
    assert sum(count for _, _, count in computed) == 6 * 10

    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "robust-limit64" / "runs").glob("*.json")]
    assert len(records) == 4
    for record in records:
        cells = record["cells"]["corruptions"]
        assert len(cells) == 6 and all(c["error"] == pytest.approx(1 - c["top1"]) for c in cells)
        assert record["metrics"]["corruption_error"] == pytest.approx(sum(c["error"] for c in cells if c["corruption"] != "spatter") / 4)
        assert record["metrics"]["corruption_error_all"] == pytest.approx(sum(c["error"] for c in cells) / 6)
    board = (tmp_path / "results" / "robust-limit64" / "leaderboard.md").read_text()
    assert "### Robustness" in board and "rel. CE vs smear" in board
