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
``fixed_top_k_is_n`` — the method is defined with dense routing only (``k = N``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from ..moe.experts import ExpertBank, ExpertParams, ExpertSpec, MergedExperts, ffn
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

    def __init__(self, spec: ExpertSpec, num_experts: int):
        super().__init__()
        self.spec = spec
        self.num_experts = num_experts

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def forward(self, inputs: MergeInputs) -> MergeOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_merged(self, tokens: Tensor, merged: ExpertParams | MergedExperts) -> Tensor:
        """Every group's tokens through its own merged expert: ``[G, L, d]`` (see :func:`~namex_bench.moe.experts.ffn`)."""
        return ffn(tokens, merged, self.spec)
