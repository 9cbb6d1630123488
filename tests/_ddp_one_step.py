"""One step of every strategy's stepper under torchrun, for tests/test_distributed.py (not a test itself).

Usage: ``torchrun --nproc-per-node 2 tests/_ddp_one_step.py OUT_DIR``. Every rank builds the nets, wraps them
as training does (distributed.wrap), takes its shard of one global batch of phantoms and runs one real
stepper call; each rank saves its nets' parameters after the step to OUT_DIR/rank<r>.npz. With SGD at lr 1,
no momentum and no weight decay, a step moves the weights by minus the gradient, so the test can check that
the step equals the mean of the single-process steps on each shard (what DDP's all-reduce must give).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from crl_napari import distributed
from crl_napari.phantoms import make_phantom
from crl_napari.settings import TrainConfig
from crl_napari.sgd import SGD
from crl_napari.strategies import make_stepper
from crl_napari.unet import build_models

# (strategy, stage, drop): ss and crl stage 1 select with the full drop, crl stage 2 corrects
CASES = [("vanilla", 1, 0.0), ("coteaching", 1, 0.5), ("ss", 1, 0.5), ("crl", 2, 0.5)]
BATCH = 8


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [make_phantom(seed, 32) for seed in range(BATCH)]
    x = np.stack([(img - img.mean()) / (img.std() + 1e-6) for img, _ in pairs]).astype(np.float32)[:, None]
    y = np.stack([(m > 0) for _, m in pairs]).astype(np.int64)
    return torch.as_tensor(x), torch.as_tensor(y)


def config(strategy: str) -> TrainConfig:
    return TrainConfig(strategy=strategy, epochs=2, k=1 if strategy == "crl" else None, batch_size=BATCH, lr=1.0,
                       momentum=0.0, weight_decay=0.0, width=4, depth=2, seed=5, device="cpu", augment=False)


def step(strategy: str, stage: int, drop: float, x: torch.Tensor, y: torch.Tensor, wrap: bool) -> list[np.ndarray]:
    """The parameters of every net after one stepper call on (x, y), flattened per net."""
    cfg = config(strategy)
    models = build_models(cfg, "cpu")
    optims = [SGD(m.parameters(), lr=cfg.lr) for m in models]
    nets = distributed.wrap(models, cfg) if wrap else models
    make_stepper(cfg, nets, optims, "cpu")(x, y, stage, drop, 0, 0)
    return [torch.cat([p.detach().flatten() for p in m.parameters()]).numpy() for m in models]


def main(out: Path) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env()
    rank, world = distributed.rank(), distributed.world_size()
    x, y = batch()
    idx = distributed.shard(torch.arange(BATCH), rank, world)
    arrays = {}
    for strategy, stage, drop in CASES:
        for i, p in enumerate(step(strategy, stage, drop, x[idx], y[idx], wrap=True)):
            arrays[f"{strategy}_{i}"] = p
    np.savez(out / f"rank{rank}.npz", **arrays)
    distributed.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
