"""``namex-bench bench nbs``: :func:`nash_bargaining` against the Nash-MTL reference.

For each ``N``, ``problems`` Gram matrices of correlated random vectors are solved by

* the reference — convex-concave steps in cvxpy/ECOS on the CPU, one problem at a time;
* ``nash_bargaining`` one problem per call, as a NAMEx layer calls it (a fixed 30
  iterations, no host synchronisation);
* the same with early exit (``tol=1e-12``: a host synchronisation per iteration, which
  costs nothing on a CPU);
* all problems in one batched call, with early exit;
* with ``compile=True`` also ``torch.compile(nash_bargaining)`` (fixed 30 iterations: an
  early exit is a host synchronisation, which a compiled graph cannot hold), one problem
  per call and batched — on a GPU in ``reduce-overhead`` mode, i.e. captured in a CUDA
  graph — and its largest relative difference from the eager solve.

Speed-ups are reference time over ours, per problem; agreement is the largest
``|α_ours − α_ref| / max|α_ref|`` over the problems.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ..nash.reference import NashMTLReference
from ..nash.solver import first_order_residual, nash_bargaining
from .timing import machine_description, synchronize


def gram_matrices(n: int, problems: int, dim: int, seed: int) -> torch.Tensor:
    """``[problems, n, n]`` Gram matrices of vectors that share a common component."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(problems, n, dim, generator=g, dtype=torch.float64)
    x = x + 0.5 * torch.randn(problems, 1, dim, generator=g, dtype=torch.float64)
    x = x * torch.exp(0.5 * torch.randn(problems, n, 1, generator=g, dtype=torch.float64))
    return x @ x.transpose(1, 2)


def _per_call(fn, items, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for item in items:
        fn(item)
    synchronize(device)
    return (time.perf_counter() - start) / len(items)


def _median_batched(fn, G: torch.Tensor, device: torch.device, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        fn(G)
        synchronize(device)
        times.append((time.perf_counter() - start) / len(G))
    return statistics.median(times)


def compiled_columns(Gd: torch.Tensor, device: torch.device) -> dict:
    """Per-problem times of the compiled solver (one problem per call, batched), and its
    largest difference from the eager one relative to the largest weight."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"  # CUDA graphs exist on GPUs only
    solve = torch.compile(nash_bargaining, mode=mode, dynamic=False)
    for _ in range(3):  # compile both shapes, then warm up
        solve(Gd[0])
        solve(Gd)
    eager = nash_bargaining(Gd).weights
    difference = float(((solve(Gd).weights - eager).abs().amax(-1) / eager.abs().amax(-1)).max())
    return {
        "compiled µs: layer": round(_per_call(lambda g: solve(g), list(Gd), device) * 1e6),
        "batched  ": round(_median_batched(lambda g: solve(g), Gd, device) * 1e6, 1),
        "eager µs: batched, 30 it.": round(_median_batched(lambda g: nash_bargaining(g), Gd, device) * 1e6, 1),
        "compiled vs eager": f"{difference:.1e}",
    }


def run_nbs_bench(
    sizes: list[int], problems: int, device: torch.device, dim: int = 1024, seed: int = 0, compile: bool = False
) -> tuple[list[dict], str]:
    rows = []
    for n in sizes:
        G = gram_matrices(n, problems, dim, seed + n)
        reference = NashMTLReference(n)
        reference.solve(G[0].numpy())  # warm-up: cvxpy compiles the problem once
        start = time.perf_counter()
        ref = [reference.solve(g.numpy())[0] for g in G]
        t_ref = (time.perf_counter() - start) / problems

        Gd = G.to(device)
        for _ in range(3):  # warm-up
            nash_bargaining(Gd[0])
            nash_bargaining(Gd)
        t_single = _per_call(lambda g: nash_bargaining(g), list(Gd), device)
        t_early = _per_call(lambda g: nash_bargaining(g, tol=1e-12), list(Gd), device)
        t_batch = _median_batched(lambda g: nash_bargaining(g, tol=1e-12), Gd, device)
        alpha, residual = nash_bargaining(Gd, tol=1e-12)

        alpha = alpha.cpu().numpy()
        ref = np.stack(ref)
        agreement = float(np.max(np.abs(alpha - ref).max(1) / np.abs(ref).max(1)))
        ref_residual = float(first_order_residual(G, torch.from_numpy(ref)).max())
        rows.append(
            {
                "N": n,
                "reference µs": round(t_ref * 1e6),
                "ours µs: layer": round(t_single * 1e6),
                "early exit": round(t_early * 1e6),
                "batched": round(t_batch * 1e6, 1),
                "speed-up: layer": round(t_ref / t_single, 1),
                "early exit ": round(t_ref / t_early, 1),
                "batched ": round(t_ref / t_batch, 1),
                "agreement": f"{agreement:.1e}",
                "residual ours": f"{float(residual.max()):.1e}",
                "residual ref": f"{ref_residual:.1e}",
                **(compiled_columns(Gd, device) if compile else {}),
            }
        )
    setup = (
        f"{problems} problems per N, vectors of dimension {dim}; per-problem times; ours on {machine_description(device)}, "
        "reference (Nash-MTL convex-concave steps, cvxpy/ECOS) on the CPU; layer = one problem per call, fixed 30 "
        "iterations; early exit = tol 1e-12; batched = all problems in one call, tol 1e-12"
        + ("; compiled = torch.compile(nash_bargaining), fixed 30 iterations" + (" in a CUDA graph" if device.type == "cuda" else "") if compile else "")
    )
    return rows, setup
