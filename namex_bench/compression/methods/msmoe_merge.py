"""M-SMoE: merge experts into the most-used ones, grouped by router-logit similarity (Li et al., ICLR 2024)."""

from __future__ import annotations

import torch

from ..alignment import align_to
from ..base import CompressionMethod, LayerInputs, LayerPlan, merged, top
from ..clustering import assign_to_dominant
from ..registry import register_compressor


@register_compressor("msmoe_merge")
class MSMoEMerge(CompressionMethod):
    """The M most-used experts dominate; every other joins the dominant one with the most similar router logits; frequency-weighted merge.

    Dominant experts: the ``M`` highest ``frequency_j``. Similarity: cosine of the router-logit
    columns over the calibration tokens, ``⟨l_i, l_j⟩ / ‖l_i‖‖l_j‖``. Each group is merged as
    ``Σ_j f_j θ_j / Σ_j f_j`` (``f`` the frequencies; uniform if no member was chosen), after
    its members' hidden neurons are permuted to match the dominant expert's
    (``align=True``, weight matching, as M-SMoE). The merged expert takes the dominant
    expert's router row.
    """

    kind = "merge"

    def __init__(self, align: bool = True):
        super().__init__()
        self.align = bool(align)

    def compress(self, inputs: LayerInputs, num_kept: int) -> LayerPlan:
        calibration = inputs.calibration
        dominant = top(calibration.frequency, num_kept)
        groups = assign_to_dominant(calibration.logit_cosine, dominant)
        weights, params = [], []
        for group in groups:
            f = calibration.frequency[group]
            weights.append(f if f.sum() > 0 else f.new_ones(len(group)))
            members = [{k: v[j] for k, v in inputs.experts.items()} for j in group]
            if self.align:
                members = [members[0], *(align_to(members[0], m) for m in members[1:])]
            params.append({k: torch.stack([m[k] for m in members]) for k in members[0]})
        return merged(inputs, groups, weights, [g[0] for g in groups], params)
