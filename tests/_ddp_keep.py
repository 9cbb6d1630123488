"""TrainConfig.keep_auto's estimate under torchrun, for tests/test_distributed.py (not a test itself).

Usage: ``torchrun --nproc-per-node 2 tests/_ddp_keep.py OUT_DIR``. Each rank records the suspicions of its own
samples only (rank r: every other sample from r, as shards split a batch) into a KeepEstimate and ends a stage-1
epoch; it saves what the estimate saw and decided to OUT_DIR/rank<r>.npz. Every rank must see every sample and
decide the same keep ratio as one process that saw them all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from crl_napari import distributed
from crl_napari.keep_estimate import KeepEstimate
from crl_napari.settings import TrainConfig

N = 40


def suspicions() -> np.ndarray:
    """Three in four samples look wrong."""
    rng = np.random.default_rng(0)
    return np.where(np.arange(N) % 4 == 0, rng.uniform(0.01, 0.03, N), rng.uniform(0.2, 0.5, N))


def main(out: Path) -> None:
    distributed.init_from_env()
    rank, world = distributed.rank(), distributed.world_size()
    est = KeepEstimate(TrainConfig(epochs=10, ramp=0.1), N)
    mine = torch.arange(rank, N, world)
    est.record(mine, torch.as_tensor(suspicions()[mine.numpy()]))
    seen = distributed.merge_disjoint(est._values)
    keep = est.epoch_end(0, 1)
    np.savez(out / f"rank{rank}.npz", seen=seen, keep=np.nan if keep is None else keep)
    distributed.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
