"""One-shot compression of a ``transformers`` MoE LLM: every sparse block from ``N`` experts to ``M``.

:func:`compress_moe_llm` takes a model, a registered compression method and the model's
calibration statistics (:func:`~namex_bench.compression.calibration.calibrate`), and rewrites
the model in place into the same architecture with fewer experts:

1. **Budgets** (:func:`layer_budgets`): ``experts=M`` keeps ``M`` experts per block;
   ``removed=r`` removes ``round(r·N)`` of a block's ``N``. ``layer_budget="uniform"`` gives
   every block that number; ``"global"`` keeps the same total but lets the method's
   :meth:`~namex_bench.compression.base.CompressionMethod.importance` decide where: every
   block first keeps its ``top_k`` most important experts, then the remaining slots go to
   the most important experts of the whole model (MC-SMoE's and HC-SMoE's "dynamic"
   layer-wise budgets, ranked by usage frequency; REAP's saliency for ``reap_prune``).
2. **Expert groups**: under DeepSeek's group-limited routing (``n_group > 1``) a token's
   experts come from its best groups, so each group keeps ``M / n_group`` experts and is
   compressed on its own (``M`` must be a multiple of ``n_group``).
3. **Rewrite**: each block's experts, router rows (and per-expert router biases) are replaced
   by the method's plan, and the config's expert count is set to ``M``. The result is a normal
   model of its architecture: ``save_pretrained`` / ``from_pretrained`` round-trip it. A global
   budget that leaves blocks with different counts cannot be described by these configs (one
   expert count for every layer); such a model runs and evaluates in memory, and
   :func:`save_compressed` refuses it with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import CompressionMethod, LayerInputs, LayerPlan
from .blocks import SparseBlock, find_sparse_blocks, set_expert_count
from .calibration import LayerCalibration
from .registry import compressor_options, make_compressor

LAYER_BUDGETS = ("uniform", "global")


@dataclass
class CompressionResult:
    """What :func:`compress_moe_llm` did: the method, its resolved options, and per block the
    expert counts before and after and the original experts each new one came from."""

    method: str
    options: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def experts_before(self) -> list[int]:
        return [layer["experts_before"] for layer in self.layers]

    @property
    def experts_after(self) -> list[int]:
        return [layer["experts_after"] for layer in self.layers]

    @property
    def uniform(self) -> bool:
        return len(set(self.experts_after)) == 1


def kept_count(num_experts: int, experts: int | None, removed: float | None) -> int:
    """Experts a block of ``num_experts`` keeps: ``experts``, or ``num_experts − round(removed·num_experts)``."""
    if (experts is None) == (removed is None):
        raise ValueError("give exactly one of experts (kept per block) and removed (a fraction of each block's experts)")
    if experts is not None:
        return int(experts)
    if not 0 <= removed < 1:
        raise ValueError(f"removed must be a fraction in [0, 1), got {removed}")
    return num_experts - round(removed * num_experts)


def layer_budgets(
    blocks: list[SparseBlock], calibration: list[LayerCalibration], method: CompressionMethod, *,
    experts: int | None = None, removed: float | None = None, layer_budget: str = "uniform",
) -> list[int]:
    """The number of experts each block keeps (module docstring)."""
    if layer_budget not in LAYER_BUDGETS:
        raise ValueError(f"layer_budget must be one of {', '.join(LAYER_BUDGETS)}, got {layer_budget!r}")
    targets = [kept_count(b.num_experts, experts, removed) for b in blocks]
    for b, m in zip(blocks, targets):
        if not b.top_k <= m <= b.num_experts:
            raise ValueError(f"{b.name}: cannot keep {m} of its {b.num_experts} experts (each token is routed to {b.top_k})")
        if b.groups > 1:
            if m % b.groups or b.topk_group * (m // b.groups) < b.top_k:
                raise ValueError(
                    f"{b.name}: {m} experts cannot be split over its {b.groups} expert groups "
                    f"(a multiple of {b.groups}, with at least {b.top_k} in its {b.topk_group} best groups)"
                )
            b.check_routable(m)
    if layer_budget == "uniform":
        return targets
    if any(b.groups > 1 for b in blocks):
        raise ValueError("a global layer budget cannot keep DeepSeek's expert groups equal in size; use layer_budget: uniform")
    floors = [b.top_k for b in blocks]
    ranked = []
    for layer, (b, stats) in enumerate(zip(blocks, calibration)):
        scores = method.importance(stats).tolist()
        order = sorted(range(b.num_experts), key=lambda j: (-scores[j], j))
        ranked += [(-scores[j], layer, j) for j in order[floors[layer]:]]
    kept = list(floors)
    for _, layer, _ in sorted(ranked)[: sum(targets) - sum(floors)]:
        kept[layer] += 1
    return kept


def compress_block(block: SparseBlock, stats: LayerCalibration, method: CompressionMethod, num_kept: int, index: int) -> LayerPlan:
    """The method's plan for one block (each of DeepSeek's expert groups compressed on its own)."""
    experts = {k: v.float() for k, v in block.experts_params().items()}
    router = {k: v.float() for k, v in block.router_params().items()}
    inputs = LayerInputs(stats, experts, router, block.top_k, index)
    if stats.num_experts != block.num_experts:
        raise ValueError(f"{block.name}: the calibration saw {stats.num_experts} experts, the block has {block.num_experts}")
    groups = block.groups
    if groups == 1:
        return method.compress(inputs, num_kept)
    size = block.num_experts // groups
    plans = []
    for g in range(groups):
        members = list(range(g * size, (g + 1) * size))
        plan = method.compress(inputs.subset(members), num_kept // groups)
        plans.append(LayerPlan(plan.experts, plan.router, [[members[j] for j in group] for group in plan.groups]))
    return LayerPlan(
        {k: torch.cat([p.experts[k] for p in plans]) for k in experts},
        {k: torch.cat([p.router[k] for p in plans]) for k in router},
        [group for p in plans for group in p.groups],
    )


@torch.no_grad()
def compress_moe_llm(
    model: nn.Module, method: str, calibration: list[LayerCalibration], *, options: dict[str, Any] | None = None,
    experts: int | None = None, removed: float | None = None, layer_budget: str = "uniform",
) -> CompressionResult:
    """Compress every sparse block of ``model`` in place with the registered ``method`` (and
    its ``options``), from the ``calibration`` that :func:`calibrate` measured on this model."""
    compressor = make_compressor(method, options)
    blocks = find_sparse_blocks(model)
    if len(blocks) != len(calibration):
        raise ValueError(f"the model has {len(blocks)} sparse blocks, the calibration {len(calibration)}")
    budgets = layer_budgets(blocks, calibration, compressor, experts=experts, removed=removed, layer_budget=layer_budget)
    result = CompressionResult(method, compressor_options(method, options))
    before = [b.num_experts for b in blocks]
    for index, (block, stats, num_kept) in enumerate(zip(blocks, calibration, budgets)):
        plan = compress_block(block, stats, compressor, num_kept, index)
        if plan.num_experts != num_kept:
            raise RuntimeError(f"{method} returned {plan.num_experts} experts for {block.name}, not {num_kept}")
        block.rewrite(plan.experts, plan.router)
        result.layers.append({"layer": block.name, "experts_before": before[index], "experts_after": num_kept, "groups": plan.groups})
    if result.uniform and len(set(before)) == 1 and hasattr(model, "config"):
        set_expert_count(model.config, before[0], budgets[0])
    return result


def save_compressed(model: nn.Module, result: CompressionResult, folder: str | Path, tokenizer: Any = None) -> Path:
    """``save_pretrained`` a compressed model (and its tokenizer) into ``folder``; a model whose
    blocks kept different numbers of experts is refused (its config cannot say so)."""
    if not result.uniform:
        raise ValueError(
            f"the blocks kept different numbers of experts ({result.experts_after}); {type(model.config).__name__} has one expert "
            "count for every layer, so from_pretrained could not rebuild it — compress with layer_budget='uniform' to save"
        )
    folder = Path(folder)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
