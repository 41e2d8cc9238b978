"""Pretrained MoE LLMs from ``transformers``: their sparse MoE blocks driven by any method.

:func:`adapt_moe_llm` takes a ``transformers`` MoE causal LM — Qwen2-MoE (Qwen1.5-MoE),
Qwen3-MoE, Mixtral, OLMoE, DeepSeek-V2, DeepSeek-V3 or gpt-oss — and replaces every sparse MoE
block by an
:class:`HFMoEBlock`, which holds

* an :class:`~namex_bench.models.moe_model.MoESlot` around an
  :class:`~namex_bench.moe.layer.MoELayer` driven by a registered method. The block's
  router weight is copied into ``router.gate.weight`` and its experts into the
  :class:`~namex_bench.moe.experts.ExpertBank` (``glu`` experts: ``w_gate, w_up, w_down``;
  gpt-oss's are ``clamped_glu`` with biases). Both layouts of the experts are read
  (:func:`read_expert_params`): ``transformers`` 5's stacked tensors (``gate_up_proj [E, 2I, H]``
  — gate rows first, then up rows — and ``down_proj [E, H, I]``; gpt-oss's transposed and
  interleaved ``gate_up_proj [E, H, 2I]``, ``down_proj [E, I, H]`` with their biases) and the
  older ``nn.ModuleList`` of per-expert MLPs (``gate_proj/up_proj/down_proj`` or Mixtral's
  ``w1/w3/w2``);
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
gpt-oss         the same, with a router bias (softmax over the top-k logits)
Qwen2-MoE,      softmax over all logits, top-k, renormalised only if ``norm_topk_prob``
Qwen3-MoE,
OLMoE
DeepSeek-V2     softmax over all logits, top-k (``greedy``, or ``group_limited_greedy``:
                only experts in the ``topk_group`` best of ``n_group`` groups, a group
                scored by its best expert), never renormalised (``transformers`` ignores
                ``norm_topk_prob`` for V2), routed output × ``routed_scaling_factor``
DeepSeek-V3     sigmoid scores; experts chosen by score + ``e_score_correction_bias`` among
                the ``topk_group`` best of ``n_group`` groups (a group scored by the sum of
                its two best), weighted by their scores (without the bias), renormalised if
                ``norm_topk_prob``, × ``routed_scaling_factor``
DeepSeek-MoE    (remote code, ``model_type: deepseek``) softmax, greedy top-k, renormalised
                only if ``norm_topk_prob``
==============  =========================================================================

Group-limited selection is a constraint on sparse dispatch: with dense routing
(``top_k = N``, the merging methods ``smear``/``camex``/``namex``…) it is not applied,
and every expert gets its softmax probability.

:class:`HFRouter` (a :class:`~namex_bench.moe.router.Router` with the narrowly named
options ``normalize_top_k``, ``group_limited``, ``scoring``, ``group_score``, ``router_bias`` and
``selection_bias``) expresses these; the routed scaling
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
#: Architectures whose decoder layers unpack ``(hidden states, router output)`` from their MoE block (gpt-oss).
PAIR_OUTPUT_MODEL_TYPES = ("gpt_oss",)


@dataclass(frozen=True)
class HFRouting:
    """The routing semantics of an architecture's sparse MoE block.

    ``top_k`` — experts per token; ``normalize_top_k`` — renormalise the top-k
    probabilities to sum to 1; ``routed_scaling_factor`` — multiplies the routed experts'
    output; ``group_limited`` — ``(n_group, topk_group)`` for DeepSeek's group-limited
    greedy selection, or ``None``; ``scoring`` — ``softmax`` or ``sigmoid`` (DeepSeek-V3) of the
    logits; ``group_score`` — a group's score, its best expert's (``max``) or the sum of its
    two best (``top2_sum``, DeepSeek-V3); ``router_bias`` — the router's linear map has a bias
    (gpt-oss); ``selection_bias`` — a per-expert bias added to the scores to choose the experts
    but not to weight them (DeepSeek-V3's ``e_score_correction_bias``).
    """

    top_k: int
    normalize_top_k: bool = True
    routed_scaling_factor: float = 1.0
    group_limited: tuple[int, int] | None = None
    scoring: str = "softmax"
    group_score: str = "max"
    router_bias: bool = False
    selection_bias: bool = False


def routing_from_config(config: Any) -> HFRouting:
    """The :class:`HFRouting` of a ``transformers`` MoE config (by ``config.model_type``)."""
    kind = getattr(config, "model_type", None)
    k = config.num_experts_per_tok
    if kind == "mixtral":
        return HFRouting(k, normalize_top_k=True)
    if kind in ("qwen2_moe", "qwen3_moe", "olmoe"):
        return HFRouting(k, normalize_top_k=bool(config.norm_topk_prob))
    if kind == "gpt_oss":
        return HFRouting(k, normalize_top_k=True, router_bias=True)
    if kind == "deepseek_v3":
        return HFRouting(
            k, normalize_top_k=bool(config.norm_topk_prob), routed_scaling_factor=float(config.routed_scaling_factor),
            group_limited=(int(config.n_group), int(config.topk_group)), scoring="sigmoid", group_score="top2_sum", selection_bias=True,
        )
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
        f"no routing rule for model_type {kind!r} (known: mixtral, gpt_oss, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3, deepseek); "
        "pass routing=HFRouting(...)"
    )


class HFRouter(Router):
    """A :class:`Router` with the selection of ``transformers`` MoE routers.

    ``probs = softmax(logits)`` (or ``sigmoid(logits)`` with ``scoring="sigmoid"``) over all
    experts; the top-k experts are chosen by ``probs + selection_bias`` (the bias a buffer of
    zeros unless loaded), with ``group_limited = (n_group, topk_group)`` only among the experts
    of the ``topk_group`` groups that score highest (a group's score: its best expert, or the
    sum of its two best with ``group_score="top2_sum"``); ``scores`` are the chosen experts'
    ``probs``, renormalised over the k when ``normalize_top_k`` (with softmax scoring then
    identical to :class:`Router`'s softmax over the top-k logits). ``router_bias``: the linear
    map has a bias. Noisy gating is not supported.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        top_k: int,
        *,
        normalize_top_k: bool = True,
        group_limited: tuple[int, int] | None = None,
        scoring: str = "softmax",
        group_score: str = "max",
        router_bias: bool = False,
        selection_bias: bool = False,
    ):
        super().__init__(d_model, num_experts, top_k, noisy_gating=False)
        if group_limited is not None:
            n_group, topk_group = group_limited
            if n_group < 1 or num_experts % n_group or not 1 <= topk_group <= n_group:
                raise ValueError(f"group_limited={group_limited}: need n_group dividing {num_experts} and 1 <= topk_group <= n_group")
            if topk_group * (num_experts // n_group) < top_k:
                raise ValueError(f"group_limited={group_limited} leaves fewer than top_k={top_k} experts")
        if scoring not in ("softmax", "sigmoid") or group_score not in ("max", "top2_sum"):
            raise ValueError(f"scoring must be softmax or sigmoid and group_score max or top2_sum, got {scoring!r}, {group_score!r}")
        if router_bias:
            self.gate = nn.Linear(d_model, num_experts, bias=True)
            nn.init.zeros_(self.gate.bias)
        self.register_buffer("selection_bias", torch.zeros(num_experts) if selection_bias else None)
        self.normalize_top_k = normalize_top_k
        self.group_limited = group_limited
        self.scoring, self.group_score = scoring, group_score

    def forward(self, h: Tensor) -> Routing:
        logits = wide_linear(h, self.gate)  # float32, as every router here (moe/router.py)
        probs = logits.softmax(dim=-1) if self.scoring == "softmax" else logits.sigmoid()
        candidates = probs if self.selection_bias is None else probs + self.selection_bias.float()
        if self.group_limited is not None:
            n_group, topk_group = self.group_limited
            grouped = candidates.unflatten(-1, (n_group, self.num_experts // n_group))
            group_scores = grouped.amax(dim=-1) if self.group_score == "max" else grouped.topk(2, dim=-1).values.sum(dim=-1)
            best_groups = group_scores.topk(topk_group, dim=-1).indices
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter(-1, best_groups, True)
            candidates = grouped.masked_fill(~group_mask.unsqueeze(-1), float("-inf")).flatten(-2)
        top_idx = candidates.topk(self.top_k, dim=-1).indices
        top_vals = probs.gather(-1, top_idx)
        if self.normalize_top_k:
            top_vals = top_vals / (top_vals.sum(dim=-1, keepdim=True) + (1e-20 if self.scoring == "sigmoid" else 0.0))
        selected = torch.zeros_like(logits).scatter(-1, top_idx, 1.0)
        scores = torch.zeros_like(logits).scatter(-1, top_idx, top_vals)
        return Routing(logits=logits, scores=scores, probs=probs, load=selected, top_k=self.top_k)

    def extra_repr(self) -> str:
        return (f"top_k={self.top_k}, normalize_top_k={self.normalize_top_k}, group_limited={self.group_limited}, "
                f"scoring={self.scoring}, group_score={self.group_score}")


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


def block_router(block: nn.Module) -> nn.Module | None:
    """A sparse block's router: its ``gate`` (most architectures) or ``router`` (gpt-oss) with a ``weight [N, d]``."""
    for attr in ("gate", "router"):
        router = getattr(block, attr, None)
        if isinstance(router, nn.Module) and isinstance(getattr(router, "weight", None), Tensor) and router.weight.dim() == 2:
            return router
    return None


def find_moe_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every sparse MoE block: a module with a router
    (:func:`block_router`) and ``experts``, in the order they appear."""
    return [
        (name, module) for name, module in model.named_modules()
        if isinstance(getattr(module, "experts", None), nn.Module) and block_router(module) is not None and not isinstance(module, HFMoEBlock)
    ]


PER_EXPERT_NAMES = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"))  # Qwen/DeepSeek; Mixtral before transformers 5


def per_expert_names(experts: nn.ModuleList) -> tuple[str, str, str]:
    """The gate, up and down projections' names of a ``ModuleList`` of per-expert MLPs."""
    names = next((n for n in PER_EXPERT_NAMES if all(hasattr(experts[0], p) for p in n)), None)
    if names is None:
        raise TypeError(f"experts {type(experts[0]).__name__}: expected gate_proj/up_proj/down_proj or w1/w3/w2")
    return names


def read_expert_params(experts: nn.Module) -> ExpertParams:
    """A block's routed experts, detached, as ``w_gate, w_up [N, I, H]`` and ``w_down [N, H, I]``
    (+ ``b_gate, b_up [N, I]`` and ``b_down [N, H]`` where they have biases), from either layout.

    Stacked experts say how they are stored (transformers' experts decorator sets
    ``is_transposed`` and ``is_concatenated``): ``gate_up_proj [N, 2I, H]`` with the gate rows
    first, or transposed ``[N, H, 2I]`` (``down_proj [N, I, H]``) with gate and up interleaved
    (gpt-oss: gate in the even columns, up in the odd ones), and ``…_bias`` tensors alike.
    """
    if isinstance(experts, nn.ModuleList):
        out = {}
        for short, attr in zip(("gate", "up", "down"), per_expert_names(experts)):
            linears = [getattr(m, attr) for m in experts]
            out["w_" + short] = torch.stack([lin.weight.detach() for lin in linears])
            if getattr(linears[0], "bias", None) is not None:
                out["b_" + short] = torch.stack([lin.bias.detach() for lin in linears])
        return out
    gate_up, down = getattr(experts, "gate_up_proj", None), getattr(experts, "down_proj", None)
    if not isinstance(gate_up, Tensor) or not isinstance(down, Tensor):
        raise TypeError(f"experts {type(experts).__name__}: expected stacked gate_up_proj and down_proj tensors")
    if not getattr(experts, "has_gate", True):
        raise NotImplementedError(f"experts {type(experts).__name__} have no gate projection: not supported")
    transposed, interleaved = getattr(experts, "is_transposed", False), not getattr(experts, "is_concatenated", True)
    gate_up, down = gate_up.detach(), down.detach()
    if transposed:
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    n = gate_up.shape[0]
    if gate_up.shape[1] % 2 or down.shape != (n, gate_up.shape[2], gate_up.shape[1] // 2):
        raise ValueError(f"experts {type(experts).__name__}: unexpected shapes gate_up_proj {tuple(experts.gate_up_proj.shape)}, down_proj {tuple(experts.down_proj.shape)}")

    def split(t: Tensor) -> tuple[Tensor, Tensor]:
        return (t[:, 0::2], t[:, 1::2]) if interleaved else t.chunk(2, dim=1)

    out = dict(zip(("w_gate", "w_up"), split(gate_up)), w_down=down)
    if isinstance(getattr(experts, "gate_up_proj_bias", None), Tensor):
        out.update(zip(("b_gate", "b_up"), split(experts.gate_up_proj_bias.detach())))
    if isinstance(getattr(experts, "down_proj_bias", None), Tensor):
        out["b_down"] = experts.down_proj_bias.detach()
    return out


def read_experts(experts: nn.Module, d_model: int) -> tuple[ExpertSpec, ExpertParams]:
    """The :class:`ExpertSpec` and stacked parameters ``[N, ...]`` of a block's experts
    (:func:`read_expert_params`): ``glu`` experts with the module's activation, or gpt-oss's
    ``clamped_glu`` (its ``alpha`` and ``limit``)."""
    params = {k: v.clone() for k, v in read_expert_params(experts).items()}
    if params["w_gate"].shape[2] != d_model:
        raise ValueError(f"experts {type(experts).__name__}: input size {params['w_gate'].shape[2]}, the model's {d_model}")
    bias = "b_gate" in params
    if bias and set(params) != {"w_gate", "w_up", "w_down", "b_gate", "b_up", "b_down"}:
        raise NotImplementedError(f"experts {type(experts).__name__}: biases on only some projections are not supported")
    d_hidden = params["w_gate"].shape[1]
    if hasattr(experts, "limit") and hasattr(experts, "alpha") and hasattr(experts, "_apply_gate") and not hasattr(experts, "act_fn"):
        spec = ExpertSpec(d_model, d_hidden, kind="clamped_glu", bias=bias, alpha=float(experts.alpha), limit=float(experts.limit))
    else:
        act_fn = experts[0].act_fn if isinstance(experts, nn.ModuleList) else experts.act_fn
        spec = ExpertSpec(d_model, d_hidden, kind="glu", activation=identify_activation(act_fn), bias=bias)
    return spec, params


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
        source_router = block_router(block)
        router_weight = source_router.weight.detach()
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
                scoring=routing.scoring, group_score=routing.group_score, router_bias=routing.router_bias, selection_bias=routing.selection_bias,
            )
        layer.to(device=router_weight.device, dtype=router_weight.dtype)
        shared = shared_branch(block)
        with torch.no_grad():
            layer.router.gate.weight.copy_(router_weight)
            if routing.router_bias:
                layer.router.gate.bias.copy_(source_router.bias.detach())
            if routing.selection_bias:
                layer.router.selection_bias.copy_(source_router.e_score_correction_bias.detach())
            for pname, value in experts.items():
                getattr(layer.experts, pname).copy_(value)
            if method_cls.base_expert is not BaseExpert.NONE:
                initial_base = _base_params(qualname, shared, spec, experts, base)
                if layer.base is not None:
                    layer.base.load_dense(initial_base)
                layer.method.init_from_dense(initial_base)  # expert propagation: the layer's anchor
        returns_pair = return_router_logits or getattr(model.config, "model_type", None) in PAIR_OUTPUT_MODEL_TYPES
        new_block = HFMoEBlock(MoESlot(layer, passes, layer_options.get("seed")), shared, routing.routed_scaling_factor, returns_pair)
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
