"""Side-by-side timing: candidates run interleaved, round by round, in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each candidate.

    Every round calls each candidate once, in turn, so that drifts of the machine
    (clock, other load, caches) affect all of them alike; the median over rounds
    discards outliers.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def machine_description(device: torch.device) -> str:
    """A one-line description of where a benchmark ran."""
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()} ({threads} threads), torch {torch.__version__}"
