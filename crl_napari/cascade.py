"""The training loop of the cascaded framework and its baselines, as one generator of events.

Four strategies share the loop so that they differ only in what each step does:

- ``vanilla``: one U-Net on the given labels.
- ``coteaching``: two nets; each picks its small-loss samples for the other (Han et al. 2018).
- ``ss``: three nets; each learns from the samples its two peers select (low uncertainty, then small loss).
- ``crl``: ``ss`` until epoch ``k``, then label correction and joint optimisation (stage 2).

Training yields small frozen dataclasses (DESIGN.md, "one stream of events") so a command line and the napari
worker consume the same stream and can stop it between steps. A checkpoint is written atomically after every
epoch; shuffling and augmentation draw from a generator seeded by (seed, epoch), so a resumed run repeats the
uninterrupted one exactly on the same device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import selection
from .atomic import atomic_write
from .runs import CHECKPOINT
from .settings import (  # noqa: F401  (re-exported: cascade.TrainConfig is the public name)
    CHECKPOINT_FORMAT,
    JOINT_MODES,
    N_NETS,
    SETTING_HELP,
    STRATEGIES,
    TrainConfig,
    TrainingError,
)
from .sgd import SGD
from .unet import UNet

# --- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    config: TrainConfig
    device: str
    n_train: int
    steps_per_epoch: int
    start_epoch: int


@dataclass(frozen=True)
class Step:
    epoch: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class StageChanged:
    epoch: int
    stage: int


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    epochs: int
    stage: int
    losses: tuple[float, ...]
    selected: float
    lr: float
    seconds: float
    val_dice: float | None


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    epoch: int


@dataclass(frozen=True)
class Finished:
    models: list
    epochs_run: int
    stopped: bool


Event = Started | Step | StageChanged | EpochEnd | CheckpointSaved | Finished


# --- helpers ------------------------------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu — or the device named."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_models(config: TrainConfig, device: torch.device) -> list[UNet]:
    """The strategy's nets, each with its own seeded initialisation (peers must start different)."""
    models = []
    for i in range(config.n_nets):
        torch.manual_seed(config.seed * 1000 + i)
        models.append(UNet(1, 2, config.width, config.depth).to(device))
    return models


