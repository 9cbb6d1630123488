"""coteaching (Han et al. 2018): two nets; each learns from the samples its peer finds small-loss."""

from __future__ import annotations

import numpy as np
import torch

from .. import selection
from .base import Stepper


class CoTeaching(Stepper):
    def train_step(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float,
                   trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        ce = self.losses_without_grad(x, y)
        losses, fracs = [], []
        for i in range(2):
            chosen = selection.small_loss(ce[1 - i], 1 - drop, trusted=trusted)  # the peer's picks
            losses.append(self.train_on(i, x, y, chosen))
            fracs.append(len(chosen) / len(x))
        return losses, float(np.mean(fracs))
