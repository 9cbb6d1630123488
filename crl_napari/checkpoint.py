"""The checkpoint file: written atomically after every epoch, read back only after it has been checked.

A checkpoint may come from anyone (a run folder copied from a server, a file edited by hand), so reading one
checks, before any net is built, the format, the settings inside it (as TrainConfig checks them), the number of
nets, and every tensor's name, shape, dtype and values against the U-Net those settings describe — built on
torch's "meta" device, which allocates nothing. Anything wrong is one TrainingError naming the file. The file
holds state_dicts and plain values only, so it loads with ``torch.load(weights_only=True)``, which refuses
pickled code.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .atomic import atomic_write
from .device import pick_device
from .settings import CHECKPOINT_FORMAT, TrainConfig, TrainingError
from .unet import UNet, build_models


def save_checkpoint(path: Path, models, optimizers, config: TrainConfig, epoch: int,
                    line: dict | None = None, average: dict | None = None) -> Path:
    """state_dicts only, so the file loads with ``torch.load(weights_only=True)``; written atomically to the
    file ``path`` (its name in a run folder is runs.CHECKPOINT: cascade.save_checkpoint takes the folder).

    ``line``: the epoch's history.csv line (runs.epoch_line), kept here too because history.csv is written
    after this file: a kill between the two leaves it here for the resume (runs.open_for_resume).
    ``average``: the weight average being built (TrainConfig.average_last, WeightAverage.state()), for a resume."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": asdict(config),
        "models": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models],
        "optimizers": [o.state_dict() for o in optimizers],
    }
    if line is not None:
        state["history_line"] = dict(line)
    if average is not None:
        state["average"] = average
    path = Path(path)
    # streamed into the temp file, not built in memory first: a quarter faster, and the interpreter lock is
    # held for shorter spells (the viewer stays smoother while the plugin trains)
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def read_checkpoint(path: Path) -> dict:
    """A checked checkpoint: ``weights_only=True`` refuses pickled code, then everything in it is validated
    (see the module's docstring). ``ckpt["config"]`` stays the dict; ``TrainConfig.from_dict`` of it is valid."""
    path = Path(path)
    ckpt = _load(path, mmap=False)
    problem = _problem(ckpt)
    if problem:
        raise TrainingError(f"{path}: {problem}")
    return ckpt


def read_meta(path: Path) -> dict:
    """What a checkpoint says besides its tensors: ``{"epoch", "config" (a dict), "history_line" (or None)}``,
    checked as :func:`read_checkpoint` checks them. The file is mapped, not read, so this costs milliseconds at
    any width: the resume path asks it (runs.open_for_resume) and the weights are read and checked once, where
    they are loaded into the nets."""
    path = Path(path)
    ckpt = _load(path, mmap=True)
    problem = _meta_problem(ckpt)
    if problem:
        raise TrainingError(f"{path}: {problem}")
    return {"epoch": ckpt["epoch"], "config": ckpt["config"], "history_line": ckpt.get("history_line")}


