"""Seeded random affine augmentation of training image batches (rotation, scale, translation).

Each image of the batch at training step ``t`` is resampled at

    x ↦ R(−θ) x / s − τ,   θ ~ U(−rotate, rotate) degrees, s ~ U(scale), τ ~ U(−shift, shift)² · size

(bilinear, the border pixel repeated outside the image: for MNIST, background), so its content is
rotated by θ, scaled by s and moved by τ. The draws come from the stream
``(seed, "augment/<step>/<rank>")`` (:mod:`namex_bench.seeding`): the same images move the same
way in every run of a seed whatever its method draws (paired seeds), and a resumed or re-run run
sees the same augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..seeding import component_generator


class RandomAffine:
    """``augment(images [B, C, H, W], step) → images``, for :func:`namex_bench.tasks.training.train`'s ``transform``."""

    def __init__(self, rotate: float, scale: tuple[float, float], shift: float, seed: int, rank: int = 0):
        self.rotate, self.scale, self.shift, self.seed, self.rank = rotate, scale, shift, seed, rank

    def matrices(self, count: int, step: int) -> Tensor:
        """The ``[count, 2, 3]`` sampling matrices (``F.affine_grid``'s, coordinates in [−1, 1]) of step ``step``."""
        u = torch.rand(count, 4, generator=component_generator(self.seed, f"augment/{step}/{self.rank}"), dtype=torch.float64)
        angle = math.radians(self.rotate) * (2 * u[:, 0] - 1)
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        shift = 2 * self.shift * (2 * u[:, 2:] - 1)  # a fraction of the size; the image spans 2 in grid units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([torch.stack([cos, sin, -shift[:, 0]], -1), torch.stack([-sin, cos, -shift[:, 1]], -1)], 1)

    def __call__(self, images: Tensor, step: int) -> Tensor:
        theta = self.matrices(images.shape[0], step).to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
