"""The typed records training yields (DESIGN.md, "one stream of events").

A command line and the napari worker consume the same stream, so what either shows is computed once, in the
engine. Each record is small and frozen; ``Event`` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .settings import TrainConfig


@dataclass(frozen=True)
class Started:
    config: TrainConfig
    device: str
    n_train: int
    steps_per_epoch: int
    start_epoch: int
    amp: bool = False  # mixed precision in use (asked for, and on cuda)
    threads: int = 1  # CPU threads torch trains with


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
