"""The training loop of the cascaded framework and its baselines, as one generator of events.

The loop is the same for the four strategies (strategies/: vanilla, coteaching, ss, crl); each strategy's
stepper says what one mini-batch teaches its nets. Around it live settings.py (TrainConfig), events.py (what
the loop yields), checkpoint.py, inference.py, augment.py and device.py; this module re-exports their public
names, so ``crl_napari.cascade`` stays the one import for callers.

A checkpoint is written atomically after every epoch; shuffling and augmentation draw from a generator seeded
by (seed, epoch), so a resumed run repeats the uninterrupted one exactly on the same device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch

from . import checkpoint as _checkpoint
from . import distributed
from .augment import augment
from .cache import CacheProgress
from .checkpoint import expected_state, read_checkpoint
from .device import available_devices, is_oom, pick_device, release_memory
from .events import CheckpointSaved, EpochEnd, Event, Finished, StageChanged, Started, Step
from .inference import dice_score, peer_probs, predict
from .keep_estimate import KEEP_STRATEGIES, KeepEstimate
from .runs import CHECKPOINT, epoch_line
from .settings import (
    CHECKPOINT_FORMAT,
    JOINT_MODES,
    N_NETS,
    SETTING_HELP,
    STRATEGIES,
    TrainConfig,
    TrainingError,
    check_size,
    settings_diff,
)
from .sgd import SGD
from .sources import ArraySource, Source, read
from .strategies import Stepper, drop_fraction, make_stepper
from .unet import UNet, build_models
from .weight_average import WeightAverage, pass_batches, recompute_batchnorm

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; the annotations are never evaluated (PEP 563)
    from typing import Unpack

__all__ = [
    "CHECKPOINT", "CHECKPOINT_FORMAT", "JOINT_MODES", "N_NETS", "SETTING_HELP", "STRATEGIES", "CheckpointSaved",
    "EpochEnd", "Event", "Finished", "StageChanged", "Started", "Step", "TrainConfig", "TrainOptions",
    "TrainingError", "UNet", "augment", "available_devices", "build_models", "check_size", "dice_score",
    "expected_state", "load_models", "learning_rate", "peer_probs", "pick_device", "predict", "read_checkpoint",
    "save_checkpoint", "train", "train_from",
]

_Stepper = Stepper  # tests/test_reliability.py wraps every stepper's __call__ through this name


def save_checkpoint(run_dir: Path | str, models, optimizers, config: TrainConfig, epoch: int,
                    line: dict | None = None, average: dict | None = None) -> Path:
    """The run folder's checkpoint (runs.CHECKPOINT), written atomically: checkpoint.save_checkpoint."""
    return _checkpoint.save_checkpoint(Path(run_dir) / CHECKPOINT, models, optimizers, config, epoch, line, average)


