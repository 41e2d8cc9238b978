"""ViT-MoE: a timm Vision Transformer (or any timm model with ``Mlp`` blocks) whose MLPs are MoE layers.

Every MLP, or every other one as in V-MoE (the 2nd, 4th, …), in the order the model
runs them, becomes an MoE layer. By default the model is a ViT built from the params
below; ``timm_model`` names any timm architecture whose blocks use timm's ``Mlp`` or
``SwiGLU`` with linear layers (ViT, DeiT, Swin, ConvNeXt with ``conv_mlp: false``, …;
1×1-convolution MLPs are refused with a clear error). From scratch, the experts
are initialised independently (timm's ``trunc_normal(0.02)``); from a dense checkpoint
(a local file, or timm's pretrained weights where the hub is reachable) the experts are
upcycled: copies of the dense MLP, optionally with relative noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt

from ..data.paths import require_file
from ..seeding import seeded
from .moe_model import MoEModel, PassHolder
from .moe_params import MoEParams, default_pooling, moe_layer_facts, moe_slots
from .registry import register_builder


class VitMoEParams(MoEParams):
    timm_model: str | None = None  # a timm architecture name (e.g. vit_small_patch16_224); else the fields below
    timm_kwargs: dict = Field(default_factory=dict)  # extra arguments of timm.create_model (e.g. {conv_mlp: false})
    pretrained: bool = False  # timm's pretrained dense weights (needs the hub)
    checkpoint: Path | None = None  # a local dense timm checkpoint (state dict) to upcycle
    patch_size: PositiveInt = 4
    embed_dim: PositiveInt = 64
    depth: PositiveInt = 4
    num_heads: PositiveInt = 4
    mlp_ratio: PositiveFloat = 4.0
    drop_rate: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["token", "image"] | None = None  # default: token for smoe, image for merging methods

    def model_post_init(self, _context) -> None:
        if self.checkpoint is not None:
            require_file(self.checkpoint, "checkpoint")
        if self.timm_model is None and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")


def dense_mlps(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """``(parent, attribute, mlp)`` for every timm ``Mlp``/``SwiGLU`` of ``model``, in module order."""
    from timm.layers import Mlp, SwiGLU

    found = []
    for module in model.modules():
        for attribute, child in module.named_children():
            if isinstance(child, (Mlp, SwiGLU)):
                found.append((module, attribute, child))
    if not found:
        raise ValueError(f"{type(model).__name__} has no timm Mlp or SwiGLU blocks to turn into MoE layers")
    return found


def _create_timm(name: str, pretrained: bool, **kwargs):
    """``timm.create_model``; ``img_size`` goes only to architectures that take it (ViTs do, CNNs do not)."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
        kwargs.pop("img_size")
        return timm.create_model(name, pretrained=pretrained, **kwargs)


def vit_moe_facts(params: VitMoEParams, method):
    """MoE layers and experts without building: ``depth`` blocks, or a timm model's MLPs counted on the meta device."""
    if params.timm_model is None:
        return moe_layer_facts(params, method, params.depth)
    with torch.device("meta"):
        model = _create_timm(params.timm_model, False, **params.timm_kwargs)
    return moe_layer_facts(params, method, len(dense_mlps(model)))


@register_builder("vit_moe", VitMoEParams, facts=vit_moe_facts)
def build_vit_moe(
    params: VitMoEParams, method: str, method_options: dict, num_classes: int, in_chans: int, img_size: int, *, seed: int | None = None,
) -> MoEModel:
    """A timm ViT (or any timm model with Mlp blocks) with MoE MLPs (every one or every other)."""
    from timm.models.vision_transformer import VisionTransformer

    with seeded(seed, "backbone"):  # the whole timm model, head included: the same for every method
        if params.timm_model:
            vit = _create_timm(params.timm_model, params.pretrained, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **params.timm_kwargs)
        else:
            vit = VisionTransformer(
                img_size=img_size, patch_size=params.patch_size, in_chans=in_chans, num_classes=num_classes,
                embed_dim=params.embed_dim, depth=params.depth, num_heads=params.num_heads, mlp_ratio=params.mlp_ratio,
                drop_rate=params.drop_rate,
            )
    if params.checkpoint is not None:
        state = torch.load(params.checkpoint, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the head is task-specific
        vit.load_state_dict(state, strict=False)
    from_dense = params.pretrained or params.checkpoint is not None

    pooling = params.pooling or default_pooling(method, "image")
    passes = PassHolder()
    mlps = dense_mlps(vit)
    slots = moe_slots(
        [mlp for _, _, mlp in mlps], params, method, method_options, passes, seed=seed, from_dense=from_dense,
        pooling=pooling, num_prefix_tokens=getattr(vit, "num_prefix_tokens", 0),
    )
    for index, slot in slots.items():
        parent, attribute, _ = mlps[index]
        setattr(parent, attribute, slot)
    return MoEModel(vit, passes)
