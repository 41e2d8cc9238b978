"""Top-k merging: SMEAR restricted to the top-k experts, renormalised (MEO-style)."""

from __future__ import annotations

from .base import ModelFacts
from .registry import register_method
from .smear import SMEAR


@register_method("topk_merge")
class TopKMerge(SMEAR):
    """Top-k merging: Ē_g = Σ_{i∈topk(g)} s_gi E_i with the scores renormalised over the top k."""

    fixed_top_k_is_n = False
    default_top_k = 2
    presets = {}  # no reference code: MEO's merging is not published

    @classmethod
    def reduces_to(cls, options, model: ModelFacts) -> str | None:
        if model.top_k is not None and model.top_k == model.num_experts:
            return "smear (top_k = N: the scores renormalised over all N experts are SMEAR's)"
        return None
