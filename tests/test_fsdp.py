"""FSDP2: a tiny Qwen2-MoE whose sparse blocks are merged (namex_mom, smoe) fine-tuned by 2 CPU
processes (torchrun, gloo) with ``parallel: fsdp`` follows the 1-process run.

Both see the same global batches (each rank half of each batch of 4 blocks); FSDP2 shards
every decoder layer (the merged MoE blocks inside) and the root over the 2 ranks and
averages the gradients as DDP does. As in the DDP test, the runs differ only where a loss
is not a mean over the global batch: smoe's auxiliary (switch) loss is computed per rank.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from namex_bench.cli import main
from namex_bench.runner.records import read_records

SUITE = """\
name: tiny_llm
seeds: [0]
device: cpu
methods:
  - name: smoe
  - name: namex_mom
models:
  - name: qwen_tiny
    builder: moe_llm
    parallel: fsdp
    params:
      dtype: float32
      config: {model_type: qwen2_moe, hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2,
               intermediate_size: 64, moe_intermediate_size: 16, shared_expert_intermediate_size: 16, num_experts: 4,
               num_experts_per_tok: 2, max_position_embeddings: 256}
tasks:
  - name: shakespeare
    type: language_modeling
    data: {source: shakespeare}
    context: 32
    train: {epochs: 1, batch_size: 4, lr: 1.0e-2}
    eval: {max_tokens: 96}
"""

# The CLI, with a spy on FSDP that logs, per rank, how many decoder layers were sharded and
# whether every parameter became a DTensor split over the 2 ranks.
LAUNCHER = """\
import os, sys
from namex_bench.cli import main
from namex_bench.tasks import distributed

shard = distributed.shard

def logged_shard(model):
    out = shard(model)
    from torch.distributed.tensor import DTensor
    sharded = all(isinstance(p, DTensor) and p.device_mesh.size() == 2 for p in model.parameters())
    with open(os.environ["NAMEX_BENCH_TEST_FSDP"], "a") as log:
        log.write(f"{os.environ['RANK']} {len(model.decoder_layers)} {sharded}\\n")
    return out

distributed.shard = logged_shard
sys.exit(main(sys.argv[1:]))
"""

LIMIT = "8"  # 8 training blocks of 32 tokens: 2 steps of 4
# absolute, on losses ≈ 10.8: the switch loss's dispatch fractions are per rank, for every method
# (measured after 2 steps at lr 1e-2 — smoe: 2.8e-5 on train_loss, 1.0e-3 on nll; namex_mom, whose
# dense routing sends a gradient from that loss to every router logit: 8.9e-4 and 2.8e-3)
TOLERANCE = {"smoe": 3e-3, "namex_mom": 6e-3}


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")
@pytest.mark.slow  # end to end, ~40 s or more on 2 cores
def test_fsdp_on_two_cpu_processes_matches_one_process(tmp_path, capsys):
    suite = tmp_path / "tiny_llm.yaml"
    suite.write_text(SUITE)
    launcher = tmp_path / "launch_cli.py"
    launcher.write_text(LAUNCHER)
    log = tmp_path / "fsdp.log"
    fsdp, single = tmp_path / "fsdp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAMEX_BENCH_TEST_FSDP": str(log), "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher),
               "run", str(suite), "--results", str(fsdp), "--limit", LIMIT, "--no-report"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # both runs sharded their 3 decoder layers on both ranks
    assert sorted(log.read_text().split("\n")[:-1]) == ["0 3 True", "0 3 True", "1 3 True", "1 3 True"]

    assert main(["run", str(suite), "--results", str(single), "--limit", LIMIT, "--no-report"]) == 0
    capsys.readouterr()
    sharded = {r["key"]: r for r in read_records(fsdp, f"tiny_llm-limit{LIMIT}")}
    serial = {r["key"]: r for r in read_records(single, f"tiny_llm-limit{LIMIT}")}
    assert sorted(sharded) == sorted(serial) and len(serial) == 2  # parallel: is not part of a run's key
    for key, record in sharded.items():
        expected = serial[key]
        assert record["status"] == "ok", record.get("error")
        assert record["environment"]["world_size"] == 2 and record["timings"]["train_steps"] == expected["timings"]["train_steps"] == 2
        assert record["params"] == expected["params"]  # FSDP's DTensors count their global size
        for metric in ("train_loss", "nll", "val_nll"):
            difference = abs(record["metrics"][metric] - expected["metrics"][metric])
            assert difference <= TOLERANCE[record["config"]["method"]["name"]], (record["name"], metric, difference)


def test_parallel_modes_are_checked_against_the_task(tmp_path, capsys):
    bad_fsdp = SUITE.replace("type: language_modeling\n", "type: language_modeling\n    parallel: device_map\n")
    path = tmp_path / "bad.yaml"
    path.write_text(bad_fsdp)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tasks[0].parallel: parallel: device_map (task 'shakespeare', model 'qwen_tiny') applies to lm_eval tasks without finetune" in err


def test_propagated_state_follows_the_hidden_states_device():
    import torch

    from namex_bench.moe.state import PropagationState

    state = PropagationState(base={"w": torch.ones(2)}, momentum=({"w": torch.zeros(2)}, {"w": torch.zeros(2)}), depth=3)
    moved = state.to("meta")
    assert moved.base["w"].device.type == "meta" and moved.momentum[1]["w"].device.type == "meta" and moved.depth == 3
    assert PropagationState().to("meta") == PropagationState()
