"""Frequency pruning: drop the experts the router selects least."""

from __future__ import annotations

from ..base import CompressionMethod, LayerInputs, LayerPlan, pruned, top
from ..registry import register_compressor


@register_compressor("frequency_prune")
class FrequencyPrune(CompressionMethod):
    """Keep the M experts routed to most often on the calibration tokens; drop the others and their router rows.

    ``frequency_j = |{t : j ∈ topk(t)}|``; ties go to the lower index. With ``M = N`` the block is unchanged.
    """

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:
        return pruned(inputs, top(inputs.calibration.frequency, num_kept))
