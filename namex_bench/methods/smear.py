"""SMEAR: soft merging of experts with dense routing (Muqeeth et al., 2023)."""

from __future__ import annotations

from ..moe.experts import ExpertParams, experts_mean, soft_merge, subset
from ..moe.precision import LOW_PRECISION, compute_dtype
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

    def parameter_parts(self, inputs: MergeInputs) -> ExpertParams | None:
        """The experts' mean ``θ̄``, the center of the merges where the matmuls run in bf16/fp16
        (see :class:`~namex_bench.moe.experts.MergedExperts`); ``None`` where they run in the
        weights' precision (no center is used)."""
        if compute_dtype(inputs.tokens) not in LOW_PRECISION:
            return None
        return experts_mean(inputs.bank.params())

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        params, mean = inputs.bank.params(), self.parts(inputs)

        def merge(scores, names):
            return soft_merge(scores, subset(params, names), mean=None if mean is None else subset(mean, names))

        return MergeOutput(self.run_merged(inputs, merge), inputs.state.advanced())
