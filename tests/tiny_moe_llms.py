"""Tiny random ``transformers`` MoE LLMs of every architecture namex_bench adapts and compresses
(shared by the adapter and compression tests)."""

from __future__ import annotations

import torch
import transformers
from torch import nn

COMMON = dict(
    vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)


def _configs():
    out = {}
    if hasattr(transformers, "Qwen2MoeConfig"):
        # shared expert of the routed experts' width, so that it can serve as the base expert
        out["qwen2_moe"] = lambda: transformers.Qwen2MoeConfig(
            **COMMON, intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=16,
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
        )
        out["qwen2_moe_norm"] = lambda: transformers.Qwen2MoeConfig(
            **COMMON, intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=48,
            num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
        )
    if hasattr(transformers, "Qwen3MoeConfig"):
        out["qwen3_moe"] = lambda: transformers.Qwen3MoeConfig(
            **COMMON, head_dim=8, intermediate_size=64, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
        )
    if hasattr(transformers, "GptOssConfig"):
        # transposed, interleaved gate/up with biases, clamped activation, a router with a bias
        out["gpt_oss"] = lambda: transformers.GptOssConfig(
            **COMMON, head_dim=8, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2, swiglu_limit=0.5,
            layer_types=["sliding_attention", "full_attention"], sliding_window=8,
        )
    if hasattr(transformers, "MixtralConfig"):
        out["mixtral"] = lambda: transformers.MixtralConfig(**COMMON, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2)
    if hasattr(transformers, "OlmoeConfig"):
        out["olmoe"] = lambda: transformers.OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8, num_experts_per_tok=2)
    if hasattr(transformers, "DeepseekV2Config"):
        mla = dict(num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, head_dim=4)
        out["deepseek_v2"] = lambda: transformers.DeepseekV2Config(
            **{**COMMON, "num_hidden_layers": 3, "num_key_value_heads": 4}, **{k: v for k, v in mla.items() if k != "num_key_value_heads"}, intermediate_size=64, moe_intermediate_size=16, n_shared_experts=1,
            n_routed_experts=8, num_experts_per_tok=2, routed_scaling_factor=1.5, first_k_dense_replace=1,
            topk_method="greedy",
        )
        out["deepseek_v2_group"] = lambda: transformers.DeepseekV2Config(
            **{**COMMON, **mla}, intermediate_size=64, moe_intermediate_size=16, n_shared_experts=2,
            n_routed_experts=8, num_experts_per_tok=3, routed_scaling_factor=2.0, first_k_dense_replace=0,
            topk_method="group_limited_greedy", n_group=2, topk_group=1,  # top-3 inside the best group of 4
        )
        # sigmoid scores, e_score_correction_bias, groups scored by their two best experts, shared experts
        out["deepseek_v3"] = lambda: transformers.DeepseekV3Config(
            **{**COMMON, **mla}, intermediate_size=64, moe_intermediate_size=16, n_shared_experts=1, n_routed_experts=8,
            num_experts_per_tok=2, routed_scaling_factor=2.5, first_k_dense_replace=0, n_group=2, topk_group=1, norm_topk_prob=True,
        )
    return out


CONFIGS = _configs()
ARCHS = sorted(CONFIGS)


def build(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[arch]()).eval()
    with torch.no_grad():  # random weights large enough that routing is decisive (routers init to 0)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3: a selection bias that changes which experts win
                b.normal_(0.0, 0.5)
    return model


def tokens(seed: int = 1, batch: int = 2, length: int = 11) -> torch.Tensor:
    return torch.randint(3, 64, (batch, length), generator=torch.Generator().manual_seed(seed))
