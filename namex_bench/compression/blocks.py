"""The sparse MoE blocks of a ``transformers`` causal LM, read and rewritten with fewer experts.

A :class:`SparseBlock` is one MoE block of the model as the architecture built it: its
router (``gate``, or gpt-oss's ``router``) and its routed ``experts``. It gives the
compression methods one view of every layout:

* **transformers 5's stacked experts** (Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral,
  DeepSeek-V2/V3, gpt-oss): ``gate_up_proj`` and ``down_proj`` tensors with a leading
  expert axis, concatenated ``[E, 2I, H]`` (gate rows, then up rows) with ``down_proj
  [E, H, I]``, or transposed and interleaved as gpt-oss stores them (``gate_up_proj
  [E, H, 2I]``, gate in the even columns, up in the odd ones, ``down_proj [E, I, H]``,
  plus ``gate_up_proj_bias`` and ``down_proj_bias``). The experts module says which
  (``is_transposed``, ``is_concatenated``, ``has_bias``, set by transformers' experts
  decorator);
* **the older per-expert layout**: an ``nn.ModuleList`` of MLPs with
  ``gate_proj/up_proj/down_proj`` (Qwen, DeepSeek-MoE remote code) or Mixtral's
  ``w1/w3/w2`` (transformers 4).

:meth:`SparseBlock.experts_params` returns the routed experts in one canonical form,
``w_gate, w_up [N, I, H]``, ``w_down [N, H, I]`` (+ ``b_gate, b_up [N, I]``, ``b_down
[N, H]`` where the architecture has biases); :meth:`SparseBlock.router_params` every
router tensor with a leading expert axis (``weight [N, H]``; gpt-oss's ``bias [N]``;
DeepSeek-V3's ``e_score_correction_bias [N]``). :meth:`SparseBlock.rewrite` puts ``M``
experts and router rows of that form back, so the block (and, after
:func:`set_expert_count`, the model's config) is the architecture's own block with ``M``
experts: ``save_pretrained`` and ``from_pretrained`` round-trip it.

**Routing** is the architecture's own: transformers 5's routers return ``(router_logits,
top_k_weights, top_k_index)`` and are called as they are (DeepSeek-V3's sigmoid scores,
``e_score_correction_bias`` and group-limited top-k; gpt-oss's softmax over the top-k
logits, …). A router that does not (an ``nn.Linear`` gate of the older layout, DeepSeek-MoE's
remote ``MoEGate``) is read through its ``weight`` and routed by the architecture's rule in
:func:`~namex_bench.models.hf_moe.routing_from_config`, as the merging adapter does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models.hf_moe import HFRouter, block_router, find_moe_blocks, per_expert_names, read_expert_params, routing_from_config
from ..moe.experts import ExpertParams

#: Config fields that hold an architecture's number of routed experts (one or two of them, aliased).
EXPERT_COUNT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts")
#: Module attributes that hold the number of routed experts (routers, experts modules, blocks).
_COUNT_ATTRIBUTES = ("num_experts", "num_local_experts", "n_routed_experts", "out_features")


@dataclass(frozen=True)
class Routing:
    """One batch's routing: ``logits [T, N]`` (float32), the ``top_k`` experts of each token
    ``indices [T, k]`` and the weights their outputs are multiplied by ``weights [T, k]``."""

    logits: Tensor
    weights: Tensor
    indices: Tensor


class SparseBlock:
    """One sparse MoE block of a model: its router and routed experts (module docstring)."""

    def __init__(self, name: str, block: nn.Module, config: Any):
        self.name, self.block, self.config = name, block, config
        self.router_attr = next(attr for attr in ("gate", "router") if getattr(block, attr, None) is block_router(block))
        experts = block.experts
        if isinstance(experts, nn.ModuleList):
            self.layout, self.linear_names = "per_expert", per_expert_names(experts)
        else:
            read_expert_params(experts)  # checks the layout
            self.layout = "transposed" if getattr(experts, "is_transposed", False) else "stacked"
            self.interleaved = not getattr(experts, "is_concatenated", True)
        self._legacy_router: HFRouter | None = None

    # ------------------------------------------------------------------ what it holds

    @property
    def router(self) -> nn.Module:
        return getattr(self.block, self.router_attr)

    @property
    def experts(self) -> nn.Module:
        return self.block.experts

    @property
    def num_experts(self) -> int:
        return self.router.weight.shape[0]

    @property
    def top_k(self) -> int:
        k = getattr(self.router, "top_k", None) or getattr(self.block, "top_k", None) or self.config.num_experts_per_tok
        return int(k)

    @property
    def groups(self) -> int:
        """The number of expert groups of group-limited routing (DeepSeek), 1 without it."""
        n_group = getattr(self.router, "num_group", None)
        if not n_group or getattr(self.router, "topk_method", "group_limited_greedy") != "group_limited_greedy":
            return 1
        return int(n_group)

    @property
    def topk_group(self) -> int:
        return int(getattr(self.router, "topk_group", 1) or 1)

    # ------------------------------------------------------------------ routing and expert outputs

    def route(self, x: Tensor) -> Routing:
        """The architecture's routing of the tokens ``x [T, H]``."""
        if not isinstance(self.router, nn.Linear):
            out = self.router(x)
            if isinstance(out, tuple) and len(out) == 3 and out[0].shape == (x.shape[0], self.num_experts) and not out[2].is_floating_point():
                logits, weights, indices = out  # transformers 5: (router_logits, top_k_weights, top_k_index)
                return Routing(logits.float(), weights.float(), indices)
        if self._legacy_router is None:
            rule = routing_from_config(self.config)
            legacy = HFRouter(x.shape[-1], self.num_experts, rule.top_k, normalize_top_k=rule.normalize_top_k, group_limited=rule.group_limited)
            legacy.gate.weight = self.router.weight  # shares the gate's parameter, never a copy
            self._legacy_router = legacy
            self._scale = rule.routed_scaling_factor
        routing = self._legacy_router(x)
        weights, indices = routing.scores.topk(self._legacy_router.top_k, dim=-1)
        return Routing(routing.logits, weights * self._scale, indices)

    def expert_outputs(self, x: Tensor, experts: Tensor) -> Tensor:
        """``f_{e_t}(x_t)`` for every row: ``x [R, H]``, ``experts [R]`` (long) → ``[R, H]``,
        each row through its own expert, by the architecture's own expert computation."""
        if self.layout == "per_expert":
            out = torch.empty_like(x)
            for e in experts.unique().tolist():
                rows = (experts == e).nonzero().squeeze(1)
                out[rows] = self.experts[e](x[rows]).to(out.dtype)
            return out
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return self.experts(x, experts.unsqueeze(1), ones)

    # ------------------------------------------------------------------ canonical parameters

    def experts_params(self) -> ExpertParams:
        """The routed experts as ``w_gate, w_up [N, I, H]``, ``w_down [N, H, I]`` (+ biases), detached
        (:func:`~namex_bench.models.hf_moe.read_expert_params`)."""
        return read_expert_params(self.experts)

    def router_params(self) -> dict[str, Tensor]:
        """Every parameter and buffer of the router with a leading expert axis, detached."""
        n = self.num_experts
        tensors = {**dict(self.router.named_parameters(recurse=False)), **dict(self.router.named_buffers(recurse=False))}
        return {name: t.detach() for name, t in tensors.items() if t.dim() >= 1 and t.shape[0] == n}

    # ------------------------------------------------------------------ rewriting

    def check_routable(self, num_experts: int) -> None:
        """``ValueError`` unless the architecture's router can route over ``num_experts`` experts
        (e.g. DeepSeek-V3 scores a group by its two best experts, so every group needs two): a
        copy of the router with that many rows routes one token."""
        if num_experts < self.top_k:
            raise ValueError(f"{self.name}: cannot keep {num_experts} experts, fewer than the {self.top_k} each token is routed to")
        if isinstance(self.router, nn.Linear) or self.groups == 1:
            return
        probe = copy.deepcopy(self.router)
        for name, value in self.router_params().items():
            _replace(probe, name, value[:num_experts])
        for attr in _COUNT_ATTRIBUTES:
            if getattr(probe, attr, None) == self.num_experts:
                setattr(probe, attr, num_experts)
        try:
            with torch.no_grad():
                probe(torch.zeros(1, self.router.weight.shape[1], dtype=self.router.weight.dtype, device=self.router.weight.device))
        except (RuntimeError, IndexError) as exc:
            raise ValueError(f"{self.name}: its router cannot route over {num_experts} experts in {self.groups} groups ({exc})") from None

    def rewrite(self, experts: ExpertParams, router: dict[str, Tensor]) -> None:
        """Replace the routed experts and the router's rows by ``M`` new ones (canonical form,
        as :meth:`experts_params` and :meth:`router_params` give them); the block's, router's
        and experts module's expert counts follow."""
        old, new = self.num_experts, experts["w_gate"].shape[0]
        if set(router) != set(self.router_params()):
            raise ValueError(f"{self.name}: router tensors {sorted(router)} differ from the router's {sorted(self.router_params())}")
        if new < self.top_k:
            raise ValueError(f"{self.name}: {new} experts are fewer than the {self.top_k} each token is routed to")
        e = self.experts
        if self.layout == "per_expert":
            template = e[0]
            modules = []
            for i in range(new):
                module = copy.deepcopy(template)
                for short, attr in zip(("gate", "up", "down"), self.linear_names):
                    _set_linear(getattr(module, attr), experts["w_" + short][i], experts.get("b_" + short, [None] * new)[i])
                modules.append(module)
            self.block.experts = nn.ModuleList(modules)
        else:
            w_gate, w_up, w_down = experts["w_gate"], experts["w_up"], experts["w_down"]
            gate_up = torch.stack((w_gate, w_up), dim=2).flatten(1, 2) if self.interleaved else torch.cat((w_gate, w_up), dim=1)
            if self.layout == "transposed":
                gate_up, w_down = gate_up.transpose(1, 2), w_down.transpose(1, 2)
            _replace(e, "gate_up_proj", gate_up)
            _replace(e, "down_proj", w_down)
            if "b_gate" in experts:
                pair = (experts["b_gate"], experts["b_up"])
                _replace(e, "gate_up_proj_bias", torch.stack(pair, dim=2).flatten(1) if self.interleaved else torch.cat(pair, dim=1))
            if "b_down" in experts:
                _replace(e, "down_proj_bias", experts["b_down"])
        for name, value in router.items():
            _replace(self.router, name, value)
        for module in (self.block, self.router, self.experts):
            for attr in _COUNT_ATTRIBUTES:
                if getattr(module, attr, None) == old and isinstance(getattr(module, attr), int):
                    setattr(module, attr, new)
        self._legacy_router = None


