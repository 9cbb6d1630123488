"""The Train widget: pick the data, the strategy and its hyperparameters (defaults: the paper's where it gives
one, docs/paper.md), and train in a napari thread worker over the engine's event stream
(:func:`crl_napari.pipeline.train_run`).

The GUI thread only turns events into a ``napari.utils.progress`` bar, a loss / selected-fraction plot
(redrawn once per epoch) and a status line with the pace; Stop sets the flag the engine polls between steps, so
training ends cleanly after the current step with the last epoch's checkpoint on disk, and Resume continues
from it.

Over 400 lines: the form, its actions and the handling of the worker's events are one widget; the worker's own
pieces (thread priority, the job, the pace) are the small functions above the class.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path
from typing import Any

import napari
import napari.layers
import numpy as np
import PIL.Image
import torch
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
)
from napari.utils import progress
from skimage.transform import resize as _resize  # noqa: F401 (imported early, see below)
from superqt import QCollapsible

from .. import pipeline
from ..device import pick_device
from ..eta import Eta
from ..events import CheckpointSaved, EpochEnd, Finished, StageChanged, Started, Step
from ..layers_dataset import DataWritten, layers_data_dir, write_layers_dataset
from ..runs import RunError, RunFolder
from ..settings import JOINT_MODES, SETTING_HELP, STRATEGIES, TrainConfig
from ._common import StopFlag, focus_on, info, report_error, run_link, scroll_area, start_generator, tabify_beside
from ._plots import LossPlot

__all__ = ["TrainWidget", "LossPlot"]

# What the engine imports lazily on its first training (image plugins, the resize; ~0.8 s) is imported with
# the widget instead: done by the worker at Start, the C-extension imports held the interpreter lock and froze
# the viewer for ~0.3 s (benchmarks/ui_latency.py).
PIL.Image.init()

#: Shown in the main form; every other TrainConfig field is under "Advanced".
_MAIN_FIELDS = ("strategy", "epochs", "batch_size", "lr")
WORKER_NICE = 10  # the training thread's nice value on Linux (see _background_priority)
SETTINGS_MIN_HEIGHT = 120  # px of the settings form always shown; the rest scrolls
_INT_RANGES = {"epochs": (1, 100_000), "batch_size": (2, 4096), "width": (1, 1024), "depth": (1, 8),
               "k": (-1, 100_000), "seed": (0, 2**31 - 1)}
# name: (min, max, step, decimals)
_FLOAT_RANGES = {"lr": (1e-7, 10.0, 1e-4, 7), "lr_decay": (0.0, 1.0, 0.001, 4), "momentum": (0.0, 1.0, 0.01, 3),
                 "weight_decay": (0.0, 1.0, 1e-4, 6), "keep_ratio": (0.01, 1.0, 0.05, 3),
                 "drop_uncertain": (0.0, 0.99, 0.05, 3), "ramp": (0.0, 1.0, 0.05, 3), "alpha": (0.0, 1.0, 0.05, 3),
                 "T": (0.01, 10.0, 0.05, 3), "rotation": (0.0, 180.0, 1.0, 1)}
# the engine's help for each setting; the widget spells "half of the epochs" as -1
_TIPS = {**SETTING_HELP, "k": "crl: first epoch of stage 2 (-1: half of the epochs)"}


def _available_devices() -> list[str]:
    from ..device import available_devices  # the engine's one device probe

    return available_devices()


def _device_text(name: str) -> str:
    import torch

    try:
        dev = pick_device(name)
    except RuntimeError as exc:
        return f"unavailable ({exc})"
    if dev.type == "cuda":
        try:
            return f"cuda ({torch.cuda.get_device_name(dev)})"
        except (RuntimeError, AssertionError):
            return "cuda"
    return dev.type


def gui_torch_threads() -> int:
    """Torch threads for training inside napari: every core but one, so the viewer keeps a core to draw on
    (on 2 cores, 2 torch threads tripled the longest GUI stall for 15 % faster epochs; benchmarks/ui_latency)."""
    return max(1, (os.cpu_count() or 2) - 1)


def _background_priority(nice: int = WORKER_NICE) -> None:
    """Linux: lower this thread's priority, so the viewer's thread gets the CPU first whenever both want it
    (training keeps every idle cycle). Threads created from here on (torch's pool) inherit it."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted: keep the priority
            pass


def _train_job(data: Any, out: Path, config: TrainConfig | None, size: int, simulate_noise: float,
               noise_seed: int, resume: bool, skip_bad: bool, should_stop: StopFlag, threads: int | None = None):
    """The worker's generator: (write the layers' data folder,) then the engine's event stream.

    ``threads`` is set here, in the worker: a pool thread keeps the thread count of its first torch call."""
    _background_priority()
    if threads is not None:
        torch.set_num_threads(threads)
    if isinstance(data, dict):  # layers
        yield DataWritten(write_layers_dataset(**data))
        data = data["dest"]
    yield from pipeline.train_run(data, out, config, size=size, simulate_noise=simulate_noise,
                                  noise_seed=noise_seed, resume=resume, skip_bad=skip_bad,
                                  should_stop=should_stop)


# -------------------------------------------------------------------------------------------- widget


class TrainWidget(Container):
    """Train a run folder from a data folder or from the image and mask layers open in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker = None
        self.stop_flag: StopFlag | None = None
        self.pbar: progress | None = None
        self.run_dir: Path | None = None
        self.state = "idle"  # idle | running | stopping
        self.last_outcome: str | None = None  # finished | stopped | error
        self.last_error: str | None = None
        self._job: dict[str, Any] = {}  # what a closed widget must stop (see _abandon)
        self._eta = Eta()  # the engine's ETA, fed every training event
        self._progress_text = ""  # the status line's part that the pace is appended to
        self._shown_at = 0.0
        self.torch_threads: int | None = gui_torch_threads()  # CPU threads for training (None: torch's default)
        self._build()
        self.native.destroyed.connect(partial(_abandon, self._job))
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        self._update_source()
        self._update_buttons()

    # --- building ------------------------------------------------------------------------------------
    def _build(self) -> None:
        d = TrainConfig()
        self.source = RadioButtons(label="Data from", choices=["folder", "layers"], value="folder",
                                   orientation="horizontal")
        self.data_dir = FileEdit(label="Data folder", mode="d",
                                 tooltip="a folder with images/<id>.png and masks/<id>.png (optional split.csv)")
        self.sample_btn = PushButton(text="Use the built-in sample set")
        self.image_layer = ComboBox(label="Image layer", choices=self._image_layers,
                                    tooltip="a stack of images (N x H x W)")
        self.mask_layer = ComboBox(label="Mask layer", choices=self._labels_layers,
                                   tooltip="the masks to clean, same shape as the image layer")
        self.out_dir = FileEdit(label="Run folder", mode="d",
                                tooltip="a new or empty folder for the run (training from layers also "
                                "writes the layers as <run>-data beside it)")
        self.size = SpinBox(label="Image size", value=256, min=16, max=4096, step=16,
                            tooltip="images and masks are resized to size x size for training")
        self.simulate_noise = FloatSpinBox(label="Simulate noise", value=0.0, min=0.0, max=1.0, step=0.05,
                                           tooltip="for experiments: corrupt this ratio of the training masks "
                                           "(the paper's erosion/dilation protocol); 0 for real work")
        self.device = ComboBox(label="Device", choices=_available_devices(), value="auto",
                               tooltip=_TIPS["device"])
        self.device_label = Label(label="In use", value=_device_text("auto"))
        self.cfg: dict[str, Any] = {}
        main, advanced = [], []
        for f in fields(TrainConfig):
            if f.name in ("device", "threads", "sync_batchnorm"):  # threads: the worker's own (torch_threads);
                # sync_batchnorm: torchrun only (the plugin trains in one process)
                continue
            w = self._config_widget(f.name, getattr(d, f.name))
            self.cfg[f.name] = w
            (main if f.name in _MAIN_FIELDS else advanced).append(w)
        self.noise_seed = SpinBox(label="noise_seed", value=0, min=0, max=2**31 - 1)
        self.skip_bad = CheckBox(text="skip unreadable image/mask pairs", value=False)
        self.start_btn = PushButton(text="Start")
        self.stop_btn = PushButton(text="Stop")
        self.resume_btn = PushButton(text="Resume")
        self.review_btn = PushButton(text="Open in review")
        buttons = Container(widgets=[self.start_btn, self.stop_btn, self.resume_btn], layout="horizontal",
                            labels=False)
        self.status = Label(value="")
        # the settings scroll: docked beside the Review widget, the whole form would make napari's window
        # taller than a laptop screen; the buttons, status and plot below it stay in view
        self.settings = Container(widgets=[self.source, self.data_dir, self.sample_btn, self.image_layer,
                                           self.mask_layer, self.out_dir, self.size, self.device,
                                           self.device_label, *main], labels=True)
        self.advanced = Container(widgets=[*advanced, self.simulate_noise, self.noise_seed, self.skip_bad],
                                  labels=True)
        collapsible = QCollapsible("Advanced")
        collapsible.addWidget(self.advanced.native)
        self.settings.native.layout().addWidget(collapsible)
        self.plot = LossPlot()
        layout = self.native.layout()
        for part in (scroll_area(self.settings.native, min_height=SETTINGS_MIN_HEIGHT), buttons.native,
                     self.status.native, self.plot, self.review_btn.native):
            layout.addWidget(part)
        self.status.native.setWordWrap(True)

        self.source.changed.connect(self._update_source)
        self.device.changed.connect(lambda v: setattr(self.device_label, "value", _device_text(v)))
        self.out_dir.changed.connect(self._update_buttons)
        self.sample_btn.clicked.connect(self._use_sample)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn.clicked.connect(self.resume)
        self.review_btn.clicked.connect(self.open_review)

    @staticmethod
    def _config_widget(name: str, default: Any):
        tip = _TIPS.get(name, "")
        if name == "strategy":
            return ComboBox(label=name, choices=list(STRATEGIES), value=default, tooltip=tip)
        if name == "joint":
            return ComboBox(label=name, choices=list(JOINT_MODES), value=default, tooltip=tip)
        if isinstance(default, bool):
            return CheckBox(label=name, value=default, tooltip=tip)
        if name == "k" or isinstance(default, int):
            lo, hi = _INT_RANGES.get(name, (0, 1_000_000))
            return SpinBox(label=name, value=-1 if default is None else default, min=lo, max=hi, tooltip=tip)
        lo, hi, step, decimals = _FLOAT_RANGES.get(name, (0.0, 1e6, 0.1, 4))
        w = FloatSpinBox(label=name, value=default, min=lo, max=hi, step=step, tooltip=tip)
        w.native.setDecimals(decimals)
        w.value = default
        return w

    # --- reading the form ----------------------------------------------------------------------------
    def _image_layers(self, _w=None) -> list:
        return [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, napari.layers.Image)]

    def _labels_layers(self, _w=None) -> list:
        return [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, napari.layers.Labels)]

    def _on_layers_changed(self, _event=None) -> None:
        self.image_layer.reset_choices()
        self.mask_layer.reset_choices()

    def _update_source(self, *_args) -> None:
        layers = self.source.value == "layers"
        self.data_dir.visible = not layers
        self.sample_btn.visible = not layers
        self.image_layer.visible = layers
        self.mask_layer.visible = layers

    def _use_sample(self) -> None:
        from .._sample_data import sample_dataset_path

        try:
            self.data_dir.value = sample_dataset_path()
        except Exception as exc:  # generation failed (disk full, read-only cache)
            report_error(exc, "built-in sample set")
            return
        self.source.value = "folder"

    def config(self) -> TrainConfig:
        """The TrainConfig the form describes (raises TrainingError when it is invalid)."""
        values = {name: w.value for name, w in self.cfg.items()}
        values["k"] = None if values["k"] < 0 else int(values["k"])
        values["device"] = self.device.value
        values["threads"] = self.torch_threads  # train applies it (None: the engine's default)
        return TrainConfig(**values)

    def set_config(self, config: TrainConfig) -> None:
        """Show ``config`` in the form (used on resume)."""
        for name, value in asdict(config).items():
            if name == "device":
                if value in self.device.choices:
                    self.device.value = value
            elif name in self.cfg:
                self.cfg[name].value = -1 if (name == "k" and value is None) else value

    def _path(self, w: FileEdit) -> Path | None:
        text = str(w.value).strip() if w.value is not None else ""
        return Path(text).expanduser() if text and text != "." else None

    # --- actions -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a new run into the run folder."""
        if self.state != "idle":
            return
        try:
            out = self._path(self.out_dir)
            if out is None:
                raise ValueError("choose a run folder (a new or empty folder) first")
            config = self.config()
            if self.source.value == "layers":
                image, mask = self.image_layer.value, self.mask_layer.value
                if image is None or mask is None:
                    raise ValueError("open an image layer and a mask (labels) layer first, or train from a folder")
                ids = image.metadata.get("crl_ids") if isinstance(image.metadata, dict) else None
                data: Any = {"image": image.data, "mask": mask.data, "dest": layers_data_dir(out),
                             "name": image.name, "ids": ids, "rgb": bool(image.rgb)}
            else:
                data = self._path(self.data_dir)
                if data is None:
                    raise ValueError("choose a data folder (with images/ and masks/) first")
        except Exception as exc:
            self._fail(exc)
            return
        self.plot.clear()
        self._launch(data, out, config, resume=False)

    def resume(self) -> None:
        """Continue the run in the run folder from its last checkpoint."""
        if self.state != "idle":
            return
        try:
            out = self._path(self.out_dir)
            if out is None:
                raise ValueError("choose the run folder to resume")
            run = RunFolder(out)
            if not run.has_checkpoint:
                raise RunError(f"{out}: nothing to resume (no checkpoint yet); press Start")
            root = run.config.get("data", {}).get("root")
            data = Path(root) if root and Path(root).is_dir() else self._path(self.data_dir)
            if data is None:
                raise RunError(f"{out}: the data folder it was trained on ({root}) is not there; "
                               "choose it as the data folder")
            self.set_config(run.train_config)
            self.size.value = int(run.config["data"]["size"])
        except Exception as exc:
            self._fail(exc)
            return
        self.plot.clear()
        for row in run.history():
            losses = tuple(float(row[k]) for k in ("loss_0", "loss_1", "loss_2") if row.get(k) not in (None, ""))
            self.plot.add(int(row["epoch"]), losses, float(row["selected"]), int(row.get("stage") or 1))
        self._launch(data, out, None, resume=True)

    def stop(self) -> None:
        """Ask the engine to stop after the current step (the last epoch's checkpoint stays)."""
        if self.state == "running" and self.stop_flag is not None:
            self.stop_flag.set()
            self.state = "stopping"
            self.status.value = "Stopping after the current step…"
            self._update_buttons()

    def open_review(self) -> None:
        """Open the run just trained in the Review widget, and make it land well in a viewer that holds other
        layers (the sample image, say): the Review panel in a tab beside this one (stacked under it, its table
        was squashed off-screen), layers of another size hidden, the view fitted to the review image."""
        path = self.run_dir or self._path(self.out_dir)
        if path is None:
            return
        widget = run_link(self.viewer).review_widget
        if widget is None:
            _, widget = self.viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
        tabify_beside(self.native, widget)
        if widget.open_run(path) and widget.layer("image") is not None:
            focus_on(self.viewer, widget.layer("image"))

    # --- the worker ----------------------------------------------------------------------------------
    def _launch(self, data: Any, out: Path, config: TrainConfig | None, resume: bool) -> None:
        self.run_dir = out
        self.stop_flag = StopFlag()
        self.state = "running"
        self.last_outcome = self.last_error = None
        self.status.value = "Resuming…" if resume else "Loading the data…"
        self.pbar = progress(total=0, desc="crl-napari: loading")
        self._update_buttons()
        self.worker = start_generator(
            _train_job, data, out, config, int(self.size.value), float(self.simulate_noise.value),
            int(self.noise_seed.value), resume, bool(self.skip_bad.value), self.stop_flag, self.torch_threads,
            on_yield=self._on_event, on_error=self._on_error, on_done=self._on_done,
        )
        self._job.update(flag=self.stop_flag, worker=self.worker, pbar=self.pbar)

    def _on_event(self, ev: Any) -> None:
        self._eta.update(ev)
        if isinstance(ev, Step):
            if self.pbar is not None:
                self.pbar.update(1)
            self._show_progress()
        elif isinstance(ev, EpochEnd):
            self.plot.add(ev.epoch, ev.losses, ev.selected, ev.stage)
            loss = float(np.mean(ev.losses))
            self._progress_text = (f"Epoch {ev.epoch + 1}/{ev.epochs} · stage {ev.stage} · loss {loss:.4f} · "
                                   f"selected {ev.selected:.2f} · {ev.seconds:.1f} s")
            self._show_progress(now=True)
        elif isinstance(ev, Started):
            self.device_label.value = ev.device
            steps = max(0, (ev.config.epochs - ev.start_epoch) * ev.steps_per_epoch)
            if self.pbar is not None:
                self.pbar.total = steps
                self.pbar.set_description(f"crl-napari: training {ev.config.strategy}")
            self._progress_text = (f"Training {ev.config.strategy} on {ev.n_train} images ({ev.device})"
                                   + (f", from epoch {ev.start_epoch + 1}" if ev.start_epoch else ""))
            self._show_progress(now=True)
        elif isinstance(ev, StageChanged):
            if self.pbar is not None:
                self.pbar.set_description(f"crl-napari: training, stage {ev.stage}")
        elif isinstance(ev, CheckpointSaved):
            pass
        elif isinstance(ev, Finished):
            if ev.stopped:
                self.last_outcome = "stopped"
                self.status.value = (f"Stopped during epoch {ev.epochs_run + 1}; the checkpoint of the last "
                                     "finished epoch is kept: press Resume to continue.")
            else:
                self.status.value = "Training finished; scoring every image…"
                if self.pbar is not None:
                    self.pbar.set_description("crl-napari: scoring")
        elif isinstance(ev, pipeline.ScoresReady):
            self.last_outcome = "finished"
            self.status.value = f"Done: {ev.metrics.get('n_images', '?')} images scored in {self.run_dir}"
            info(f"crl-napari: training finished; {self.run_dir} is ready for review")
            run_link(self.viewer).set(self.run_dir)
        elif isinstance(ev, DataWritten):
            self.status.value = f"Wrote the layers as a data folder: {ev.path}"

    def _show_progress(self, now: bool = False) -> None:
        """The status line while training: the last epoch's summary and the pace (redrawn at most every
        second between epochs; a label update per step would cost the viewer time for nothing)."""
        t = time.monotonic()
        if self.state != "running" or (not now and t - self._shown_at < 1.0):
            return
        self._shown_at = t
        pace = self._eta.text()
        self.status.value = " · ".join(part for part in (self._progress_text, pace) if part)

    def _on_error(self, exc: BaseException) -> None:
        self.last_outcome = "error"
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.last_error = report_error(exc, "training")
        self.status.value = self.last_error

    def _on_done(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        self.worker = None
        self._job.clear()
        self.state = "idle"
        if self.last_outcome is None:  # aborted by worker.quit() (the activity dock's cancel)
            self.last_outcome = "stopped"
            self.status.value = "Stopped; press Resume to continue from the last checkpoint."
        self._update_buttons()

    def _update_buttons(self, *_args) -> None:
        idle = self.state == "idle"
        self.start_btn.enabled = idle
        self.stop_btn.enabled = self.state == "running"
        out = self._path(self.out_dir)
        # a stopped (or crashed) run: a checkpoint but no scores yet
        self.resume_btn.enabled = idle and out is not None and RunFolder.can_resume(out)
        self.review_btn.enabled = idle and out is not None and RunFolder.is_scored(out)

    @property
    def running(self) -> bool:
        return self.state != "idle"


def _abandon(job: dict, *_args) -> None:
    """The widget is gone (its dock closed, the viewer quit) while training: stop the engine after its
    current step and let the worker finish without touching the deleted widgets."""
    flag, worker, pbar = job.get("flag"), job.get("worker"), job.get("pbar")
    if flag is not None:
        flag.set()
    if worker is not None:
        for signal in (worker.yielded, worker.errored, worker.finished):
            try:
                signal.disconnect()
            except (TypeError, RuntimeError):
                pass
        worker.quit()
    if pbar is not None:
        pbar.close()
    job.clear()
