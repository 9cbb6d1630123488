"""The Train widget's settings form: where the data comes from (a folder or the viewer's layers), the run folder,
the image size and device, and every TrainConfig field (the main four in view, the rest under "Advanced").

It only reads and shows settings; the engine checks them (``TrainConfig`` raises TrainingError naming the
setting). Each field's tooltip is the engine's help (``settings.SETTING_HELP``).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import napari
import napari.layers
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
from superqt import QCollapsible

from ..device import available_devices, pick_device
from ..layers_dataset import layers_data_dir
from ..runs import Resume
from ..settings import JOINT_MODES, SETTING_HELP, STRATEGIES, TrainConfig
from ._common import report_error

__all__ = ["TrainForm", "device_text"]

#: Shown in the main form; every other TrainConfig field is under "Advanced".
MAIN_FIELDS = ("strategy", "epochs", "batch_size", "lr")
#: Not form fields: the device has its own row, the thread count is the worker's (train_worker.gui_torch_threads),
#: the plugin reads its data in process (no DataLoader workers) and trains in one process (no sync_batchnorm,
#: no global_selection: both are torchrun's).
OWN_ROWS = ("device", "threads", "workers", "sync_batchnorm", "global_selection")
_INT_RANGES = {"epochs": (1, 100_000), "batch_size": (2, 4096), "width": (1, 1024), "depth": (1, 8),
               "k": (-1, 100_000), "seed": (0, 2**31 - 1), "tta": (0, 1), "balance_area": (0, 1),
               "average_last": (0, 100_000), "average_bn": (0, 1), "second_pass": (0, 4),
               "border_fit": (0, 1), "fit_labels": (0, 1), "keep_auto": (0, 1),
               "size_calibration": (0, 1)}
# name: (min, max, step, decimals)
_FLOAT_RANGES = {"lr": (1e-7, 10.0, 1e-4, 7), "lr_decay": (0.0, 1.0, 0.001, 4), "momentum": (0.0, 1.0, 0.01, 3),
                 "weight_decay": (0.0, 1.0, 1e-4, 6), "keep_ratio": (0.01, 1.0, 0.05, 3),
                 "drop_uncertain": (0.0, 0.99, 0.05, 3), "ramp": (0.0, 1.0, 0.05, 3), "alpha": (0.0, 1.0, 0.05, 3),
                 "T": (0.01, 10.0, 0.05, 3), "rotation": (0.0, 180.0, 1.0, 1)}
# the engine's help for each setting; the form spells "half of the epochs" as -1
_TIPS = {**SETTING_HELP, "k": "crl: first epoch of stage 2 (-1: half of the epochs)"}
_CHOICES = {"strategy": STRATEGIES, "joint": JOINT_MODES}


def device_text(name: str) -> str:
    """What the device setting ``name`` means on this machine ("cpu", "cuda (NVIDIA ...)", or why not)."""
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


def _config_widget(name: str, default: Any):
    """The form field of one TrainConfig setting, ranged and with the engine's help as its tooltip."""
    tip = _TIPS.get(name, "")
    if name in _CHOICES:
        return ComboBox(label=name, choices=list(_CHOICES[name]), value=default, tooltip=tip)
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


def path_of(w: FileEdit) -> Path | None:
    """The folder a FileEdit names, or None when it is empty."""
    text = str(w.value).strip() if w.value is not None else ""
    return Path(text).expanduser() if text and text != "." else None


