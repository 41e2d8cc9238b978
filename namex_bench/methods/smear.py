"""SMEAR: soft merging of experts with dense routing (Muqeeth et al., 2023)."""

from __future__ import annotations

from ..moe.experts import soft_merge
from .base import MergeInputs, MergeOutput, MergingMethod
from .registry import register_method


@register_method("smear")
class SMEAR(MergingMethod):
    """Soft merging: each group uses Ē_g = Σ_i s_gi E_i, with dense routing over all N experts."""

    fixed_top_k_is_n = True

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        merged = soft_merge(inputs.scores, inputs.bank.params())
        return MergeOutput(self.apply_merged(inputs.tokens, merged), inputs.state.advanced())
