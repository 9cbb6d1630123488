"""config.json checked field by field before anything is allocated: a run folder may come from anyone, and a
width of 10**6 or a size of 10**5 would ask for terabytes before any error. The bounds are what training
creates (RunFolder.create checks the same), so every run this package wrote opens again."""

from __future__ import annotations

import math
from pathlib import Path

from ..noise import FOOTPRINTS
from ..settings import MAX_DEPTH, MAX_SIZE, MAX_WIDTH, TrainConfig, TrainingError  # noqa: F401
from .errors import RunError

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
    """The training settings of a config.json (``train``), checked by settings.TrainConfig (types and ranges,
    bounded by what training creates) before anything is allocated; RunError naming the file and field."""
    where = f"{path}: invalid run configuration"
    if not isinstance(raw, dict):
        raise RunError(f"{where} (train must be an object, got {type(raw).__name__})")
    try:
        return TrainConfig.from_dict(raw)
    except (TrainingError, TypeError, ValueError) as exc:
        raise RunError(f"{where} ({str(exc).removeprefix('invalid training configuration: ')})") from exc


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
    footprint = raw.get("noise_footprint", "cross")  # absent in runs made before the option
    if footprint not in FOOTPRINTS:
        raise RunError(f"{where} (data.noise_footprint must be one of {', '.join(FOOTPRINTS)}, got {footprint!r})")
    root = raw.get("root")
    if root is not None and not (isinstance(root, str) and root and len(root) <= 4096 and "\x00" not in root):
        raise RunError(f"{where} (data.root must be a folder path or null, got {root!r})")
    for name in ("skipped", "warnings"):
        if not isinstance(raw.get(name, []), list):
            raise RunError(f"{where} (data.{name} must be a list)")
    out.setdefault("skipped", [])
    out.setdefault("warnings", [])
    return out
