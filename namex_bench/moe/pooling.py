"""Pooling units: how tokens are grouped, and which vector routes each group.

A pooling unit turns hidden states ``x [B, T, d]`` into ``G`` groups. Each group gets
one routing decision (and, for merging methods, one merged expert):

* ``token``    — every token is a group (``G = B·T``); routed by itself (``smoe`` only);
* ``sequence`` — every sequence is a group; routed by the mean over its non-padding tokens;
* ``image``    — every image is a group; routed by the mean over its patch tokens
  (the first ``num_prefix_tokens`` tokens, e.g. a ViT's class token, are left out of the
  mean but use the merged expert too);
* ``segment``  — causal segments of ``T_s`` tokens (Lory). Segment ``j ≥ 1`` is routed by
  the mean of segment ``j − 1``; segment 0 by its own mean, detached
  (``first_segment="self"``, as in Lory), or by the zero vector (``first_segment="prior"``:
  the router's prior, so that no token ever influences a merge used at or before it).
  A last, shorter segment is padded internally and the padding is dropped again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

POOLING_UNITS = ("token", "sequence", "segment", "image")
FIRST_SEGMENT_ROUTING = ("self", "prior")


@dataclass
class Groups:
    """Hidden states arranged as groups, with what is needed to undo the arrangement.

    ``tokens``      — ``[G, L, d]``: the tokens of each group;
    ``route_input`` — ``[G, d]``: the vector that routes each group;
    ``valid``       — ``[G]`` bool: groups with at least one non-padding token;
    """

    tokens: Tensor
    route_input: Tensor
    valid: Tensor
    batch: int
    length: int

    def ungroup(self, y: Tensor) -> Tensor:
        """``[G, L, d] → [B, T, d]`` (drops the internal padding of a short last segment)."""
        return y.reshape(self.batch, -1, y.shape[-1])[:, : self.length]


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is true (0 if none).

    Masked positions are replaced, not multiplied by 0, so whatever they hold (even
    NaN or inf in padding) never reaches the mean.
    """
    keep = mask.unsqueeze(-1)
    total = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim)
    return total / keep.to(x.dtype).sum(dim).clamp_min(1.0)


def make_groups(
    x: Tensor,
    unit: str,
    padding_mask: Tensor | None = None,
    segment_length: int = 64,
    num_prefix_tokens: int = 0,
    first_segment: str = "self",
) -> Groups:
    """Group ``x [B, T, d]`` by ``unit``; ``padding_mask [B, T]`` is true for real tokens."""
    B, T, d = x.shape
    mask = torch.ones(B, T, dtype=torch.bool, device=x.device) if padding_mask is None else padding_mask.bool()
    if unit == "token":
        return Groups(x.reshape(B * T, 1, d), x.reshape(B * T, d), mask.reshape(-1), B, T)
    if unit == "sequence":
        return Groups(x, masked_mean(x, mask, 1), mask.any(1), B, T)
    if unit == "image":
        patches = mask.clone()
        patches[:, :num_prefix_tokens] = False
        return Groups(x, masked_mean(x, patches, 1), patches.any(1), B, T)
    if unit == "segment":
        return _segments(x, mask, segment_length, first_segment)
    raise ValueError(f"unknown pooling unit {unit!r}; known: {', '.join(POOLING_UNITS)}")


def _segments(x: Tensor, mask: Tensor, segment_length: int, first_segment: str) -> Groups:
    if first_segment not in FIRST_SEGMENT_ROUTING:
        raise ValueError(f"first_segment must be one of {FIRST_SEGMENT_ROUTING}, got {first_segment!r}")
    B, T, d = x.shape
    S = -(-T // segment_length)
    pad = S * segment_length - T
    xs = F.pad(x, (0, 0, 0, pad)).reshape(B, S, segment_length, d)
    ms = F.pad(mask, (0, pad), value=False).reshape(B, S, segment_length)
    means = masked_mean(xs, ms, 2)  # [B, S, d]
    first = means[:, :1].detach() if first_segment == "self" else torch.zeros_like(means[:, :1])
    route = torch.cat([first, means[:, :-1]], dim=1)
    return Groups(xs.reshape(B * S, segment_length, d), route.reshape(B * S, d), ms.any(2).reshape(-1), B, T)
