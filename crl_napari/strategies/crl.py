"""crl, the cascaded framework: stage 1 is ss (sample selection by the peers); from epoch k, stage 2.

Stage 2, for each net i with peers p, q:
- corrected label  = sharpen(mean(softmax_p, softmax_q), T)            (selection.corrected_label); with
  ``fit_labels`` (ours) the given mask's border moved by the distance that label agrees with (border_fit)
- joint loss       = alpha * CE(f_i(x), given) + (1 - alpha) * CE(f_i(x), corrected)   (selection.joint_loss)
- on which samples = ``joint="all"``: every sample; ``"unselected"``: the samples the peers would select keep
  plain CE on their given label, the rest get the joint loss. Trusted samples (a reviewer decided their mask)
  keep plain CE on it under both modes (selection.given_label_only).
The peers' signals are detached, so the three graphs are independent and one backward serves all three nets.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import border_fit, selection
from .base import peers
from .ss import SampleSelection


class CRL(SampleSelection):
    def train_step(self, x: torch.Tensor, y: torch.Tensor, stage: int, drop: float,
                   trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        if stage == 1:
            return self.select_and_train(x, y, drop, trusted)
        return self.correct_and_train(x, y, trusted)

    def correct_and_train(self, x: torch.Tensor, y: torch.Tensor,
                          trusted: torch.Tensor | None = None) -> tuple[list[float], float]:
        cfg = self.config
        with self.autocast():
            logits = [m(x) for m in self.models]
        with torch.no_grad():
            probs = [torch.softmax(lg.detach().float(), dim=1) for lg in logits]
            ce = [selection.per_sample_ce(lg.detach(), y) for lg in logits]
            areas = [selection.predicted_area(p) for p in probs] if cfg.balance_area else None
        ranked = self.ranked(ce, y, areas, trusted)
        corrected = [selection.corrected_label([probs[p] for p in peers(i)], cfg.T) for i in range(3)]
        if cfg.fit_labels:  # ours: the given border moved as the peers agree (border_fit.fitted_labels)
            corrected = border_fit.fitted_labels(y, corrected)
        total = 0.0
        losses, fracs = [], []
        for i in range(3):
            p, q = peers(i)
            per_sample = selection.joint_loss(logits[i], y, corrected[i], cfg.alpha)
            chosen = None
            if cfg.joint != "all":
                chosen = selection.select(ranked.ce[p], ranked.ce[q], cfg.keep_ratio, cfg.drop_uncertain,
                                          trusted=ranked.trusted, larger=ranked.larger_of(i))
            mine = None if chosen is None else ranked.mine(chosen)
            given_only = selection.given_label_only(trusted, mine, len(x), x.device)
            n_given = int(given_only.sum())
            if n_given:
                per_sample = torch.where(given_only, selection.per_sample_ce(logits[i], y), per_sample)
            fracs.append(ranked.given_count(chosen, n_given) / ranked.n)
            loss = ranked.weighted(per_sample.mean(), len(x), ranked.n)
            self.check_finite(loss)
            losses.append(loss.item())
            total = total + loss
        self.update([0, 1, 2], total)
        return losses, float(np.mean(fracs))
