"""Each net's weights averaged over the ends of several epochs (stochastic weight averaging; ours, not the paper's).

At heavy label noise the nets' last-epoch weights still wander with the noisy batches they saw last; the mean of
the weights at the end of the last few epochs sits nearer the middle of that wandering, so the corrected labels,
scores and predictions made with it are steadier (TrainConfig.average_last; docs/paper.md). Steadier is not always
better: the average is about as good as a typical one of those epochs, so it loses wherever the last epoch happened
to be a good one (measured: benchmarks/results/native_res.md; off by default). BatchNorm's running statistics are
averaged like the weights, without an extra pass over the data. The mean of several epochs' statistics is not
the statistics of the mean weights, so :func:`recompute_batchnorm` can measure those by one pass over the training
images (TrainConfig.average_bn; the benchmark's "average+bn"), as torch.optim.swa_utils.update_bn does: it closed
most of the loss on the seed where averaging lost, not all of it. Integer buffers (BatchNorm's step counter) keep
their latest value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence

import torch

__all__ = ["WeightAverage", "pass_batches", "recompute_batchnorm", "update_batchnorm"]


class WeightAverage:
    """A running mean of the state_dicts of a list of nets; :meth:`add` once per epoch, :meth:`load_into` at the
    end. :meth:`state` / :meth:`from_state` carry it through a checkpoint, so a resumed run averages the same."""

    def __init__(self) -> None:
        self.count = 0
        self.nets: list[dict[str, torch.Tensor]] = []
        #: the nets given this average hold BatchNorm statistics recomputed for it (TrainConfig.average_bn), not
        #: the averaged ones: what a checkpoint says of the weights it holds, so a resume does not do it twice
        self.batchnorm_recomputed = False

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
        state = {"count": self.count, "nets": self.nets}
        if self.batchnorm_recomputed:  # absent otherwise: a checkpoint of before the setting reads the same
            state["batchnorm_recomputed"] = True
        return state

    @classmethod
    def from_state(cls, state: dict) -> WeightAverage:
        """The average :meth:`state` described (its shapes are checked by checkpoint.read_checkpoint); ValueError
        for a ``batchnorm_recomputed`` that is not true or false."""
        avg = cls()
        avg.count, avg.nets = int(state["count"]), list(state["nets"])
        recomputed = state.get("batchnorm_recomputed", False)
        if not isinstance(recomputed, bool):
            raise ValueError(f"its weight average's batchnorm_recomputed must be true or false, got {recomputed!r}")
        avg.batchnorm_recomputed = recomputed
        return avg


def _batchnorms(models: Sequence[torch.nn.Module]) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [b for m in models for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]


def pass_batches(n: int, batch_size: int, one_pixel_bottom: bool = False) -> list[range]:
    """The batches of :func:`recompute_batchnorm`'s pass over ``n`` images in their order: ``batch_size`` at a
    time, the last one as it falls; with ``one_pixel_bottom`` (the U-Net's bottom is 1 x 1: image size 2**depth)
    a last single image joins the batch before, as BatchNorm in train mode needs more than one value per channel."""
    starts = list(range(0, n, max(1, batch_size)))
    if one_pixel_bottom and len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    return [range(a, b) for a, b in zip(starts, [*starts[1:], n], strict=True)]


def recompute_batchnorm(models: Sequence[torch.nn.Module], batches: Iterable[torch.Tensor],
                        should_stop: Callable[[], bool] | None = None) -> Generator[int, None, bool]:
    """Recompute the BatchNorm running statistics of ``models`` in place by one pass over ``batches`` (input
    tensors, each read once and given to every net): train mode, no gradient, each layer's statistics the plain
    mean over the batches (momentum None), as torch.optim.swa_utils.update_bn does. A generator: yields the
    images done after each batch, so a caller can show progress and read the batches lazily (never the whole set
    in memory), and returns True. Each layer's momentum and each net's mode are put back after; if ``should_stop``
    says so between batches (it returns False), or the generator is closed early, the statistics are put back too:
    the nets are as they were. Not update_bn itself: that takes one net at a time (each batch read once per net),
    reports no progress and cannot stop."""
    bns = _batchnorms(models)
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in bns]
    momenta = [b.momentum for b in bns]
    modes = [m.training for m in models]
    done, finished = 0, False
    try:
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # the cumulative mean over the batches
        for m in models:
            m.train()
        with torch.no_grad():
            for x in batches:
                if should_stop is not None and should_stop():
                    return False
                for m in models:
                    m(x.to(next(m.parameters()).device))
                done += len(x)
                yield done
        finished = True
    finally:
        for b, momentum, state in zip(bns, momenta, before, strict=True):
            b.momentum = momentum
            if not finished:
                b.load_state_dict(state)
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    return True


def update_batchnorm(models: Sequence[torch.nn.Module], batches: Iterable[torch.Tensor]) -> None:
    """:func:`recompute_batchnorm` to the end, for a caller that wants no progress (the benchmark)."""
    for _ in recompute_batchnorm(models, batches):
        pass
