"""What every task returns to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .examples import PerExample


@dataclass
class RunContext:
    """Where and how a run executes (not part of its identity)."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    limit: int | None = None
    parallel: str = "ddp"  # the run's model and task's `parallel`: ddp, fsdp or device_map


@dataclass
class TaskResult:
    """``metrics`` (headline scalars), their ``goals`` ("max"/"min"), the ``primary`` metric,
    per-cell tables, timings, parameter counts and the method's mechanism ``diagnostics``
    (``tasks/diagnostics.py``) — the measured part of a run record — with each metric's
    ``bounds`` (its range, ``None`` for an open end) and the per-example outcomes behind the
    metrics (``examples``, written to the record's sidecar)."""

    metrics: dict[str, float]
    goals: dict[str, str]
    primary: str
    cells: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    examples: PerExample | None = None
