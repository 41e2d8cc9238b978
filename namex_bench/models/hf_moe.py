"""Pretrained MoE LLMs from ``transformers``: their sparse MoE blocks driven by any method.

:func:`adapt_moe_llm` takes a ``transformers`` MoE causal LM — Qwen2-MoE (Qwen1.5-MoE),
Mixtral, OLMoE or DeepSeek-V2 — and replaces every sparse MoE block by an
:class:`HFMoEBlock`, which holds

* an :class:`~namex_bench.models.moe_model.MoESlot` around an
  :class:`~namex_bench.moe.layer.MoELayer` driven by a registered method. The block's
  router weight is copied into ``router.gate.weight`` and its experts into the
  :class:`~namex_bench.moe.experts.ExpertBank` (``glu`` experts: ``w_gate, w_up, w_down``,
  no biases). Both layouts of the experts are read: ``transformers`` 5's stacked tensors
  (``gate_up_proj [E, 2I, H]`` — gate rows first, then up rows — and ``down_proj [E, H, I]``)
  and the older ``nn.ModuleList`` of per-expert MLPs (``gate_proj/up_proj/down_proj`` or
  Mixtral's ``w1/w3/w2``);
* the architecture's **shared-expert branch**, unchanged, computed alongside the MoE layer
  and added to its output as the original block does (Qwen2-MoE:
  ``sigmoid(shared_expert_gate(x)) · shared_expert(x)``; DeepSeek-V2: ``shared_experts(x)``).

**Base expert** ``E_m`` (methods that use one: ``camex`` in every MoE layer; ``ep_camex``,
``namex``, ``namex_mom`` in the first one): with ``base="auto"`` (default) it is a copy of
the block's shared expert (Qwen2-MoE ``shared_expert``, the raw MLP without its sigmoid
gate; DeepSeek-V2 ``shared_experts``) when that expert has the routed experts' shape
(``shared_expert_intermediate_size == moe_intermediate_size``, resp. ``n_shared_experts == 1``),
and otherwise — no shared expert (Mixtral, OLMoE) or one of another width (the released
Qwen1.5-MoE-A2.7B and DeepSeek-V2 checkpoints) — the mean of the routed experts.
``base="shared"`` insists on the shared expert (error if there is none or its shape
differs); ``base="mean"`` always takes the mean. The shared branch's output is added in
either case: ``E_m`` is a copy that the merging method may train, not a replacement.
Expert propagation's ``offset`` reading anchors every layer's base at that layer's own
shared expert (or mean), as an upcycled layer's at its dense FFN.

**Routing** follows the architecture (:class:`HFRouting`, read from the model's config):

==============  =========================================================================
Mixtral         softmax over all logits, top-k, renormalised over the k (= our ``Router``)
Qwen2-MoE/OLMoE softmax over all logits, top-k, renormalised only if ``norm_topk_prob``
DeepSeek-V2     softmax over all logits, top-k (``greedy``, or ``group_limited_greedy``:
                only experts in the ``topk_group`` best of ``n_group`` groups, a group
                scored by its best expert), never renormalised (``transformers`` ignores
                ``norm_topk_prob`` for V2), routed output × ``routed_scaling_factor``
DeepSeek-MoE    (remote code, ``model_type: deepseek``) softmax, greedy top-k, renormalised
                only if ``norm_topk_prob``
==============  =========================================================================

Group-limited selection is a constraint on sparse dispatch: with dense routing
(``top_k = N``, the merging methods ``smear``/``camex``/``namex``…) it is not applied,
and every expert gets its softmax probability.

:class:`HFRouter` (a :class:`~namex_bench.moe.router.Router` with the two narrowly named
options ``normalize_top_k`` and ``group_limited``) expresses these; the routed scaling
factor multiplies the MoE layer's output (for ``smoe`` that is exactly the original
``factor · Σ s_i FFN_i``; for merging methods ``factor · FFN(x; Ē)``, so the merged
parameters themselves are never rescaled). With ``method="smoe"`` and these semantics the
adapted model reproduces the original logits (float32: ~1e-6).

Not reproduced: Mixtral's ``router_jitter_noise`` (training-time input jitter; the
adapter leaves it out, so the adapted model equals the original in ``eval`` mode or with
``router_jitter_noise = 0``); the original models' own router-logit outputs and their
load-balancing loss (``output_router_logits`` is switched off: the MoE layers report
their own auxiliary loss in :class:`~namex_bench.models.moe_model.ModelOutput`).

Causality: merging methods pool ``segment`` s of tokens (default) — never ``sequence``
pooling, which would let every token see the future; the adapter rejects it.
Incremental decoding with a KV cache feeds the MoE layers one token at a time, so only
token-routed methods (``smoe``) give the same result as a full forward pass there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..methods.base import BaseExpert
from ..methods.registry import get_method
from ..moe.experts import ExpertParams, ExpertSpec
from ..moe.layer import MoELayer
from ..moe.router import Router, Routing, wide_linear
from ..moe.upcycle import dense_ffn_params, identify_activation
from ..seeding import seeded
from .moe_model import MoEModel, MoESlot, PassHolder

__all__ = ["HFMoEBlock", "HFMoEModel", "HFRouter", "HFRouting", "SharedExpertBranch", "adapt_moe_llm", "find_moe_blocks", "routing_from_config"]

CAUSAL_POOLING = ("token", "segment")


@dataclass(frozen=True)
class HFRouting:
    """The routing semantics of an architecture's sparse MoE block.

    ``top_k`` — experts per token; ``normalize_top_k`` — renormalise the top-k
    probabilities to sum to 1; ``routed_scaling_factor`` — multiplies the routed experts'
    output; ``group_limited`` — ``(n_group, topk_group)`` for DeepSeek's group-limited
    greedy selection, or ``None``.
    """

    top_k: int
    normalize_top_k: bool = True
    routed_scaling_factor: float = 1.0
    group_limited: tuple[int, int] | None = None


def routing_from_config(config: Any) -> HFRouting:
    """The :class:`HFRouting` of a ``transformers`` MoE config (by ``config.model_type``)."""
    kind = getattr(config, "model_type", None)
    k = config.num_experts_per_tok
    if kind == "mixtral":
        return HFRouting(k, normalize_top_k=True)
    if kind in ("qwen2_moe", "olmoe"):
        return HFRouting(k, normalize_top_k=bool(config.norm_topk_prob))
    if kind == "deepseek":  # DeepSeek-MoE (remote code): softmax, greedy top-k, renormalised if norm_topk_prob
        return HFRouting(k, normalize_top_k=bool(getattr(config, "norm_topk_prob", False)))
    if kind == "deepseek_v2":
        method = getattr(config, "topk_method", "greedy") or "greedy"
        if method == "greedy":
            group = None
        elif method == "group_limited_greedy":
            group = (int(config.n_group), int(config.topk_group))
        else:
            raise ValueError(f"DeepSeek-V2 topk_method {method!r} is not supported (greedy, group_limited_greedy)")
        return HFRouting(k, normalize_top_k=False, routed_scaling_factor=float(config.routed_scaling_factor), group_limited=group)
    raise ValueError(
        f"no routing rule for model_type {kind!r} (known: mixtral, qwen2_moe, olmoe, deepseek_v2, deepseek); pass routing=HFRouting(...)"
    )


class HFRouter(Router):
    """A :class:`Router` with the selection of ``transformers`` MoE routers.

    ``probs = softmax(logits)`` over all experts; the top-k experts are chosen among them
    (with ``group_limited = (n_group, topk_group)`` only among the experts of the
    ``topk_group`` groups whose best expert scores highest); ``scores`` are their
    probabilities, renormalised over the k when ``normalize_top_k`` (then identical to
    :class:`Router`'s softmax over the top-k logits). Noisy gating is not supported.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int,
        *,
        normalize_top_k: bool = True,
        group_limited: tuple[int, int] | None = None,
    ):
        super().__init__(d_model, num_experts, top_k, noisy_gating=False)
        if group_limited is not None:
            n_group, topk_group = group_limited
            if n_group < 1 or num_experts % n_group or not 1 <= topk_group <= n_group:
                raise ValueError(f"group_limited={group_limited}: need n_group dividing {num_experts} and 1 <= topk_group <= n_group")
            if topk_group * (num_experts // n_group) < top_k:
                raise ValueError(f"group_limited={group_limited} leaves fewer than top_k={top_k} experts")
        self.normalize_top_k = normalize_top_k
        self.group_limited = group_limited

    def forward(self, h: Tensor) -> Routing:
        logits = wide_linear(h, self.gate)  # float32, as every router here (moe/router.py)
        probs = logits.softmax(dim=-1)
        candidates = probs
        if self.group_limited is not None:
            n_group, topk_group = self.group_limited
            grouped = probs.unflatten(-1, (n_group, self.num_experts // n_group))
            best_groups = grouped.amax(dim=-1).topk(topk_group, dim=-1).indices
            group_mask = torch.zeros_like(grouped[..., 0]).scatter(-1, best_groups, 1.0)
            candidates = (grouped * group_mask.unsqueeze(-1)).flatten(-2)
        top_vals, top_idx = candidates.topk(self.top_k, dim=-1)
        if self.normalize_top_k:
            top_vals = top_vals / top_vals.sum(dim=-1, keepdim=True)
        selected = torch.zeros_like(logits).scatter(-1, top_idx, 1.0)
        scores = torch.zeros_like(logits).scatter(-1, top_idx, top_vals)
        return Routing(logits=logits, scores=scores, probs=probs, load=selected, top_k=self.top_k)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, normalize_top_k={self.normalize_top_k}, group_limited={self.group_limited}"


class SharedExpertBranch(nn.Module):
    """The architecture's shared expert(s), as the original block computes them:
    ``sigmoid(gate(x)) · expert(x)`` with a gate (Qwen2-MoE), ``expert(x)`` without (DeepSeek-V2)."""

    def __init__(self, expert: nn.Module, gate: nn.Module | None = None):
        super().__init__()
        self.expert = expert
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        y = self.expert(x)
        return y if self.gate is None else torch.sigmoid(self.gate(x)) * y


class HFMoEBlock(nn.Module):
    """Stands where a ``transformers`` sparse MoE block stood:
    ``y = routed_scaling_factor · MoE(x) + shared(x)``.

    ``return_router_logits`` makes it return ``(y, router_logits [B·T, N])`` like the
    blocks of older ``transformers`` versions (4.x); 5.x blocks return the tensor alone.
    """

    def __init__(
        self,
        slot: MoESlot,
        shared: SharedExpertBranch | None = None,
        routed_scaling_factor: float = 1.0,
        return_router_logits: bool = False,
    ):
        super().__init__()
        self.slot = slot
        self.shared = shared
        self.routed_scaling_factor = routed_scaling_factor
        self.return_router_logits = return_router_logits

    @property
    def layer(self) -> MoELayer:
        return self.slot.layer

    def forward(self, hidden_states: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        y = self.slot(hidden_states)
        if self.routed_scaling_factor != 1.0:
            y = y * self.routed_scaling_factor
        if self.shared is not None:
            y = y + self.shared(hidden_states)
        if self.return_router_logits:
            return y, self.layer.router.gate(hidden_states.reshape(-1, hidden_states.shape[-1]))
        return y

    def extra_repr(self) -> str:
        return f"routed_scaling_factor={self.routed_scaling_factor}"


class HFMoEModel(MoEModel):
    """:class:`MoEModel` around a ``transformers`` causal LM.

    ``forward(**hf_kwargs)`` returns a :class:`ModelOutput` whose ``output`` is the
    backbone's own output (``.logits``, ``.loss`` when ``labels`` are given — the MoE
    auxiliary loss is **not** in it: add ``aux_loss`` yourself). A 2-D ``attention_mask``
    serves as the MoE layers' ``padding_mask`` unless one is given.
    """

    @property
    def config(self) -> Any:
        return self.backbone.config

    @property
    def decoder_layers(self) -> list[nn.Module]:
        """The backbone's transformer layers, in order: the modules of the classes that
        ``transformers`` never splits across devices (``_no_split_modules``: e.g.
        ``Qwen2MoeDecoderLayer``, ``GPT2Block``) — FSDP's units and ``device_map``'s."""
        names = set(getattr(self.backbone, "_no_split_modules", None) or ())
        return [m for m in self.backbone.modules() if any(cls.__name__ in names for cls in type(m).__mro__)]  # FSDP subclasses too


# --------------------------------------------------------------------------- reading blocks


def find_moe_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every sparse MoE block: a module with a router
    ``gate`` (a ``weight [N, d]``) and ``experts``, in the order they appear."""
    found = []
    for name, module in model.named_modules():
        gate, experts = getattr(module, "gate", None), getattr(module, "experts", None)
        if isinstance(gate, nn.Module) and isinstance(getattr(gate, "weight", None), Tensor) and isinstance(experts, nn.Module):
            if gate.weight.dim() == 2 and not isinstance(module, HFMoEBlock):
                found.append((name, module))
    return found


def read_experts(experts: nn.Module, d_model: int) -> tuple[ExpertSpec, ExpertParams]:
    """The :class:`ExpertSpec` and stacked ``glu`` parameters ``[N, ...]`` of a block's experts."""
    if isinstance(experts, nn.ModuleList):
        first = experts[0]
        if all(hasattr(first, n) for n in ("gate_proj", "up_proj", "down_proj")):
            names = ("gate_proj", "up_proj", "down_proj")
        elif all(hasattr(first, n) for n in ("w1", "w3", "w2")):  # Mixtral before transformers 5
            names = ("w1", "w3", "w2")
        else:
            raise TypeError(f"experts {type(first).__name__}: expected gate_proj/up_proj/down_proj or w1/w3/w2")
        act = identify_activation(first.act_fn)
        stacks = [torch.stack([getattr(e, n).weight.detach() for e in experts]) for n in names]
        if any(getattr(getattr(e, n), "bias", None) is not None for e in experts for n in names):
            raise NotImplementedError("experts with biases are not supported")
        w_gate, w_up, w_down = stacks
    else:
        gate_up, down = getattr(experts, "gate_up_proj", None), getattr(experts, "down_proj", None)
        if not isinstance(gate_up, Tensor) or not isinstance(down, Tensor):
            raise TypeError(f"experts {type(experts).__name__}: expected stacked gate_up_proj and down_proj tensors")
        if any(isinstance(getattr(experts, n, None), Tensor) for n in ("gate_up_proj_bias", "down_proj_bias")):
            raise NotImplementedError(f"experts {type(experts).__name__} have biases: not supported")
        gate_up, down = gate_up.detach(), down.detach()
        n = gate_up.shape[0]
        if gate_up.shape[2] == d_model and gate_up.shape[1] % 2 == 0 and down.shape == (n, d_model, gate_up.shape[1] // 2):
            w_gate, w_up = gate_up.chunk(2, dim=1)  # [E, 2I, H]: gate rows, then up rows
            w_down = down
        elif gate_up.shape[1] == d_model and down.shape == (n, gate_up.shape[2] // 2, d_model):
            w_gate, w_up = gate_up.transpose(1, 2).chunk(2, dim=1)  # transposed layout [E, H, 2I]
            w_down = down.transpose(1, 2)
        else:
            raise ValueError(f"experts {type(experts).__name__}: unexpected shapes gate_up_proj {tuple(gate_up.shape)}, down_proj {tuple(down.shape)}")
        act = identify_activation(experts.act_fn)
    spec = ExpertSpec(d_model=d_model, d_hidden=w_gate.shape[1], kind="glu", activation=act, bias=False)
    return spec, {"w_gate": w_gate.clone(), "w_up": w_up.clone(), "w_down": w_down.clone()}


def shared_branch(block: nn.Module) -> SharedExpertBranch | None:
    """The block's shared-expert branch (its original modules), or ``None``."""
    if isinstance(getattr(block, "shared_expert", None), nn.Module):  # Qwen2-MoE
        return SharedExpertBranch(block.shared_expert, getattr(block, "shared_expert_gate", None))
    if isinstance(getattr(block, "shared_experts", None), nn.Module):  # DeepSeek-V2
        return SharedExpertBranch(block.shared_experts)
    return None


# --------------------------------------------------------------------------- the adapter


def adapt_moe_llm(
    model: nn.Module,
    method: str = "smoe",
    method_options: dict[str, Any] | None = None,
    *,
    routing: HFRouting | None = None,
    base: str = "auto",
    return_router_logits: bool = False,
    **layer_options: Any,
) -> HFMoEModel:
    """Replace every sparse MoE block of a ``transformers`` MoE LM (in place) by an
    :class:`HFMoEBlock` driven by ``method``; return the :class:`HFMoEModel` around it.

    Args:
        model: e.g. a ``Qwen2MoeForCausalLM``, ``MixtralForCausalLM``, ``OlmoeForCausalLM``,
            ``DeepseekV2ForCausalLM`` (pretrained or freshly built).
        method, method_options: a registered merging method and its options.
        routing: the routing semantics; default :func:`routing_from_config` ``(model.config)``.
        base: ``"auto"``, ``"shared"`` or ``"mean"`` — where ``E_m`` comes from (module docstring).
        return_router_logits: blocks return ``(y, router_logits)`` (transformers 4.x style).
        layer_options: for :class:`MoELayer`. ``top_k`` defaults to the architecture's
            (``N`` for dense-only methods); ``pooling`` to the method's first causal unit
            (``token`` or ``segment``); ``noisy_gating`` is not supported; with a ``seed`` every
            layer's random draws (initialisation, each forward call's) are streams of their own
            (:mod:`namex_bench.seeding`).
    """
    if base not in ("auto", "shared", "mean"):
        raise ValueError(f"base must be 'auto', 'shared' or 'mean', got {base!r}")
    if layer_options.get("noisy_gating"):
        raise ValueError("noisy_gating is not supported by the pretrained-LLM adapter (HFRouter)")
    layer_options.pop("noisy_gating", None)
    if "moe_index" in layer_options:
        raise ValueError("moe_index is set by the adapter")
    routing = routing or routing_from_config(model.config)
    method_cls = get_method(method)
    name = method_cls.name or method_cls.__name__
    pooling = layer_options.pop("pooling", None)
    if pooling is None:
        causal = [p for p in method_cls.pooling_units if p in CAUSAL_POOLING]
        if not causal:
            raise ValueError(f"method {name!r} has no causal pooling unit (token or segment): {list(method_cls.pooling_units)}")
        pooling = causal[0]
    elif pooling not in CAUSAL_POOLING:
        raise ValueError(f"pooling {pooling!r} would let tokens see the future in a causal LM; use one of {CAUSAL_POOLING}")
    top_k = layer_options.pop("top_k", None)

    blocks = find_moe_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no sparse MoE block (a module with a router `gate` and `experts`)")
    if hasattr(model, "config") and getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False
    passes = PassHolder()
    for moe_index, (qualname, block) in enumerate(blocks):
        router_weight = block.gate.weight.detach()
        num_experts, d_model = router_weight.shape
        spec, experts = read_experts(block.experts, d_model)
        if experts["w_gate"].shape[0] != num_experts:
            raise ValueError(f"{qualname}: router has {num_experts} experts, the experts {experts['w_gate'].shape[0]}")
        k = top_k
        if k is None and not method_cls.fixed_top_k_is_n:
            k = min(routing.top_k, num_experts)
        layer = MoELayer(spec, num_experts, method_cls, method_options, top_k=k, pooling=pooling, moe_index=moe_index, **layer_options)
        if layer.hidden_router is not None or layer.router.input_norm is not None:
            raise ValueError(f"method {name!r}: the pretrained router is one linear router; its options router/router_norm must be 'shared'/'none'")
        with seeded(layer_options.get("seed"), f"moe{moe_index}.router"):  # its weight is the block's router's
            layer.router = HFRouter(
                d_model, num_experts, layer.router.top_k, normalize_top_k=routing.normalize_top_k,
                group_limited=routing.group_limited if layer.router.top_k < num_experts else None,
            )
        layer.to(device=router_weight.device, dtype=router_weight.dtype)
        shared = shared_branch(block)
        with torch.no_grad():
            layer.router.gate.weight.copy_(router_weight)
            for pname, value in experts.items():
                getattr(layer.experts, pname).copy_(value)
            if method_cls.base_expert is not BaseExpert.NONE:
                initial_base = _base_params(qualname, shared, spec, experts, base)
                if layer.base is not None:
                    layer.base.load_dense(initial_base)
                layer.method.init_from_dense(initial_base)  # expert propagation: the layer's anchor
        new_block = HFMoEBlock(MoESlot(layer, passes, layer_options.get("seed")), shared, routing.routed_scaling_factor, return_router_logits)
        parent_name, _, child = qualname.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new_block)
    return HFMoEModel(model, passes)


def _base_params(qualname: str, shared: SharedExpertBranch | None, spec: ExpertSpec, experts: ExpertParams, base: str) -> ExpertParams:
    if base != "mean" and shared is not None:
        try:
            shared_spec, params = dense_ffn_params(shared.expert)
        except (TypeError, ValueError) as exc:
            if base == "shared":
                raise ValueError(f"{qualname}: cannot read the shared expert: {exc}") from None
        else:
            if shared_spec == spec:
                return params
            if base == "shared":
                raise ValueError(f"{qualname}: the shared expert {shared_spec} does not have the routed experts' shape {spec}; use base='mean'")
    elif base == "shared":
        raise ValueError(f"{qualname}: the block has no shared expert; use base='mean' or 'auto'")
    return {name: p.mean(dim=0) for name, p in experts.items()}
