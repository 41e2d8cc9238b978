"""The MoE layer's dtypes: what precision its matmuls run in, and what stays float32.

Under autocast (bf16, fp16) the matmuls of a merged expert would see its weights rounded
in the narrow type at the scale of the weights themselves — for experts that differ
from their base by 1%, a third or more of that difference (the whole signal of a
merging method) is lost. So the merge is computed with autocast off, in float32 or wider
(:func:`at_least_float32`), and the merged expert enters the matmuls as
``center + delta`` (``moe/experts.py``), each part rounded at its own scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is in a narrower float type (e.g. under bf16 autocast), else as it is."""
    return x.float() if x.dtype in LOW_PRECISION else x


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matmuls on ``x`` run in: autocast's where it is on for ``x``'s device, else ``x``'s own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def full_precision(x: Tensor) -> torch.autocast:
    """A context with autocast off on ``x``'s device: its matmuls run in their operands' dtype."""
    return torch.autocast(x.device.type, enabled=False)
