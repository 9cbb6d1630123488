"""Each net's weights averaged over the ends of several epochs (stochastic weight averaging; ours, not the paper's).

At heavy label noise the nets' last-epoch weights still wander with the noisy batches they saw last; the mean of
the weights at the end of the last few epochs sits nearer the middle of that wandering, so the corrected labels,
scores and predictions made with it are steadier (TrainConfig.average_last; docs/paper.md). Steadier is not always
better: the average is about as good as a typical one of those epochs, so it loses wherever the last epoch happened
to be a good one (measured: benchmarks/results/native_res.md; off by default). BatchNorm's running statistics are
averaged like the weights, without an extra pass over the data; recomputing them with one (the benchmark's
"average+bn") closed most of the loss on the seed where averaging lost, not all of it. Integer buffers
(BatchNorm's step counter) keep their latest value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """A running mean of the state_dicts of a list of nets; :meth:`add` once per epoch, :meth:`load_into` at the
    end. :meth:`state` / :meth:`from_state` carry it through a checkpoint, so a resumed run averages the same."""

    def __init__(self) -> None:
        self.count = 0
        self.nets: list[dict[str, torch.Tensor]] = []

    def add(self, models: Sequence) -> None:
        """Fold in the current weights of ``models`` (nets or state_dicts, in the same order every time)."""
        sds = [m if isinstance(m, dict) else m.state_dict() for m in models]
        if self.count and len(sds) != len(self.nets):
            raise ValueError(f"averaging {len(self.nets)} nets, got {len(sds)}")
        self.count += 1
        if self.count == 1:
            self.nets = [{k: v.detach().to("cpu", copy=True) for k, v in sd.items()} for sd in sds]
            return
        for avg, sd in zip(self.nets, sds, strict=True):
            for k, v in sd.items():
                v = v.detach().cpu()
                if v.is_floating_point():
                    avg[k] += (v.to(avg[k].dtype) - avg[k]) / self.count
                else:
                    avg[k] = v.clone()

    def load_into(self, models: Sequence) -> None:
        """Give ``models`` the averaged weights (nothing to do before the first :meth:`add`)."""
        if not self.count:
            return
        for m, sd in zip(models, self.nets, strict=True):
            m.load_state_dict(sd)

    def state(self) -> dict:
        """Plain tensors and ints, for ``torch.save`` (and ``torch.load(weights_only=True)``)."""
        return {"count": self.count, "nets": self.nets}

    @classmethod
    def from_state(cls, state: dict) -> WeightAverage:
        """The average :meth:`state` described (its shapes are checked by checkpoint.read_checkpoint)."""
        avg = cls()
        avg.count, avg.nets = int(state["count"]), list(state["nets"])
        return avg
