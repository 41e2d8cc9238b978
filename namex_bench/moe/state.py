"""Cross-layer state: what one MoE layer hands to the next within one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, replace

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

    def to(self, device) -> "PropagationState":
        """This state with its tensors on ``device`` (itself when they are there already): the
        next MoE layer may sit on another GPU when a model's layers are spread over several."""
        def move(params: ExpertParams) -> ExpertParams:
            return {name: t.to(device) for name, t in params.items()}

        base = None if self.base is None else move(self.base)
        momentum = None if self.momentum is None else (move(self.momentum[0]), move(self.momentum[1]))
        return replace(self, base=base, momentum=momentum)

    def advanced(self, **changes) -> "PropagationState":
        """The state for the next layer: ``changes`` applied and ``depth`` incremented."""
        return replace(self, depth=self.depth + 1, **changes)
