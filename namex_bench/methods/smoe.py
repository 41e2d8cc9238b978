"""SMoE: token top-k routing with no merging (Shazeer et al., 2017)."""

from __future__ import annotations

import torch

from ..moe.experts import dense_ffn
from .base import MergeInputs, MergeOutput, MergingMethod
from .registry import register_method


@register_method("smoe")
class SMoE(MergingMethod):
    """Sparse MoE: each token goes through its top-k experts, y_t = Σ_{i∈topk(t)} s_ti FFN(x_t; E_i).

    Tokens are dispatched expert by expert, so each expert computes only the tokens
    routed to it.
    """

    pooling_units = ("token",)
    default_top_k = 2

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        x = inputs.tokens.reshape(-1, inputs.tokens.shape[-1])  # [G·L, d]
        scores = inputs.scores.repeat_interleave(inputs.tokens.shape[1], dim=0)  # [G·L, N]
        out = torch.zeros_like(x)  # x's dtype: float32 under autocast, where the experts' outputs are bf16
        token_idx, expert_idx = scores.nonzero(as_tuple=True)
        for e in range(self.num_experts):
            rows = token_idx[expert_idx == e]
            if rows.numel():
                y = dense_ffn(x[rows], inputs.bank.expert(e), self.spec)
                out.index_add_(0, rows, (y * scores[rows, e : e + 1].to(y.dtype)).to(out.dtype))
        return MergeOutput(out.reshape_as(inputs.tokens), inputs.state.advanced())
