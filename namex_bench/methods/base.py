"""The contract every merging method implements.

A method is one :class:`MergingMethod` subclass in one file, registered by name with
:func:`namex_bench.register_method`. The :class:`~namex_bench.moe.layer.MoELayer` owns
routing, pooling, the auxiliary loss, upcycling and logging; the method does one step:

    given the expert bank, the router scores of each group, the base expert (if the
    method uses one) and the propagation state from the layer below, return the
    groups' outputs and the state for the layer above.

Class attributes declare what the layer must provide:

``pooling_units``  — the pooling units the method accepts (the first is its default);
``base_expert``    — :class:`BaseExpert`: whether MoE layers own a trainable base
                     expert — none, every layer, or only the first (the later layers
                     receive it through the :class:`PropagationState`);
``default_top_k``  — the router's ``k`` when the user gives none (``None`` = all ``N``);
``fixed_top_k_is_n`` — the method is defined with dense routing only (``k = N``);
``presets``        — named sets of options (:class:`Preset`), e.g. ``reference``: the method
                     as its authors' code runs it;
``ablations``      — the method's own parts that can be switched to a neutral value, name →
                     what replaces it (see :meth:`MergingMethod.ablated`).

Every method also takes the *routing options* of :class:`MergingMethod` (``router``,
``router_norm``, ``routing_padding``), which the layer reads from ``method.routing`` to build
and pool its routers: routing is part of how each paper defines its method (CAMEx's code
routes each weight matrix separately, SMEAR's router normalises), so it is chosen with the
method, per suite entry, while the layer does the routing. A method with options of its own
passes ``**routing`` on to ``MergingMethod.__init__``.

Two class methods let the suite refuse inert comparisons and the record measure mechanisms:
:meth:`MergingMethod.reduces_to` says when a configuration provably computes another
method; :meth:`MergingMethod.ablated` switches one part off for the diagnostics that every
run record holds (``tasks/diagnostics.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from ..moe.experts import ExpertBank, ExpertParams, ExpertSpec, MergedExperts, ffn, ffn_hidden, ffn_output
from ..moe.pooling import ROUTING_PADDING
from ..moe.router import ROUTER_NORMS
from ..moe.state import PropagationState

ROUTERS = ("shared", "per_matrix")

#: ``merge(scores [G, N], names)`` → the named parameters of every group's merged expert ``[G, ...]``.
MergeFn = Callable[[Tensor, tuple[str, ...]], ExpertParams | MergedExperts]


class BaseExpert(enum.Enum):
    """Which MoE layers own a trainable base expert ``E_m``."""

    NONE = "none"
    EVERY_LAYER = "every_layer"
    FIRST_LAYER = "first_layer"


@dataclass
class MergeInputs:
    """What the layer hands a method for one forward pass.

    ``tokens`` ``[G, L, d]`` — the tokens of each group; ``scores`` ``[G, N]`` — router
    scores ``s`` (top-k softmax, zeros elsewhere); ``bank`` — the layer's experts;
    ``base`` — ``E_m`` for this layer (its own, or the propagated one), or ``None``;
    ``state`` — the propagation state from the layer below; ``moe_index`` — the
    layer's position among the model's MoE layers; ``top_k`` — the router's ``k``;
    ``route_hidden`` — with a router per weight matrix, the router of the output matrices:
    the scores ``[G, N]`` of the groups' hidden states ``[G, L, d_hidden]`` (pooled as the
    tokens are); ``None`` when one router's scores merge every matrix. Methods that merge
    call :meth:`MergingMethod.run_merged`, which uses it. ``parameter_cache`` — in evaluation
    (:class:`~namex_bench.moe.eval_cache.MergeCache`), ``parameter_cache(compute)`` returns the
    layer's parameter-only parts, computed by ``compute()`` once per model state; ``None``: compute
    them in every pass (training, or no cache). Methods read it through :meth:`MergingMethod.parts`.
    """

    tokens: Tensor
    scores: Tensor
    bank: ExpertBank
    base: ExpertParams | None
    state: PropagationState
    moe_index: int
    top_k: int | None = None
    route_hidden: Callable[[Tensor], Tensor] | None = None
    parameter_cache: Callable[[Callable[[], Any]], Any] | None = None


@dataclass(frozen=True)
class ModelFacts:
    """What a model tells a method about where it will run: ``num_moe_layers``, ``num_experts``
    and the router's resolved ``top_k`` (a ``None`` field: not known before the model is built)."""

    num_moe_layers: int | None = None
    num_experts: int | None = None
    top_k: int | None = None


