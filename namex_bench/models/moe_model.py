"""Running MoE layers inside someone else's model (timm, transformers).

A model such as timm's ``VisionTransformer`` calls each block's FFN as ``mlp(x)``: there
is no argument to carry the cross-layer state. So the dense FFN is replaced by an
:class:`MoESlot`, and :class:`MoEModel` opens one :class:`ForwardPass` per call of its
``forward``: the slots read the pass's :class:`PropagationState`, hand the next one on,
and add their auxiliary losses to it. The pass is closed when ``forward`` returns, so
no state survives from one batch to the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..methods.base import ModelFacts
from ..moe.layer import MoELayer
from ..moe.state import PropagationState
from ..seeding import seeded


@dataclass
class ForwardPass:
    """The cross-layer context of one forward pass."""

    padding_mask: Tensor | None = None
    state: PropagationState = field(default_factory=PropagationState)
    aux_loss: Tensor | float = 0.0
    stats: list[dict[str, Tensor]] = field(default_factory=list)


class PassHolder:
    """Shared by a model and its slots: the forward pass in progress, if any."""

    def __init__(self) -> None:
        self.current: ForwardPass | None = None

    @contextmanager
    def open(self, padding_mask: Tensor | None = None) -> Iterator[ForwardPass]:
        if self.current is not None:
            raise RuntimeError("a forward pass of this MoE model is already in progress (re-entrant call)")
        self.current = ForwardPass(padding_mask)
        try:
            yield self.current
        finally:
            self.current = None


class MoESlot(nn.Module):
    """Stands where a dense FFN stood: ``y = MoE(x)`` within the model's current pass.

    Inputs ``[B, ..., d]`` (e.g. channels-last ``[B, H, W, d]`` feature maps) are run as
    ``[B, T, d]`` token sequences and reshaped back.

    With a ``seed``, call ``n`` of the layer runs on torch's global generator seeded for
    ``(seed, "moe<i>.forward<n>")`` and restored afterwards (``namex_bench.seeding.seeded``):
    whatever the layer draws — noisy gating, a method's own dropout — is its own stream, and the
    backbone's dropout masks and the data augmentation are the same whatever the method draws."""

    def __init__(self, layer: MoELayer, passes: PassHolder, seed: int | None = None):
        super().__init__()
        self.layer = layer
        self._passes = passes
        self._seed = seed
        self._calls = 0

    def forward(self, x: Tensor) -> Tensor:
        current = self._passes.current
        if current is None:
            raise RuntimeError("an MoE layer ran outside MoEModel.forward: call the wrapping MoEModel, not its backbone")
        self._calls += 1
        with seeded(self._seed, f"moe{self.layer.moe_index}.forward{self._calls}", x.device):
            out = self.layer(x.reshape(x.shape[0], -1, x.shape[-1]), current.state.to(x.device), current.padding_mask)
        current.state = out.state
        current.aux_loss = current.aux_loss + out.aux_loss
        current.stats.append(out.stats)
        return out.y.reshape(x.shape)


@dataclass
class ModelOutput:
    """``output`` of the backbone (e.g. logits), the summed ``aux_loss`` of its MoE layers,
    and each MoE layer's ``stats`` in the order they ran."""

    output: Tensor
    aux_loss: Tensor
    stats: list[dict[str, Tensor]]


class MoEModel(nn.Module):
    """A backbone whose FFNs are :class:`MoESlot` s; ``forward`` runs one :class:`ForwardPass`."""

    tokenizer: Any = None  # a text model's tokenizer, set by its builder; the text tasks and lm-eval read it

    def __init__(self, backbone: nn.Module, passes: PassHolder):
        super().__init__()
        self.backbone = backbone
        self._passes = passes

    @property
    def moe_layers(self) -> list[MoELayer]:
        return [m.layer for m in self.backbone.modules() if isinstance(m, MoESlot)]

    def forward(self, *args, padding_mask: Tensor | None = None, **kwargs) -> ModelOutput:
        """Run the backbone in one pass; a 2-D ``attention_mask`` keyword (``transformers``
        models) is the MoE layers' ``padding_mask`` unless one is given."""
        mask = kwargs.get("attention_mask")
        if padding_mask is None and isinstance(mask, Tensor) and mask.dim() == 2:
            padding_mask = mask.bool()
        with self._passes.open(padding_mask) as current:
            output = self.backbone(*args, **kwargs)
        aux = current.aux_loss
        if not isinstance(aux, Tensor):
            aux = torch.zeros((), device=next(self.backbone.parameters()).device)
        return ModelOutput(output, aux, current.stats)

    @contextmanager
    def standalone(self) -> Iterator[nn.Module]:
        """Let code that knows only the backbone (e.g. lm-eval's ``HFLM``) call it directly.

        While active, each direct call of ``self.backbone`` runs in a :class:`ForwardPass`
        of its own, opened by a forward pre-hook and closed by a forward hook (also when
        the call raises); a 2-D ``attention_mask`` keyword argument is the MoE layers'
        padding mask, as in :meth:`forward`. Calls made through :meth:`forward` (a pass
        is already open) are left alone. The auxiliary loss and stats of direct calls are
        discarded. Yields the backbone; the hooks are removed on exit.
        """
        opened: list = []  # per backbone call in progress: the context of the pass it opened, or None

        def open_pass(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self._passes.current is not None:
                opened.append(None)
                return
            mask = kwargs.get("attention_mask")
            context = self._passes.open(mask.bool() if isinstance(mask, Tensor) and mask.dim() == 2 else None)
            context.__enter__()
            opened.append(context)

        def close_pass(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            context = opened.pop() if opened else None
            if context is not None:
                context.__exit__(None, None, None)

        handles = [
            self.backbone.register_forward_pre_hook(open_pass, with_kwargs=True),
            self.backbone.register_forward_hook(close_pass, with_kwargs=True, always_call=True),
        ]
        try:
            yield self.backbone
        finally:
            for handle in handles:
                handle.remove()


def model_facts(model: MoEModel) -> ModelFacts:
    """The :class:`ModelFacts` of a built model: its MoE layers, and the first one's experts and ``k``."""
    layers = model.moe_layers
    if not layers:
        return ModelFacts(0)
    return ModelFacts(len(layers), layers[0].num_experts, layers[0].router.top_k)


def parameter_counts(model: MoEModel) -> dict[str, int]:
    """``total`` parameters, and ``active_per_token``: everything but the experts, plus the
    experts one token runs through — ``k`` of them for token routing (``smoe``), one merged
    expert for merging methods. (The base expert and curvature factors only build the merged
    expert, so they count as inactive, like the unselected experts.)"""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for layer in model.moe_layers:
        merge_side = sum(p.numel() for p in layer.experts.parameters())
        merge_side += sum(p.numel() for p in layer.method.parameters())
        merge_side += 0 if layer.base is None else sum(p.numel() for p in layer.base.parameters())
        used = layer.router.top_k if layer.pooling == "token" else 1
        inactive += merge_side - used * layer.spec.num_params
    return {"total": total, "active_per_token": total - inactive}