def _replace(module: nn.Module, name: str, value: Tensor) -> None:
    """Put ``value`` where ``module.name`` was: a parameter stays a parameter (its dtype and
    device kept), a buffer a buffer (persistent or not, as it was)."""
    old = getattr(module, name)
    value = value.detach().to(dtype=old.dtype, device=old.device).contiguous()
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        module.register_buffer(name, value, persistent=name not in module._non_persistent_buffers_set)


def _set_linear(linear: nn.Linear, weight: Tensor, bias: Tensor | None) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)


def find_sparse_blocks(model: nn.Module) -> list[SparseBlock]:
    """Every sparse MoE block of ``model`` (:func:`~namex_bench.models.hf_moe.find_moe_blocks`: a module
    with routed ``experts`` and a router ``gate`` or ``router`` holding a ``weight [N, H]``), in order."""
    config = getattr(model, "config", None)
    return [SparseBlock(name, block, config) for name, block in find_moe_blocks(model)]


def set_expert_count(config: Any, old: int, new: int) -> list[str]:
    """Set the config's routed-expert count from ``old`` to ``new`` (every field that holds it);
    the fields changed. ``ValueError`` if no field held ``old``."""
    changed = [f for f in EXPERT_COUNT_FIELDS if getattr(config, f, None) == old]
    if not changed:
        raise ValueError(f"{type(config).__name__} has no expert-count field ({', '.join(EXPERT_COUNT_FIELDS)}) equal to {old}")
    for field in changed:
        setattr(config, field, new)
    return changed


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``total`` parameters, ``routed_experts`` (those of the routed experts), and
    ``active_per_token``: everything but the routed experts, plus the ``top_k`` of them a token runs through."""
    total = sum(p.numel() for p in model.parameters())
    routed = inactive = 0
    for block in find_sparse_blocks(model):
        size = sum(p.numel() for p in block.experts.parameters())
        routed += size
        inactive += size - size // block.num_experts * block.top_k
    return {"total": total, "routed_experts": routed, "active_per_token": total - inactive}
