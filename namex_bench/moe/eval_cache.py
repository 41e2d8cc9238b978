"""Evaluation computes each merge's parameter-only parts once: :class:`MergeCache`.

Part of a merging layer's forward pass depends on the parameters alone, not on the tokens
or the router scores (:meth:`~namex_bench.methods.base.MergingMethod.parameter_parts`): the
CAMEx family's curvature-aware domain vectors ``τ̃_i = M_i(E_i − E_m)`` and their TIES mask,
the Nash weights ``α̂`` (the bargaining solve over the Gram matrix of ``τ̃``), the base expert
propagated to the next layer and the momentum, SMEAR's experts' mean (the center of its merge
in bf16/fp16) and — where fixed weights replace the scores (``namex`` with ``placement: merge``)
— the merged experts themselves. Training changes them at every step; evaluation does not, and
recomputing them for every batch is wasted.

``with MergeCache(model):`` attaches one cache to every MoE layer of ``model`` for the block.
A layer computes its parts on its first pass and reuses them while

* autograd is off (``torch.no_grad``, ``torch.inference_mode``): with gradients on nothing is
  read or stored, so training always computes afresh;
* none of the layer's parameters and buffers has changed — each is fingerprinted by its storage
  address and autograd's version counter, which every in-place change bumps (an optimizer
  step, ``load_state_dict``, ``copy_`` under ``no_grad``); a replaced tensor (``.to()``,
  ``load_state_dict(assign=True)``) has another address, since the cache holds on to the old one;
* the state from the layer below is the same tensors (the lower layer's cached parts, or their
  copy on this layer's device: :meth:`PropagationState.to` moves a state once), so a change
  anywhere below reaches every layer above;
* the same ablations are active (:meth:`~namex_bench.methods.base.MergingMethod.ablated`), and the
  layer is in the same mode (train/eval) with its matmuls in the same dtype on the same device.

Otherwise the parts are recomputed and replace the layer's entry (one per layer). The cached
tensors are those the uncached pass computes, in the same dtype (float32 under autocast), so
outputs are bit-identical. Only writes that bypass the version counter go unseen — in-place
writes through ``.data`` (``p.data.copy_(x)``): after one, call :meth:`MergeCache.clear`.
Leaving the block drops every entry.

Memory: a CAMEx-family layer keeps its ``N`` terms ``mask ⊙ τ̃`` in float32, as much as its
experts in float32. A model sharded by FSDP2 (``fully_shard``) is left uncached: the cache
would keep every layer's gathered experts, which sharding exists to avoid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .layer import MoELayer
from .precision import compute_dtype
from .state import PropagationState


@dataclass
class _Entry:
    key: tuple
    held: tuple  # the fingerprinted tensors, kept alive so that no other tensor takes their address
    parts: Any


def _sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


class MergeCache:
    """The parameter-only parts of every MoE layer of ``model``, computed once per model state
    while the cache is entered (see the module docstring): ``with MergeCache(model): evaluate(model)``.

    ``computed`` and ``reused`` count the layer passes that computed their parts and that reused them.
    """

    def __init__(self, model: nn.Module):
        self.layers = [] if _sharded(model) else [m for m in model.modules() if isinstance(m, MoELayer)]
        self._entries: dict[MoELayer, _Entry] = {}
        self._previous: list[list] = []  # per entry of this cache: the caches the layers had before
        self.computed = 0
        self.reused = 0

    def __enter__(self) -> MergeCache:
        self._previous.append([layer.merge_cache for layer in self.layers])
        for layer in self.layers:
            layer.merge_cache = self
        return self

    def __exit__(self, *exc) -> None:
        for layer, previous in zip(self.layers, self._previous.pop()):
            layer.merge_cache = previous
        self.clear()

    def clear(self) -> None:
        """Drop every entry: the next pass of each layer computes its parts afresh."""
        self._entries.clear()

    def parts_of(self, layer: MoELayer) -> Any:
        """The parts ``layer`` keeps now (``None`` if none)."""
        entry = self._entries.get(layer)
        return None if entry is None else entry.parts

    def for_layer(self, layer: MoELayer, state: PropagationState, tokens: Tensor) -> Callable[[Callable[[], Any]], Any] | None:
        """What ``layer``'s pass on ``tokens`` with the ``state`` from below hands its method as
        ``MergeInputs.parameter_cache``; ``None`` (compute in the pass) while autograd is on."""
        if torch.is_grad_enabled():
            return None
        return partial(self._parts, layer, state, tokens)

    def _parts(self, layer: MoELayer, state: PropagationState, tokens: Tensor, compute: Callable[[], Any]) -> Any:
        tensors = (*layer.parameters(), *layer.buffers())
        below = state.tensors()
        key = (
            tuple((t.data_ptr(), t._version) for t in tensors),
            tuple(map(id, below)),
            layer.method.active_ablations,
            layer.training,
            compute_dtype(tokens),
            tokens.device,
        )
        entry = self._entries.get(layer)
        if entry is not None and entry.key == key:
            self.reused += 1
            return entry.parts
        parts = compute()
        self.computed += 1
        self._entries[layer] = _Entry(key, (tuple(t.detach() for t in tensors), below), parts)
        return parts
