"""The contract of a compression method, and the plans it returns.

A compression method reduces one sparse MoE block from ``N`` routed experts to ``M``. It is
one :class:`CompressionMethod` subclass in one file, registered by name with
:func:`~namex_bench.compression.registry.register_compressor`. It gets a
:class:`LayerInputs` — the block's calibration statistics, its experts in canonical form and
its router rows — and returns a :class:`LayerPlan`: the ``M`` new experts, their router rows,
and which original experts each came from. Everything else — the calibration pass, per-layer
budgets, DeepSeek's expert groups, rewriting the block and the config — belongs to
:func:`~namex_bench.compression.compress.compress_moe_llm`, so a method is a short file.

:func:`pruned` and :func:`merged` build the two kinds of plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..moe.experts import ExpertParams
from .calibration import LayerCalibration


@dataclass
class LayerInputs:
    """One block as a method sees it: ``calibration`` statistics, ``experts`` (``w_gate, w_up
    [N, I, H]``, ``w_down [N, H, I]``, biases where the architecture has them, float32),
    ``router`` rows (``weight [N, H]``, and the architecture's per-expert biases), the block's
    ``top_k``, and ``index``, its position among the model's sparse blocks."""

    calibration: LayerCalibration
    experts: ExpertParams
    router: dict[str, Tensor]
    top_k: int
    index: int = 0

    @property
    def num_experts(self) -> int:
        return self.experts["w_gate"].shape[0]

    def subset(self, experts: list[int]) -> LayerInputs:
        """The inputs restricted to some experts (DeepSeek's group-limited routing compresses each group on its own)."""
        idx = torch.as_tensor(experts, dtype=torch.long)
        return LayerInputs(
            self.calibration.subset(idx), {k: v[idx] for k, v in self.experts.items()}, {k: v[idx] for k, v in self.router.items()},
            self.top_k, self.index,
        )


@dataclass
class LayerPlan:
    """The compressed block: ``experts`` and ``router`` rows with ``M`` on the leading axis, and
    ``groups[m]``, the original experts new expert ``m`` was made from (one for a pruned block)."""

    experts: ExpertParams
    router: dict[str, Tensor]
    groups: list[list[int]]

    @property
    def num_experts(self) -> int:
        return len(self.groups)


def pruned(inputs: LayerInputs, keep: list[int]) -> LayerPlan:
    """Keep the experts ``keep`` (in their original order) and their router rows; drop the rest."""
    keep = sorted(int(j) for j in keep)
    if len(set(keep)) != len(keep):
        raise ValueError(f"pruning keeps an expert twice: {keep}")
    idx = torch.tensor(keep, dtype=torch.long)
    return LayerPlan({k: v[idx] for k, v in inputs.experts.items()}, {k: v[idx] for k, v in inputs.router.items()}, [[j] for j in keep])


def merged(inputs: LayerInputs, groups: list[list[int]], weights: list[Tensor], router_rows: list[int], experts: list[ExpertParams] | None = None) -> LayerPlan:
    """One new expert per group: ``Σ_{j∈group} w_j θ_j`` with the group's ``weights`` (normalised
    to sum to 1), from ``experts[c]`` (the group's members, e.g. aligned by a permutation; default
    their parameters as they are); its router rows are those of the member ``router_rows[c]``.
    Groups are ordered by their router member."""
    order = sorted(range(len(groups)), key=lambda c: router_rows[c])
    new: dict[str, list[Tensor]] = {k: [] for k in inputs.experts}
    for c in order:
        members = torch.tensor(groups[c], dtype=torch.long)
        w = torch.as_tensor(weights[c], dtype=torch.float64)
        if w.shape != (len(members),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"merge weights of group {groups[c]} must be {len(members)} non-negative numbers with a positive sum, got {w.tolist()}")
        w = w / w.sum()
        params = experts[c] if experts is not None else {k: v[members] for k, v in inputs.experts.items()}
        for k, v in params.items():
            new[k].append(torch.tensordot(w.to(v.dtype), v, dims=1))
    rows = torch.tensor([router_rows[c] for c in order], dtype=torch.long)
    return LayerPlan({k: torch.stack(v) for k, v in new.items()}, {k: v[rows] for k, v in inputs.router.items()}, [sorted(groups[c]) for c in order])


def top(scores: Tensor, count: int) -> list[int]:
    """The ``count`` experts with the highest ``scores`` (ties: the lower index first)."""
    order = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))
    return order[:count]


class CompressionMethod:
    """Base class of compression methods. Subclasses take their options as keyword arguments
    with defaults (documented in the class docstring, whose first line describes the method)
    and implement :meth:`compress`; :meth:`importance` ranks experts for global budgets."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "prune"  # "prune" or "merge"

    def __init__(self) -> None:
        pass

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def importance(self, calibration: LayerCalibration) -> Tensor:
        """Per-expert importance ``[N]`` for a global budget (which layers keep more experts):
        by default the usage ``frequency / tokens``, which is comparable across layers."""
        return calibration.usage

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:  # pragma: no cover - abstract
        raise NotImplementedError
