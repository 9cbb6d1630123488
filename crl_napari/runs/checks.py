"""config.json checked field by field before anything is allocated: a run folder may come from anyone, and a
width of 10**6 or a size of 10**5 would ask for terabytes before any error. The bounds are what training
creates (RunFolder.create checks the same), so every run this package wrote opens again."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

from ..settings import TrainConfig, TrainingError
from .errors import RunError

MAX_WIDTH = 256
MAX_DEPTH = 6
MAX_SIZE = 1024
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")

# field -> (type, low, high); floats accept ints; None means no bound on that side
_TRAIN_BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "epochs": (int, 1, 100_000), "batch_size": (int, 2, 4096), "lr": (float, 0, 100), "lr_decay": (float, 0, 1),
    "momentum": (float, 0, 1), "weight_decay": (float, 0, 1), "width": (int, 1, MAX_WIDTH),
    "depth": (int, 1, MAX_DEPTH), "k": (int, 0, 100_000), "keep_ratio": (float, 0, 1),
    "drop_uncertain": (float, 0, 1), "ramp": (float, 0, 1), "alpha": (float, 0, 1), "T": (float, 0, 100),
    "seed": (int, -(2**63), 2**63 - 1), "rotation": (float, 0, 180),
}
_TRAIN_TEXT = {"strategy", "joint", "device"}
_TRAIN_BOOL = {"amp", "augment", "flip"}
_DATA_BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "size": (int, 8, MAX_SIZE), "simulate_noise": (float, 0, 1), "noise_seed": (int, -(2**63), 2**63 - 1),
}


def _number(value: object, kind: type, lo, hi, name: str) -> str | None:
    """What is wrong with ``value`` as a setting of this kind and range (None when nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value!r}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name} must be in [{lo}, {hi}], got {value!r}"
    return None


def check_train(raw: object, path: Path | str) -> TrainConfig:
    """The training settings of a config.json (``train``), checked; RunError naming the file and field."""
    where = f"{path}: invalid run configuration"
    if not isinstance(raw, dict):
        raise RunError(f"{where} (train must be an object, got {type(raw).__name__})")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise RunError(f"{where} (unknown training settings {unknown} (written by another version?))")
    for name, value in raw.items():
        if name in _TRAIN_BOUNDS:
            if name == "k" and value is None:
                continue
            problem = _number(value, *_TRAIN_BOUNDS[name], f"train.{name}")
        elif name in _TRAIN_TEXT:
            problem = None if isinstance(value, str) and len(value) <= 32 else f"train.{name} must be a short text"
            if problem is None and name == "device" and not _DEVICE.match(value):
                problem = f"train.device must be auto, cpu, mps or cuda[:N], got {value!r}"
        else:
            problem = None if isinstance(value, bool) else f"train.{name} must be true or false, got {value!r}"
        if problem:
            raise RunError(f"{where} ({problem})")
    try:
        return TrainConfig.from_dict(raw)
    except (TrainingError, TypeError, ValueError) as exc:
        raise RunError(f"{where} ({exc})") from exc


def check_data(raw: object, path: Path | str, depth: int) -> dict:
    """The data settings of a config.json (``data``): size (a multiple of 2**depth), noise, the data root."""
    where = f"{path}: invalid run configuration"
    if not isinstance(raw, dict):
        raise RunError(f"{where} (data must be an object, got {type(raw).__name__})")
    out = dict(raw)
    for name, bounds in _DATA_BOUNDS.items():
        if name not in raw:
            raise RunError(f"{where} (data.{name} missing)")
        problem = _number(raw[name], *bounds, f"data.{name}")
        if problem:
            raise RunError(f"{where} ({problem})")
    if raw["size"] % 2**depth:
        raise RunError(f"{where} (data.size {raw['size']} is not divisible by 2**depth = {2**depth})")
    root = raw.get("root")
    if root is not None and not (isinstance(root, str) and root and len(root) <= 4096 and "\x00" not in root):
        raise RunError(f"{where} (data.root must be a folder path or null, got {root!r})")
    for name in ("skipped", "warnings"):
        if not isinstance(raw.get(name, []), list):
            raise RunError(f"{where} (data.{name} must be a list)")
    out.setdefault("skipped", [])
    out.setdefault("warnings", [])
    return out
