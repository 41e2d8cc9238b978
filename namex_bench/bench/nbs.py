"""``namex-bench bench nbs``: :func:`nash_bargaining` against the Nash-MTL reference.

For each ``N``, ``problems`` Gram matrices of correlated random vectors are solved by

* the reference — convex-concave steps in cvxpy/ECOS on the CPU, one problem at a time;
* ``nash_bargaining`` one problem per call, as a NAMEx layer calls it (fixed iterations,
  no host synchronisation), and with early exit (``tol``), which costs nothing on a CPU;
* ``nash_bargaining`` on all problems in one batched call.

Speed-ups are reference time over ours, per problem; agreement is the largest
``|α_ours − α_ref| / max|α_ref|`` over the problems.
"""

from __future__ import annotations

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


def run_nbs_bench(sizes: list[int], problems: int, device: torch.device, dim: int = 1024, seed: int = 0) -> tuple[list[dict], str]:
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
        synchronize(device)
        start = time.perf_counter()
        alpha, residual = nash_bargaining(Gd)
        synchronize(device)
        t_batch = (time.perf_counter() - start) / problems

        alpha = alpha.cpu().numpy()
        ref = np.stack(ref)
        agreement = float(np.max(np.abs(alpha - ref).max(1) / np.abs(ref).max(1)))
        ref_residual = float(first_order_residual(G, torch.from_numpy(ref)).max())
        rows.append(
            {
                "N": n,
                "reference ms": round(t_ref * 1e3, 3),
                "ours ms (1/call)": round(t_single * 1e3, 3),
                "ours ms (1/call, tol)": round(t_early * 1e3, 3),
                "ours µs (batched)": round(t_batch * 1e6, 2),
                "speed-up 1/call": round(t_ref / t_single, 1),
                "speed-up tol": round(t_ref / t_early, 1),
                "speed-up batched": round(t_ref / t_batch, 1),
                "agreement": f"{agreement:.1e}",
                "residual ours": f"{float(residual.max()):.1e}",
                "residual ref": f"{ref_residual:.1e}",
            }
        )
    setup = f"{problems} problems per N, vectors of dimension {dim}; ours on {machine_description(device)}; reference cvxpy/ECOS on the CPU"
    return rows, setup
