"""ViT-MoE: a timm Vision Transformer whose MLP blocks are MoE layers.

Every block, or every other block as in V-MoE (blocks 1, 3, 5, …), gets an MoE layer in
place of its ``Mlp``. From scratch, the experts are initialised independently (timm's
``trunc_normal(0.02)``); from a dense checkpoint (a local file, or timm's pretrained
weights where the hub is reachable) the experts are upcycled: copies of the dense MLP,
optionally with relative noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from ..methods.registry import get_method
from ..moe.experts import ExpertBank
from ..moe.layer import MoELayer
from ..moe.upcycle import dense_ffn_params, upcycle
from .moe_model import MoEModel, MoESlot, PassHolder
from .registry import register_builder


class VitMoEParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timm_model: str | None = None  # a timm architecture name (e.g. vit_small_patch16_224); else the fields below
    pretrained: bool = False  # timm's pretrained dense weights (needs the hub)
    checkpoint: Path | None = None  # a local dense timm checkpoint (state dict) to upcycle
    patch_size: PositiveInt = 4
    embed_dim: PositiveInt = 64
    depth: PositiveInt = 4
    num_heads: PositiveInt = 4
    mlp_ratio: PositiveFloat = 4.0
    drop_rate: float = Field(0.0, ge=0, lt=1)
    moe_blocks: Literal["every", "every_other"] = "every_other"
    num_experts: PositiveInt = 8
    top_k: PositiveInt | None = None
    pooling: Literal["token", "image"] | None = None  # default: token for smoe, image for merging methods
    aux_loss: Literal["switch", "cv2", "none"] = "switch"
    aux_loss_coef: float = Field(0.01, ge=0)
    noisy_gating: bool = False
    upcycle_noise: float = Field(0.0, ge=0)

    def model_post_init(self, _context) -> None:
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ValueError(f"checkpoint {self.checkpoint} does not exist")
        if self.timm_model is None and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")


def moe_block_indices(depth: int, which: str) -> list[int]:
    """Blocks that become MoE: all, or every other one ending with the last (V-MoE)."""
    return list(range(depth)) if which == "every" else list(range(depth - 1, -1, -2))[::-1]


@register_builder("vit_moe", VitMoEParams)
def build_vit_moe(params: VitMoEParams, method: str, method_options: dict, num_classes: int, in_chans: int, img_size: int) -> MoEModel:
    """A timm ViT with MoE MLP blocks (every block or every other)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if params.timm_model:
        vit = timm.create_model(params.timm_model, pretrained=params.pretrained, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
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

    method_cls = get_method(method)
    pooling = params.pooling or ("token" if "token" in method_cls.pooling_units else "image")
    passes = PassHolder()
    for moe_index, block_index in enumerate(moe_block_indices(len(vit.blocks), params.moe_blocks)):
        block = vit.blocks[block_index]
        options = dict(
            method_options=method_options, top_k=params.top_k, pooling=pooling, num_prefix_tokens=vit.num_prefix_tokens,
            aux_loss=params.aux_loss, aux_loss_coef=params.aux_loss_coef, noisy_gating=params.noisy_gating, moe_index=moe_index,
        )
        if from_dense:
            layer = upcycle(block.mlp, params.num_experts, method, noise_std=params.upcycle_noise, **options)
        else:
            spec, _ = dense_ffn_params(block.mlp)
            layer = MoELayer(spec, params.num_experts, method, **options)
            for bank in (layer.experts, layer.base):
                if isinstance(bank, ExpertBank):
                    bank.reset_parameters(init_std=0.02)
        block.mlp = MoESlot(layer, passes)
    return MoEModel(vit, passes)
