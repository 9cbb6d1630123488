"""The napari layers of the image under review: the radiograph, the original and the corrected mask (outlines),
the probability and uncertainty maps (hidden until asked for) and the saved edit.

Everything is laid out on the radiograph's own pixel grid: the masks are at the original size (the corrected one
made by :func:`crl_napari.native.native_mask`, as the export writes it), and an array kept at training size (the
maps; the image when the original cannot be read) carries a scale and translate (``case_cache.display_grid``),
so napari coordinates are original pixels. The view is fitted when the image's size changes. On large images
(``case_cache.OUTLINE_PX``) the outlines come drawn into the masks by the read-ahead thread (2 = outline) and the
layers colour only that label, because napari's own contour recomputes on every redraw (seconds at 3000 px).

A large radiograph (``case_cache.LARGE_PX``, read in the helper process in about a second) that is not read yet is
shown at once by its stand-in, the run's training-size copy laid over the original grid; when the original is
read, its layers take it one per turn of the event loop, then ``on_native(image_id, None)`` is called
(``on_native(image_id, error)`` when it cannot be read) and the widget says so. Nothing is drawn on a
stand-in: the widget keeps Edit off while :attr:`LayerPresenter.standin` names the image on screen.

A row switch must stay fast (benchmarks/ui_latency.py): layers are reused and their arrays written in place,
hidden maps are loaded only when shown (and their layers made only after the first image is on screen, or when
asked for: two napari layers more made the first paint twice as long), the layer-list thumbnails are redrawn once
the reviewer pauses, and the cases are read ahead in a background thread (:class:`crl_napari.case_cache.CaseCache`).
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer

from ..case_cache import CaseCache, NativeCases, display_grid, outline_coded, outline_width, outlined, run_copies
from ..runs import RunFolder

__all__ = ["LayerPresenter", "LAYERS", "COLORS", "contour_width", "disagreement_box", "map_limits"]
_MAPS = ("probability", "uncertainty")

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
NATIVE_POLL_MS = 25  # how often a stand-in asks whether its original has been read
MAPS_DELAY_MS = 300  # the hidden maps' layers are made this long after an image is shown without them, one by one


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
    """Outline width in the mask's pixels (:func:`crl_napari.case_cache.outline_width`)."""
    return outline_width(shape)


def _label_cmap(color: str, coded: bool = False) -> DirectLabelColormap:
    """Label 1 in ``color``; ``coded``: only label 2, the outline :func:`crl_napari.case_cache.outlined` drew."""
    if coded:
        return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "transparent", 2: color})
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})


def _outline_kwargs(mask: np.ndarray) -> dict:
    """How a mask layer draws its outline: coded in the mask (large images; see case_cache.OUTLINE_PX), or
    napari's contour."""
    coded = outline_coded(mask.shape)
    return {"contour": 0 if coded else contour_width(mask.shape), "coded": coded}


def import_ahead(modules: tuple[str, ...] = ("pandas",)) -> None:
    """Import ``modules`` in a daemon thread while the reviewer picks a run: napari's first Labels layer imports
    pandas (its features table), 0.35 s of the first paint otherwise (ui_latency, profiled)."""
    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:  # napari then does without it, or says so itself
                pass

    if any(m not in sys.modules for m in modules):
        threading.Thread(target=work, name="crl-napari imports", daemon=True).start()


def _timer(parent, interval_ms: int, slot, single_shot: bool = True) -> QTimer:
    """A QTimer owned by ``parent`` that calls ``slot``."""
    timer = QTimer(parent)
    timer.setSingleShot(single_shot)
    timer.setInterval(interval_ms)
    timer.timeout.connect(slot)
    return timer


