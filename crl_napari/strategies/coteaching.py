"""coteaching (Han et al. 2018): two nets; each learns from the samples its peer finds small-loss."""

from __future__ import annotations

import numpy as np
import torch

from .. import selection
from .base import Stepper


class CoTeaching(Stepper):
    def train_step(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float,
                   trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        ranked = self.ranked(self.losses_without_grad(x, y), y, None, trusted)
        losses, fracs = [], []
        for i in range(2):
            chosen = selection.small_loss(ranked.ce[1 - i], 1 - drop, trusted=ranked.trusted)  # the peer's picks
            losses.append(self.train_on(i, x, y, chosen, ranked))
            fracs.append(len(chosen) / ranked.n)
        return losses, float(np.mean(fracs))
