"""GPT-MoE: a ``transformers`` GPT-2 causal LM whose MLPs are MoE layers with causal routing.

From scratch (``n_layer``, ``n_embd``, ``n_head``; GPT-2's byte-level BPE, 50,257 tokens,
from a pinned offline archive, or ``tokenizer``: e.g. ``byte-tokenizer``, 257 tokens, whose
output layer is ~200× cheaper — where a small CPU budget is better spent on the model) or
upcycled from a dense GPT-2 checkpoint (``pretrained``: a hub id such as ``gpt2`` or a local
folder; its own tokenizer). The blocks are GPT-2's,
read like nanoGPT's::

    h = x + Attn(LN_1(x))                  causal self-attention
    y = h + MoE(LN_2(h))                   the MLP, now a mixture of experts

Merging methods route ``segment`` s of ``segment_length`` tokens: segment ``j`` is merged
with the router's scores of segment ``j − 1``'s mean, and the first segment with the
router's prior (the zero vector's scores, ``first_segment: prior``, the default) — so no
token's output depends on a later token (tested). ``first_segment: self`` (the first
segment's own scores, detached, as the CAMEx code) lets the first segment's later tokens
shape the merge its earlier tokens use, a leak in next-token training; it remains an
option. ``smoe`` routes each token. From scratch, the experts start as copies of the
block's freshly initialised MLP plus ``upcycle_noise`` (default 0.01 relative) so that
they can diverge.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ..seeding import seeded
from .hf_moe import HFMoEModel
from .moe_model import PassHolder
from .moe_params import MoEParams, cached_config, default_pooling, moe_layer_facts, moe_slots
from .registry import register_builder

ARCHITECTURE = ("n_layer", "n_embd", "n_head", "n_positions")


class GptMoEParams(MoEParams):
    pretrained: str | None = None  # a dense GPT-2 (hub id or folder) to upcycle; else built from the fields below
    n_layer: PositiveInt | None = None
    n_embd: PositiveInt | None = None
    n_head: PositiveInt | None = None
    n_positions: PositiveInt | None = None  # from scratch: 1024 when not given
    tokenizer: str | None = None  # from scratch: GPT-2's BPE when not given; a name of data/tokenizers.py, a hub id or a folder
    dropout: float = Field(0.0, ge=0, lt=1)
    moe_blocks: Literal["every", "every_other"] = "every"
    num_experts: int = Field(4, ge=1)
    upcycle_noise: float = Field(0.01, ge=0)
    pooling: Literal["token", "segment"] | None = None
    segment_length: PositiveInt = 32
    first_segment: Literal["self", "prior"] = "prior"  # prior: strictly causal (see the module docstring)

    def model_post_init(self, _context) -> None:
        given = [f for f in ARCHITECTURE if getattr(self, f) is not None]
        if self.pretrained is not None and (given or self.tokenizer is not None):
            extra = ", ".join([*given, *(["tokenizer"] if self.tokenizer is not None else [])])
            raise ValueError(f"with `pretrained` the architecture and tokenizer are the checkpoint's: leave out {extra}")
        if self.pretrained is None:
            missing = [f for f in ARCHITECTURE[:3] if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a GPT-MoE built from scratch needs {', '.join(missing)} (or `pretrained`)")
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")


def gpt_moe_facts(params: GptMoEParams, method):
    """MoE layers and experts without building (a ``pretrained`` checkpoint only when it is on this machine)."""
    if params.pretrained is None:
        return moe_layer_facts(params, method, params.n_layer)
    config = cached_config(params.pretrained)
    return moe_layer_facts(params, method, None if config is None else config.n_layer)


@register_builder("gpt_moe", GptMoEParams, kind="causal_lm", facts=gpt_moe_facts)
def build_gpt_moe(params: GptMoEParams, method: str, method_options: dict, *, seed: int | None = None) -> HFMoEModel:
    """A transformers GPT-2 (from scratch or upcycled) with MoE MLPs and causal routing."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from ..data.tokenizers import gpt2_tokenizer, resolve_pretrained

    if params.pretrained is not None:
        source = resolve_pretrained(params.pretrained)
        model = GPT2LMHeadModel.from_pretrained(source, resid_pdrop=params.dropout, embd_pdrop=params.dropout, attn_pdrop=params.dropout)
        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.tokenizer)) if params.tokenizer else gpt2_tokenizer()
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=params.n_positions or 1024, n_layer=params.n_layer, n_embd=params.n_embd,
            n_head=params.n_head, resid_pdrop=params.dropout, embd_pdrop=params.dropout, attn_pdrop=params.dropout,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        with seeded(seed, "backbone"):
            model = GPT2LMHeadModel(config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    passes = PassHolder()
    blocks = list(model.transformer.h)
    pooling = params.pooling or default_pooling(method, "segment")
    slots = moe_slots(
        [block.mlp for block in blocks], params, method, method_options, passes, seed=seed,
        pooling=pooling, segment_length=params.segment_length, first_segment=params.first_segment,
    )
    for index, slot in slots.items():
        blocks[index].mlp = slot
    lm = HFMoEModel(model, passes)
    lm.tokenizer = tokenizer
    return lm
