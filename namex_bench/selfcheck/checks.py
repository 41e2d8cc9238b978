"""``namex-bench selfcheck``: what to run first on a new machine, GPU or CPU.

Each check gives one row — name, PASS/FAIL, what it found, seconds:

* **environment** — torch, the device, CUDA, GPUs, bf16 support, what ``precision: auto``
  resolves to, the float32-matmul and TF32 settings (they enter every run's key);
* **layers** — per registered method and per low precision (bf16; fp16 too): the method's
  MoE layer stack, forward and backward, on random and on upcycled experts, against
  float32 (``selfcheck/numerics.py``: finite, within the stated tolerances); on CUDA with
  ``torch.cuda.set_sync_debug_mode("warn")``, counting the hidden host synchronisations
  of the low-precision pass;
* **bench layers** — ``namex-bench bench layers`` at a small shape, float32 and bf16;
* **tiny suite** — every method, one epoch of a small ViT-MoE on MNIST (64 images),
  ``precision: bf16``, on one device, through the runner;
* **tiny suite, torchrun** — the same under ``torchrun`` with 2 processes (2 GPUs when
  there are 2; 2 gloo processes on a CPU), skipped on a machine with one GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import autocast_dtype, describe_precision, precision_config
from ..methods.registry import available_methods
from .numerics import EXPERT_SETS, StackShape, comparable_errors, method_stack, run_stack, violations


@dataclass
class Check:
    """One row of the selfcheck table; ``passed=None`` means skipped."""

    name: str
    passed: bool | None
    detail: str
    seconds: float = 0.0

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "skip"}[self.passed]


def timed(name: str, fn: Callable[[], tuple[bool | None, str]]) -> Check:
    """Run one check; an exception is a failure whose message is the detail."""
    start = time.perf_counter()
    try:
        passed, detail = fn()
    except Exception as exc:  # a check that crashes is a failed check, and the others still run
        passed, detail = False, f"{type(exc).__name__}: {exc}"
    return Check(name, passed, detail, time.perf_counter() - start)


def low_precisions(device: torch.device) -> list[torch.dtype]:
    """The autocast types to check on ``device``: bf16 where it is supported, and fp16."""
    bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    return [torch.bfloat16, torch.float16] if bf16 else [torch.float16]


def environment(device: torch.device) -> tuple[bool, str]:
    parts = [f"torch {torch.__version__}"]
    if device.type == "cuda":
        parts += [torch.cuda.get_device_name(device), f"CUDA {torch.version.cuda}", f"{torch.cuda.device_count()} GPU(s)",
                  f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'NOT supported'}"]
    else:
        parts += [f"CPU, {torch.get_num_threads()} threads", "bf16/fp16 through CPU autocast"]
    auto = autocast_dtype(device, "auto")
    parts.append(f"precision auto = {describe_precision(precision_config(device, auto))}")
    parts.append(f"float32 matmul precision {torch.get_float32_matmul_precision()}")
    return True, "; ".join(parts)


def count_host_syncs(device: torch.device, fn: Callable[[], object]) -> int | None:
    """How many synchronising CUDA calls ``fn`` makes (``set_sync_debug_mode("warn")``); None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize(device)  # the pass's kernels finish here, outside the count
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def method_layers(method: str, dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """The method's stack on random and upcycled experts under ``dtype`` autocast vs float32."""
    notes, passed = [], True
    for experts in EXPERT_SETS:
        errors = comparable_errors(method, experts, dtype, device=device)
        problems = violations(errors)
        passed = passed and not problems
        figures = ", ".join(f"{k} {v:.2g}" for k, v in errors.in_eps().items() if v is not None)
        note = f"{experts}: {figures} eps"
        if errors.routing_changes:
            note += f" ({errors.routing_changes} routing decision(s) differ from float32 with every seed: only finiteness checked)"
        notes.append(note + ("" if not problems else f" — {'; '.join(problems)}"))
    shape = StackShape()
    layers = method_stack(method, "random", shape, device=device)
    x = torch.randn(shape.batch, shape.seq_len, shape.d_model, device=device)
    syncs = count_host_syncs(device, lambda: run_stack(layers, x, torch.ones_like(x), dtype))
    if syncs is not None:
        notes.append(f"{syncs} host sync(s) in forward+backward")
    return passed, "; ".join(notes)


def layer_bench(device: torch.device, dtype: torch.dtype | None, methods: tuple[str, ...]) -> tuple[bool, str]:
    from ..bench.layers import LayerBenchConfig, run_layer_bench

    cfg = LayerBenchConfig(batch=2, seq_len=32, d_model=64, experts=4, methods=methods, repeats=3, warmup=1)
    rows, _ = run_layer_bench(cfg, device, dtype)
    ratios = {row["layer"]: row["× dense"] for row in rows if row["layer"] != "dense FFN"}
    slowest = max(ratios, key=ratios.get)
    return True, f"B=2, T=32, d=64, N=4: every method ran; slowest {slowest} at {ratios[slowest]:.1f}× the dense FFN"


TINY_SUITE = """\
name: selfcheck
seeds: [0]
device: {device}
precision: {precision}
reference: smear
methods:
{methods}
models:
  - name: vit_tiny
    builder: vit_moe
    params: {{patch_size: 14, embed_dim: 16, depth: 3, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 4}}
tasks:
  - name: mnist
    type: image_classification
    data: {{source: mnist5k}}
    train: {{epochs: 1, batch_size: 16, lr: 1.0e-3}}
"""


def write_tiny_suite(folder: Path, device: str, precision: str, methods: tuple[str, ...]) -> Path:
    """The selfcheck's suite: ``methods`` on a 3-block ViT-MoE, one epoch of MNIST."""
    path = folder / "selfcheck.yaml"
    listed = "\n".join(f"  - name: {m}" for m in methods)
    path.write_text(TINY_SUITE.format(device=device, precision=precision, methods=listed))
    return path


def suite_outcome(results: Path, methods: tuple[str, ...], precision: str) -> tuple[bool, str]:
    from ..runner.records import read_records

    records = read_records(results, "selfcheck-limit64")
    ok = [r for r in records if r["status"] == "ok"]
    failed = [f"{r['name']}: {r['error']['type']}: {r['error']['message']}" for r in records if r["status"] != "ok"]
    passed = len(ok) == len(methods) and not failed
    detail = f"{len(ok)}/{len(methods)} runs ok in {precision}"
    if ok:
        detail += f", top-1 {min(r['metrics']['top1'] for r in ok):.2f}–{max(r['metrics']['top1'] for r in ok):.2f} after 4 steps"
    return passed, detail + "".join(f"; {f}" for f in failed)


def tiny_suite(device: torch.device, methods: tuple[str, ...], precision: str, folder: Path) -> tuple[bool, str]:
    from ..runner.runner import run_suite
    from ..suite.loader import load_suite

    suite, _ = load_suite(str(write_tiny_suite(folder, device.type, precision, methods)))
    results = folder / "single"
    run_suite(suite, results, limit=64)
    return suite_outcome(results, methods, precision)


def tiny_suite_torchrun(device: torch.device, methods: tuple[str, ...], precision: str, folder: Path) -> tuple[bool | None, str]:
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return None, f"{torch.cuda.device_count()} GPU: torchrun needs 2"
    path = write_tiny_suite(folder, device.type, precision, methods)
    results = folder / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "namex_bench.cli",
               "run", str(path), "--results", str(results), "--limit", "64", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if device.type == "cpu" else dict(os.environ)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    passed, detail = suite_outcome(results, methods, precision)
    if proc.returncode != 0 and passed:
        passed, detail = False, detail + f"; torchrun exited with {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    return passed, f"2 {'GPUs' if device.type == 'cuda' else 'gloo processes'}: {detail}"


def run_selfcheck(device: torch.device, methods: tuple[str, ...] = (), suites: bool = True,
                  report: Callable[[Check], None] = lambda check: None) -> list[Check]:
    """Every check in turn (``report`` is called with each row as it finishes)."""
    methods = methods or tuple(available_methods())
    checks: list[Check] = []

    def add(name: str, fn: Callable[[], tuple[bool | None, str]]) -> None:
        checks.append(timed(name, fn))
        report(checks[-1])

    add("environment", lambda: environment(device))
    for dtype in low_precisions(device):
        for method in methods:
            add(f"layers {method} {str(dtype).removeprefix('torch.')}", lambda m=method, d=dtype: method_layers(m, d, device))
    for dtype in (None, low_precisions(device)[0]):
        add(f"bench layers {'float32' if dtype is None else str(dtype).removeprefix('torch.')}", lambda d=dtype: layer_bench(device, d, methods))
    if suites:
        precision = "bf16" if torch.bfloat16 in low_precisions(device) else "fp16"
        with tempfile.TemporaryDirectory(prefix="namex-selfcheck-") as tmp:
            add(f"tiny suite, 1 {device.type}", lambda: tiny_suite(device, methods, precision, Path(tmp)))
            add("tiny suite, torchrun", lambda: tiny_suite_torchrun(device, methods, precision, Path(tmp)))
    return checks
