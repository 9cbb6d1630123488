"""The Train widget's worker: the job that runs in a napari thread worker, and the control of that worker.

Everything slow happens in the job, never in the viewer's thread: writing the layers as a data folder, and on
resume :func:`crl_napari.runs.open_for_resume` (it loads the checkpoint to check it: seconds at the paper's
width). The job yields the engine's events, plus the resume plan (``runs.Resume``) so the widget can show the
run's own settings and history before its first new epoch.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from qtpy.QtWidgets import QWidget

from .. import runs, second_pass
from ..layers_dataset import DataWritten, write_layers_dataset
from ..runs import RunError
from ..settings import TrainConfig
from . import frozen_heap
from ._common import StopFlag, start_generator

__all__ = ["WORKER_NICE", "TrainRunner", "gui_torch_threads", "train_job"]

WORKER_NICE = 10  # the training thread's nice value on Linux (see background_priority)


def gui_torch_threads() -> int:
    """Torch threads for training inside napari: every core but one, so the viewer keeps a core to draw on
    (on 2 cores, 2 torch threads tripled the longest GUI stall for 15 % faster epochs; benchmarks/ui_latency)."""
    return max(1, (os.cpu_count() or 2) - 1)


def background_priority(nice: int = WORKER_NICE) -> None:
    """Linux: lower this thread's priority, so the viewer's thread gets the CPU first whenever both want it
    (training keeps every idle cycle). Threads created from here on (torch's pool) inherit it."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted: keep the priority
            pass


def resume_data(plan: runs.Resume, chosen: Path | None) -> Path:
    """The data folder a resumed run trains on: the one it was made from when it is still there, else the one
    chosen in the form (the run checks that it lists the same cases)."""
    root = plan.run.data_root
    if root is not None and root.is_dir():
        return root
    if chosen is None or not chosen.is_dir():
        raise RunError(f"{plan.run.path}: the data folder it was trained on ({root}) is not there; "
                       "choose where it is now as the data folder")
    return chosen


def train_job(data: Any, out: Path, config: TrainConfig | None, data_settings: dict, resume: bool,
              should_stop: StopFlag, threads: int | None = None) -> Iterator:
    """The worker's generator: on resume the plan (runs.open_for_resume), on a training from layers the data
    folder written (DataWritten), then the engine's event stream: pipeline.train_run, then the second pass when
    the run's settings ask for one (second_pass.train_passes, as the command line; a resume goes on with the pass
    that was stopped).

    ``threads`` is set here, in the worker: a pool thread keeps the thread count of its first torch call."""
    background_priority()
    if threads is not None:
        torch.set_num_threads(threads)
    if resume:
        plan = runs.open_for_resume(out)
        if not plan.run.has_checkpoint:
            raise RunError(f"{out}: nothing to resume (no checkpoint yet); press Start")
        yield plan
        if not second_pass.stopped(out):  # a second pass trains from the run's own files: no data folder needed
            data = resume_data(plan, data if isinstance(data, Path) else None)
    elif isinstance(data, dict):  # layers
        yield DataWritten(write_layers_dataset(**data))
        data = data["dest"]
    yield from second_pass.train_passes(data, out, config, resume=resume, should_stop=should_stop, **data_settings)


class TrainRunner:
    """One training at a time in a thread worker: start it, ask it to stop after the current step, and stop it
    when ``owner`` (the widget) is destroyed while it runs. While it runs the viewer's objects are frozen for the
    garbage collector (frozen_heap: full collections while training stalled the viewer 200-300 ms)."""

    def __init__(self, owner: QWidget) -> None:
        self.worker = None
        self.stop_flag: StopFlag | None = None
        self._job: dict[str, Any] = {}  # what a destroyed owner must stop (see _abandon); holds no widget
        owner.destroyed.connect(partial(_abandon, self._job))

    def start(self, job: Callable[..., Iterator], *args: Any, on_event: Callable, on_error: Callable,
              on_done: Callable, closing: Any = None, **kwargs: Any) -> None:
        """Run ``job(*args, stop_flag, **kwargs)`` in a worker; ``closing`` (a progress bar) is closed when the
        owner goes away first."""
        self.stop_flag = StopFlag()
        frozen_heap.hold()
        try:
            self.worker = start_generator(job, *args, self.stop_flag, on_yield=on_event, on_error=on_error,
                                          on_done=partial(self._done, on_done), **kwargs)
        except BaseException:
            frozen_heap.release()
            raise
        self._job.update(flag=self.stop_flag, worker=self.worker, closing=closing, frozen=True)

    def stop(self) -> None:
        """Ask the engine to stop after its current step (the last epoch's checkpoint stays)."""
        if self.stop_flag is not None:
            self.stop_flag.set()

    def _done(self, on_done: Callable[[], None]) -> None:
        self.worker = None
        if self._job.pop("frozen", False):
            frozen_heap.release()
        self._job.clear()
        on_done()


def _abandon(job: dict, *_args) -> None:
    """The widget is gone (its dock closed, the viewer quit) while training: stop the engine after its
    current step and let the worker finish without touching the deleted widgets."""
    flag, worker, closing = job.get("flag"), job.get("worker"), job.get("closing")
    if job.pop("frozen", False):
        frozen_heap.release()
    if flag is not None:
        flag.set()
    if worker is not None:
        for name in ("yielded", "errored", "finished"):
            try:  # Qt may have deleted the worker's signals object already (the viewer quit): reading one raises
                getattr(worker, name).disconnect()
            except (TypeError, RuntimeError):
                pass
        try:
            worker.quit()
        except RuntimeError:
            pass  # the same: the worker's Qt half is gone, the stop flag above ends the engine
    if closing is not None:
        closing.close()
    job.clear()
