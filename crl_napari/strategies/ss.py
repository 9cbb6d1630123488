"""ss: three nets; each learns only from the samples its two peers select (the paper's stage 1 alone).

Selection (selection.select): drop the samples the peers disagree on most (uncertainty |CE_p - CE_q|), then
keep the smallest mean peer loss. A net never selects for itself: its own loss would confirm its own mistakes.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import selection
from .base import Stepper, peers


class SampleSelection(Stepper):
    def train_step(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float,
                   trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        return self.select_and_train(x, y, drop, trusted)

    def select_and_train(self, x: torch.Tensor, y: torch.Tensor, drop: float,
                         trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        """Rank with no-grad forwards, then train each net on its peers' picks.

        Re-running a net on half the batch costs about 2.5x one net's full step for three nets, instead of
        3x for a full-batch forward/backward of all three.
        """
        cfg = self.config
        # the dropped part is split between the uncertainty step and the loss step as in the full setting
        share = cfg.drop_uncertain / (1 - cfg.keep_ratio) if cfg.keep_ratio < 1 else 0.0
        ce, areas = self.signals_without_grad(x, y)
        ranked = self.ranked(ce, y, areas, trusted)
        losses, fracs = [], []
        for i in range(3):
            p, q = peers(i)
            chosen = selection.select(ranked.ce[p], ranked.ce[q], 1 - drop, drop * share, trusted=ranked.trusted,
                                      larger=ranked.larger_of(i))
            losses.append(self.train_on(i, x, y, chosen, ranked))
            fracs.append(len(chosen) / ranked.n)
        return losses, float(np.mean(fracs))
