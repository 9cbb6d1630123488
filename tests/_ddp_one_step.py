"""One step of every strategy's stepper under torchrun, for tests/test_distributed.py (not a test itself).

Usage: ``torchrun --nproc-per-node 2 tests/_ddp_one_step.py OUT_DIR``. Every rank builds the nets, wraps them
as training does (distributed.wrap), takes its shard of one global batch of phantoms and runs one real
stepper call; each rank saves its nets' parameters after the step to OUT_DIR/rank<r>.npz. With SGD at lr 1,
no momentum and no weight decay, a step moves the weights by minus the gradient, so the test can check that
the step equals the mean of the single-process steps on each shard (what DDP's all-reduce must give).

With ``global_selection`` (GLOBAL_CASES, an uneven batch of 7: shards of 4 and 3) every rank also saves its picks
and the gathered per-sample losses, and the nets run with BatchNorm in eval mode, so that a sample's loss does not
depend on which other samples share its forward: then one DDP step must equal one process's step on the whole
batch, and the union of the ranks' picks one process's picks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from crl_napari import distributed, selection
from crl_napari.phantoms import make_phantom
from crl_napari.settings import TrainConfig, TrainingError
from crl_napari.sgd import SGD
from crl_napari.strategies import make_stepper
from crl_napari.unet import build_models

# (strategy, stage, drop): ss and crl stage 1 select with the full drop, crl stage 2 corrects
CASES = [("vanilla", 1, 0.0), ("coteaching", 1, 0.5), ("ss", 1, 0.5), ("crl", 2, 0.5)]
BATCH = 8
# (strategy, stage, drop, settings): coteaching keeps 1 of 7 (one rank holds none of a net's picks: its idle
# step), ss with trusted masks and balance_area (both gathered too), crl's stage 2 under both joint modes
GLOBAL_CASES = [("coteaching", 1, 0.875, {}), ("ss", 1, 0.5, {}), ("ss", 1, 0.5, {"balance_area": 1}),
                ("crl", 2, 0.5, {}), ("crl", 2, 0.5, {"joint": "all"})]
GLOBAL_BATCH = 7
TRUSTED = torch.tensor([False, True, False, False, False, False, True])  # one per shard


def name(strategy: str, settings: dict) -> str:
    return "_".join([strategy, *(f"{k}-{v}" for k, v in settings.items())])


def batch(n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [make_phantom(seed, 32) for seed in range(n)]
    x = np.stack([(img - img.mean()) / (img.std() + 1e-6) for img, _ in pairs]).astype(np.float32)[:, None]
    y = np.stack([(m > 0) for _, m in pairs]).astype(np.int64)
    return torch.as_tensor(x), torch.as_tensor(y)


def config(strategy: str, **settings) -> TrainConfig:
    return TrainConfig(strategy=strategy, epochs=2, k=1 if strategy == "crl" else None, batch_size=BATCH, lr=1.0,
                       momentum=0.0, weight_decay=0.0, width=4, depth=2, seed=5, device="cpu", augment=False,
                       **settings)


def stepper(strategy: str, wrap: bool, settings: dict | None = None):
    """(nets, stepper): with ``settings`` (global selection) the nets' BatchNorm is in eval mode."""
    cfg = config(strategy, **(settings or {}))
    models = build_models(cfg, "cpu")
    for m in models:
        m.train(settings is None)
    optims = [SGD(m.parameters(), lr=cfg.lr) for m in models]
    return models, make_stepper(cfg, distributed.wrap(models, cfg) if wrap else models, optims, "cpu")


def step(strategy: str, stage: int, drop: float, x: torch.Tensor, y: torch.Tensor, wrap: bool,
         settings: dict | None = None, trusted: torch.Tensor | None = None) -> list[np.ndarray]:
    """The parameters of every net after one stepper call on (x, y), flattened per net."""
    models, step_ = stepper(strategy, wrap, settings)
    step_(x, y, stage, drop, 0, 0, **({} if trusted is None else {"trusted": trusted}))
    return [torch.cat([p.detach().flatten() for p in m.parameters()]).numpy() for m in models]


def picks(x: torch.Tensor, y: torch.Tensor, trusted: torch.Tensor | None, settings: dict) -> dict[str, np.ndarray]:
    """ss's stage-1 picks of every net as the stepper ranks them (Stepper.ranked): under global selection this
    rank's picks (indices into its shard) and the gathered losses; in one process the picks of the batch."""
    _, ss = stepper("ss", wrap=True, settings=settings)
    ce, areas = ss.signals_without_grad(x, y)
    ranked = ss.ranked(ce, y, areas, trusted)
    out = {"ce": torch.stack(ranked.ce).numpy()}
    for i in range(3):
        p, q = [j for j in range(3) if j != i]
        chosen = selection.select(ranked.ce[p], ranked.ce[q], 0.5, 0.25, trusted=ranked.trusted,
                                  larger=ranked.larger_of(i))
        out[f"picks{i}"] = ranked.mine(chosen).numpy()
    return out


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
    x, y = batch(GLOBAL_BATCH)
    idx = distributed.shard(torch.arange(GLOBAL_BATCH), rank, world)
    for strategy, stage, drop, settings in GLOBAL_CASES:
        trusted = TRUSTED[idx] if settings.get("balance_area") else None
        for i, p in enumerate(step(strategy, stage, drop, x[idx], y[idx], True, {**settings, "global_selection": True},
                                   trusted)):
            arrays[f"global_{name(strategy, settings)}_{i}"] = p
    for key, value in picks(x[idx], y[idx], TRUSTED[idx], {"global_selection": True, "balance_area": 1}).items():
        arrays[f"picks_{key}"] = value
    try:  # does this torch synchronise BatchNorm over CPU processes? (the sync_batchnorm setting refuses it)
        torch.nn.SyncBatchNorm(4).train()(torch.rand(2, 4, 8, 8))
        arrays["sync_batchnorm_on_cpu"] = np.array("allowed")
    except ValueError as exc:
        arrays["sync_batchnorm_on_cpu"] = np.array(str(exc))
    try:  # on GPUs (the device is only compared): SyncBatchNorm with global selection is refused
        distributed.check_setup(config("ss", sync_batchnorm=True, global_selection=True), torch.device("cuda"))
        arrays["sync_batchnorm_global_selection"] = np.array("allowed")
    except TrainingError as exc:
        arrays["sync_batchnorm_global_selection"] = np.array(str(exc))
    np.savez(out / f"rank{rank}.npz", **arrays)
    distributed.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
