"""The Train widget: pick the data, the strategy and its hyperparameters (defaults: the paper's where it gives
one, docs/paper.md), and train in a napari thread worker over the engine's event stream
(:func:`crl_napari.pipeline.train_run`, then the second pass when asked: :func:`crl_napari.second_pass.train_passes`).

It composes three small parts: the settings form (:mod:`.train_form`), the progress presenter (:mod:`.train_progress`:
bar, status line with the pace, loss plot) and the worker control (:mod:`.train_worker`: the job, its priority
and threads, stop, and stopping it when the widget goes away). Here are only the buttons and what a run's end
means. Stop sets the flag the engine polls between steps, so training ends cleanly after the current step with
the last epoch's checkpoint on disk; Resume continues from it, its checks and checkpoint load done in the
worker (:func:`crl_napari.runs.open_for_resume`), never in the viewer's thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import PIL.Image
from magicgui.widgets import Container, PushButton
from skimage.transform import resize as _resize  # noqa: F401 (imported early, see below)

from .. import runs, second_pass
from ..events import Finished, Started
from ..pipeline import ScoresReady, ScoringStopped
from ..runs import RunFolder
from ..scoring import advice_sentence
from . import train_worker
from ._common import focus_on, info, report_error, run_link, scroll_area, tabify_beside
from ._plots import LossPlot
from .train_form import TrainForm, path_of
from .train_progress import TrainProgress
from .train_worker import TrainRunner, gui_torch_threads

__all__ = ["TrainWidget", "LossPlot"]

# What the engine imports lazily on its first training (image plugins, the resize; ~0.8 s) is imported with
# the widget instead: done by the worker at Start, the C-extension imports held the interpreter lock and froze
# the viewer for ~0.3 s (benchmarks/ui_latency.py).
PIL.Image.init()

SETTINGS_MIN_HEIGHT = 120  # px of the settings form always shown; the rest scrolls
#: The form's fields, reachable on the widget as before the split (tests, benchmarks and scripts use them).
_FORM_FIELDS = ("source", "data_dir", "sample_btn", "image_layer", "mask_layer", "out_dir", "size", "device",
                "device_label", "cfg", "simulate_noise", "noise_seed", "skip_bad", "advanced")


class TrainWidget(Container):
    """Train a run folder from a data folder or from the image and mask layers open in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.form = TrainForm(viewer)
        for name in _FORM_FIELDS:
            setattr(self, name, getattr(self.form, name))
        self.progress = TrainProgress()
        self.runner = TrainRunner(self.native)
        self.run_dir: Path | None = None
        self.state = "idle"  # idle | running | stopping
        self.last_outcome: str | None = None  # finished | stopped | error
        self.last_error: str | None = None
        self.torch_threads: int | None = gui_torch_threads()  # CPU threads for training (None: torch's default)
        self.start_btn = PushButton(text="Start")
        self.stop_btn = PushButton(text="Stop")
        self.resume_btn = PushButton(text="Resume")
        self.review_btn = PushButton(text="Open in review")
        buttons = Container(widgets=[self.start_btn, self.stop_btn, self.resume_btn], layout="horizontal",
                            labels=False)
        # the settings scroll: docked beside the Review widget, the whole form would make napari's window
        # taller than a laptop screen; the buttons, status and plot below it stay in view
        for part in (scroll_area(self.form.native, min_height=SETTINGS_MIN_HEIGHT), buttons.native,
                     self.progress.pbar, self.status, self.plot, self.review_btn.native):
            self.native.layout().addWidget(part)
        self.form.out_dir.changed.connect(self._update_buttons)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn.clicked.connect(self.resume)
        self.review_btn.clicked.connect(self.open_review)
        self._update_buttons()

    @property
    def status(self):
        return self.progress.status

    @property
    def plot(self) -> LossPlot:
        return self.progress.plot

    @property
    def worker(self):
        return self.runner.worker

    @property
    def stop_flag(self):
        return self.runner.stop_flag

    @property
    def running(self) -> bool:
        return self.state != "idle"

    def config(self):
        """The TrainConfig the form describes (raises TrainingError when it is invalid)."""
        return self.form.config(self.torch_threads)

    # --- actions -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a new run into the run folder."""
        if self.state != "idle":
            return
        try:
            out = self.form.out
            if out is None:
                raise ValueError("choose a run folder (a new or empty folder) first")
            config = self.config()
            data = self.form.data(out)
        except Exception as exc:
            self._fail(exc)
            return
        self._launch(data, out, config, resume=False)

    def resume(self) -> None:
        """Continue the run in the run folder from its last checkpoint. The worker checks the run and loads its
        checkpoint (runs.open_for_resume); the form then shows the run's own settings and the plot its history."""
        if self.state != "idle":
            return
        out = self.form.out
        if out is None:
            self._fail(ValueError("choose the run folder to resume"))
            return
        # the data folder chosen is used only when the run's own is gone (train_worker.resume_data)
        self._launch(path_of(self.form.data_dir), out, None, resume=True)

    def stop(self) -> None:
        """Ask the engine to stop after the current step (the last epoch's checkpoint stays)."""
        if self.state == "running" and self.stop_flag is not None:
            self.runner.stop()
            self.state = "stopping"
            self.progress.say("Stopping after the current step…")
            self._update_buttons()

    def open_review(self) -> None:
        """Open the run just trained in the Review widget, and make it land well in a viewer that holds other
        layers (the sample image, say): the Review panel in a tab beside this one (stacked under it, its table
        was squashed off-screen), layers of another size hidden, the view fitted to the review image."""
        path = self.run_dir or self.form.out
        if path is None:
            return
        widget = run_link(self.viewer).review_widget
        if widget is None:
            _, widget = self.viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
        tabify_beside(self.native, widget)
        if widget.open_run(path) and widget.layer("image") is not None:
            focus_on(self.viewer, widget.layer("image"), own=widget.layers.own())

    # --- the worker's events -------------------------------------------------------------------------
    def _launch(self, data: Any, out: Path, config, resume: bool) -> None:
        self.run_dir = out
        self.state = "running"
        self.last_outcome = self.last_error = None
        self.progress.begin(resume)
        self._update_buttons()
        settings = {k: v for k, v in self.form.data_settings().items() if not resume or k == "skip_bad"}
        # looked up at each launch: benchmarks/ui_latency.py wraps train_worker.train_job
        self.runner.start(train_worker.train_job, data, out, config, settings, resume, threads=self.torch_threads,
                          on_event=self._on_event, on_error=self._on_error, on_done=self._on_done)

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, runs.Resume):
            self.form.show_resume(ev)
            self.progress.show_history(ev.history)
        elif isinstance(ev, Started):
            self.form.device_label.value = ev.device
        elif (isinstance(ev, Finished) and ev.stopped) or isinstance(ev, ScoringStopped):
            self.last_outcome = "stopped"  # in an epoch, or while scoring (the chunks scored are kept)
        elif isinstance(ev, ScoresReady) and ("round" in ev.metrics or (self.progress.passes == 1
                                                                        and not self.progress.auto)):
            self._finished(ev.metrics)  # the last pass scored (a second pass's metrics name its round)
        elif isinstance(ev, second_pass.NoSecondPass):  # the first pass was the last (KEEP suggested none, or AUTO)
            self._finished(ev.metrics, "" if ev.auto else ev.reason)
        self.progress.show(ev)

    def _finished(self, metrics: dict, note: str = "") -> None:
        """The run is trained and scored: say so (with ``note``, and the keep ratio advice when there is one) and
        offer it to the Review widget."""
        self.last_outcome = "finished"
        second = second_pass.advised(self.run_dir)  # the Review dock's "Second pass" can still train it
        run = RunFolder(self.run_dir)
        advice = advice_sentence(metrics.get("noise_share"), run.keep_ratio, metrics.get("suggested_keep_ratio"),
                                 second)  # scoring.suggested_keep_ratio
        advice += " (the Review dock's Second pass)" if advice and second else ""
        info(f"crl-napari: training finished; {self.run_dir} is ready for review"
             + "".join(f". {part[:1].upper()}{part[1:]}" for part in (note, advice) if part))
        run_link(self.viewer).set(self.run_dir)

    def _on_error(self, exc: BaseException) -> None:
        self.last_outcome = "error"
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.last_error = report_error(exc, "training")
        self.progress.say(self.last_error)

    def _on_done(self) -> None:
        self.progress.end()
        self.state = "idle"
        if self.last_outcome is None:  # aborted by worker.quit() (the activity dock's cancel)
            self.last_outcome = "stopped"
            self.progress.say("Stopped; press Resume to continue from the last checkpoint.")
        self._update_buttons()

    def _update_buttons(self, *_args) -> None:
        idle = self.state == "idle"
        self.start_btn.enabled = idle
        self.stop_btn.enabled = self.state == "running"
        out = self.form.out
        # a stopped (or crashed) run: a checkpoint but no scores yet, or a second pass that did not finish or start
        self.resume_btn.enabled = idle and out is not None and (RunFolder.can_resume(out) or second_pass.stopped(out))
        self.review_btn.enabled = idle and out is not None and RunFolder.is_scored(out)
