"""The typed records training yields (DESIGN.md, "one stream of events").

A command line and the napari worker consume the same stream, so what either shows is computed once, in the
engine. Each record is small and frozen; ``Event`` is their union. The records of one epoch (a step, a stage
change, its end, its checkpoint) share the epoch's number through ``InEpoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .settings import TrainConfig

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Started:
    """Training begins (or resumes at ``start_epoch``) on ``device``: the first event of a run."""

    config: TrainConfig
    device: str
    n_train: int
    steps_per_epoch: int
    start_epoch: int
    amp: bool = False  # mixed precision in use (asked for, and on cuda)
    threads: int = 1  # CPU threads torch trains with


@dataclass(frozen=True)
class InEpoch:
    """A record of one epoch; ``epoch`` counts from 0 (a resumed run's first is ``Started.start_epoch``)."""

    epoch: int


@dataclass(frozen=True)
class Step(InEpoch):
    """One optimisation step done; ``loss`` is the mean over the nets (for a progress bar)."""

    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class StageChanged(InEpoch):
    """crl entered stage 2 (label correction) at ``epoch``."""

    stage: int


@dataclass(frozen=True)
class EpochEnd(InEpoch):
    """An epoch finished: per-net losses, the fraction trained on given labels, its time and validation Dice."""

    epochs: int
    stage: int
    losses: tuple[float, ...]
    selected: float
    lr: float
    seconds: float
    val_dice: float | None
    keep: float | None = None  # TrainConfig.keep_auto: the keep ratio estimated at this epoch's end (None: the run's)


@dataclass(frozen=True)
class CheckpointSaved(InEpoch):
    """The checkpoint of ``epoch`` is on disk at ``path`` (a stop now keeps this epoch)."""

    path: Path


@dataclass(frozen=True)
class Finished:
    """The last event: the trained nets, how many epochs ran, and whether a stop request ended it early."""

    models: list
    epochs_run: int
    stopped: bool


Event = Started | Step | StageChanged | EpochEnd | CheckpointSaved | Finished


def run_to_end(gen: Generator[T, None, R], on_event: Callable[[T], object] | None = None) -> R:
    """Run a generator that yields progress and returns a result (the cache build, scoring) to its end, handing
    each record to ``on_event``: for callers that want the result, not the stream."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
