"""The student of a planted world: one MoE layer per world layer, over the world's experts.

::

    y^l = MoE_l(h^l)          l = 0 … L−1, in order, within one forward pass

Every layer gets its own input ``h^l`` (the teacher's, ``data/planted.py``), so each
layer's merged expert is identifiable, while the layers stay coupled through the
forward pass's :class:`~namex_bench.moe.state.PropagationState` (the propagated base).

Every MoE layer has the world's ``N`` experts, *linear* (``identity`` activation, no
biases) and frozen at the planted values: expert ``i`` of layer ``l`` maps ``h ↦ E_i^l h``
(its ``w_in`` is the identity, its ``w_out`` the planted ``E_i^l``). What a method may
learn is only what makes it a method: the router, the base expert (initialised to the
mean of the layer's experts, its ``w_in`` frozen at the identity), the curvature and any
other parameter of the method. So the merged expert each method builds can be compared
with the world's known optimum (``data/planted.py``).

The first ``d`` tokens of every input are *probe* tokens, left out of routing
(``image`` pooling with ``num_prefix_tokens = d``) but passed through the merged expert:
fed the identity matrix, they read each sequence's merged matrix off the layer's output
(see ``tasks/planted.py``). Training inputs carry zeros there.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from ..data.planted import PlantedWorld
from ..moe.experts import ExpertSpec
from ..moe.layer import MoELayer
from ..seeding import component_generator
from .moe_model import MoEModel, MoESlot, PassHolder
from .moe_params import default_pooling
from .registry import register_builder


class PlantedMoEParams(BaseModel):
    """Routing of the student's MoE layers (their experts come from the world)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: PositiveInt | None = None
    aux_loss: Literal["switch", "cv2", "none"] = "switch"
    aux_loss_coef: float = Field(0.01, ge=0)
    router_init_std: float = Field(0.02, gt=0)


class PlantedLayers(nn.Module):
    """``h [G, L, T, d] → y [G, L, T, d]`` with ``y[:, l] = MoE_l(h[:, l])``, layers in order."""

    def __init__(self, slots: list[MoESlot]):
        super().__init__()
        self.blocks = nn.ModuleList(slots)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([block(h[:, index]) for index, block in enumerate(self.blocks)], dim=1)


@register_builder("planted_moe", PlantedMoEParams, kind="planted_regressor")
def build_planted_moe(params: PlantedMoEParams, method: str, method_options: dict, world: PlantedWorld, seed: int | None = None) -> MoEModel:
    """One MoE layer per layer of a planted world, over its frozen linear experts."""
    d = world.signatures.shape[1]
    spec = ExpertSpec(d_model=d, d_hidden=d, kind="mlp", activation="identity", bias=False)
    passes = PassHolder()
    eye = torch.eye(d)
    slots = []
    for index, experts in enumerate(world.experts):
        layer = MoELayer(
            spec, experts.shape[0], method, method_options, top_k=params.top_k, pooling=default_pooling(method, "image"),
            num_prefix_tokens=d, aux_loss=params.aux_loss, aux_loss_coef=params.aux_loss_coef, moe_index=index, seed=seed,
        )
        with torch.no_grad():
            layer.experts.w_in.copy_(eye.expand_as(layer.experts.w_in))
            layer.experts.w_out.copy_(experts.float())
            gate = layer.router.gate.weight
            gate.copy_(params.router_init_std * torch.randn(gate.shape, generator=component_generator(seed, f"moe{index}.router")))
            if layer.base is not None:
                layer.base.w_in.copy_(eye.unsqueeze(0))
                layer.base.w_out.copy_(experts.float().mean(0, keepdim=True))
        for p in layer.experts.parameters():
            p.requires_grad_(False)
        if layer.base is not None:
            layer.base.w_in.requires_grad_(False)
        slots.append(MoESlot(layer, passes, seed))
    return MoEModel(PlantedLayers(slots), passes)