def inert_comparison(method: str, reduction: str, model: str | None = None) -> str:
    """The message refusing ``method`` (on ``model``, or with its options alone) because it
    computes exactly ``reduction`` (what :meth:`MergingMethod.reduces_to` said)."""
    where = f"on model {model!r} the method {method!r}" if model is not None else f"with these options the method {method!r}"
    return f"{where} computes exactly {reduction}: an inert comparison; change the {'model' if model else 'options'} or drop the method"


@dataclass
class MergeOutput:
    """``output [G, L, d]``, the ``state`` for the layer above, and diagnostics to log."""

    output: Tensor
    state: PropagationState
    stats: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingOptions:
    """How the layer routes for a method (the method's routing options, see :class:`MergingMethod`)."""

    router: str = "shared"
    router_norm: str = "none"
    routing_padding: str = "exclude"


@dataclass(frozen=True)
class Preset:
    """A named set of a method's options, and where it comes from."""

    description: str
    options: dict[str, Any]


class MergingMethod(nn.Module):
    """Base class of merging methods (see the module docstring for the contract).

    Subclasses take ``(spec, num_experts, **options)`` in ``__init__``; every option is a
    keyword argument with a default, documented in the class docstring. The first line
    of the class docstring is the method's one-line description.

    Routing options (every method):
        router ("shared" | "per_matrix"): one router for every weight matrix (default), or a
            router per weight matrix as the CAMEx reference code: the input matrices are
            merged with the scores of the group's mean input, the output matrices with the
            scores of the group's mean *hidden state* (after the activation), each from its
            own router (:meth:`run_merged`). Not for token routing.
        router_norm ("none" | "layernorm"): a linear router (default), or SMEAR's: LayerNorm on
            the pooled input and LayerNorm-normalised router weights, no bias.
        routing_padding ("exclude" | "include"): routing means over the real tokens (default),
            or over every position, padding included, as the reference code (which takes
            no padding mask) computes them.
    """

    name: ClassVar[str] = ""
    pooling_units: ClassVar[tuple[str, ...]] = ("sequence", "segment", "image")
    base_expert: ClassVar[BaseExpert] = BaseExpert.NONE
    default_top_k: ClassVar[int | None] = None
    fixed_top_k_is_n: ClassVar[bool] = False
    presets: ClassVar[dict[str, Preset]] = {}
    ablations: ClassVar[dict[str, str]] = {}
    _ablated: frozenset[str] = frozenset()  # the parts switched off by ablated(), per instance

    def __init__(
        self,
        spec: ExpertSpec,
        num_experts: int,
        router: Literal["shared", "per_matrix"] = "shared",
        router_norm: Literal["none", "layernorm"] = "none",
        routing_padding: Literal["exclude", "include"] = "exclude",
    ):
        super().__init__()
        for option, value, known in (("router", router, ROUTERS), ("router_norm", router_norm, ROUTER_NORMS), ("routing_padding", routing_padding, ROUTING_PADDING)):
            if value not in known:
                raise ValueError(f"{option} must be one of {known}, got {value!r}")
        self.spec = spec
        self.num_experts = num_experts
        self.routing = RoutingOptions(router, router_norm, routing_padding)

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Every option with its default (:func:`~namex_bench.methods.options.default_options`)."""
        from .options import default_options

        return default_options(cls)

    @classmethod
    def preset_options(cls, preset: str | None) -> dict[str, Any]:
        """The options of the named preset (``{}`` for ``None``); ``KeyError`` names the known ones."""
        if preset is None:
            return {}
        if preset not in cls.presets:
            known = ", ".join(cls.presets) or "none"
            raise KeyError(f"method {cls.name or cls.__name__!r} has no preset {preset!r}; its presets: {known}")
        return dict(cls.presets[preset].options)

    @classmethod
    def given_options(cls, preset: str | None, options: dict[str, Any]) -> dict[str, Any]:
        """The options a suite entry sets: its preset's, overridden by its own ``options``."""
        return {**cls.preset_options(preset), **options}

    def init_from_dense(self, dense: ExpertParams) -> None:
        """Called when the layer is upcycled from a dense FFN (``dense``: its parameters, no
        expert axis), after the experts and base expert are loaded. A method may keep what it
        derives from it (``ep_camex``'s propagation anchor); by default it keeps nothing."""

    @classmethod
    def available_ablations(cls) -> dict[str, str]:
        """Every ablation of the method, name → what replaces the part: those declared in
        ``ablations`` up the class hierarchy, and ``"base"`` for methods whose MoE layers own a
        base expert (the layer replaces it by the mean of its experts)."""
        found: dict[str, str] = {}
        if cls.base_expert is not BaseExpert.NONE:
            found["base"] = "the trainable base expert E_m replaced by the mean of the layer's experts"
        for klass in reversed(cls.__mro__):
            found.update(vars(klass).get("ablations", {}))
        return found

    @contextmanager
    def ablated(self, part: str) -> Iterator[None]:
        """Within the block, compute the method with ``part`` (one of :meth:`available_ablations`)
        replaced by its neutral value: ``with layer.method.ablated("nash_weights"): model(x)``."""
        if part not in self.available_ablations():
            known = ", ".join(self.available_ablations()) or "none"
            raise ValueError(f"method {self.name or type(self).__name__!r} has no ablation {part!r}; it has: {known}")
        previous = self._ablated
        self._ablated = previous | {part}
        try:
            yield
        finally:
            self._ablated = previous

    def is_ablated(self, part: str) -> bool:
        """Whether ``part`` is switched off (inside :meth:`ablated`); a method's forward reads it."""
        return part in self._ablated

    @property
    def active_ablations(self) -> frozenset[str]:
        """The parts switched off now (inside :meth:`ablated`)."""
        return self._ablated

    @classmethod
    def resolve_top_k(cls, num_experts: int, top_k: int | None = None) -> int:
        """The router's ``k``: ``top_k`` if given, else ``N`` for dense methods, else
        ``min(default_top_k, N)``."""
        if top_k is not None:
            return top_k
        return num_experts if cls.fixed_top_k_is_n or cls.default_top_k is None else min(cls.default_top_k, num_experts)

    @classmethod
    def reduces_to(cls, options: dict[str, Any], model: ModelFacts) -> str | None:
        """When these ``options`` (every default filled in) on this ``model`` provably compute
        another method: that method and why (one phrase, e.g. ``"namex (β first acts on the
        third MoE layer's base)"``), else ``None``; a field of ``model`` that is ``None`` is not
        known yet. A suite that runs such a combination is refused: its rows would repeat another
        method's numbers under a different name."""
        return None

    def forward(self, inputs: MergeInputs) -> MergeOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameter_parts(self, inputs: MergeInputs) -> Any:
        """What :meth:`forward` computes from parameters alone — from the experts, the base expert,
        the state from the layer below and the method's own parameters, never from the tokens or the
        scores — e.g. the CAMEx family's domain vectors, Nash weights and propagated base. A method
        that has such parts computes them here and reads them through :meth:`parts`, so that
        evaluation computes them once per model state; by default it has none (``None``)."""
        return None

    def parts(self, inputs: MergeInputs) -> Any:
        """:meth:`parameter_parts` of this pass: from the evaluation cache when the layer has one
        (``inputs.parameter_cache``), else computed now."""
        if inputs.parameter_cache is None:
            return self.parameter_parts(inputs)
        return inputs.parameter_cache(lambda: self.parameter_parts(inputs))

    def apply_merged(self, tokens: Tensor, merged: ExpertParams | MergedExperts) -> Tensor:
        """Every group's tokens through its own merged expert: ``[G, L, d_out]`` (one router; see
        :func:`~namex_bench.moe.experts.ffn`)."""
        return ffn(tokens, merged, self.spec)

    def run_merged(self, inputs: MergeInputs, merge: MergeFn) -> Tensor:
        """The groups' outputs ``[G, L, d_out]`` through their merged experts.

        ``merge(scores, names)`` builds the named parameters of every group's merged expert
        from scores ``[G, N]``. With one router, every parameter is merged with
        ``inputs.scores``. With a router per weight matrix (``inputs.route_hidden``), the
        FFN is merged and applied stage by stage:

            h = ffn_hidden(x; merge(s_in, input stage)),   s_in  = inputs.scores
            y = ffn_output(h; merge(s_out, output stage)), s_out = inputs.route_hidden(h)
        """
        spec = self.spec
        if inputs.route_hidden is None:
            (names,) = self.merged_stages(inputs)
            return self.apply_merged(inputs.tokens, merge(inputs.scores, names))
        input_stage, output_stage = self.merged_stages(inputs)
        hidden = ffn_hidden(inputs.tokens, merge(inputs.scores, input_stage), spec)
        return ffn_output(hidden, merge(inputs.route_hidden(hidden), output_stage), spec)

    def merged_stages(self, inputs: MergeInputs) -> tuple[tuple[str, ...], ...]:
        """The ``names`` :meth:`run_merged` asks ``merge`` for, in order: every parameter (one
        router), or the input stage's and then the output stage's (a router per weight matrix)."""
        spec = self.spec
        if inputs.route_hidden is None:
            return (tuple(spec.param_shapes),)
        return spec.stage_params(output=False), spec.stage_params(output=True)
