"""The Train widget's progress: the engine's events as a step bar (:class:`.step_bar.StepBar`, not napari's
animated activity bar), a status line with the pace (``eta.Eta``) and the loss / selected-fraction plot (redrawn
once per epoch). The bar and the status line are redrawn together, at most once a second between epochs: each
redraw re-composes the viewer's window (once: the status line lays nothing out again, :mod:`.status_line`).

A run with a second pass (TrainConfig.second_pass) trains twice in one job: every line then says which pass it is
about ("First pass · ...", "Second pass · ..."), and the plot starts again with the second pass's fresh nets.

Display only: what a run's end means (finished, stopped, an error) is the widget's to decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..cache import CacheProgress
from ..eta import Eta
from ..events import EpochEnd, Finished, Started, Step
from ..layers_dataset import DataWritten
from ..pipeline import ScoresReady, ScoringStopped
from ..rounds import RoundStarted
from ..runs import HistoryRow
from ..second_pass import AUTO, OFF, NoSecondPass, labels_text
from ._plots import LossPlot
from .status_line import StatusLine
from .step_bar import StepBar

__all__ = ["TrainProgress"]

STATUS_EVERY_S = 1.0  # the status line and the step bar are redrawn at most this often between epochs


class TrainProgress:
    """The status line, the progress bar and the plot of one training at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = StatusLine()  # a new text repaints the line, not the window's layout (see status_line)
        self.plot = LossPlot()
        self.pbar = StepBar()  # in the Train widget, under its buttons
        self._clock = clock
        self.live = False  # the pace is shown while training (not once a stop was asked)
        self._eta = Eta(clock)  # the engine's ETA, fed every training event
        self._text = ""  # the status line's part that the pace is appended to
        self._shown_at = 0.0
        self.passes = 1  # 2 when the run trains a second pass (its Started says so)
        self._epochs = 1_000_000  # the run's epochs (its Started says)
        self.second = False  # the second pass is running (RoundStarted(second_pass=True) came)
        self.auto = False  # second_pass AUTO: whether a second pass follows is decided after the first pass's scores

    def begin(self, resume: bool) -> None:
        """A training starts: an empty plot and a bar that counts the steps once the engine says how many."""
        self.plot.clear()
        self.live = True
        self._shown_at = 0.0
        self.passes, self.second = 1, False
        self.status.value = "Resuming…" if resume else "Loading the data…"
        self.pbar.begin()

    def say(self, text: str) -> None:
        """Show ``text`` on the status line; the pace is no longer appended."""
        self.live = False
        self.status.value = text

    def show_history(self, rows: list[HistoryRow]) -> None:
        """Plot the epochs a resumed run already trained."""
        self.plot.clear()
        for row in rows:
            self.plot.add(row.epoch, row.losses, row.selected, row.stage)

    @property
    def pass_name(self) -> str:
        """"First pass · " / "Second pass · " while a run asked for a second pass trains ("Second pass · " only once it
        starts when second_pass AUTO decides after the first), else nothing."""
        return "Second pass · " if self.second else "First pass · " if self.passes == 2 else ""

    def show(self, ev: object) -> None:
        """One event of the job (train_worker.train_job) on screen."""
        self._eta.update(ev)
        if isinstance(ev, Step):
            self.pbar.step()
            self._show_pace()
        elif isinstance(ev, EpochEnd):
            self.plot.add(ev.epoch, ev.losses, ev.selected, ev.stage)
            self._text = (f"{self.pass_name}Epoch {ev.epoch + 1}/{ev.epochs} · stage {ev.stage} · loss "
                          f"{float(np.mean(ev.losses)):.4f} · selected {ev.selected:.2f} · {ev.seconds:.1f} s"
                          + (f" · keep ratio {ev.keep:g} (most masks look wrong)" if ev.keep is not None else ""))
            self._show_pace(now=True)
        elif isinstance(ev, Started):
            # AUTO (the default) decides after the first pass: its lines stay plain until a second pass starts
            self.passes = 2 if ev.config.second_pass not in (OFF, AUTO) or self.second else 1
            self.auto = ev.config.second_pass == AUTO and not self.second
            self._epochs = ev.config.epochs
            self.pbar.set_total((ev.config.epochs - ev.start_epoch) * ev.steps_per_epoch)
            self._text = (f"{self.pass_name}Training {ev.config.strategy} on {ev.n_train} images ({ev.device})"
                          + (f", from epoch {ev.start_epoch + 1}" if ev.start_epoch else ""))
            self._show_pace(now=True)
        elif isinstance(ev, RoundStarted) and ev.second_pass:  # the first pass is scored: fresh nets train again
            self.second = True
            self.plot.clear()  # a resumed pass's earlier epochs follow (its runs.Resume: show_history)
            self.live = True
            self.status.value = self._text = (
                f"Second pass (round {ev.round}, fresh nets): {'resuming' if ev.resumed else 'training'} "
                f"{labels_text(ev)}; rounds/1/ keeps the first pass")
        elif isinstance(ev, NoSecondPass) and not ev.auto:  # AUTO's: the first pass's "Done" line stays
            self.say(ev.reason[:1].upper() + ev.reason[1:])
        elif isinstance(ev, CacheProgress) and ev.what.startswith("scoring"):  # after training: minutes at 256 px
            t = self._clock()
            if ev.decoded == 0 or ev.left == 0 or t - self._shown_at >= STATUS_EVERY_S:
                self._shown_at = t
                self.status.value = f"{self.pass_name}Training finished; {ev.text()}"
        elif isinstance(ev, CacheProgress):  # caching and writing the run folder, before training; average_bn's pass
            self._text = ev.text()
            self._show_pace(now=ev.left == 0)
        elif isinstance(ev, Finished):
            self.pbar.draw()
            if ev.stopped and ev.epochs_run >= self._epochs:  # in the pass after the last epoch (average_bn)
                self.say(f"{self.pass_name}Stopped after the last epoch, before its BatchNorm statistics were "
                         "recomputed; every epoch is kept: press Resume to finish.")
            elif ev.stopped:
                self.say(f"{self.pass_name}Stopped during epoch {ev.epochs_run + 1}; the checkpoint of the last "
                         "finished epoch is kept: press Resume to continue.")
            else:
                self.say(f"{self.pass_name}Training finished; scoring every image…")
        elif isinstance(ev, ScoringStopped):
            self.say(f"{self.pass_name}Stopped while scoring: {ev.done}/{ev.total} images scored and kept: press "
                     "Resume to score the rest.")
        elif isinstance(ev, ScoresReady):
            more = " · the second pass starts…" if self.passes == 2 and not self.second else ""
            self.say(f"{self.pass_name}Done: {ev.metrics.get('n_images', '?')} images scored in {ev.path.parent}"
                     f"{more}")
        elif isinstance(ev, DataWritten):
            self.status.value = f"Wrote the layers as a data folder: {ev.path}"

    def end(self) -> None:
        """The worker is done: the bar shows the steps it made (until the next start)."""
        self.live = False
        self.pbar.draw()

    def _show_pace(self, now: bool = False) -> None:
        """The status line and the step bar while training: the last epoch's summary and the pace (redrawn at
        most every second between epochs, both in the same turn of the event loop: one repaint of the window)."""
        t = self._clock()
        if not self.live or (not now and t - self._shown_at < STATUS_EVERY_S):
            return
        self._shown_at = t
        self.pbar.draw()
        warning = self._eta.long_run_warning("Image size 128, width 16, 20 epochs")
        self.status.value = " · ".join(part for part in (self._text, self._eta.text(), warning) if part)
