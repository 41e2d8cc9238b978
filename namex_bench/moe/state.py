"""Cross-layer state: what one MoE layer hands to the next within one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .experts import ExpertParams


@dataclass(frozen=True)
class PropagationState:
    """The state that flows up through the MoE layers of one forward pass.

    ``base``      — ``E_m^{l}``, the base expert propagated to the next MoE layer
                    (expert propagation: ``ep_camex``, ``namex``, ``namex_mom``);
    ``momentum``  — ``(Re μ, Im μ)``, the complex momentum buffer of ``namex_mom``;
    ``depth``     — how many MoE layers have been passed.

    A fresh, empty state starts every forward pass; nothing is kept between passes.
    """

    base: ExpertParams | None = None
    momentum: tuple[ExpertParams, ExpertParams] | None = None
    depth: int = 0

    def to(self, device) -> PropagationState:
        """This state with its tensors on ``device`` (itself when they are there already): the
        next MoE layer may sit on another GPU when a model's layers are spread over several.

        The copy is made once per state and device and kept with the state: a state that
        evaluation reuses (a layer's cached parts, ``moe/eval_cache.py``) hands the layer on the
        next device the same tensors at every pass, so that layer's cache holds too."""
        device = torch.device(device)
        if all(t.device == device for t in self.tensors()):
            return self
        copies = self.__dict__.setdefault("_copies", {})  # a frozen dataclass: not a field, not compared
        if device not in copies:

            def move(params: ExpertParams) -> ExpertParams:
                return {name: t.to(device) for name, t in params.items()}

            base = None if self.base is None else move(self.base)
            momentum = None if self.momentum is None else (move(self.momentum[0]), move(self.momentum[1]))
            copies[device] = replace(self, base=base, momentum=momentum)
        return copies[device]

    def tensors(self) -> tuple[Tensor, ...]:
        """Every tensor of the state: the base's, then the momentum's."""
        found: list[Tensor] = []
        for params in (self.base, *(self.momentum or ())):
            if params is not None:
                found.extend(params.values())
        return tuple(found)

    def advanced(self, **changes) -> PropagationState:
        """The state for the next layer: ``changes`` applied and ``depth`` incremented."""
        return replace(self, depth=self.depth + 1, **changes)
