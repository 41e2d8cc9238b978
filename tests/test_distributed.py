"""Data parallelism: ``torchrun`` with 2 CPU processes (gloo) follows the 1-process run.

Both see the same global batches (each rank loads half of every batch of 16) and DDP
averages the gradients, so the runs differ only where a loss is not a mean over the
batch: the MoE auxiliary (switch) loss is computed per rank over its 8 images, not
over the 16. That moves the weights by ~1e-5 after the 4 steps of the tiny suite
(aux coefficient 0.01 × lr 1e-3); the evaluation itself is exact (every test example
is scored once, the sums are all-reduced). Measured: |Δ loss| ≤ 7e-6,
|Δ train_loss| ≤ 3e-5, identical top-1/top-5; the tolerances below are ~10× that,
and at most one of the 64 test digits may change its prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch.distributed as dist

from namex_bench.cli import main
from namex_bench.runner.examples import read_examples
from namex_bench.runner.records import read_records

LOSS_TOL = 2e-4  # absolute, on losses ≈ 2.3
ACC_TOL = 1 / 64 + 1e-12  # one test example of 64

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
    params: {patch_size: 14, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 2}
tasks:
  - name: mnist
    type: image_classification
    data: {source: mnist5k}
    train: {epochs: 1, batch_size: 16, lr: 1.0e-3}
"""

# The CLI, with a spy on the runner's record writes that logs which rank wrote what.
LAUNCHER = """\
import os, sys
from namex_bench.cli import main
from namex_bench.runner import runner

write = runner.write_json_atomic

def logged_write(path, obj):
    with open(os.environ["NAMEX_BENCH_TEST_WRITES"], "a") as log:
        log.write(f"{os.environ['RANK']} {path.name}\\n")
    write(path, obj)

runner.write_json_atomic = logged_write
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")
def test_two_cpu_processes_match_one_process(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    launcher = tmp_path / "launch_cli.py"
    launcher.write_text(LAUNCHER)
    writes = tmp_path / "writes.log"
    ddp, single = tmp_path / "ddp", tmp_path / "single"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAMEX_BENCH_TEST_WRITES": str(writes), "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher),
               "run", str(suite), "--results", str(ddp), "--limit", "64", "--no-report"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # only rank 0 reports, and only rank 0 writes records: one per run
    assert proc.stdout.count("tiny: 4 runs finished, 0 already done, 0 failed (of 4)") == 1, proc.stdout
    logged = writes.read_text().split()
    assert logged[::2] == ["0"] * 4 and len(set(logged[1::2])) == 4
    assert not list(ddp.rglob("*.tmp"))

    assert main(["run", str(suite), "--results", str(single), "--limit", "64", "--no-report"]) == 0
    capsys.readouterr()

    parallel = {r["key"]: r for r in read_records(ddp, "tiny-limit64")}
    serial = {r["key"]: r for r in read_records(single, "tiny-limit64")}
    assert sorted(p.stem for p in (ddp / "tiny-limit64" / "runs").glob("*.json")) == sorted(parallel) == sorted(serial)
    assert len(parallel) == 4 and sorted(logged[1::2]) == sorted(f"{key}.json" for key in parallel)
    differences = {}
    for key, record in parallel.items():
        expected = serial[key]
        assert record["status"] == "ok" and record["config"] == expected["config"]
        assert record["environment"]["world_size"] == 2 and expected["environment"]["world_size"] == 1
        assert record["timings"]["train_steps"] == expected["timings"]["train_steps"] == 4  # the same global batches
        assert record["params"] == expected["params"]
        for metric in ("top1", "top5"):
            assert abs(record["metrics"][metric] - expected["metrics"][metric]) <= ACC_TOL, (record["name"], metric)
        for metric in ("loss", "train_loss"):
            differences[record["name"], metric] = abs(record["metrics"][metric] - expected["metrics"][metric])
            assert differences[record["name"], metric] <= LOSS_TOL, (record["name"], metric, differences)
    print(json.dumps({f"{name} {metric}": f"{d:.1e}" for (name, metric), d in sorted(differences.items())}, indent=1))
    # the per-example outcomes, scored in shards of every other example, come back in dataset order
    for key, record in parallel.items():
        shards = read_examples(ddp / "tiny-limit64" / "runs", record)["test"]
        whole = read_examples(single / "tiny-limit64" / "runs", serial[key])["test"]
        assert np.array_equal(shards["id"], whole["id"]) and len(whole["id"]) == 64
        assert np.sum(shards["correct"] != whole["correct"]) <= 1
        assert np.max(np.abs(shards["loss"] - whole["loss"])) <= 10 * LOSS_TOL
        assert shards["correct"].mean() == record["metrics"]["top1"]


def test_not_launched_means_one_process(monkeypatch):
    from namex_bench.tasks import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()


def test_batch_not_divisible_by_the_processes_is_a_clear_error(monkeypatch):
    import torch
    from torch.utils.data import TensorDataset

    from namex_bench.tasks import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    data = TensorDataset(torch.zeros(64, 1), torch.zeros(64, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size 16 is not divisible by the 3 processes"):
        distributed.train_loader(data, 16, seed=0)


def test_a_non_finite_loss_on_any_rank_stops_every_rank_at_that_step(monkeypatch):
    """The finiteness check is on the all-reduced loss: when another rank's loss is NaN this
    rank stops too, before its backward (it never waits alone in DDP's gradient all-reduce)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from namex_bench.models.registry import get_builder
    from namex_bench.suite.schema import TrainConfig
    from namex_bench.tasks import distributed
    from namex_bench.tasks.training import NonFiniteLossError, train

    torch.manual_seed(0)
    builder = get_builder("vit_moe")
    params = builder.validate({"patch_size": 14, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_experts": 2})
    model = builder.build(params, "smear", {}, 10, 1, 28)
    before = [p.detach().clone() for p in model.parameters()]
    data = DataLoader(TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))), batch_size=16)
    other_rank_nan = torch.tensor([float("nan"), float("nan"), 0.0])
    monkeypatch.setattr(distributed, "all_sum", lambda values: values + other_rank_nan)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 0 of 2"):
        train(model, data, TrainConfig(epochs=1, batch_size=16), F.cross_entropy, torch.device("cpu"), None)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