def _load(path: Path, mmap: bool) -> dict:
    """``torch.load(weights_only=True)`` (pickled code is refused) of a file in our format; ``mmap``: tensors
    are mapped from the file, not read."""
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint here")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            # a file system that cannot map it, or an older serialisation: read it as a whole instead
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError for truncated files
        raise TrainingError(f"{path}: not a loadable crl-napari checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or type(ckpt.get("format")) is not int or ckpt["format"] != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: unknown checkpoint format (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def load_models(path: Path, device: torch.device | str | None = None) -> tuple[list[UNet], TrainConfig]:
    """The trained nets of the checkpoint file ``path``, in eval mode, and the configuration they were trained
    with (cascade.load_models takes the run folder)."""
    ckpt = read_checkpoint(Path(path))
    config = TrainConfig.from_dict(ckpt["config"])
    models = build_models(config, pick_device("auto" if device is None else str(device)))
    for m, sd in zip(models, ckpt["models"], strict=True):
        m.load_state_dict(sd)  # names and shapes were checked: this cannot fail on the file's account
        m.eval()
    return models, config


def expected_state(config: TrainConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor in one net's state_dict, computed without allocating it."""
    with torch.device("meta"):
        net = UNet(1, 2, config.width, config.depth)
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def _meta_problem(ckpt: dict) -> str | None:
    """What is wrong with a loaded checkpoint's epoch, settings and history line, or None."""
    missing = [k for k in ("epoch", "config", "models") if k not in ckpt]
    if missing:
        return f"the checkpoint has no {', '.join(missing)}"
    try:
        config = TrainConfig.from_dict(ckpt["config"])
    except (TrainingError, TypeError) as exc:
        return f"its settings are not valid: {exc}"
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < config.epochs:
        return f"epoch {epoch!r} is not an epoch of a {config.epochs}-epoch run"
    line = ckpt.get("history_line")
    if line is not None and not (isinstance(line, dict) and len(line) <= 16 and all(
            isinstance(k, str) and (v is None or isinstance(v, int | float)) for k, v in line.items())):
        return "its history line is not a row of numbers"  # its values are checked where it is used
    return None


def _problem(ckpt: dict) -> str | None:
    """What is wrong with a loaded checkpoint dict, or None."""
    problem = _meta_problem(ckpt)
    if problem:
        return problem
    config = TrainConfig.from_dict(ckpt["config"])
    nets = ckpt["models"]
    if not isinstance(nets, list | tuple) or len(nets) != config.n_nets:
        count = len(nets) if isinstance(nets, list | tuple) else type(nets).__name__
        return f"holds {count} nets, strategy {config.strategy} needs {config.n_nets}"
    expected = expected_state(config)
    for i, sd in enumerate(nets):
        problem = _state_problem(sd, expected, config)
        if problem:
            return f"net {i + 1}: {problem}"
    if "average" in ckpt:
        problem = _average_problem(ckpt["average"], expected, config)
        if problem:
            return problem
    if "optimizers" in ckpt:
        return _optimizers_problem(ckpt["optimizers"], config)
    return None


def _average_problem(average, expected: dict, config: TrainConfig) -> str | None:
    """The weight average (TrainConfig.average_last) must be a count and one state_dict per net."""
    count = average.get("count") if isinstance(average, dict) else None
    nets = average.get("nets") if isinstance(average, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= config.epochs:
        return f"its weight average has a count of {count!r}"
    if not isinstance(nets, list | tuple) or len(nets) != (config.n_nets if count else 0):
        return "its weight average does not hold one set of weights per net"
    for i, sd in enumerate(nets):
        problem = _state_problem(sd, expected, config)
        if problem:
            return f"the weight average of net {i + 1}: {problem}"
    return None


def _state_problem(sd, expected: dict, config: TrainConfig) -> str | None:
    if not isinstance(sd, dict):
        return f"its weights are a {type(sd).__name__}, not a state_dict"
    missing, extra = sorted(set(expected) - set(sd)), sorted(str(k) for k in set(sd) - set(expected))
    if missing or extra:
        return (f"the weights do not match the configuration (width {config.width}, depth {config.depth}): "
                f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, (shape, dtype) in expected.items():
        t = sd[name]
        if not isinstance(t, torch.Tensor):
            return f"{name} is a {type(t).__name__}, not a tensor"
        if tuple(t.shape) != shape:
            return (f"the weights do not match the configuration (width {config.width}, depth {config.depth}): "
                    f"{name} has shape {tuple(t.shape)}, expected {shape}")
        if t.dtype != dtype:
            return f"{name} is {t.dtype}, expected {dtype}"
        if t.is_floating_point() and not torch.isfinite(t).all():
            return f"{name} holds NaN or infinite values"
    return None


def _optimizers_problem(optims, config: TrainConfig) -> str | None:
    """The optimisers' momentum buffers must fit the nets' parameters (a resume loads them into the nets)."""
    with torch.device("meta"):
        shapes = [tuple(p.shape) for p in UNet(1, 2, config.width, config.depth).parameters()]
    if not isinstance(optims, list | tuple) or len(optims) != config.n_nets:
        return f"holds optimiser states that are not one per net ({config.n_nets})"
    for i, o in enumerate(optims):
        state = o.get("state") if isinstance(o, dict) else None
        groups = o.get("param_groups") if isinstance(o, dict) else None
        if not isinstance(state, dict) or not isinstance(groups, list) or len(groups) != 1:
            return f"optimiser {i + 1}: not an SGD state"
        group = groups[0]
        if not isinstance(group, dict) or list(group.get("params", ())) != list(range(len(shapes))):
            return f"optimiser {i + 1}: its parameters are not the net's"
        for key in ("lr", "momentum", "weight_decay"):
            v = group.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not torch.isfinite(torch.tensor(float(v))):
                return f"optimiser {i + 1}: {key} is {v!r}"
        for index, entry in state.items():
            buf = entry.get("momentum_buffer") if isinstance(entry, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(shapes) or not isinstance(buf, torch.Tensor):
                return f"optimiser {i + 1}: state {index!r} is not a momentum buffer of a parameter"
            if tuple(buf.shape) != shapes[index] or not buf.is_floating_point() or not torch.isfinite(buf).all():
                return f"optimiser {i + 1}: the momentum buffer of parameter {index} does not fit the net"
    return None
