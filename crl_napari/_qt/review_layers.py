"""The napari layers of the image under review: the radiograph, the original and the corrected mask (outlines),
the probability and uncertainty maps (hidden until asked for) and the saved edit.

A row switch must stay fast (benchmarks/ui_latency.py): layers are reused and their arrays written in place,
hidden maps are loaded only when shown, the layer-list thumbnails are redrawn once the reviewer pauses, and the
cases are read ahead in a background thread (:class:`crl_napari.case_cache.CaseCache`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer

from ..case_cache import CaseCache
from ..runs import RunFolder

__all__ = ["LayerPresenter", "LAYERS", "COLORS", "contour_width", "disagreement_box", "map_limits"]

#: role -> layer name
LAYERS = {
    "image": "crl image",
    "probability": "crl probability",
    "uncertainty": "crl uncertainty",
    "original": "crl original mask",
    "corrected": "crl corrected mask",
    "edit": "crl edited mask",
}
COLORS = {"original": "#ff3b30", "corrected": "#00e5ff", "edit": "#ffd60a"}
THUMBNAIL_DELAY_MS = 150  # layer-list thumbnails are redrawn once the reviewer has paused this long


def map_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits of a probability / uncertainty map: 0 to its 99.5th percentile (at least 0.05), so an
    uncertainty map whose values stay within 0-0.3 uses the whole colour map instead of looking black."""
    return 0.0, max(float(np.percentile(data, 99.5)), 0.05)


def disagreement_box(given: np.ndarray, corrected: np.ndarray, margin: int = 4) -> tuple[slice, slice] | None:
    """The box (rows, columns, with a margin) around the pixels where the original and the corrected mask
    differ, or None where they agree everywhere."""
    diff = np.asarray(given, bool) != np.asarray(corrected, bool)
    if not diff.any():
        return None
    rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
    h, w = diff.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)))


def contour_width(shape: tuple[int, ...]) -> int:
    """Outline width in training pixels: thin on small images, visible on large ones."""
    return 1 if max(shape) < 192 else 2


def _label_cmap(color: str) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})


class LayerPresenter:
    """Creates and updates the review layers of one viewer; ``parent`` owns the thumbnail timer."""

    def __init__(self, viewer, parent) -> None:
        self.viewer = viewer
        self.run: RunFolder | None = None
        self._layers: dict[str, object] = {}
        self._stale_maps: dict[str, tuple] = {}  # hidden map layers not yet showing the current image
        self._cases: CaseCache | None = None
        self.stale_thumbnails: set[str] = set()  # roles whose layer-list thumbnail still shows the last case
        self._shown_once = False
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(THUMBNAIL_DELAY_MS)
        self._timer.timeout.connect(self._update_thumbnails)

    def open(self, run: RunFolder, ids: list[str]) -> None:
        """A new run: read its cases ahead, worst first."""
        self.close()
        self.run, self._cases = run, CaseCache(run, ids)

    def close(self) -> None:
        self._timer.stop()
        if self._cases is not None:
            self._cases.close()
            self._cases = None

    def layer(self, role: str):
        """The layer of ``role`` (see LAYERS) or None when it is not in the viewer."""
        layer = self._layers.get(role)
        return layer if layer is not None and layer in self.viewer.layers else None

    def show(self, image_id: str, edit_file: Path | None, editing: bool) -> None:
        """The layers of ``image_id``; ``edit_file`` is its saved drawing (None: no edit layer), left alone while
        ``editing`` (the drawing in progress is on screen)."""
        image, given, corrected = self._cases.get(image_id)
        self.set_layer("image", "image", image, colormap="gray", contrast_limits=(0, 255))
        self._map_layer("probability", image_id, self.run.prob, colormap="inferno", opacity=0.5)
        self._map_layer("uncertainty", image_id, self.run.uncertainty, colormap="magma", opacity=0.6)
        line = contour_width(given.shape)
        self.set_layer("original", "labels", given, contour=line, opacity=1.0)
        self.set_layer("corrected", "labels", corrected, contour=line, opacity=1.0)
        if editing:
            return
        if edit_file is not None and edit_file.is_file():
            from ..data import read_mask

            layer = self.set_layer("edit", "labels", read_mask(edit_file).astype(np.uint8), contour=line,
                                   opacity=1.0)
            layer.editable = False
        else:
            self.remove("edit")
        if not self._shown_once:
            self._shown_once = True
            self.viewer.reset_view()
        self.activate_image()

    def activate_image(self) -> None:
        image = self.layer("image")
        if image is not None:
            self.viewer.layers.selection.active = image

    def set_layer(self, role: str, kind: str, data: np.ndarray, **kwargs):
        """The layer of ``role`` with new data (created again if the user deleted it)."""
        layer = self.layer(role)
        if layer is not None:
            old = layer.data
            if role != "edit" and isinstance(old, np.ndarray) and old.shape == data.shape and old.dtype == data.dtype:
                # same size as before (every image of a run is): copy into the layer's array and re-slice; a
                # new array makes napari recompute the viewer's dimensions for every layer, on each switch
                old[...] = data
                # same shape: the extent stands; the layer-list thumbnail follows once the reviewer pauses
                layer.refresh(extent=False, highlight=False, thumbnail=False)
                self.stale_thumbnails.add(role)
                self._timer.start()
            else:
                layer.data = np.array(data)  # a copy: later switches write into it, the source stays as read
            return layer
        name = LAYERS[role]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data = np.array(data)  # a copy, as above
        if kind == "image":
            layer = self.viewer.add_image(data, name=name, **kwargs)
        else:
            contour = kwargs.pop("contour", 0)
            layer = self.viewer.add_labels(data, name=name, colormap=_label_cmap(COLORS[role]), **kwargs)
            layer.contour = contour
        self._layers[role] = layer
        return layer

    def remove(self, role: str) -> None:
        layer = self._layers.pop(role, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _update_thumbnails(self) -> None:
        """Bring the thumbnails in the layer list up to date (deferred: not part of a row switch)."""
        for role in sorted(self.stale_thumbnails):
            layer = self.layer(role)
            if layer is not None:
                layer.refresh(data_displayed=False, extent=False, highlight=False)
        self.stale_thumbnails.clear()

    def _map_layer(self, role: str, image_id: str, load, **kwargs) -> None:
        """The probability / uncertainty map (hidden by default). While hidden it is not reloaded on every row
        switch: it is brought up to date when the reviewer shows it, which keeps switching rows fast."""
        layer = self.layer(role)
        if layer is not None and not layer.visible:
            self._stale_maps[role] = (image_id, load)
            return
        self._stale_maps.pop(role, None)
        fresh = layer is None
        data = load(image_id)
        layer = self.set_layer(role, "image", data, contrast_limits=map_limits(data), blending="additive",
                               visible=False, **kwargs)
        if fresh:
            layer.events.visible.connect(lambda _event, role=role: self._refresh_map(role))

    def _refresh_map(self, role: str) -> None:
        layer = self._layers.get(role)
        if layer is not None and layer.visible and role in self._stale_maps:
            image_id, load = self._stale_maps.pop(role)
            layer.data = load(image_id)
            layer.contrast_limits = map_limits(layer.data)
