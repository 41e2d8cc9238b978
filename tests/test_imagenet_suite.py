"""suites/imagenet.yaml validates and dry-runs (--limit) on a tiny ImageFolder stand-in.

The stand-in has the released layouts: ImageNet train/val folders, ImageNet-C
``<root>/<corruption>/<severity>/<wnid>/``, ImageNet-A/-R ``<root>/<wnid>/`` — with two real
wnids and a few random images, so the whole evaluation path runs offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from namex_bench.cli import main
from namex_bench.metrics.mce import BENCHMARK_CORRUPTIONS

pytestmark = pytest.mark.slow  # minutes on 2 cores: not in CI's second pass (generic CPU kernels)

SUITE = Path(__file__).resolve().parents[1] / "suites" / "imagenet.yaml"
WNIDS = ("n01440764", "n01443537")


def _images(folder: Path, count: int, size: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=90)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for wnid in WNIDS:
        _images(root / "imagenet" / "train" / wnid, 3, 72, rng)
        _images(root / "imagenet" / "val" / wnid, 2, 72, rng)
        _images(root / "imagenet-a" / wnid, 2, 72, rng)
        _images(root / "imagenet-r" / wnid, 2, 72, rng)
        for corruption in BENCHMARK_CORRUPTIONS:
            for severity in range(1, 6):
                _images(root / "imagenet-c" / corruption / str(severity) / wnid, 1, 224, rng)
    for var, sub in (("IMAGENET_ROOT", "imagenet"), ("IMAGENET_C_ROOT", "imagenet-c"),
                     ("IMAGENET_A_ROOT", "imagenet-a"), ("IMAGENET_R_ROOT", "imagenet-r")):
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("VIT_PRETRAINED", "false")  # no hub here: start from scratch
    return tmp_path


def test_imagenet_suite_validates_on_the_stand_in(stand_in, capsys):
    assert main(["validate", str(SUITE)]) == 0
    assert "7 methods × 1 task/model pairs (1 tasks, 1 models) × 3 seeds = 21 runs" in capsys.readouterr().out


def test_imagenet_suite_needs_its_data_paths(monkeypatch, capsys):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    assert main(["validate", str(SUITE)]) == 2
    assert "IMAGENET_ROOT is not set" in capsys.readouterr().err


def test_imagenet_suite_dry_runs_clean_c_a_and_r(stand_in, capsys):
    results = stand_in / "results"
    # one of the 21 runs (a ViT-S/16 on the CPU), with every evaluation: clean, C, A and R
    code = main(["run", str(SUITE), "--limit", "2", "--methods", "namex_mom", "--seeds", "0", "--device", "cpu", "--results", str(results)])
    assert code == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in (results / "imagenet-limit2" / "runs").glob("*.json")]
    assert len(records) == 1 and all(r["status"] == "ok" for r in records)
    for record in records:
        metrics = record["metrics"]
        for name in ("top1", "clean_error", "corruption_error", "mce", "relative_mce",
                     "imagenet_a_top1", "imagenet_a_clean_top1", "imagenet_r_top1", "imagenet_r_clean_top1"):
            assert name in metrics and np.isfinite(metrics[name]), name
        cells = record["cells"]["corruptions"]
        assert {(c["corruption"], c["severity"]) for c in cells} == {(c, s) for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
        assert record["config"]["model"]["params"]["timm_model"] == "vit_small_patch16_224"
    assert (results / "imagenet-limit2" / "leaderboard.md").is_file()
