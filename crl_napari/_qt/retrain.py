"""The Review dock's "Retrain with my decisions": the next review round (crl_napari.rounds) in a thread worker,
run as the Train widget runs its training (train_worker.TrainRunner: lowered priority, the viewer's thread count).

The reviewer goes on reviewing while the round trains (the round reads the decisions when it starts; later ones
count for the next round). When the round is scored, the queue is re-ranked from the new scores, the image on
screen stays selected and every decision stays; the line under the button says which round scored the queue.
Progress and pace are shown as the Train widget shows them (a step bar, :mod:`.step_bar`, redrawn with the status
line at most once a second; the engine's ETA).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QSpinBox, QVBoxLayout, QWidget

from .. import pipeline, rounds, runs, second_pass
from ..cache import CacheProgress
from ..eta import Eta
from ..events import Finished, Started, Step
from ..rounds import RoundStarted, default_warm_epochs
from ..runs import RunError, RunFolder
from ._common import StopFlag, info, report_error
from .status_line import StatusLine
from .step_bar import StepBar
from .train_worker import TrainRunner, background_priority, gui_torch_threads

__all__ = ["RetrainControl", "round_job", "second_pass_job"]


def round_job(run_dir: Path, warm_epochs: int | None, from_scratch: bool, should_stop: StopFlag,
              threads: int | None = None) -> Iterator:
    """The worker's generator: the engine's next round at lowered priority, as the Train widget's job runs
    (train_worker); ``threads`` trains the round (whatever the run was trained with) and is set here, in the
    worker, where torch scores it."""
    background_priority()
    if threads is not None:
        torch.set_num_threads(threads)
    yield from rounds.next_round(run_dir, warm_epochs=warm_epochs, from_scratch=from_scratch,
                                 should_stop=should_stop, threads=threads)


def second_pass_job(run_dir: Path, should_stop: StopFlag, threads: int | None = None) -> Iterator:
    """The worker's generator for "Second pass": fresh nets on the corrections the run's scores ask for (the mode
    the advice names and the default trains: second_pass.asked_mode) unless the run's settings asked for a mode of
    their own that never started (a process ended between the passes), or the stopped second pass going on; at
    lowered priority as :func:`round_job`."""
    background_priority()
    if threads is not None:
        torch.set_num_threads(threads)
    if second_pass.started_and_stopped(run_dir):
        yield from rounds.next_round(run_dir, should_stop=should_stop, threads=threads)
    else:
        mode = second_pass.asked_mode(RunFolder(run_dir))
        yield from second_pass.run_second_pass(run_dir, should_stop=should_stop, threads=threads, mode=mode)


class RetrainControl(QWidget):
    """Retrain / Stop, the warm-start epochs (or from scratch) and a status line, for the Review widget
    ``review`` (anything with ``session``, ``current_id``, ``model``, ``open_run`` and ``_message``)."""

    def __init__(self, review) -> None:
        super().__init__()
        self._review = review
        self.runner = TrainRunner(self)
        self.pbar = StepBar()
        self.last_outcome: str | None = None  # finished | stopped | error
        self.rounds_done = 0
        self._eta = Eta()
        self._run_dir: Path | None = None
        self._round_text = ""
        self._shown_at = 0.0
        self.retrain_btn = QPushButton("Retrain with my decisions")
        self.retrain_btn.setToolTip("Train the next round: accepted, kept and edited masks become trusted labels "
                                    "(never dropped nor corrected), excluded images are left out; then every "
                                    "image is scored again and the queue re-ranked. Keep reviewing meanwhile.")
        self.second_btn = QPushButton("Second pass")
        self.second_btn.setToolTip("Right after the first training, before any round: three fresh nets train again "
                                   "on the corrections (every image's where most masks look wrong, else those the "
                                   "recommended threshold takes), then every image is scored again. At 50 and 75 % "
                                   "simulated noise it gave better nets and corrections (docs/paper.md); it takes "
                                   "about as long as the first training.")
        self.stop_btn = QPushButton("Stop")
        self.warm_epochs = QSpinBox()
        self.warm_epochs.setRange(1, 10_000)
        self.warm_epochs.setPrefix("warm start, epochs: ")
        self.warm_epochs.setToolTip("continue from the current nets for this many epochs")
        self.from_scratch = QCheckBox("from scratch")
        self.from_scratch.setToolTip("train anew with the first round's settings (slower)")
        self.status = StatusLine()  # a new text repaints the line, not the window's layout (see status_line)
        row = QHBoxLayout()
        for w in (self.retrain_btn, self.second_btn, self.stop_btn):
            row.addWidget(w)
        options = QHBoxLayout()
        options.addWidget(self.warm_epochs)
        options.addWidget(self.from_scratch)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(row)
        box.addLayout(options)
        box.addWidget(self.pbar)
        box.addWidget(self.status)
        self.retrain_btn.clicked.connect(self.retrain)
        self.second_btn.clicked.connect(self.start_second_pass)
        self.stop_btn.clicked.connect(self.stop)
        self.from_scratch.toggled.connect(lambda on: self.warm_epochs.setEnabled(not on))
        self._update()

    # ------------------------------------------------------------------------------------- the run
    def set_run(self, run_dir: Path | str | None) -> None:
        """A run was opened in the review: say which round scored its queue."""
        self._run_dir = None if run_dir is None else Path(run_dir)
        if self._run_dir is not None and not self.running:
            try:
                first = runs.read_rounds(self._run_dir)
                config = RunFolder(runs.round_dir(self._run_dir, 1) if first else self._run_dir).train_config
                self.warm_epochs.setValue(default_warm_epochs(config))
                self.status.setText(f"Queue scored by round {runs.current_round(self._run_dir)}")
            except RunError as exc:
                self.status.setText(str(exc))
        self._update()

    @property
    def worker(self):
        return self.runner.worker

    @property
    def stop_flag(self) -> StopFlag | None:
        return self.runner.stop_flag

    @property
    def running(self) -> bool:
        return self.worker is not None

    # ------------------------------------------------------------------------------------- actions
    def retrain(self) -> None:
        session = self._review.session
        if session is None or self.running:
            return
        decided = session.counts()["reviewed"]
        if not decided:
            self._say("Review some images first: the next round trains with your decisions.")
            return
        warm = None if self.from_scratch.isChecked() else int(self.warm_epochs.value())
        self._start(session.run_dir, f"Training the next round with {decided} decision(s)", round_job,
                    session.run_dir, warm, self.from_scratch.isChecked())

    def start_second_pass(self) -> None:
        """Train the run's second pass (the advice's remedy when most masks look wrong); the queue is re-ranked
        when it is scored, as after a round. Decisions made meanwhile stay for the next review round."""
        session = self._review.session
        if session is None or self.running or not self._second_pass_open(session.run_dir):
            return
        self._start(session.run_dir, "Training the second pass on the corrections", second_pass_job, session.run_dir)

    def _start(self, run_dir: Path, what: str, job, *args) -> None:
        """Run ``job(*args, should_stop, threads=)`` in the worker, its events shown here; ``what`` on the line."""
        self.last_outcome = None
        self._eta = Eta()
        self._run_dir = run_dir
        self.pbar.begin()
        self._shown_at = 0.0
        self.runner.start(job, *args, threads=gui_torch_threads(), on_event=self._on_event, on_error=self._on_error,
                          on_done=self._on_done)
        self.status.setText(f"{what}; keep reviewing meanwhile…")
        self._update()

    @staticmethod
    def _second_pass_open(run_dir: Path) -> bool:
        """The run can take its second pass now, or has one stopped to go on with."""
        return second_pass.offered(run_dir) or second_pass.started_and_stopped(run_dir)

    def stop(self) -> None:
        """Stop after the current step; Retrain later resumes the same round."""
        self.runner.stop()

    # ------------------------------------------------------------------------------------- events
    def _on_event(self, ev: Any) -> None:
        self._eta.update(ev)
        if isinstance(ev, RoundStarted):
            session = self._review.session
            shown = session.round if session is not None else ev.round - 1
            what = (f"the second pass (round {ev.round}, fresh nets {second_pass.labels_text(ev)})" if ev.second_pass
                    else f"round {ev.round} ({ev.text()})")
            self._round_text = (f"{'Resuming' if ev.resumed else 'Training'} {what}; the queue is round {shown}'s, "
                                f"decisions made now count for round {ev.round + 1}")
            self.status.setText(self._round_text + "…")
        elif isinstance(ev, Started):
            self.pbar.set_total((ev.config.epochs - ev.start_epoch) * ev.steps_per_epoch)
            self.pbar.draw()
            self._shown_at = 0.0
        elif isinstance(ev, Step):
            self.pbar.step()
            if time.monotonic() - self._shown_at > 1.0:  # a redraw per step would cost the viewer time
                self._shown_at = time.monotonic()
                self.pbar.draw()  # with the status line: one repaint of the window
                self.status.setText(" · ".join(p for p in (self._round_text, self._eta.text()) if p))
        elif isinstance(ev, Finished):
            self.pbar.draw()
            if ev.stopped:
                self.last_outcome = "stopped"
                self.status.setText("Stopped; press Retrain to resume this round (the last epoch is kept).")
            else:
                self.status.setText("Round trained; scoring every image…")
        elif isinstance(ev, CacheProgress):  # scoring every image: minutes at 256 px
            self.status.setText(f"Round trained; {ev.text()}")
        elif isinstance(ev, pipeline.ScoringStopped):
            self.last_outcome = "stopped"
            self.status.setText(f"Stopped while scoring: {ev.done}/{ev.total} images scored and kept; press Retrain "
                                "to score the rest of this round.")
        elif isinstance(ev, pipeline.ScoresReady):
            self.last_outcome = "finished"
            self.rounds_done += 1
            self._refresh(ev.metrics.get("round"))

    def _refresh(self, number: int | None) -> None:
        """Re-rank the queue from the new scores; the image on screen stays, so do the decisions. An open
        drawing is left alone: the refresh waits until it is saved or discarded."""
        review = self._review
        if review.model is not None and review.model.editing is not None:
            QTimer.singleShot(500, partial(self._refresh, number))
            return
        if self._run_dir is not None:
            review.open_run(self._run_dir, show=review.current_id)
        text = f"Queue re-ranked: scored by round {number}"
        self.status.setText(text)
        self._say(text)
        info(f"crl-napari: {text}")

    def _on_error(self, exc: BaseException) -> None:
        self.last_outcome = "error"
        text = report_error(exc, "retraining")
        self.status.setText(text)

    def _on_done(self) -> None:
        self.pbar.draw()
        if self.last_outcome is None:
            self.last_outcome = "stopped"
            self.status.setText("Stopped; press Retrain to resume this round.")
        self._update()

    def _update(self) -> None:
        session = self._review.session
        self.retrain_btn.setEnabled(not self.running and session is not None)
        self.second_btn.setEnabled(not self.running and session is not None
                                   and self._second_pass_open(session.run_dir))
        self.stop_btn.setEnabled(self.running)

    def _say(self, text: str) -> None:
        self._review._message(text)

