"""The MoE layer: one layer, every merging method.

Forward pass of an MoE layer (``x [B, T, d]``):

1. group the tokens by the method's pooling unit and pool the routing vector of each group;
2. route: ``s = softmax(top-k(W_r h_g))`` per group (causal segments: merged with the
   previous segment's scores);
3. the method turns experts + scores (+ base expert, + state from the layer below)
   into the groups' outputs and the state for the layer above — with a router per
   weight matrix (the method's ``router="per_matrix"``), the output matrices' scores come
   from a second router on the groups' pooled hidden states;
4. ungroup, and compute the auxiliary load-balancing loss (summed over the routers).

The layer returns a :class:`MoEOutput`; the cross-layer :class:`PropagationState` goes
in and comes out explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ..methods.base import BaseExpert, MergeInputs, MergeOutput, MergingMethod
from ..methods.registry import get_method
from ..seeding import seeded
from .aux_loss import AUX_LOSSES, aux_loss
from .experts import ExpertBank, ExpertParams, ExpertSpec, check_params
from .pooling import FIRST_SEGMENT_ROUTING, Groups, make_groups
from .router import Router, Routing
from .state import PropagationState

if TYPE_CHECKING:
    from .eval_cache import MergeCache


@dataclass
class MoEOutput:
    """``y [B, T, d_out]``; the ``state`` for the next MoE layer; ``aux_loss`` (already
    multiplied by its coefficient; add it to the training loss); ``stats`` to log
    (``aux_loss_raw``, ``expert_load``, and the method's own diagnostics)."""

    y: Tensor
    state: PropagationState
    aux_loss: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


class MoELayer(nn.Module):
    """A sparse MoE FFN layer whose experts are combined by a registered merging method.

    ``merge_cache``: the :class:`~namex_bench.moe.eval_cache.MergeCache` attached while one is
    entered (evaluation), which keeps the method's parameter-only parts; ``None`` otherwise.

    Args:
        spec: the shape of one expert.
        num_experts: ``N``.
        method: a registered method name, or a :class:`MergingMethod` class.
        method_options: keyword options of the method (see ``namex-bench list methods``),
            its routing options included (``router``, ``router_norm``, ``routing_padding``).
        top_k: the router's ``k``; default: the method's (``N`` for dense methods).
        pooling: the pooling unit; default: the method's first.
        segment_length: ``T_s`` for ``segment`` pooling.
        first_segment: ``"prior"`` (strictly causal) or ``"self"`` (its own scores, detached,
            as the CAMEx reference code) — see :mod:`namex_bench.moe.pooling`.
        num_prefix_tokens: tokens left out of ``image`` pooling (e.g. a class token).
        noisy_gating: Shazeer's noisy top-k gating during training.
        aux_loss: ``"switch"``, ``"cv2"`` or ``"none"``.
        aux_loss_coef: the coefficient the auxiliary loss is multiplied by.
        moe_index: this layer's position among the model's MoE layers (0 = first).
        seed: each part — ``router``, ``experts``, ``method``, ``base`` — is initialised from
            its own stream keyed on ``(seed, "moe<moe_index>.<part>")`` (``namex_bench.seeding``),
            so the parts two methods share start equal; ``None``: torch's global generator.
    """

    merge_cache: MergeCache | None = None

    def __init__(
        self,
        spec: ExpertSpec,
        num_experts: int,
        method: str | type[MergingMethod] = "smear",
        method_options: dict[str, Any] | None = None,
        *,
        top_k: int | None = None,
        pooling: str | None = None,
        segment_length: int = 64,
        first_segment: str = "prior",
        num_prefix_tokens: int = 0,
        noisy_gating: bool = False,
        aux_loss: str = "switch",
        aux_loss_coef: float = 0.01,
        moe_index: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        method_cls = get_method(method) if isinstance(method, str) else method
        name = method_cls.name or method_cls.__name__
        top_k = method_cls.resolve_top_k(num_experts, top_k)
        if method_cls.fixed_top_k_is_n and top_k != num_experts:
            raise ValueError(f"method {name!r} merges with dense routing: top_k must be num_experts={num_experts}, got {top_k}")
        pooling = pooling or method_cls.pooling_units[0]
        if pooling not in method_cls.pooling_units:
            raise ValueError(f"method {name!r} supports pooling {list(method_cls.pooling_units)}, got {pooling!r}")
        if aux_loss != "none" and aux_loss not in AUX_LOSSES:
            raise ValueError(f"unknown aux loss {aux_loss!r}; known: none, {', '.join(AUX_LOSSES)}")
        if first_segment not in FIRST_SEGMENT_ROUTING:
            raise ValueError(f"first_segment must be one of {FIRST_SEGMENT_ROUTING}, got {first_segment!r}")
        if segment_length < 1:
            raise ValueError(f"segment_length must be >= 1, got {segment_length}")

        self.spec = spec
        self.num_experts = num_experts
        self.pooling = pooling
        self.segment_length = segment_length
        self.first_segment = first_segment
        self.num_prefix_tokens = num_prefix_tokens
        self.aux_loss_name = aux_loss
        self.aux_loss_coef = aux_loss_coef
        self.moe_index = moe_index

        with seeded(seed, f"moe{moe_index}.method"):
            method = method_cls(spec, num_experts, **(method_options or {}))
        routing = method.routing
        if routing.router == "per_matrix" and (pooling == "token" or not spec.output_matrices):
            raise ValueError(
                f"method {name!r}: a router per weight matrix needs a merging pooling unit (not token) and an "
                f"mlp or glu expert; got pooling {pooling!r}, expert kind {spec.kind!r}"
            )
        self.routing_padding = routing.routing_padding
        with seeded(seed, f"moe{moe_index}.router"):
            self.router = Router(spec.d_model, num_experts, top_k, noisy_gating=noisy_gating, norm=routing.router_norm)
        with seeded(seed, f"moe{moe_index}.hidden_router"):
            self.hidden_router = (
                Router(spec.d_hidden, num_experts, top_k, noisy_gating=noisy_gating, norm=routing.router_norm)
                if routing.router == "per_matrix" else None
            )
        with seeded(seed, f"moe{moe_index}.experts"):
            self.experts = ExpertBank(spec, num_experts)
        self.method = method
        owns_base = method_cls.base_expert is BaseExpert.EVERY_LAYER or (
            method_cls.base_expert is BaseExpert.FIRST_LAYER and moe_index == 0
        )
        with seeded(seed, f"moe{moe_index}.base"):
            self.base = ExpertBank(spec, 1) if owns_base else None

    @property
    def method_name(self) -> str:
        return self.method.name or type(self.method).__name__

    def base_expert(self, state: PropagationState) -> ExpertParams | None:
        """``E_m`` for this layer: its own (the mean of its experts under the method's ``"base"``
        ablation), the one propagated from below, or ``None``."""
        if self.base is not None:
            if self.method.is_ablated("base"):
                return {name: p.mean(0) for name, p in self.experts.params().items()}
            return self.base.expert(0)
        if self.method.base_expert is not BaseExpert.FIRST_LAYER:
            return None
        if state.base is None:
            raise RuntimeError(
                f"MoE layer {self.moe_index} ({self.method_name}) expects the base expert propagated from "
                "the layer below: run the MoE layers in order from moe_index 0, passing each layer's state to the next"
            )
        try:
            check_params(self.spec, state.base, leading=0, what="propagated base expert")
        except ValueError as exc:
            raise ValueError(
                f"MoE layer {self.moe_index} ({self.method_name}): expert propagation needs MoE layers of one shape; {exc}"
            ) from None
        return state.base

    def init_from_dense(self, dense: ExpertParams) -> None:
        """Start every expert and the base expert (if the layer owns one) as copies of a dense
        FFN's parameters ``dense`` (no expert axis), and hand them to the method."""
        self.experts.load_dense(dense)
        if self.base is not None:
            self.base.load_dense(dense)
        self.method.init_from_dense(dense)

    def forward(
        self,
        x: Tensor,
        state: PropagationState | None = None,
        padding_mask: Tensor | None = None,
        routing_states: Tensor | None = None,
        routing_mask: Tensor | None = None,
    ) -> MoEOutput:
        """``x [B, T, d]``, the state from the layer below (a fresh one if ``None``), and
        ``padding_mask [B, T]`` (true for real tokens) → :class:`MoEOutput`.

        ``routing_states [B, T', d]`` (``sequence`` pooling only): states whose mean routes each
        sequence instead of ``x``'s (``routing_mask [B, T']`` marks their real tokens) — e.g. a
        decoder's MoE layer routed by its encoder's states, as SMEAR does.
        """
        state = PropagationState() if state is None else state
        groups = make_groups(
            x, self.pooling, padding_mask, self.segment_length, self.num_prefix_tokens, self.first_segment,
            self.routing_padding,
        )
        if routing_states is None:
            route_input = groups.route_input
        elif self.pooling == "sequence":
            route_input = make_groups(routing_states, "sequence", routing_mask, routing_padding=self.routing_padding).pool(routing_states)
        else:
            raise ValueError(f"routing_states route whole sequences: the layer's pooling is {self.pooling!r}, not 'sequence'")
        routings = [self.router(route_input)]
        route_hidden = None if self.hidden_router is None else self._hidden_routing(groups, routings)
        out = self.method(
            MergeInputs(
                tokens=groups.tokens,
                scores=groups.scores_in_use(routings[0].scores, lambda: self._prior(self.router, x)),
                bank=self.experts,
                base=self.base_expert(state),
                state=state,
                moe_index=self.moe_index,
                top_k=self.router.top_k,
                route_hidden=route_hidden,
                parameter_cache=None if self.merge_cache is None else self.merge_cache.for_layer(self, state, groups.tokens),
            )
        )
        self._check_output(out, groups.tokens)
        if route_hidden is not None and len(routings) < 2:
            raise RuntimeError(
                f"method {self.method_name!r} ignored the router of the output matrices (router: per_matrix): "
                "build its merged experts with MergingMethod.run_merged"
            )
        routing = routings[0]
        raw_aux = sum(aux_loss(self.aux_loss_name, r, groups.valid) for r in routings)
        valid = groups.valid.to(routing.scores.dtype).unsqueeze(-1)
        stats = {
            "aux_loss_raw": raw_aux.detach(),
            "expert_load": ((routing.scores > 0).to(valid.dtype) * valid).sum(0).detach(),
            **{k: v.detach() for k, v in out.stats.items()},
        }
        return MoEOutput(groups.ungroup(out.output), out.state, self.aux_loss_coef * raw_aux, stats)

    @staticmethod
    def _prior(router: Router, like: Tensor) -> Tensor:
        """The router's prior: its scores ``[1, N]`` for the zero vector."""
        return router(like.new_zeros(1, router.gate.in_features)).scores

    def _hidden_routing(self, groups: Groups, routings: list[Routing]):
        """The router of the output matrices: the scores of the groups' pooled hidden states
        (recorded in ``routings`` for the auxiliary loss)."""

        def route_hidden(hidden: Tensor) -> Tensor:
            routing = self.hidden_router(groups.pool(hidden))
            routings.append(routing)
            return groups.scores_in_use(routing.scores, lambda: self._prior(self.hidden_router, hidden))

        return route_hidden
    def _check_output(self, out: Any, tokens: Tensor) -> None:
        """A method must return a :class:`MergeOutput` whose ``output`` has the shape of its input
        tokens, with the FFN's output width (``d_model``; ``d_hidden`` for a ``linear`` expert)."""
        if not isinstance(out, MergeOutput) or not isinstance(out.state, PropagationState):
            raise TypeError(
                f"method {self.method_name!r} returned {type(out).__name__}; expected MergeOutput(output, state, stats) "
                "with state a PropagationState (e.g. inputs.state.advanced())"
            )
        expected = (*tokens.shape[:-1], self.spec.d_out)
        if not isinstance(out.output, Tensor) or tuple(out.output.shape) != expected:
            got = tuple(out.output.shape) if isinstance(out.output, Tensor) else type(out.output).__name__
            raise ValueError(
                f"method {self.method_name!r} returned output of shape {got}; expected {expected}: MergeInputs.tokens' "
                f"[groups, tokens per group] and the expert's output width ({self.pooling} pooling)"
            )

    def extra_repr(self) -> str:
        return f"method={self.method_name}, pooling={self.pooling}, top_k={self.router.top_k}, moe_index={self.moe_index}"
