"""Per-example sidecars: written by the runner beside each record, byte-deterministic, hash-checked,
identical example order for every method, moved with superseded records; old records without
them still render with seed-level statistics."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from namex_bench.cli import main
from namex_bench.report import render_leaderboard_markdown
from namex_bench.runner.examples import ExamplesError, decode_examples, encode_examples, read_examples, write_examples
from namex_bench.runner.records import read_records

SUITE = """\
name: tiny
seeds: [0, 1]
device: cpu
reference: smear
methods:
  - name: smear
  - name: namex_mom
models:
  - name: vit_tiny
    builder: vit_moe
    params: {patch_size: 14, embed_dim: 16, depth: 3, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 2}
tasks:
  - name: mnist
    type: image_classification
    data: {source: mnist5k}
    train: {epochs: 1, batch_size: 16, lr: 1.0e-3}
    eval:
      corruptions: {corruptions: [gaussian_noise, saturate], severities: [1, 3], images: 16, seed: 0}
"""

SETS = {
    "test": {"id": np.arange(5), "correct": np.array([1, 0, 1, 1, 0], dtype=np.uint8), "loss": np.linspace(0.1, 2.0, 5, dtype=np.float32)},
    "corruptions/fog/3": {"id": np.array([4, 2, 9]), "correct": np.array([0, 1, 1], dtype=np.uint8)},
    "lm_eval/mmlu_anatomy": {"id": np.array([0, 1]), "acc": np.array([0.0, 1.0])},
}


def test_sidecar_bytes_are_a_function_of_the_arrays_and_round_trip():
    data = encode_examples(SETS)
    assert data == encode_examples({k: dict(reversed(list(v.items()))) for k, v in reversed(list(SETS.items()))})
    back = decode_examples(data)
    assert set(back) == set(SETS)
    for name, fields in SETS.items():
        for field, array in fields.items():
            assert back[name][field].dtype == array.dtype and np.array_equal(back[name][field], array)
    with pytest.raises(ValueError, match="object arrays"):
        encode_examples({"x": {"id": np.array([object()])}})


def test_a_damaged_or_foreign_sidecar_is_named_and_refused(tmp_path):
    path = tmp_path / "k.examples.npz"
    spec = write_examples(path, SETS, {})
    assert spec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and spec["sets"] == {"test": 5, "corruptions/fog/3": 3, "lm_eval/mmlu_anatomy": 2}
    record = {"key": "k", "examples": spec}
    assert set(read_examples(tmp_path, record)) == set(SETS)
    assert read_examples(tmp_path, {"key": "old"}) is None  # a record from before sidecars
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ExamplesError, match="sha256 differs"):
        read_examples(tmp_path, record)
    path.unlink()
    with pytest.raises(ExamplesError, match="k.examples.npz: cannot read"):
        read_examples(tmp_path, record)


def test_the_runner_writes_a_sidecar_per_record_with_every_metric_reproduced(tmp_path, capsys, check_examples):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--limit", "64"]) == 0
    capsys.readouterr()
    arrays = check_examples(results, {"top1", "top5", "loss", "clean_error", "corruption_error_all"})
    records = read_records(results, "tiny-limit64")
    assert len(arrays) == len(records) == 4
    sets = {tuple(sorted(a)) for a in arrays.values()}
    assert sets == {("corruptions/gaussian_noise/1", "corruptions/gaussian_noise/3", "corruptions/saturate/1",
                     "corruptions/saturate/3", "test")}
    # every method and seed scored the same examples in the same order
    for name in next(iter(sets)):
        ids = {tuple(a[name]["id"].tolist()) for a in arrays.values()}
        assert len(ids) == 1, name
    assert len(next(iter(arrays.values()))["test"]["id"]) == 64
    for record in records:
        test = arrays[record["key"]]["test"]
        assert test["correct"].mean() == record["metrics"]["top1"]
        cell = next(c for c in record["cells"]["corruptions"] if (c["corruption"], c["severity"]) == ("saturate", 3))
        assert arrays[record["key"]]["corruptions/saturate/3"]["correct"].mean() == cell["top1"]
        assert record["bounds"]["top1"] == [0.0, 1.0] and record["bounds"]["loss"] == [0.0, None]
    board = (results / "tiny-limit64" / "leaderboard.md").read_text()
    assert "hierarchical bootstrap over seeds and examples (64 examples" in board
    assert "Per-example data is missing" not in board and "McNemar" in board and "Power: with 2 seeds × 64 examples" in board


def test_records_without_sidecars_still_render_with_seed_level_statistics(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE.replace("    eval:\n      corruptions: {corruptions: [gaussian_noise, saturate], severities: [1, 3], images: 16, seed: 0}\n", ""))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--limit", "32", "--no-report"]) == 0
    capsys.readouterr()
    runs = results / "tiny-limit32" / "runs"
    old = []
    for path in sorted(runs.glob("*.json")):  # as an older version wrote them: no sidecar, no bounds
        record = json.loads(path.read_text())
        record.pop("examples"), record.pop("bounds")
        path.write_text(json.dumps(record))
        old.append(record)
    for path in runs.glob("*.examples.npz"):
        path.unlink()
    text = render_leaderboard_markdown(old)
    assert "Per-example data is missing or unusable for `top1` (`namex_mom`, `smear`: no per-example data)" in text
    assert "paired t-test over seeds (no per-example data)" in text and "Power: with 2 seeds, seed-level variance" in text
    assert "McNemar" not in text and "0 with per-example data" in text
    assert main(["report", "tiny-limit32", "--results", str(results)]) == 0


def test_a_superseded_record_takes_its_sidecar_along(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    args = ["run", str(suite), "--results", str(results), "--limit", "16", "--no-report"]
    assert main(args) == 0
    runs = results / "tiny-limit16" / "runs"
    before = {p.name for p in runs.glob("*.examples.npz")}
    suite.write_text(SUITE.replace("lr: 1.0e-3", "lr: 2.0e-3"))
    assert main(args) == 0
    capsys.readouterr()
    moved = {p.name for p in (runs / "superseded").glob("*.examples.npz")}
    assert moved == before and len(list(runs.glob("*.examples.npz"))) == 4
