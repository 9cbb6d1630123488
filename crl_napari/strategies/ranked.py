"""The batch a stepper's selection ranks: the samples it holds, or under torchrun with ``global_selection`` the
whole global batch, gathered from every rank.

In one process (and under torchrun by default) a step ranks its own batch (shard) and trains on its picks, as it
always did: :class:`Ranked` then holds the very tensors the stepper computed, and every method is the identity.
With ``global_selection`` every rank gathers the per-sample signals of all shards (distributed.GlobalBatch), runs
the selection one process would run on the whole batch, and trains on its own shard's picks, its loss weighted by
its share of them so that DDP's mean over the ranks is the single-process step (docs/scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import selection
from ..distributed import GlobalBatch


@dataclass
class Ranked:
    """Every net's per-sample CE, the trusted flags and, with balance_area, each net's ``larger`` flags
    (selection.larger_than_predicted of its peers) over the ranked batch; ``whole`` is None when that batch is
    the one this process holds."""

    ce: list[torch.Tensor]
    trusted: torch.Tensor | None
    larger: list[torch.Tensor] | None
    whole: GlobalBatch | None = None

    @classmethod
    def gathered(cls, ce: list[torch.Tensor], trusted: torch.Tensor | None, larger: list[torch.Tensor] | None,
                 whole: GlobalBatch) -> Ranked:
        """The same signals over the whole global batch: one all-gather of all of them stacked."""
        rows = [*ce, *([] if trusted is None else [trusted]), *(larger or [])]
        every = whole.gather(torch.stack([r.float() for r in rows]))
        n = len(ce)
        t = None if trusted is None else every[n] > 0.5
        start = n + (trusted is not None)
        return cls(list(every[:n]), t, None if larger is None else list(every[start:] > 0.5), whole)

    @property
    def n(self) -> int:
        """How many samples were ranked."""
        return len(self.ce[0])

    def larger_of(self, i: int) -> torch.Tensor | None:
        return None if self.larger is None else self.larger[i]

    def mine(self, picks: torch.Tensor) -> torch.Tensor:
        """Indices of ranked samples -> indices into this process's batch of those it holds."""
        return picks if self.whole is None else self.whole.mine(picks)

    def weighted(self, loss: torch.Tensor, n_mine: int, n_all: int) -> torch.Tensor:
        """This process's mean ``loss`` over ``n_mine`` samples, weighted so that DDP's mean over the ranks is the
        mean over the ``n_all`` samples of the global batch; unchanged when the batch is this process's own."""
        return loss if self.whole is None else loss * self.whole.weight(n_mine, n_all)

    def given_count(self, chosen: torch.Tensor | None, n_local: int) -> int:
        """How many ranked samples keep plain CE on their given label in crl's stage 2 (trusted, and the peers'
        ``chosen``): ``n_local`` counted here in one process, over the global batch otherwise."""
        if self.whole is None:
            return n_local
        return int(selection.given_label_only(self.trusted, chosen, self.n, self.ce[0].device).sum())
