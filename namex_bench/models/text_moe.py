"""Text classifiers: a pretrained ``transformers`` encoder whose FFNs are upcycled into MoE layers.

The encoder is a BERT-family model (BERT, RoBERTa, MiniLM, …: layers with
``intermediate``/``output`` parts) or a T5 encoder (``T5LayerFF.DenseReluDense``). Each
selected FFN becomes an MoE layer whose experts and base expert start as copies of it
(``upcycle``), so before fine-tuning every method computes the pretrained encoder exactly.
In a BERT layer the MoE layer takes the place of ``intermediate.dense → act →
output.dense``; the layer's own dropout, residual and LayerNorm stay as they were:

    h = LayerNorm(x + Dropout(MoE(x)))

Merging methods route whole sequences (``sequence`` pooling: the padding-aware mean of the
layer's input), ``smoe`` routes tokens. The classifier reads the encoder's last hidden
states pooled by ``classifier_pooling`` (``mean`` over non-padding tokens, as
sentence-transformers models like all-MiniLM-L6-v2 are trained, or the ``cls`` token):

    logits = W · Dropout(pool(h_L)) + b

``pretrained`` is a hub id, a local model folder, or ``all-MiniLM-L6-v2`` — the copy in a
pinned offline archive (``data/tokenizers.py``). ``config`` instead builds a randomly
initialised encoder from a ``transformers`` config (``model_type`` plus its fields) — for
tests and stand-ins; its experts are then copies of random FFNs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from ..seeding import seeded
from .moe_model import MoEModel, PassHolder
from .moe_params import MoEParams, cached_config, default_pooling, moe_layer_facts, moe_slots
from .registry import register_builder

T5_TYPES = ("t5", "mt5", "umt5")


class TextMoEParams(MoEParams):
    pretrained: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: the pretrained model's
    moe_blocks: Literal["every", "every_other"] = "every"
    num_experts: int = Field(4, ge=1)
    pooling: Literal["token", "sequence"] | None = None
    classifier_pooling: Literal["mean", "cls"] = "mean"
    classifier_dropout: float = Field(0.1, ge=0, lt=1)

    def model_post_init(self, _context) -> None:
        if (self.pretrained is None) == (self.config is None):
            raise ValueError("give exactly one of `pretrained` (a model to upcycle) and `config` (a random encoder)")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("config needs a `model_type` (e.g. bert, t5)")
        if self.pretrained is None and self.tokenizer is None:
            raise ValueError("a `config` encoder needs a `tokenizer` (a hub id, a folder or all-MiniLM-L6-v2)")


def load_encoder(params: TextMoEParams) -> nn.Module:
    """The dense ``transformers`` encoder: pretrained, or random from ``params.config``."""
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    from ..data.tokenizers import resolve_pretrained

    if params.config is not None:
        config = AutoConfig.for_model(**params.config)
        return T5EncoderModel(config) if config.model_type in T5_TYPES else AutoModel.from_config(config)
    from transformers.utils import logging

    source = resolve_pretrained(params.pretrained)
    config = AutoConfig.from_pretrained(source)
    if config.model_type in T5_TYPES:
        return T5EncoderModel.from_pretrained(source)
    if config.model_type != "bert":
        return AutoModel.from_pretrained(source)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the checkpoint's pooler weights are left out on purpose: no load report
    try:
        return AutoModel.from_pretrained(source, add_pooling_layer=False)
    finally:
        logging.set_verbosity(verbosity)


def encoder_ffns(encoder: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, kind)`` of every FFN in order: a BERT-family layer (``"bert"``) or a T5
    ``T5LayerFF`` (``"t5"``, its ``DenseReluDense`` is the FFN)."""
    found = []
    for module in encoder.modules():
        if hasattr(module, "intermediate") and hasattr(module, "output") and hasattr(module.output, "dense"):
            found.append((module, "bert"))
        elif isinstance(getattr(module, "DenseReluDense", None), nn.Module):
            found.append((module, "t5"))
    if not found:
        raise ValueError(f"{type(encoder).__name__}: no BERT-family layer or T5 FFN found to turn into MoE layers")
    return found


class EncoderClassifier(nn.Module):
    """``logits = head(dropout(pool(encoder(x).last_hidden_state)))``."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)  # T5 maps hidden_size to d_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(self.dropout(pooled))


def text_moe_facts(params: TextMoEParams, method):
    """MoE layers and experts without building: one FFN per encoder layer (BERT ``num_hidden_layers``,
    T5 ``num_layers``); a ``pretrained`` checkpoint only when its config is on this machine."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**params.config) if params.config is not None else cached_config(params.pretrained)
    return moe_layer_facts(params, method, None if config is None else config.num_hidden_layers)


@register_builder("text_moe", TextMoEParams, kind="text_classifier", facts=text_moe_facts)
def build_text_moe(params: TextMoEParams, method: str, method_options: dict, num_labels: int, *, seed: int | None = None) -> MoEModel:
    """A transformers encoder (BERT family, T5) with upcycled MoE FFNs and a classification head."""
    from transformers import AutoTokenizer

    from ..data.tokenizers import resolve_pretrained

    with seeded(seed, "backbone"):  # a random encoder, or a checkpoint's weights that were not in it
        encoder = load_encoder(params)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(params.tokenizer or params.pretrained))
    passes = PassHolder()
    ffns = encoder_ffns(encoder)
    dense = [module if kind == "bert" else module.DenseReluDense for module, kind in ffns]
    pooling = params.pooling or default_pooling(method, "sequence")
    for index, slot in moe_slots(dense, params, method, method_options, passes, seed=seed, pooling=pooling).items():
        module, kind = ffns[index]
        if kind == "bert":  # intermediate → the whole FFN; output keeps dropout, residual, LayerNorm
            module.intermediate = slot
            module.output.dense = nn.Identity()
        else:
            module.DenseReluDense = slot
    with seeded(seed, "head"):
        classifier = EncoderClassifier(encoder, num_labels, params.classifier_pooling, params.classifier_dropout)
        nn.init.normal_(classifier.head.weight, std=0.02)
        nn.init.zeros_(classifier.head.bias)
    model = MoEModel(classifier, passes)
    model.tokenizer = tokenizer
    return model
