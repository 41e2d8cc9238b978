"""The MoE settings every model builder shares, and turning one dense FFN into an MoE slot."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from ..methods.base import MergingMethod, ModelFacts
from ..methods.registry import get_method
from ..moe.experts import ExpertBank
from ..moe.layer import MoELayer
from ..moe.upcycle import dense_ffn_params, upcycle
from ..seeding import component_generator, seeded
from .moe_model import MoESlot, PassHolder


class MoEParams(BaseModel):
    """Which FFNs become MoE layers and how they route (``pooling: null`` = the method's default
    for the model family: ``token`` for ``smoe``, the family's merging unit otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    moe_blocks: Literal["every", "every_other"] = "every_other"
    num_experts: PositiveInt = 8
    top_k: PositiveInt | None = None
    aux_loss: Literal["switch", "cv2", "none"] = "switch"
    aux_loss_coef: float = Field(0.01, ge=0)
    noisy_gating: bool = False
    upcycle_noise: float = Field(0.0, ge=0)


def moe_block_indices(depth: int, which: str) -> list[int]:
    """Blocks that become MoE: all, or every other one ending with the last (V-MoE)."""
    return list(range(depth)) if which == "every" else list(range(depth - 1, -1, -2))[::-1]


def moe_layer_facts(params: MoEParams, method: type[MergingMethod], num_ffns: int | None) -> ModelFacts:
    """:class:`ModelFacts` of a model whose ``num_ffns`` dense FFNs (``None``: unknown) become MoE
    layers as ``params`` says."""
    layers = None if num_ffns is None else len(moe_block_indices(num_ffns, params.moe_blocks))
    return ModelFacts(layers, params.num_experts, method.resolve_top_k(params.num_experts, params.top_k))


def cached_config(pretrained: str):
    """The ``transformers`` config of a checkpoint that is already on this machine (a local
    folder or the hub cache), or ``None`` — validating a suite never downloads anything."""
    from transformers import AutoConfig

    from ..data.tokenizers import ARCHIVE_PREFIX, OFFLINE_PRETRAINED

    name = pretrained.strip().lower().removeprefix(ARCHIVE_PREFIX)
    if name in {k.lower() for k in OFFLINE_PRETRAINED}:
        return None  # an offline archive: not extracted just to validate
    try:
        return AutoConfig.from_pretrained(pretrained, local_files_only=True)
    except Exception:
        return None


def default_pooling(method: str, merging_unit: str) -> str:
    """``token`` for methods that route tokens (``smoe``), else ``merging_unit`` (e.g. ``sequence``)."""
    units = get_method(method).pooling_units
    return "token" if "token" in units else merging_unit


def moe_slots(
    dense_ffns: list[nn.Module], params: MoEParams, method: str, method_options: dict, passes: PassHolder,
    *, seed: int | None, from_dense: bool = True, **layer_options,
) -> dict[int, MoESlot]:
    """``{index in dense_ffns: MoESlot}`` for the FFNs ``params.moe_blocks`` selects.

    ``from_dense``: each layer is upcycled from its dense FFN (experts and base expert start as
    copies, plus ``upcycle_noise``); otherwise it has the FFN's shape and fresh weights, every
    expert initialised independently (``trunc_normal(0.02)``, timm's). Every random draw comes
    from a stream of its own keyed on ``(seed, "moe<i>.<part>")`` (``namex_bench.seeding``): the
    router, the experts and the upcycling noise of layer ``i`` are the same for every method."""
    slots = {}
    for moe_index, ffn_index in enumerate(moe_block_indices(len(dense_ffns), params.moe_blocks)):
        options = dict(
            method_options=method_options, top_k=params.top_k, aux_loss=params.aux_loss, aux_loss_coef=params.aux_loss_coef,
            noisy_gating=params.noisy_gating, moe_index=moe_index, seed=seed, **layer_options,
        )
        dense = dense_ffns[ffn_index]
        if from_dense:
            noise = component_generator(seed, f"moe{moe_index}.upcycle_noise")
            layer = upcycle(dense, params.num_experts, method, noise_std=params.upcycle_noise, generator=noise, **options)
        else:
            layer = MoELayer(dense_ffn_params(dense)[0], params.num_experts, method, **options)
            for part in ("experts", "base"):
                bank = getattr(layer, part)
                if isinstance(bank, ExpertBank):
                    with seeded(seed, f"moe{moe_index}.{part}"):
                        bank.reset_parameters(init_std=0.02)
        slots[ffn_index] = MoESlot(layer, passes, seed)
    return slots
