"""The paper's augmentation: a random rotation and horizontal flip of each image and its mask.

Drawn from the loop's generator (seeded by seed and epoch), so a resumed run augments exactly as the
uninterrupted one did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .settings import TrainConfig


def augment(x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by up to ``config.rotation`` degrees and (with ``config.flip``) flip a batch: image bilinear,
    mask nearest. ``x`` (B, 1, H, W) float, ``y`` (B, H, W) labels."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(config.rotation)
    flip = (torch.rand(b, generator=gen) < 0.5) if config.flip else torch.zeros(b, dtype=torch.bool)
    sx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([cos * sx, -sin, zero], 1), torch.stack([sin * sx, cos, zero], 1)], 1)
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y[:, 0].long()