def load_models(run_dir: Path | str, device: torch.device | str | None = None) -> tuple[list, TrainConfig]:
    """The trained nets of a run folder (eval mode) and their settings: checkpoint.load_models."""
    return _checkpoint.load_models(Path(run_dir) / CHECKPOINT, device)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The exponential decay: lr * lr_decay**epoch."""
    return config.lr * config.lr_decay**epoch


class TrainOptions(TypedDict, total=False):
    """What :func:`train` and :func:`train_from` take besides the data and the settings: keywords, all optional."""

    run_dir: Path | str | None  # the run folder: a checkpoint is saved there after every epoch
    resume: bool  # continue from run_dir's checkpoint
    val: tuple[np.ndarray, np.ndarray] | None  # (images, masks) scored after every epoch (EpochEnd.val_dice)
    should_stop: Callable[[], bool] | None  # polled between steps
    trusted: np.ndarray | None  # (N,) bool: masks a reviewer decided
    init_from: Path | str | None  # a checkpoint file whose weights warm-start the nets


def train(images: np.ndarray, masks: np.ndarray, config: TrainConfig,
          **options: Unpack[TrainOptions]) -> Iterator[Event]:
    """Train ``config.strategy`` on images (N, 1, H, W) float32 and given masks (N, H, W) {0, 1}.

    Yields events; the last one is ``Finished`` with the nets. ``options`` (TrainOptions, by keyword):
    ``should_stop`` is polled between steps. With ``run_dir`` a checkpoint is saved after every epoch;
    ``resume=True`` continues from it. ``trusted`` (N,) bool marks masks a reviewer decided (review rounds): the
    strategies always select them and never correct them (strategies.base.Stepper). ``init_from`` is a
    checkpoint file whose weights warm-start the nets (same width, depth and number of nets; the optimisers
    start fresh); a resume ignores it. Torch uses ``config.n_threads`` CPU threads while the generator runs (the
    previous count is restored after).

    Running out of (GPU) memory anywhere in training, validation included, raises a TrainingError that
    suggests a smaller batch; the nets and tensors of the failed run are released first (and the CUDA cache
    emptied), so the process (the napari viewer, say) can retry at once. A NaN/inf loss, or weights that
    became non-finite, stop training before the checkpoint of that epoch is written: the last good one stays.
    """
    config.validate()
    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks)
    if images.ndim != 4 or images.shape[1] != 1 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise TrainingError(f"expected images (N, 1, H, W) and masks (N, H, W), got {images.shape} and {masks.shape}")
    if images.shape[0] < 2:
        raise TrainingError(f"need at least 2 training images, got {images.shape[0]}")
    for side in sorted(set(images.shape[2:])):
        check_size(config, side)
    yield from train_from(ArraySource(images, masks), config, **options)


def train_from(source: Source, config: TrainConfig, **options: Unpack[TrainOptions]) -> Iterator[Event]:
    """:func:`train` on a data source (sources.py: arrays, or the run's on-disk cache), read in
    ``config.workers`` processes."""
    unknown = sorted(set(options) - TrainOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"train got unexpected keyword arguments: {', '.join(unknown)}")
    config.validate()
    if len(source) < 2:
        raise TrainingError(f"need at least 2 training images, got {len(source)}")
    distributed.check_shards(len(source), config.batch_size)
    trusted = options.get("trusted")
    if trusted is not None:
        trusted = np.asarray(trusted)
        if trusted.dtype != bool or trusted.shape != (len(source),):
            raise TrainingError(f"trusted must be a bool array of shape ({len(source)},), got "
                                f"{trusted.dtype} {trusted.shape}")
    check_size(config, source.size)
    run_dir = Path(options["run_dir"]) if options.get("run_dir") is not None else None
    if run_dir is not None and distributed.is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.local_device(pick_device(config.device))
    distributed.check_setup(config, device)
    oom, gpu = None, False
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.n_threads)
    try:
        yield from _train_events(source, config, device, {**options, "run_dir": run_dir, "trusted": trusted})
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one, and so is MPS's out-of-memory error
        if isinstance(exc, TrainingError) or not is_oom(exc):
            raise
        oom = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        gpu = isinstance(exc, torch.cuda.OutOfMemoryError) or device.type in ("cuda", "mps")
    finally:
        torch.set_num_threads(threads_before)
    if oom is None:
        return
    # raised outside the except block, so no traceback keeps the failed run's frames (and GPU tensors) alive
    release_memory()
    bs = min(config.batch_size, len(source))
    smaller = max(2, bs // 2)
    hint = (f"try a smaller batch size, e.g. {smaller} (the plugin's Batch size, or --batch-size {smaller})"
            if bs > 2 else
            "the batch is already the smallest (2); try a smaller --size or --width")
    where = "GPU memory" if gpu else "memory"
    raise TrainingError(
        f"out of {where} at batch size {bs} (images {source.size} px, width {config.width}); {hint}. "
        f"[{oom}]"
    )


def _check_weights(models, epoch: int, run_dir: Path | None) -> None:
    """Refuse to checkpoint non-finite weights (a finite loss can still give an inf/NaN update)."""
    for i, m in enumerate(models):
        for name, t in m.state_dict().items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                where = f" The last good checkpoint is kept in {run_dir / CHECKPOINT}." if run_dir else ""
                raise TrainingError(
                    f"the weights of net {i + 1} ({name}) became NaN or infinite in epoch {epoch + 1}; training "
                    f"stopped.{where} Try a lower learning rate (--lr)."
                )


def _resume(models, optims, config: TrainConfig, run_dir: Path | None,
            average: WeightAverage | None = None) -> tuple[int, dict | None]:
    """Load the run's checkpoint into the nets, optimisers and weight average; the first epoch still to train and
    the checkpoint's history line."""
    if run_dir is None:
        raise TrainingError("resume needs a run folder")
    ckpt = read_checkpoint(run_dir / CHECKPOINT)
    saved = TrainConfig.from_dict(ckpt["config"])
    diff = settings_diff(saved, config)
    if diff:
        raise TrainingError(f"{run_dir / CHECKPOINT}: was trained with other settings (saved, asked): {diff}")
    for m, sd in zip(models, ckpt["models"], strict=True):
        m.load_state_dict(sd)
    for o, sd in zip(optims, ckpt.get("optimizers", []), strict=True):
        o.load_state_dict(sd)
    if average is not None and "average" in ckpt:
        try:
            resumed = WeightAverage.from_state(ckpt["average"])
        except ValueError as exc:
            raise TrainingError(f"{run_dir / CHECKPOINT}: {exc}") from None
        average.count, average.nets = resumed.count, resumed.nets
        average.batchnorm_recomputed = resumed.batchnorm_recomputed
    return int(ckpt["epoch"]) + 1, ckpt.get("history_line")


def _resumed_keep(config: TrainConfig, line: dict | None, run_dir: Path | None) -> float | None:
    """TrainConfig.keep_auto: the keep ratio a resumed run had estimated (its checkpoint's history line), checked."""
    keep = (line or {}).get("keep")
    if keep is not None and (isinstance(keep, bool) or not 0 < keep <= config.keep_ratio):
        where = run_dir / CHECKPOINT if run_dir is not None else "the checkpoint"
        raise TrainingError(f"{where}: its estimated keep ratio {keep!r} is not in (0, {config.keep_ratio}]")
    return keep


def _warm_start(models, config: TrainConfig, path: Path) -> None:
    """Load the weights of checkpoint ``path`` into the nets; its U-Nets must be the same shape."""
    ckpt = read_checkpoint(path)
    saved = TrainConfig.from_dict(ckpt["config"])
    differ = [f"{name} ({a}, {b})" for name, a, b in (("width", saved.width, config.width),
                                                      ("depth", saved.depth, config.depth),
                                                      ("nets", saved.n_nets, config.n_nets)) if a != b]
    if differ:
        raise TrainingError(f"{path}: cannot warm-start from it, other nets (saved, asked): {', '.join(differ)}")
    for m, sd in zip(models, ckpt["models"], strict=True):
        m.load_state_dict(sd)


def _train_events(source: Source, config: TrainConfig, device: torch.device,
                  options: TrainOptions) -> Iterator[Event]:
    run_dir, resume, val = options.get("run_dir"), options.get("resume", False), options.get("val")
    should_stop, trusted, init_from = options.get("should_stop"), options.get("trusted"), options.get("init_from")
    models = build_models(config, device)
    optims = [SGD(m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
              for m in models]
    if init_from is not None and not resume:
        _warm_start(models, config, Path(init_from))
    average = WeightAverage()  # TrainConfig.average_last (ours): built over the last epochs, the nets at the end
    start_epoch, line = _resume(models, optims, config, run_dir, average) if resume else (0, None)
    stepper = make_stepper(config, distributed.wrap(models, config), optims, device, run_dir)
    # TrainConfig.keep_auto: the keep ratio estimated while training (keep_estimate.py), resumed from the last line
    keep = (KeepEstimate(config, len(source), _resumed_keep(config, line, run_dir))
            if config.keep_auto and config.strategy in KEEP_STRATEGIES else None)
    rank, world = distributed.rank(), distributed.world_size()

    t_all = torch.as_tensor(trusted).to(device) if trusted is not None else None
    n = len(source)
    bs = min(config.batch_size, n)
    # a trailing batch that would leave a process one sample is dropped (BatchNorm)
    steps = n // bs if n % bs < 2 * world else n // bs + 1
    yield Started(config, str(device), n, steps, start_epoch, amp=stepper.amp, threads=torch.get_num_threads())

    stage2 = config.stage2_epoch
    stage = 1
    for epoch in range(start_epoch, config.epochs):
        new_stage = 2 if stage2 is not None and epoch >= stage2 else 1
        if new_stage != stage or (epoch == start_epoch and new_stage == 2):
            yield StageChanged(epoch, new_stage)
        stage = new_stage
        lr = learning_rate(config, epoch)
        for o in optims:
            for g in o.param_groups:
                g["lr"] = lr
        for m in models:
            m.train()
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        if keep is not None:
            stepper.config = keep.config()
        drop = drop_fraction(stepper.config, epoch)
        loss_sums = [0.0] * len(models)
        selected_sum = 0.0
        t0 = time.perf_counter()
        batches = read(source, [distributed.shard(order[step * bs : (step + 1) * bs], rank, world)
                                for step in range(steps)], config.workers, device)
        for step in range(steps):
            # under torchrun every rank holds its batch before any rank steps, or every rank stops (distributed.py)
            with distributed.Together(f"epoch {epoch + 1}, step {step + 1}") as ready:
                if should_stop is not None and should_stop():
                    ready.stop()
                else:
                    idx, x, y = next(batches)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if config.augment:
                        x, y = augment(x, y, config, gen)
            if ready.stopped:
                yield Finished(models, epoch, stopped=True)
                return
            # trusted is passed only when given: without it the call is the one it always was
            extra = {} if t_all is None else {"trusted": t_all[idx]}
            losses, frac = stepper(x, y, stage, drop, epoch, step, **extra)
            if keep is not None and stage == 1:
                keep.record(idx, stepper.suspicion)
            for i, v in enumerate(losses):
                loss_sums[i] += v
            selected_sum += frac
            yield Step(epoch, step, steps, float(np.mean(losses)))
        seconds = time.perf_counter() - t0
        *loss_sums, selected_sum = distributed.epoch_end(models, [*loss_sums, selected_sum])
        val_dice = None
        if val is not None:
            val_dice = float(dice_score(predict(models, val[0]), val[1]).mean())
            for m in models:
                m.train()
        estimate = None if keep is None else keep.epoch_end(epoch, stage)  # under torchrun: every rank, together
        end = EpochEnd(epoch, config.epochs, stage, tuple(s / steps for s in loss_sums), selected_sum / steps, lr,
                       seconds, val_dice, keep=estimate)
        yield end
        path = None
        with distributed.Together(f"the checkpoint of epoch {epoch + 1}"):  # rank 0's write stops every rank
            _check_weights(models, epoch, run_dir)
            if epoch >= config.epochs - config.average_last:
                average.add(models)
                if epoch == config.epochs - 1:  # the run's nets (checkpoint, scoring) are the average from here on
                    average.load_into(models)
            line = epoch_line(end)
            if run_dir is not None and distributed.is_writer():
                path = save_checkpoint(run_dir, models, optims, config, epoch, line=line,
                                       average=average.state() if config.average_last else None)
        if path is not None:
            yield CheckpointSaved(epoch, path)
    if config.average_bn and not average.batchnorm_recomputed:
        if not (yield from _recompute_batchnorm(models, source, config, device, should_stop)):
            yield Finished(models, config.epochs, stopped=True)  # the checkpoint keeps the averaged statistics
            return
        average.batchnorm_recomputed = True
        with distributed.Together("the checkpoint with BatchNorm recomputed"):
            if run_dir is not None and distributed.is_writer():  # the last epoch's again, saying what it holds now
                save_checkpoint(run_dir, models, optims, config, config.epochs - 1, line=line,
                                average=average.state())
    for m in models:
        m.eval()
    yield Finished(models, config.epochs, stopped=False)


def _recompute_batchnorm(models, source: Source, config: TrainConfig, device: torch.device,
                         should_stop: Callable[[], bool] | None) -> Generator[CacheProgress, None, bool]:
    """TrainConfig.average_bn: the averaged nets' BatchNorm statistics from one pass over the training images in
    their order, batch_size at a time (weight_average.pass_batches), read from the source as training reads it,
    without augmentation (weight_average.recompute_batchnorm); its progress as CacheProgress, as the cache's.
    False when a stop was asked (the statistics stay the averaged ones). Under torchrun every rank makes the
    whole pass and then takes rank 0's statistics (distributed.epoch_end): all hold those of one process."""
    n = len(source)
    chunks = pass_batches(n, config.batch_size, one_pixel_bottom=source.size == 2**config.depth)
    batches = (x for _, x, _ in read(source, chunks, config.workers, device))
    t0 = time.perf_counter()
    with distributed.Together("recomputing the BatchNorm statistics") as work:

        def stop() -> bool:  # a stop asked on any rank stops every rank at the end of the block
            if should_stop is not None and should_stop():
                work.stop()
            return work.asked

        for done in recompute_batchnorm(models, batches, stop):
            yield CacheProgress(done, n, done, time.perf_counter() - t0, n - done,
                                what="recomputing the BatchNorm statistics:")
    if work.stopped:
        return False
    distributed.epoch_end(models, [0.0])  # rank 0's statistics on every rank (the ones its checkpoint holds)
    return True
