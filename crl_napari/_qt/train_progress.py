"""The Train widget's progress: the engine's events as a ``napari.utils.progress`` bar, a status line with the
pace (``eta.Eta``) and the loss / selected-fraction plot (redrawn once per epoch).

Display only: what a run's end means (finished, stopped, an error) is the widget's to decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from magicgui.widgets import Label
from napari.utils import progress

from ..cache import CacheProgress
from ..eta import Eta
from ..events import EpochEnd, Finished, StageChanged, Started, Step
from ..layers_dataset import DataWritten
from ..pipeline import ScoresReady
from ..runs import HistoryRow
from ._plots import LossPlot

__all__ = ["TrainProgress"]

STATUS_EVERY_S = 1.0  # the status line is redrawn at most this often between epochs


class TrainProgress:
    """The status line, the progress bar and the plot of one training at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.plot = LossPlot()
        self.pbar: progress | None = None
        self.live = False  # the pace is shown while training (not once a stop was asked)
        self._eta = Eta(clock)  # the engine's ETA, fed every training event
        self._text = ""  # the status line's part that the pace is appended to
        self._shown_at = 0.0

    def begin(self, resume: bool) -> progress:
        """A training starts: an empty plot and a bar that counts the steps once the engine says how many."""
        self.plot.clear()
        self.live = True
        self.status.value = "Resuming…" if resume else "Loading the data…"
        self.pbar = progress(total=0, desc="crl-napari: loading")
        return self.pbar

    def say(self, text: str) -> None:
        """Show ``text`` on the status line; the pace is no longer appended."""
        self.live = False
        self.status.value = text

    def show_history(self, rows: list[HistoryRow]) -> None:
        """Plot the epochs a resumed run already trained."""
        self.plot.clear()
        for row in rows:
            self.plot.add(row.epoch, row.losses, row.selected, row.stage)

    def show(self, ev: object) -> None:
        """One event of the job (train_worker.train_job) on screen."""
        self._eta.update(ev)
        if isinstance(ev, Step):
            if self.pbar is not None:
                self.pbar.update(1)
            self._show_pace()
        elif isinstance(ev, EpochEnd):
            self.plot.add(ev.epoch, ev.losses, ev.selected, ev.stage)
            self._text = (f"Epoch {ev.epoch + 1}/{ev.epochs} · stage {ev.stage} · loss {float(np.mean(ev.losses)):.4f}"
                          f" · selected {ev.selected:.2f} · {ev.seconds:.1f} s")
            self._show_pace(now=True)
        elif isinstance(ev, Started):
            self._describe(f"crl-napari: training {ev.config.strategy}",
                           max(0, (ev.config.epochs - ev.start_epoch) * ev.steps_per_epoch))
            self._text = (f"Training {ev.config.strategy} on {ev.n_train} images ({ev.device})"
                          + (f", from epoch {ev.start_epoch + 1}" if ev.start_epoch else ""))
            self._show_pace(now=True)
        elif isinstance(ev, CacheProgress):  # the data folder decoded into the run's cache, before training
            self._text = ev.text()
            self._show_pace(now=ev.left == 0)
        elif isinstance(ev, StageChanged):
            self._describe(f"crl-napari: training, stage {ev.stage}")
        elif isinstance(ev, Finished):
            if ev.stopped:
                self.say(f"Stopped during epoch {ev.epochs_run + 1}; the checkpoint of the last finished epoch is "
                         "kept: press Resume to continue.")
            else:
                self.say("Training finished; scoring every image…")
                self._describe("crl-napari: scoring")
        elif isinstance(ev, ScoresReady):
            self.say(f"Done: {ev.metrics.get('n_images', '?')} images scored in {ev.path.parent}")
        elif isinstance(ev, DataWritten):
            self.status.value = f"Wrote the layers as a data folder: {ev.path}"

    def end(self) -> None:
        """The worker is done: close the bar."""
        self.live = False
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None

    def _describe(self, desc: str, total: int | None = None) -> None:
        if self.pbar is not None:
            if total is not None:
                self.pbar.total = total
            self.pbar.set_description(desc)

    def _show_pace(self, now: bool = False) -> None:
        """The status line while training: the last epoch's summary and the pace (redrawn at most every
        second between epochs; a label update per step would cost the viewer time for nothing)."""
        t = time.monotonic()
        if not self.live or (not now and t - self._shown_at < STATUS_EVERY_S):
            return
        self._shown_at = t
        warning = self._eta.long_run_warning("Image size 128, width 16, 20 epochs")
        self.status.value = " · ".join(part for part in (self._text, self._eta.text(), warning) if part)
