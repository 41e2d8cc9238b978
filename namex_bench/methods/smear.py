"""SMEAR: soft merging of experts with dense routing (Muqeeth et al., 2023)."""

from __future__ import annotations

from ..moe.experts import soft_merge, subset
from .base import MergeInputs, MergeOutput, MergingMethod, Preset
from .registry import register_method


@register_method("smear")
class SMEAR(MergingMethod):
    """Soft merging: each group uses Ē_g = Σ_i s_gi E_i, with dense routing over all N experts.

    Options: the routing options of every method (``namex-bench list methods -v``).
    Preset ``reference``: SMEAR's default configuration.
    """

    fixed_top_k_is_n = True
    presets = {
        "reference": Preset(
            "as SMEAR's default configuration runs it (r-three/smear @ 6e44c82, hyperformer/hyperformer/adapters/"
            "adapter_controller_fast.py and adapter_utils.py; configs/adapter/parameter_averaging_routing.json): "
            "LayerNorm on the pooled input and LayerNorm-normalised router weights, no router bias, routing means "
            "over every position, padding included",
            {"router_norm": "layernorm", "routing_padding": "include"},
        )
    }

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        params = inputs.bank.params()
        output = self.run_merged(inputs, lambda scores, names: soft_merge(scores, subset(params, names)))
        return MergeOutput(output, inputs.state.advanced())