class TrainForm(Container):
    """The settings of a training; ``advanced`` holds the fields shown under the "Advanced" fold."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.source = RadioButtons(label="Data from", choices=["folder", "layers"], value="folder",
                                   orientation="horizontal")
        self.data_dir = FileEdit(label="Data folder", mode="d",
                                 tooltip="a folder with images/<id>.png and masks/<id>.png (optional split.csv)")
        self.sample_btn = PushButton(text="Use the built-in sample set")
        self.image_layer = ComboBox(label="Image layer", choices=self._layers(napari.layers.Image),
                                    tooltip="a stack of images (N x H x W)")
        self.mask_layer = ComboBox(label="Mask layer", choices=self._layers(napari.layers.Labels),
                                   tooltip="the masks to clean, same shape as the image layer")
        self.out_dir = FileEdit(label="Run folder", mode="d",
                                tooltip="a new or empty folder for the run (training from layers also "
                                "writes the layers as <run>-data beside it)")
        self.size = SpinBox(label="Image size", value=256, min=16, max=4096, step=16,
                            tooltip="images and masks are resized to size x size for training")
        self.simulate_noise = FloatSpinBox(label="Simulate noise", value=0.0, min=0.0, max=1.0, step=0.05,
                                           tooltip="for experiments: corrupt this ratio of the training masks "
                                           "(the paper's erosion/dilation protocol); 0 for real work")
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto", tooltip=_TIPS["device"])
        self.device_label = Label(label="In use", value=device_text("auto"))
        defaults = TrainConfig()
        self.cfg: dict[str, Any] = {f.name: _config_widget(f.name, getattr(defaults, f.name))
                                    for f in fields(TrainConfig) if f.name not in OWN_ROWS}
        self.noise_seed = SpinBox(label="noise_seed", value=0, min=0, max=2**31 - 1)
        self.skip_bad = CheckBox(text="skip unreadable image/mask pairs", value=False)
        main = [w for name, w in self.cfg.items() if name in MAIN_FIELDS]
        self.extend([self.source, self.data_dir, self.sample_btn, self.image_layer, self.mask_layer, self.out_dir,
                     self.size, self.device, self.device_label, *main])
        self.advanced = Container(widgets=[*(w for name, w in self.cfg.items() if name not in MAIN_FIELDS),
                                           self.simulate_noise, self.noise_seed, self.skip_bad], labels=True)
        fold = QCollapsible("Advanced")
        fold.addWidget(self.advanced.native)
        self.native.layout().addWidget(fold)

        self.source.changed.connect(self._update_source)
        self.device.changed.connect(lambda v: setattr(self.device_label, "value", device_text(v)))
        self.sample_btn.clicked.connect(self._use_sample)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        self._update_source()

    # --- the data source -----------------------------------------------------------------------------
    def _layers(self, kind: type):
        return lambda _w=None: [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, kind)]

    def _on_layers_changed(self, _event=None) -> None:
        self.image_layer.reset_choices()
        self.mask_layer.reset_choices()

    def _update_source(self, *_args) -> None:
        layers = self.source.value == "layers"
        self.data_dir.visible = self.sample_btn.visible = not layers
        self.image_layer.visible = self.mask_layer.visible = layers

    def _use_sample(self) -> None:
        from .._sample_data import sample_dataset_path

        try:
            self.data_dir.value = sample_dataset_path()
        except Exception as exc:  # generation failed (disk full, read-only cache)
            report_error(exc, "built-in sample set")
            return
        self.source.value = "folder"

    def data(self, out: Path) -> Any:
        """What a new run trains on: the data folder, or the layers to write as ``<run>-data`` first (the
        keywords of layers_dataset.write_layers_dataset). ValueError says what to choose."""
        if self.source.value == "layers":
            image, mask = self.image_layer.value, self.mask_layer.value
            if image is None or mask is None:
                raise ValueError("open an image layer and a mask (labels) layer first, or train from a folder")
            ids = image.metadata.get("crl_ids") if isinstance(image.metadata, dict) else None
            return {"image": image.data, "mask": mask.data, "dest": layers_data_dir(out), "name": image.name,
                    "ids": ids, "rgb": bool(image.rgb)}
        data = path_of(self.data_dir)
        if data is None:
            raise ValueError("choose a data folder (with images/ and masks/) first")
        return data

    @property
    def out(self) -> Path | None:
        """The run folder chosen (None: none yet)."""
        return path_of(self.out_dir)

    # --- the settings --------------------------------------------------------------------------------
    def config(self, threads: int | None = None) -> TrainConfig:
        """The TrainConfig the form describes, training with ``threads`` CPU threads (raises TrainingError
        when it is invalid)."""
        values = {name: w.value for name, w in self.cfg.items()}
        values["k"] = None if values["k"] < 0 else int(values["k"])
        return TrainConfig(**values, device=self.device.value, threads=threads)

    def set_config(self, config: TrainConfig) -> None:
        """Show ``config`` in the form."""
        for name, value in asdict(config).items():
            if name == "device":
                if value in self.device.choices:
                    self.device.value = value
            elif name in self.cfg:
                self.cfg[name].value = -1 if (name == "k" and value is None) else value

    def show_resume(self, plan: Resume) -> None:
        """Show the settings a resumed run keeps (its own, whatever the form said)."""
        self.set_config(plan.config)
        self.size.value = int(plan.data["size"])
        self.simulate_noise.value = float(plan.data["simulate_noise"])
        self.noise_seed.value = int(plan.data["noise_seed"])

    def data_settings(self) -> dict[str, Any]:
        """The keywords of pipeline.train_run the form sets besides the TrainConfig."""
        return {"size": int(self.size.value), "simulate_noise": float(self.simulate_noise.value),
                "noise_seed": int(self.noise_seed.value), "skip_bad": bool(self.skip_bad.value)}
