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
``ablations``      — the method's own parts that can be switched to a neutral value, name →
                     what replaces it (see :meth:`MergingMethod.ablated`).

Two class methods let the suite refuse inert comparisons and the record measure mechanisms:
:meth:`MergingMethod.reduces_to` says when a configuration provably computes another
method; :meth:`MergingMethod.ablated` switches one part off for the diagnostics that every
run record holds (``tasks/diagnostics.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from ..moe.experts import ExpertBank, ExpertParams, ExpertSpec, ffn
from ..moe.state import PropagationState


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
    layer's position among the model's MoE layers.
    """

    tokens: Tensor
    scores: Tensor
    bank: ExpertBank
    base: ExpertParams | None
    state: PropagationState
    moe_index: int


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


class MergingMethod(nn.Module):
    """Base class of merging methods (see the module docstring for the contract).

    Subclasses take ``(spec, num_experts, **options)`` in ``__init__``; every option is a
    keyword argument with a default, documented in the class docstring. The first line
    of the class docstring is the method's one-line description.
    """

    name: ClassVar[str] = ""
    pooling_units: ClassVar[tuple[str, ...]] = ("sequence", "segment", "image")
    base_expert: ClassVar[BaseExpert] = BaseExpert.NONE
    default_top_k: ClassVar[int | None] = None
    fixed_top_k_is_n: ClassVar[bool] = False
    ablations: ClassVar[dict[str, str]] = {}
    _ablated: frozenset[str] = frozenset()  # the parts switched off by ablated(), per instance

    def __init__(self, spec: ExpertSpec, num_experts: int):
        super().__init__()
        self.spec = spec
        self.num_experts = num_experts

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

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

    def apply_merged(self, tokens: Tensor, merged: ExpertParams) -> Tensor:
        """Every group's tokens through its own merged expert: ``[G, L, d]``."""
        return ffn(tokens, merged, self.spec)
