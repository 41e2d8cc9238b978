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

    def advanced(self, **changes) -> "PropagationState":
        """The state for the next layer: ``changes`` applied and ``depth`` incremented."""
        return replace(self, depth=self.depth + 1, **changes)
