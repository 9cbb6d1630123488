"""TrainConfig.keep_auto (ours, not the paper's): stage 1's keep ratio from the share of given masks that look
wrong, estimated while training, so that a user needs neither to know the noise rate nor to train twice.

Why: stage 1 learns from the ``keep_ratio`` smallest-loss samples of each batch; with more wrong masks than that,
some of those are wrong too. Trained again with the keep ratio a first run's scores suggest (scoring.
suggested_keep_ratio, the advice's "training again with keep ratio K"), crl corrected better at 75 % noise on
every seed (benchmarks/results/native_res.md, crl+keep-est). This takes the same estimate during the one training.

How: each stage-1 step records every sample's suspicion as scoring.py defines it for the finished nets (1 - Dice
of the nets' sharpened mean against the given mask), on the batch as trained (augmented, the nets in train mode).
From the end of the selection's ramp on, each stage-1 epoch's end sets the keep ratio of the epochs after it from
those suspicions by the advice's own rule (scoring.noise_share, scoring.keep_from_share): lower than the run's
keep_ratio only where more than about half of the masks look wrong, so at lower noise the paper's selection is
left as it is; and only once the nets agree closely with the masks that look right (:func:`nets_can_tell`).
Stage 2 keeps the last stage-1 estimate (its joint loss spares the samples the peers select with that ratio).
The estimate rides in each epoch's history line (``keep``), so a resumed run goes on with it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from . import distributed, selection
from .scoring import keep_from_share, noise_share, recommended_threshold
from .settings import TrainConfig

__all__ = ["KEEP_STRATEGIES", "RIGHT", "KeepEstimate", "batch_suspicion", "nets_can_tell"]

#: the strategies whose stage 1 selects with keep_ratio; the others train as they would without the setting
KEEP_STRATEGIES = ("ss", "crl")
#: the most a mask that looks right may differ from the nets' correction, at the median, for the share to count
#: (1 - Dice; the masks a trained run agrees with differ by a few per cent: scoring.recommended_threshold's why)
RIGHT = 0.15


def batch_suspicion(probs: list[torch.Tensor], y: torch.Tensor, T: float) -> torch.Tensor:
    """(B,) suspicion of each sample: 1 - Dice of the sharpened mean of the nets' softmax maps ``probs`` (each
    (B, 2, H, W)) against the given labels ``y`` (B, H, W), as scoring.score_probs scores a finished run."""
    sharp = selection.sharpen(torch.stack([p.float() for p in probs]).mean(0), T)[:, 1]
    return 1 - selection.dice(sharp > 0.5, y > 0)


class KeepEstimate:
    """The keep ratio of the epochs to come, for ``n`` samples; ``resumed``: the one a resumed run had reached."""

    def __init__(self, config: TrainConfig, n: int, resumed: float | None = None) -> None:
        self.base, self.n = config, n
        self.current = resumed
        self.first = config.full_selection_epoch  # the first epoch whose end estimates: the ramp's end
        self._values = np.full(n, np.nan)

    def config(self) -> TrainConfig:
        """The run's settings with the keep ratio estimated so far (the run's own before any estimate)."""
        return self.base if self.current is None else replace(self.base, keep_ratio=self.current)

    def record(self, idx: torch.Tensor, suspicion: torch.Tensor | None) -> None:
        """Note the suspicions of the batch's samples ``idx`` (dataset indices)."""
        if suspicion is not None:
            self._values[np.asarray(idx.cpu())] = suspicion.detach().float().cpu().numpy()

    def epoch_end(self, epoch: int, stage: int) -> float | None:
        """After stage-1 epoch ``epoch``: the keep ratio from now on (None: the run's own); under torchrun every
        rank's samples count (each rank saw its own share of them)."""
        values, self._values = self._values, np.full(self.n, np.nan)
        if stage == 1 and epoch >= self.first:  # the same on every rank: all of them merge, or none
            seen = distributed.merge_disjoint(values)
            seen = seen[np.isfinite(seen)]
            if nets_can_tell(seen):
                self.current = keep_from_share(noise_share(seen), self.base.keep_ratio)
        return self.current


def nets_can_tell(suspicion: np.ndarray) -> bool:
    """Whether the nets already tell right masks from wrong ones: the masks below the recommended threshold (those
    that look right) differ from the nets' correction by at most RIGHT at the median. Nets that cannot yet (a tiny
    or barely started run) find every mask wrong, and their share would take the keep ratio to its floor."""
    if not suspicion.size:
        return False
    right = suspicion[suspicion < recommended_threshold(suspicion)]
    return bool(right.size) and float(np.median(right)) <= RIGHT
