"""Faults on one rank under torchrun, for tests/test_distributed_faults.py (not a test itself).

Usage: ``torchrun --nproc-per-node 2 tests/_ddp_faults.py OUT_DIR``. Every rank trains the same tiny crl run
(16 phantoms at 32 px, global batch 4: two images per rank, 2 epochs, k = 1) through the engine's own loop
(cascade.train_from), each time with one fault that only one rank meets:

- ``nan``: after epoch 1 is checkpointed, one image comes to hold infinite values; resumed, rank 1 draws it at
  epoch 2, step 2, and its loss is NaN there. Then the run resumes again with that image repaired.
- ``read``: the images are read from a cache file (cache.Slots, written by the project's code) that loses its
  last slot after every rank opened it; rank 1 reads that slot at epoch 1, step 3 and gets a CacheError.
- ``stop``: rank 1 alone asks to stop (``should_stop``) before epoch 1, step 2.

Then ``votes`` calls distributed.agree itself: a bug's error on rank 1 alone, the package's on both, a stop asked
by one.

Each rank saves what happened to it (the error's class and message, the events it saw, the checkpoint's epoch)
as OUT_DIR/<fault>-rank<r>.json. A hang is the test's timeout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from crl_napari import cascade, distributed, runs
from crl_napari.cache import Slots
from crl_napari.image_files import zscore
from crl_napari.phantoms import make_phantom
from crl_napari.runs import RunError
from crl_napari.settings import TrainConfig
from crl_napari.sources import ArraySource, CacheSource

N, SIZE, BATCH = 16, 32, 4
NAN_AT = (1, 1)  # (epoch, step), 0-based: rank 1's first image of that global batch is the infinite one
READ_AT = (0, 2)  # rank 1's first image of that global batch sits in the slot the cache file loses
STOP_AT = (0, 1)


def config() -> TrainConfig:
    return TrainConfig(strategy="crl", epochs=2, k=1, batch_size=BATCH, lr=0.05, width=4, depth=2, threads=1,
                       seed=7, device="cpu")


def held_by(rank: int, epoch: int, step: int) -> int:
    """The case that ``rank`` trains on first at (epoch, step): the loop's seeded order of the epoch
    (cascade._train_events), cut into global batches, dealt as distributed.shard deals them."""
    order = torch.randperm(N, generator=torch.Generator().manual_seed(config().seed * 100_003 + epoch))
    return int(distributed.shard(order[step * BATCH:(step + 1) * BATCH], rank, 2)[0])


def phantoms() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images, their network inputs (N, 1, H, W) float32, masks)."""
    pairs = [make_phantom(seed, SIZE) for seed in range(N)]
    raw = np.stack([img for img, _ in pairs])
    return raw, np.stack([zscore(img / 255) for img in raw])[:, None], np.stack([m for _, m in pairs])


def run(source, out: Path, **options) -> dict:
    """Train on ``source`` into ``out``; what this rank saw: its events and the error it stopped with."""
    seen: dict = {"steps": [], "epochs": [], "stopped": None, "error": None, "message": None}
    try:
        for ev in cascade.train_from(source, config(), run_dir=out, **options):
            if isinstance(ev, cascade.Step):
                seen["steps"].append([ev.epoch, ev.step])
            elif isinstance(ev, cascade.EpochEnd):
                seen["epochs"].append(ev.epoch)
            elif isinstance(ev, cascade.Finished):
                seen["stopped"] = ev.stopped
    except Exception as exc:  # every rank is expected to stop here with the same error
        seen["error"], seen["message"] = type(exc).__name__, str(exc)
    ckpt = out / runs.CHECKPOINT
    seen["checkpoint_epoch"] = int(cascade.read_checkpoint(ckpt)["epoch"]) if ckpt.is_file() else None
    return seen


def nan_fault(out: Path) -> dict:
    _, images, masks = phantoms()
    first = run(ArraySource(images, masks), out, should_stop=lambda: out.joinpath(runs.CHECKPOINT).is_file())
    broken = images.copy()
    broken[held_by(1, *NAN_AT)] = np.inf  # from epoch 2 on: the case is broken after epoch 1 was checkpointed
    seen = run(ArraySource(broken, masks), out, resume=True)
    seen["first"] = first
    seen["resumed"] = run(ArraySource(images, masks), out, resume=True)  # the case repaired
    return seen


def read_fault(out: Path) -> dict:
    raw, _, masks = phantoms()
    bad = held_by(1, *READ_AT)
    slot_of = np.argsort([i for i in range(N) if i != bad] + [bad])  # case -> slot: the bad case in the last one
    folder = out / "cache"
    if distributed.is_writer():
        folder.mkdir(parents=True)
        written = Slots(folder / runs.CACHE_IMAGES, N, SIZE, writable=True)
        for case, slot in enumerate(slot_of):
            written[slot] = raw[case]
        written.flush()
        written.close()
    distributed.agree()  # the file is whole: every rank opens it (its size is checked then)
    source = CacheSource(folder, N, SIZE, slot_of, masks)
    distributed.agree()
    if distributed.is_writer():  # the file loses its last slot while training runs
        os.truncate(folder / runs.CACHE_IMAGES, (N - 1) * SIZE * SIZE)
    distributed.agree()
    return run(source, out / "run")


def stop_fault(out: Path) -> dict:
    _, images, masks = phantoms()
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return distributed.rank() == 1 and len(asked) > STOP_AT[1]

    return run(ArraySource(images, masks), out, should_stop=should_stop)


def votes(out: Path) -> dict:
    """distributed.agree itself: a bug's error on rank 1 alone, the package's error on every rank, a stop asked by
    rank 0 alone; what each call raised or returned here."""
    me = distributed.rank()
    calls = {"bug on rank 1": (ValueError("bad value") if me == 1 else None, False),
             "error on every rank": (RunError(f"file-{me}: unreadable"), False),
             "stop on rank 0": (None, me == 0)}
    seen = {}
    for where, (failure, stop) in calls.items():
        try:
            seen[where] = {"returned": distributed.agree(failure, where, stop)}
        except Exception as exc:
            seen[where] = {"error": type(exc).__name__, "message": str(exc), "own": exc is failure}
    return seen


FAULTS = {"nan": nan_fault, "read": read_fault, "stop": stop_fault, "votes": votes}


def main(out: Path, names: list[str]) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env()
    for name in names or FAULTS:
        seen = FAULTS[name](out / name)
        (out / f"{name}-rank{distributed.rank()}.json").write_text(json.dumps(seen))
    distributed.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
