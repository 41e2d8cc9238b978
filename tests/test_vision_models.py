"""Vision models: timm models whose Mlp blocks become MoE layers, upcycled from dense checkpoints."""

from __future__ import annotations

import pytest
import timm
import torch

from namex_bench.models.moe_params import moe_block_indices
from namex_bench.models.registry import get_builder
from namex_bench.models.vit_moe import dense_mlps


def build(params: dict, method: str, num_classes=10, in_chans=3, img_size=32):
    builder = get_builder("vit_moe")
    return builder.build(builder.validate(params), method, {}, num_classes, in_chans, img_size)


def test_every_other_block_ends_with_the_last():
    assert moe_block_indices(4, "every_other") == [1, 3]
    assert moe_block_indices(5, "every_other") == [0, 2, 4]
    assert moe_block_indices(3, "every") == [0, 1, 2]


@pytest.mark.parametrize("method", ["smear", "camex", "smoe", "namex_mom"])
def test_upcycled_vit_equals_its_dense_checkpoint(tmp_path, method):
    torch.manual_seed(0)
    dense = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=4, num_heads=4)
    dense.eval()
    checkpoint = tmp_path / "dense.pt"
    torch.save(dense.state_dict(), checkpoint)
    params = {"checkpoint": str(checkpoint), "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 4, "moe_blocks": "every_other", "num_experts": 3}
    moe = build(params, method)
    moe.backbone.head.load_state_dict(dense.head.state_dict())  # the head is task-specific, not in the checkpoint load
    moe.eval()
    assert len(moe.moe_layers) == 2
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(moe(x).output, dense(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["smear", "topk_merge", "camex"])
def test_any_timm_model_with_mlp_blocks_convnext(tmp_path, method):
    """ConvNeXt runs its MLPs on channels-last [B, H, W, C] maps; every other one becomes MoE."""
    torch.manual_seed(0)
    dense = timm.create_model("convnext_atto", pretrained=False, num_classes=10, conv_mlp=False).eval()
    checkpoint = tmp_path / "convnext.pt"
    torch.save(dense.state_dict(), checkpoint)
    moe = build({"timm_model": "convnext_atto", "timm_kwargs": {"conv_mlp": False}, "checkpoint": str(checkpoint), "num_experts": 2}, method)
    moe.backbone.head.load_state_dict(dense.head.state_dict())
    moe.eval()
    assert len(moe.moe_layers) == len(dense_mlps(dense)) // 2 == 6
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(moe(x).output, dense(x), rtol=1e-4, atol=1e-4)


def test_expert_propagation_refuses_layers_of_different_shapes():
    """ConvNeXt's stages have different widths: ep_camex cannot propagate a base expert across them."""
    moe = build({"timm_model": "convnext_atto", "timm_kwargs": {"conv_mlp": False}, "num_experts": 2}, "ep_camex")
    with pytest.raises(ValueError, match="one shape"):
        moe(torch.randn(1, 3, 32, 32))


def test_a_model_without_mlp_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match="no timm Mlp"):
        dense_mlps(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_conv_mlps_are_refused_clearly():
    with pytest.raises(ValueError, match="conv MLPs are not supported"):
        build({"timm_model": "convnext_atto", "num_experts": 2}, "smear")