class LayerPresenter:
    """Creates and updates the review layers of one viewer; ``parent`` owns the thumbnail timer."""

    def __init__(self, viewer, parent, on_native=None) -> None:
        self.viewer = viewer
        self.on_native = on_native  # (image_id, error or None): the original of the stand-in on screen is read
        self.standin: str | None = None  # the image shown by its training-size copy while its original is read
        self._native_shown: tuple[str, str] | None = None  # (run folder, image) whose original the layers hold
        self.run: RunFolder | None = None
        self._layers: dict[str, object] = {}
        self._stale_maps: dict[str, tuple] = {}  # hidden map layers not yet showing the current image
        self._cases: CaseCache | None = None
        self._reader: NativeCases | None = None
        self._grid: tuple[int, int] | None = None  # the original (H, W) the view was fitted to
        self._coded: dict[str, bool] = {}  # role -> its outline is coded in its data (case_cache.outlined)
        self.stale_thumbnails: set[str] = set()  # roles whose layer-list thumbnail still shows the last case
        self._timer = _timer(parent, THUMBNAIL_DELAY_MS, self._update_thumbnails)
        self._poll = _timer(parent, NATIVE_POLL_MS, self._check_native, single_shot=False)
        self._swap: list = []  # what is left of the stand-in's swap for its original, one layer a turn
        self._swap_timer = _timer(parent, 0, self._swap_step)
        self._maps_for: tuple[str, tuple[int, int]] | None = None  # (image, original grid) the maps are to show
        self._maps_timer = _timer(parent, MAPS_DELAY_MS, lambda: self._make_maps(one=True))
        # the delay counts from the event loop's next turn (with the first paint), not from show(): an opening that
        # takes longer than the delay would otherwise make the maps in the same turn as the first paint
        self._maps_kick = _timer(parent, 0, self._maps_timer.start)
        import_ahead()

    def open(self, run: RunFolder, ids: list[str]) -> None:
        """A new run: read its cases ahead, in the queue's order."""
        self.close()
        self._reader = NativeCases(run)
        self.run, self._cases, self._grid = run, CaseCache(run, ids, reader=self._reader), None

    def reorder(self, ids: list[str]) -> None:
        """The queue was re-ordered: read ahead in its new order."""
        if self._cases is not None:
            self._cases.reorder(ids)

    def close(self) -> None:
        self._timer.stop()
        self._poll.stop()
        self._swap_timer.stop()
        self._swap = []
        self._maps_timer.stop()
        self._maps_kick.stop()
        self.standin = None
        self._maps_for = None
        if self._cases is not None:
            self._cases.close()
            self._cases = None

    def layer(self, role: str):
        """The layer of ``role`` (see LAYERS) or None when it is not in the viewer; a map layer not made yet
        (:data:`MAPS_DELAY_MS`) is made now."""
        if role in _MAPS and self._maps_for is not None and self._existing(role) is None:
            self._make_maps()
        return self._existing(role)

    def _existing(self, role: str):
        layer = self._layers.get(role)
        return layer if layer is not None and layer in self.viewer.layers else None

    def case(self, image_id: str):
        """The case of ``image_id`` (:class:`crl_napari.case_cache.Case`: masks at the original size)."""
        return self._cases.get(image_id)

    def note(self, image_id: str) -> str:
        """Why ``image_id`` shows the training-size copy of its radiograph ("" when it shows the original)."""
        return "" if self._reader is None else self._reader.note(image_id)

    def _case(self, image_id: str, editing: bool):
        """(case, is a stand-in): a large original not read yet is asked for, and its training-size copy given
        meanwhile; anything else is read now if it must be (while editing, always the original)."""
        if editing or not self._reader.large(image_id):
            return self._cases.get(image_id), False
        case = self._cases.request(image_id)
        return (case, False) if case is not None else (run_copies(self.run)(image_id), True)

    def show(self, image_id: str, edit_file: Path | None, editing: bool) -> None:
        """The layers of ``image_id``; ``edit_file`` is its saved drawing (None: no edit layer), left alone while
        ``editing`` (the drawing in progress is on screen). A large original not read yet shows its stand-in."""
        (image, given, corrected), standin = self._case(image_id, editing)
        grid = self._reader.shape(image_id, corrected.shape) if standin else corrected.shape
        # the same image again, its original on screen and its case read anew (the queue re-ranked after a round: a
        # new read-ahead): the original stays until the new case is read, then only the arrays change in place,
        # instead of the stand-in and back (napari re-slicing the viewer twice, 0.3-0.6 s at 3000 px)
        shown = (str(self.run.path), image_id)
        keep = standin and self._native_shown == shown and all(
            (x := self._existing(r)) is not None and x.data.shape == grid for r in ("image", "original", "corrected"))
        self.standin = image_id if standin else None
        self._native_shown = None if standin and not keep else shown
        self._swap_timer.stop()
        self._swap = []
        if standin:
            self._poll.start()
        else:
            self._poll.stop()
        if not keep:
            self._set_image(image, grid)
        self._maps_for = (image_id, grid)
        if all(self._existing(role) is not None for role in _MAPS):
            self._make_maps()
        else:  # made once the image is on screen (or when asked for), not in its first paint
            self._maps_kick.start()
        if not keep:
            self._set_mask("original", given, grid)
            self._set_mask("corrected", corrected, grid)
        if not editing:
            if edit_file is not None and edit_file.is_file():
                from ..data import read_mask

                drawing = read_mask(edit_file).astype(np.uint8)  # at the original size (older runs: training size)
                outline = _outline_kwargs(drawing)
                if outline["coded"]:
                    drawing = outlined(drawing)
                layer = self.set_layer("edit", "labels", drawing, opacity=1.0, grid=display_grid(drawing.shape, grid),
                                       **outline)
                layer.editable = False
                self.below_outlines(layer)
            else:
                self.remove("edit")
        if self._grid != grid:  # a first image, or one of another size: fit the view to it
            self._grid = grid
            self.viewer.reset_view()
        if not editing:
            self.activate_image()

    def _set_image(self, image: np.ndarray, grid: tuple[int, int]) -> None:
        self.set_layer("image", "image", image, colormap="gray", contrast_limits=(0, 255),
                       grid=display_grid(image.shape, grid))

    def _set_mask(self, role: str, mask: np.ndarray, grid: tuple[int, int]) -> None:
        mask = mask.astype(np.uint8, copy=False)
        self.set_layer(role, "labels", mask, opacity=1.0, grid=display_grid(mask.shape, grid), **_outline_kwargs(mask))

    def _check_native(self) -> None:
        """Has the original of the stand-in on screen been read? Then put it in, one layer per turn of the event
        loop (:meth:`_swap_step`), and say so (``on_native``) when all three show it."""
        image_id = self.standin
        if image_id is None or self._cases is None:
            self._poll.stop()
            return
        try:
            case = self._cases.peek(image_id)
        except Exception as exc:  # noqa: BLE001 - the widget reports it (a RunError names the file)
            self._poll.stop()
            if self.on_native is not None:
                self.on_native(image_id, exc)
            return
        if case is not None:
            self._poll.stop()
            image, given, corrected = case
            grid = corrected.shape
            self._swap = [lambda: self._set_image(image, grid), lambda: self._set_mask("original", given, grid),
                          lambda: self._set_mask("corrected", corrected, grid)]
            self._swap_step()

    def _swap_step(self) -> None:
        """One layer of the stand-in's swap for its original: a new size re-slices every layer of the viewer on
        each of its scale, translate and data (together 170-220 ms, quiet machine, ui_latency); one layer per turn
        lets the viewer draw and take input between them. The stand-in stays named (Edit off) until the last."""
        image_id = self.standin
        if image_id is None or not self._swap:
            return
        self._swap.pop(0)()
        if self._swap:
            self._swap_timer.start()
            return
        self.standin = None
        self._native_shown = (str(self.run.path), image_id)
        if self.on_native is not None:
            self.on_native(image_id, None)

    def activate_image(self) -> None:
        image = self.layer("image")
        if image is not None:
            self.viewer.layers.selection.active = image

    def set_layer(self, role: str, kind: str, data: np.ndarray, grid=None, **kwargs):
        """The layer of ``role`` with new data (created again if the user deleted it); ``grid`` = (scale,
        translate) when ``data`` is not at the original size (default: at it)."""
        scale, translate = grid or ((1.0, 1.0), (0.0, 0.0))
        layer = self._existing(role)
        if layer is not None:
            if tuple(layer.scale[-2:]) != tuple(scale) or tuple(layer.translate[-2:]) != tuple(translate):
                layer.scale, layer.translate = scale, translate
            # napari draws a contour on the data the layer holds when it is set: a contour asked for (a small mask)
            # is set once the new data is in, never on a large coded mask still there (0.4-0.6 s at 3000 px, on
            # every switch to a stand-in: ui_latency's round trial); no contour (a large mask) before it comes in
            later = kind == "labels" and kwargs.get("contour", 0) > 0
            if kind == "labels" and not later:
                self._outline_style(layer, role, kwargs)
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
            if later:
                self._outline_style(layer, role, kwargs)
            return layer
        name = LAYERS[role]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data = np.array(data)  # a copy, as above
        if kind == "image":
            layer = self.viewer.add_image(data, name=name, scale=scale, translate=translate, **kwargs)
        else:
            contour, coded = kwargs.pop("contour", 0), kwargs.pop("coded", False)
            layer = self.viewer.add_labels(data, name=name, colormap=_label_cmap(COLORS[role], coded), scale=scale,
                                           translate=translate, **kwargs)
            layer.contour = contour
            self._coded[role] = coded
        self._layers[role] = layer
        return layer

    def _outline_style(self, layer, role: str, kwargs: dict) -> None:
        """A reused labels layer drawn as asked: contour width, opacity, outline coded in the data or not."""
        coded = kwargs.get("coded", False)
        if self._coded.get(role, False) != coded:
            layer.colormap = _label_cmap(COLORS[role], coded)
            self._coded[role] = coded
        for key in ("contour", "opacity"):
            if key in kwargs and getattr(layer, key) != kwargs[key]:
                setattr(layer, key, kwargs[key])

    def own(self) -> list:
        """The review's layers in the viewer."""
        return [x for x in (self._existing(role) for role in LAYERS) if x is not None]

    def below_outlines(self, layer) -> None:
        """Put ``layer`` (the edit) right under the original and corrected outlines, so they are drawn over its
        fill in their own colours (the legend's), not tinted by it."""
        layers = self.viewer.layers
        outlines = [layers.index(x) for x in (self.layer("original"), self.layer("corrected")) if x is not None]
        here = layers.index(layer)
        if outlines and here > min(outlines):
            layers.move(here, min(outlines))

    def remove(self, role: str) -> None:
        self._coded.pop(role, None)
        layer = self._layers.pop(role, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _update_thumbnails(self) -> None:
        """Bring the thumbnails in the layer list up to date (deferred: not part of a row switch)."""
        for role in sorted(self.stale_thumbnails):
            layer = self._existing(role)
            if layer is not None:
                layer.refresh(data_displayed=False, extent=False, highlight=False)
        self.stale_thumbnails.clear()

    def _make_maps(self, one: bool = False) -> None:
        """The probability and uncertainty layers of the image shown: made (hidden, right above the image) if they
        are not in the viewer, else brought up to date (only when shown; see :meth:`_map_layer`). ``one``: make
        at most one layer now and the next one :data:`MAPS_DELAY_MS` later; each napari layer made holds the
        viewer for 0.2-0.5 s, two in one go froze it for a second after the first paint (ui_latency)."""
        self._maps_timer.stop()
        if self._maps_for is None or self.run is None:
            return
        image_id, grid = self._maps_for
        made_one = False
        for role, load, style in (("probability", self.run.prob, {"colormap": "inferno", "opacity": 0.5}),
                                  ("uncertainty", self.run.uncertainty, {"colormap": "magma", "opacity": 0.6})):
            made = self._existing(role) is None
            if made and one and made_one:
                self._maps_timer.start()
                return
            made_one = made_one or made
            self._map_layer(role, image_id, load, grid, **style)
            image, layer = self._existing("image"), self._existing(role)
            if made and image is not None and layer is not None:  # in the layer list right above the image
                layers = self.viewer.layers
                here, above = layers.index(layer), layers.index(image) + 1 + (role == "uncertainty")
                if here != above:
                    layers.move(here, above)

    def _map_layer(self, role: str, image_id: str, load, grid: tuple[int, int], **kwargs) -> None:
        """The probability / uncertainty map (hidden by default), kept at training size and laid over the
        original ``grid`` by its scale (napari interpolates it for display). While hidden it is not reloaded on
        every row switch: it is brought up to date when the reviewer shows it, which keeps switching rows fast."""
        layer = self._existing(role)
        if layer is not None and not layer.visible:
            self._stale_maps[role] = (image_id, load, grid)
            return
        self._stale_maps.pop(role, None)
        fresh = layer is None
        data = load(image_id)
        layer = self.set_layer(role, "image", data, contrast_limits=map_limits(data), blending="additive",
                               visible=False, grid=display_grid(data.shape, grid), interpolation2d="linear",
                               **kwargs)
        if fresh:
            layer.events.visible.connect(lambda _event, role=role: self._refresh_map(role))

    def _refresh_map(self, role: str) -> None:
        layer = self._layers.get(role)
        if layer is not None and layer.visible and role in self._stale_maps:
            image_id, load, grid = self._stale_maps.pop(role)
            data = load(image_id)
            layer.scale, layer.translate = display_grid(data.shape, grid)
            layer.data = data
            layer.contrast_limits = map_limits(layer.data)
