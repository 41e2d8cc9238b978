"""REAP: router-weighted expert activation pruning (Lasby et al., ICLR 2026)."""

from __future__ import annotations

from torch import Tensor

from ..base import CompressionMethod, LayerInputs, LayerPlan, pruned, top
from ..calibration import LayerCalibration
from ..registry import register_compressor


@register_compressor("reap_prune")
class ReapPrune(CompressionMethod):
    """Keep the M experts of highest REAP saliency S_j = mean over the tokens routed to j of g_j(x)·‖f_j(x)‖.

    ``X_j`` are the calibration tokens whose top-k contains ``j``, ``g_j(x)`` the weight the
    architecture multiplies expert ``j``'s output by (its router's top-k weight), ``f_j(x)``
    the expert's output: ``S_j = (1/|X_j|) Σ_{x∈X_j} g_j(x) ‖f_j(x)‖₂`` (0 for an expert no
    token chose). The lowest-saliency experts and their router rows are dropped; a global
    budget ranks experts across layers by ``S_j``.
    """

    def importance(self, calibration: LayerCalibration) -> Tensor:
        return calibration.reap_saliency

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:
        return pruned(inputs, top(inputs.calibration.reap_saliency, num_kept))
