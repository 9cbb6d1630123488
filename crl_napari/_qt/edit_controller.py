"""The drawing side of an edit: the editable labels layer seeded from a mask, paint mode, and handing the
drawing back. Whether an edit is open, saved or dropped is the review model's business
(:class:`crl_napari.review_model.ReviewModel`); this only moves layers.

The drawing is at the radiograph's own size (the review's masks are: see :mod:`.review_layers`), so an edit is
painted and saved in original pixels and exported unchanged; a drawing saved at training size by an older
version is up-sampled to seed a new one."""

from __future__ import annotations

import numpy as np

from ..case_cache import outline_coded
from ..export import upsample_nearest
from ..review_model import ReviewModel
from .review_layers import LayerPresenter, contour_width

__all__ = ["EditController", "EDIT_OPACITY", "brush_size"]

#: The drawing is filled while open, under the original and corrected outlines: they keep the legend's colours
#: over it (on top, its fill tinted them: red looked orange, cyan green).
EDIT_OPACITY = 0.6


def brush_size(shape: tuple[int, ...]) -> int:
    """A brush about 1/50 of the image's longer side, in its own pixels (6 px at 300 px, 60 px at 3000 px)."""
    return int(np.clip(round(max(shape) / 50), 2, 200))


class EditController:
    """Opens the edit layer for the model's current image and closes it when the model says the edit ended."""

    def __init__(self, model_ref, layers: LayerPresenter) -> None:
        self._model_ref = model_ref  # callable returning the open ReviewModel (or None)
        self.layers = layers

    def start(self, seed_from: str) -> str:
        """Open an edit of the current image at its original size, seeded from its saved edit, else ``seed_from``
        ("corrected" or "original"); returns the image id."""
        model: ReviewModel = self._model_ref()
        image_id = model.current
        source = model.seed_source(seed_from)
        case = self.layers.case(image_id)
        shape = case.corrected.shape
        if source == "edit":
            from ..data import read_mask

            seed = upsample_nearest(read_mask(model.session.edit_path(image_id)), shape)
        else:
            seed = case.given if source == "original" else case.corrected
        seed = (np.asarray(seed) > 0).astype(np.uint8)  # the review's masks may carry their outline as 2
        layer = self.layers.set_layer("edit", "labels", seed.copy(), contour=0, opacity=EDIT_OPACITY)
        layer.contour = 0
        layer.opacity = EDIT_OPACITY
        layer.editable = True
        self.layers.below_outlines(layer)
        model.start_edit(seed, self.drawing)
        self.layers.viewer.layers.selection.active = layer
        layer.selected_label = 1
        layer.brush_size = brush_size(shape)
        layer.mode = "paint"
        return image_id

    def drawing(self) -> np.ndarray | None:
        """The drawing as it is now (None when the reviewer deleted the layer)."""
        layer = self.layers.layer("edit")
        return None if layer is None else np.asarray(layer.data)

    def ended(self, keep_visible: bool) -> None:
        """The model closed the edit: freeze the drawing as an outline (saved) or take it away (dropped)."""
        layer = self.layers.layer("edit")
        if layer is not None:
            if keep_visible:
                layer.mode = "pan_zoom"
                layer.editable = False
                if not outline_coded(layer.data.shape):  # napari's contour: seconds per redraw on large images
                    layer.contour = contour_width(layer.data.shape)
            else:
                self.layers.remove("edit")
        self.layers.activate_image()
