"""The ``moe_llm`` builder: a pretrained ``transformers`` MoE LLM driven by any merging method.

``pretrained`` names the checkpoint (``Qwen/Qwen1.5-MoE-A2.7B``,
``deepseek-ai/deepseek-moe-16b-base`` with ``trust_remote_code: true``, ``mistralai/Mixtral-8x7B-v0.1``,
``allenai/OLMoE-1B-7B-0924``, or a local folder); ``config`` instead builds a small random
model of an architecture (``model_type`` and its fields) — the stand-ins the tests and
``--limit`` dry runs use offline. :func:`~namex_bench.models.hf_moe.adapt_moe_llm` then
replaces every sparse MoE block (its docstring says which base expert each architecture
gets, and how routing follows the architecture). Zero-shot evaluation uses the weights as
they are; fine-tuning trains them like any other model. Segments route strictly causally by
default (``first_segment: prior``, as in ``gpt_moe``).

DeepSeek-MoE-16B's modelling code ships with its checkpoint (``model_type: deepseek``):
its blocks are read like the others (``gate``, a ``ModuleList`` of gated experts,
``shared_experts``), but no offline test can cover remote code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveInt

from ..methods.base import ModelFacts
from ..seeding import seeded
from .hf_moe import HFMoEModel, adapt_moe_llm, find_moe_blocks, routing_from_config
from .moe_params import cached_config
from .registry import register_builder


class MoELLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pretrained: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: the checkpoint's; a `config` stand-in: GPT-2's BPE (offline archive)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: the checkpoint's own
    trust_remote_code: bool = False
    base: Literal["auto", "shared", "mean"] = "auto"
    top_k: PositiveInt | None = None  # default: the architecture's (N for dense merging methods)
    pooling: Literal["token", "segment"] | None = None
    segment_length: PositiveInt = 64
    first_segment: Literal["self", "prior"] = "prior"  # prior: strictly causal (see gpt_moe's docstring)

    def model_post_init(self, _context) -> None:
        if (self.pretrained is None) == (self.config is None):
            raise ValueError("give exactly one of `pretrained` (a checkpoint) and `config` (a random stand-in)")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("config needs a `model_type` (qwen2_moe, mixtral, olmoe, deepseek_v2)")


def load_causal_lm(params: MoELLMParams, seed: int | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the dense-routed original, in eval mode (a ``config`` stand-in is
    initialised from the stream ``(seed, "backbone")``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..data.tokenizers import gpt2_tokenizer, resolve_pretrained

    if params.config is not None:
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.tokenizer)) if params.tokenizer else gpt2_tokenizer()
        fields = {"vocab_size": len(tokenizer), **params.config}
        if fields["vocab_size"] < len(tokenizer):
            raise ValueError(f"config.vocab_size={fields['vocab_size']} is smaller than the tokenizer's {len(tokenizer)} tokens")
        with seeded(seed, "backbone"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**fields))
        if params.dtype != "auto":
            model.to(getattr(torch, params.dtype))
    else:
        source = resolve_pretrained(params.pretrained)
        dtype = "auto" if params.dtype == "auto" else getattr(torch, params.dtype)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=params.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.tokenizer or params.pretrained), trust_remote_code=params.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def moe_llm_facts(params: MoELLMParams, method) -> ModelFacts:
    """The sparse blocks of the model, counted on the meta device: a ``config`` stand-in's, or a
    checkpoint's whose config is already on this machine (remote code is not run to count)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if params.config is not None:
        config = AutoConfig.for_model(**{"vocab_size": 8, **params.config})
    elif params.trust_remote_code or (config := cached_config(params.pretrained)) is None:
        return ModelFacts()
    with torch.device("meta"):
        blocks = find_moe_blocks(AutoModelForCausalLM.from_config(config))
    if not blocks:
        return ModelFacts(0)
    num_experts = blocks[0][1].gate.weight.shape[0]
    top_k = params.top_k or (None if method.fixed_top_k_is_n else min(routing_from_config(config).top_k, num_experts))
    return ModelFacts(len(blocks), num_experts, method.resolve_top_k(num_experts, top_k))


@register_builder("moe_llm", MoELLMParams, kind="causal_lm", facts=moe_llm_facts)
def build_moe_llm(params: MoELLMParams, method: str, method_options: dict, *, seed: int | None = None) -> HFMoEModel:
    """A pretrained transformers MoE LLM (Qwen2-MoE, Mixtral, OLMoE, DeepSeek) with merged MoE blocks."""
    model, tokenizer = load_causal_lm(params, seed)
    options = {"segment_length": params.segment_length, "first_segment": params.first_segment, "seed": seed}
    if params.top_k is not None:
        options["top_k"] = params.top_k
    if params.pooling is not None:
        options["pooling"] = params.pooling
    lm = adapt_moe_llm(model, method, method_options, base=params.base, **options)
    lm.tokenizer = tokenizer
    return lm
