"""Pooling units: how tokens are grouped, and which vector routes each group.

A pooling unit turns hidden states ``x [B, T, d]`` into ``G`` groups. Each group gets
one routing decision (and, for merging methods, one merged expert):

* ``token``    — every token is a group (``G = B·T``); routed by itself (``smoe`` only);
* ``sequence`` — every sequence is a group; routed by the mean over its non-padding tokens;
* ``image``    — every image is a group; routed by the mean over its patch tokens
  (the first ``num_prefix_tokens`` tokens, e.g. a ViT's class token, are left out of the
  mean but use the merged expert too);
* ``segment``  — causal segments of ``T_s`` tokens (Lory). Every segment is routed by its
  own mean, and segment ``j ≥ 1`` is merged with the scores of segment ``j − 1``. Segment 0
  is merged with the router's prior — the scores of the zero vector (``first_segment="prior"``,
  the default: no token ever influences a merge used at or before it) — or with its own
  scores, detached (``first_segment="self"``, as the CAMEx reference code: its later tokens
  then shape the merge its earlier tokens use, and that use sends no gradient to the router
  or the tokens). A last, shorter segment is padded internally and the padding is dropped again.

Routing means count the real tokens only (``routing_padding="exclude"``, the default), or
every position, padding included (``"include"``: what the CAMEx and SMEAR reference code
computes, having no padding mask). The internal padding of a short last segment never counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

POOLING_UNITS = ("token", "sequence", "segment", "image")
FIRST_SEGMENT_ROUTING = ("prior", "self")
ROUTING_PADDING = ("exclude", "include")


@dataclass
class Groups:
    """Hidden states arranged as groups, with what is needed to route and undo the arrangement.

    ``tokens``    — ``[G, L, d]``: the tokens of each group;
    ``pool_mask`` — ``[G, L]`` bool: the positions a group's routing mean counts;
    ``valid``     — ``[G]`` bool: groups with at least one non-padding token;
    ``segments``  — causal segments per sequence (``segment`` pooling), else 0;
    ``first_segment`` — what segment 0 is merged with (see the module docstring).
    """

    tokens: Tensor
    pool_mask: Tensor
    valid: Tensor
    batch: int
    length: int
    segments: int = 0
    first_segment: str = "prior"

    @property
    def route_input(self) -> Tensor:
        """``[G, d]``: the vector that routes each group (its own tokens pooled)."""
        return self.pool(self.tokens)

    def pool(self, h: Tensor) -> Tensor:
        """The routing vector of each group: ``h [G, L, f]`` → ``[G, f]``, the mean over ``pool_mask``
        (a token group is its own routing vector). ``h`` is ``tokens`` or a hidden state of them."""
        if h.shape[1] == 1:
            return h[:, 0]
        return masked_mean(h, self.pool_mask, 1)

    def scores_in_use(self, scores: Tensor, prior: Callable[[], Tensor]) -> Tensor:
        """The scores each group is merged with, from the scores of its own routing vector ``[G, N]``.

        Causal segments: segment ``j`` takes segment ``j − 1``'s; segment 0 the router's
        prior (``prior()``, ``[1, N]``) or its own scores detached. Other units: their own.
        """
        if not self.segments:
            return scores
        per_sequence = scores.reshape(self.batch, self.segments, -1)
        if self.first_segment == "self":
            first = per_sequence[:, :1].detach()
        else:
            first = prior().to(scores.dtype).expand(self.batch, 1, -1)
        return torch.cat([first, per_sequence[:, :-1]], dim=1).reshape_as(scores)

    def ungroup(self, y: Tensor) -> Tensor:
        """``[G, L, f] → [B, T, f]`` (drops the internal padding of a short last segment)."""
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
    first_segment: str = "prior",
    routing_padding: str = "exclude",
) -> Groups:
    """Group ``x [B, T, d]`` by ``unit``; ``padding_mask [B, T]`` is true for real tokens."""
    if routing_padding not in ROUTING_PADDING:
        raise ValueError(f"routing_padding must be one of {ROUTING_PADDING}, got {routing_padding!r}")
    B, T, d = x.shape
    everywhere = torch.ones(B, T, dtype=torch.bool, device=x.device)
    real = everywhere if padding_mask is None else padding_mask.bool()
    counted = real if routing_padding == "exclude" else everywhere
    if unit == "token":
        return Groups(x.reshape(B * T, 1, d), real.reshape(-1, 1), real.reshape(-1), B, T)
    if unit == "sequence":
        return Groups(x, counted, real.any(1), B, T)
    if unit == "image":
        patches = torch.ones_like(everywhere)
        patches[:, :num_prefix_tokens] = False
        return Groups(x, counted & patches, (real & patches).any(1), B, T)
    if unit == "segment":
        if first_segment not in FIRST_SEGMENT_ROUTING:
            raise ValueError(f"first_segment must be one of {FIRST_SEGMENT_ROUTING}, got {first_segment!r}")
        S = -(-T // segment_length)
        pad = S * segment_length - T

        def segments(t: Tensor, fill) -> Tensor:
            return F.pad(t, (0, pad), value=fill).reshape(B * S, segment_length)

        xs = F.pad(x, (0, 0, 0, pad)).reshape(B * S, segment_length, d)
        return Groups(xs, segments(counted, False), segments(real, False).any(1), B, T, S, first_segment)
    raise ValueError(f"unknown pooling unit {unit!r}; known: {', '.join(POOLING_UNITS)}")