def _augment(x: torch.Tensor, y: torch.Tensor, config: TrainConfig, gen: torch.Generator):
    """Random rotation and horizontal flip of a batch, image bilinear and mask nearest."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(config.rotation)
    flip = (torch.rand(b, generator=gen) < 0.5) if config.flip else torch.zeros(b, dtype=torch.bool)
    sx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([cos * sx, -sin, zero], 1), torch.stack([sin * sx, cos, zero], 1)], 1)
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y[:, 0].long()


def _lr(config: TrainConfig, epoch: int) -> float:
    return config.lr * config.lr_decay**epoch


def _drop_fraction(config: TrainConfig, epoch: int) -> float:
    """How much of the batch selection may drop at this epoch: ramps linearly to 1 - keep_ratio.

    Randomly initialised nets cannot tell clean from noisy samples, so, as co-teaching's forget-rate
    schedule does, selection starts by keeping everything and reaches its full strength after
    ``ramp * epochs`` epochs.
    """
    ramp_epochs = max(1.0, config.ramp * config.epochs)
    return (1 - config.keep_ratio) * min(1.0, (epoch + 1) / ramp_epochs)


def _check_finite(loss: torch.Tensor, epoch: int, step: int, run_dir: Path | None) -> None:
    if not torch.isfinite(loss).all():
        where = f" The last good checkpoint is kept in {run_dir / CHECKPOINT}." if run_dir else ""
        raise TrainingError(
            f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training stopped.{where} "
            "Try a lower learning rate (--lr) or check the input images."
        )


# --- checkpoint ---------------------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, models, optimizers, config: TrainConfig, epoch: int) -> Path:
    """state_dicts only, so the file loads with ``torch.load(weights_only=True)``; written atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": asdict(config),
        "models": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models],
        "optimizers": [o.state_dict() for o in optimizers],
    }
    path = Path(run_dir) / CHECKPOINT
    # streamed into the temp file, not built in memory first: a quarter faster, and the interpreter lock is
    # held for shorter spells (the viewer stays smoother while the plugin trains)
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint safely: ``weights_only=True`` refuses pickled code; the format is checked."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint here")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError for truncated files
        raise TrainingError(f"{path}: not a loadable crl-napari checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: unknown checkpoint format (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def load_models(run_dir: Path, device: torch.device | str | None = None) -> tuple[list[UNet], TrainConfig]:
    """The trained nets of a run folder, in eval mode, and the configuration they were trained with."""
    path = Path(run_dir) / CHECKPOINT
    ckpt = read_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    device = pick_device("auto" if device is None else str(device))
    models = build_models(config, device)
    if len(ckpt["models"]) != len(models):
        raise TrainingError(f"{path}: holds {len(ckpt['models'])} nets, strategy {config.strategy} needs {len(models)}")
    for m, sd in zip(models, ckpt["models"], strict=True):
        try:
            m.load_state_dict(sd)
        except RuntimeError as exc:
            raise TrainingError(f"{path}: weights do not match the configuration ({exc})") from exc
        m.eval()
    return models, config


# --- inference ----------------------------------------------------------------------------------------


@torch.no_grad()
def peer_probs(models, images: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Every net's foreground probability, (M, N, H, W) float32."""
    device = next(models[0].parameters()).device
    x_all = torch.as_tensor(images, dtype=torch.float32)
    out = np.empty((len(models), x_all.shape[0], *x_all.shape[-2:]), dtype=np.float32)
    for m in models:
        m.eval()
    for s in range(0, x_all.shape[0], batch_size):
        x = x_all[s : s + batch_size].to(device)
        for i, m in enumerate(models):
            out[i, s : s + len(x)] = torch.softmax(m(x).float(), dim=1)[:, 1].cpu().numpy()
    return out


def predict(models, images: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """The framework's prediction: the mean of the nets' softmax, foreground probability (N, H, W)."""
    return peer_probs(models, images, batch_size).mean(axis=0)


def dice_score(prob: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image Dice of the thresholded prediction against binary masks."""
    pred = torch.as_tensor(prob > 0.5)
    return selection.dice(pred, torch.as_tensor(masks > 0)).numpy()


# --- the loop -----------------------------------------------------------------------------------------


def train(
    images: np.ndarray,
    masks: np.ndarray,
    config: TrainConfig,
    run_dir: Path | str | None = None,
    resume: bool = False,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Train ``config.strategy`` on images (N, 1, H, W) float32 and given masks (N, H, W) {0, 1}.

    Yields events; the last one is ``Finished`` with the nets. ``should_stop`` is polled between steps.
    With ``run_dir`` a checkpoint is saved after every epoch; ``resume=True`` continues from it.

    Running out of (GPU) memory anywhere in training, validation included, raises a TrainingError that
    suggests a smaller batch; the nets and tensors of the failed run are released first (and the CUDA cache
    emptied), so the process (the napari viewer, say) can retry at once. A NaN/inf loss, or weights that
    became non-finite, stop training before the checkpoint of that epoch is written: the last good one stays.
    """
    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks)
    if images.ndim != 4 or images.shape[1] != 1 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise TrainingError(f"expected images (N, 1, H, W) and masks (N, H, W), got {images.shape} and {masks.shape}")
    if images.shape[0] < 2:
        raise TrainingError(f"need at least 2 training images, got {images.shape[0]}")
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    oom, gpu = None, False
    try:
        yield from _train_events(images, masks, config, device, run_dir, resume, val, should_stop)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one, and so is MPS's out-of-memory error
        if isinstance(exc, TrainingError) or not _is_oom(exc):
            raise
        oom = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        gpu = isinstance(exc, torch.cuda.OutOfMemoryError) or device.type in ("cuda", "mps")
    if oom is None:
        return
    # raised outside the except block, so no traceback keeps the failed run's frames (and GPU tensors) alive
    _release_memory()
    bs = min(config.batch_size, images.shape[0])
    smaller = max(2, bs // 2)
    hint = (f"try a smaller batch size, e.g. {smaller} (the plugin's Batch size, or --batch-size {smaller})"
            if bs > 2 else
            "the batch is already the smallest (2); try a smaller --size or --width")
    where = "GPU memory" if gpu else "memory"
    raise TrainingError(
        f"out of {where} at batch size {bs} (images {images.shape[-1]} px, width {config.width}); {hint}. "
        f"[{oom}]"
    )


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


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


def _train_events(images, masks, config: TrainConfig, device: torch.device, run_dir: Path | None, resume: bool,
                  val, should_stop) -> Iterator[Event]:
    models = build_models(config, device)
    optims = [SGD(m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
              for m in models]
    start_epoch = 0
    if resume:
        if run_dir is None:
            raise TrainingError("resume needs a run folder")
        ckpt = read_checkpoint(run_dir / CHECKPOINT)
        saved = TrainConfig.from_dict(ckpt["config"])
        if saved != config:
            diff = {f.name: (getattr(saved, f.name), getattr(config, f.name)) for f in fields(TrainConfig)
                    if getattr(saved, f.name) != getattr(config, f.name)}
            raise TrainingError(f"{run_dir / CHECKPOINT}: was trained with other settings (saved, asked): {diff}")
        for m, sd in zip(models, ckpt["models"], strict=True):
            m.load_state_dict(sd)
        for o, sd in zip(optims, ckpt["optimizers"], strict=True):
            o.load_state_dict(sd)
        start_epoch = int(ckpt["epoch"]) + 1

    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    x_all = torch.as_tensor(images).to(device)
    y_all = torch.as_tensor((masks > 0).astype(np.int64)).to(device)
    n = x_all.shape[0]
    bs = min(config.batch_size, n)
    steps = n // bs if n % bs < 2 else n // bs + 1  # a trailing batch of one sample is dropped (BatchNorm)
    yield Started(config, str(device), n, steps, start_epoch)

    stepper = _Stepper(config, models, optims, scaler, device.type, amp_dtype if use_amp else None, run_dir)

    stage2 = config.stage2_epoch
    stage = 1
    for epoch in range(start_epoch, config.epochs):
        new_stage = 2 if stage2 is not None and epoch >= stage2 else 1
        if new_stage != stage or (epoch == start_epoch and new_stage == 2):
            yield StageChanged(epoch, new_stage)
        stage = new_stage
        lr = _lr(config, epoch)
        for o in optims:
            for g in o.param_groups:
                g["lr"] = lr
        for m in models:
            m.train()
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        drop = _drop_fraction(config, epoch)
        loss_sums = [0.0] * len(models)
        selected_sum = 0.0
        t0 = time.perf_counter()
        for step in range(steps):
            if should_stop is not None and should_stop():
                yield Finished(models, epoch, stopped=True)
                return
            idx = order[step * bs : (step + 1) * bs].to(device)
            x, y = x_all[idx], y_all[idx]
            if config.augment:
                x, y = _augment(x, y, config, gen)
            losses, frac = stepper(x, y, stage, drop, epoch, step)
            for i, v in enumerate(losses):
                loss_sums[i] += v
            selected_sum += frac
            yield Step(epoch, step, steps, float(np.mean(losses)))
        seconds = time.perf_counter() - t0
        val_dice = None
        if val is not None:
            val_dice = float(dice_score(predict(models, val[0]), val[1]).mean())
            for m in models:
                m.train()
        yield EpochEnd(
            epoch, config.epochs, stage, tuple(s / steps for s in loss_sums), selected_sum / steps, lr, seconds,
            val_dice,
        )
        _check_weights(models, epoch, run_dir)
        if run_dir is not None:
            path = save_checkpoint(run_dir, models, optims, config, epoch)
            yield CheckpointSaved(path, epoch)
    for m in models:
        m.eval()
    yield Finished(models, config.epochs, stopped=False)


class _Stepper:
    """One mini-batch for every net of a strategy; returns (loss per net, fraction trained on given labels)."""

    def __init__(self, config, models, optims, scaler, device_type, amp_dtype, run_dir) -> None:
        self.config, self.models, self.optims, self.scaler = config, models, optims, scaler
        self.device_type, self.amp_dtype, self.run_dir = device_type, amp_dtype, run_dir

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _update(self, nets: list[int], loss: torch.Tensor) -> None:
        for i in nets:
            self.optims[i].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for i in nets:
            self.scaler.step(self.optims[i])
        self.scaler.update()

    def __call__(self, x, y, stage: int, drop: float, epoch: int, step: int) -> tuple[list[float], float]:
        strategy = self.config.strategy
        if strategy == "vanilla":
            with self.autocast():
                loss = selection.per_sample_ce(self.models[0](x), y).mean()
            _check_finite(loss, epoch, step, self.run_dir)
            self._update([0], loss)
            return [loss.item()], 1.0
        if strategy == "coteaching" or stage == 1:
            return self._select_and_train(x, y, drop, epoch, step)
        return self._correct_and_train(x, y, epoch, step)

    def _select_and_train(self, x, y, drop, epoch, step):
        """Stage 1 (and co-teaching): rank with no_grad forwards, then train each net on its chosen samples.

        Re-running a net on half the batch costs about 2.5x one net's full step for three nets, instead of
        3x for a full-batch forward/backward of all three.
        """
        cfg = self.config
        keep = 1 - drop
        # the dropped part is split between the uncertainty step and the loss step as in the full setting
        share = cfg.drop_uncertain / (1 - cfg.keep_ratio) if cfg.keep_ratio < 1 else 0.0
        with torch.no_grad(), self.autocast():
            ce = [selection.per_sample_ce(m(x), y) for m in self.models]
        losses, fracs = [], []
        for i, m in enumerate(self.models):
            if cfg.strategy == "coteaching":
                chosen = selection.small_loss(ce[1 - i], keep)
            else:
                p, q = (j for j in range(3) if j != i)
                chosen = selection.select(ce[p], ce[q], keep, drop * share)
            with self.autocast():
                loss = selection.per_sample_ce(m(x[chosen]), y[chosen]).mean()
            _check_finite(loss, epoch, step, self.run_dir)
            self._update([i], loss)
            losses.append(loss.item())
            fracs.append(len(chosen) / len(x))
        return losses, float(np.mean(fracs))

    def _correct_and_train(self, x, y, epoch, step):
        """Stage 2 of crl: each net's label is sharpen(mean of its peers' softmax, T); joint loss."""
        cfg = self.config
        with self.autocast():
            logits = [m(x) for m in self.models]
        with torch.no_grad():
            probs = [torch.softmax(lg.detach().float(), dim=1) for lg in logits]
            ce = [selection.per_sample_ce(lg.detach(), y) for lg in logits]
        total = 0.0
        losses, fracs = [], []
        for i in range(3):
            p, q = (j for j in range(3) if j != i)
            corrected = selection.corrected_label([probs[p], probs[q]], cfg.T)
            joint = selection.joint_loss(logits[i], y, corrected, cfg.alpha)
            if cfg.joint == "all":
                per_sample = joint
                fracs.append(0.0)
            else:  # the samples the peers select keep CE on the given label; the rest get the joint loss
                chosen = selection.select(ce[p], ce[q], cfg.keep_ratio, cfg.drop_uncertain)
                is_sel = torch.zeros(len(x), dtype=torch.bool, device=x.device)
                is_sel[chosen] = True
                per_sample = torch.where(is_sel, selection.per_sample_ce(logits[i], y), joint)
                fracs.append(len(chosen) / len(x))
            loss = per_sample.mean()
            _check_finite(loss, epoch, step, self.run_dir)
            losses.append(loss.item())
            total = total + loss
        # peer signals are detached, so the three graphs are independent: one backward serves all nets
        self._update([0, 1, 2], total)
        return losses, float(np.mean(fracs))
