"""The drawing side of an edit: the editable labels layer seeded from a mask, paint mode, and handing the
drawing back. Whether an edit is open, saved or dropped is the review model's business
(:class:`crl_napari.review_model.ReviewModel`); this only moves layers."""

from __future__ import annotations

import numpy as np

from ..review_model import ReviewModel
from .review_layers import LayerPresenter, contour_width

__all__ = ["EditController"]


class EditController:
    """Opens the edit layer for the model's current image and closes it when the model says the edit ended."""

    def __init__(self, model_ref, layers: LayerPresenter) -> None:
        self._model_ref = model_ref  # callable returning the open ReviewModel (or None)
        self.layers = layers

    def start(self, seed_from: str) -> str:
        """Open an edit of the current image, seeded from its saved edit, else ``seed_from`` ("corrected" or
        "original"); returns the image id."""
        model: ReviewModel = self._model_ref()
        image_id = model.current
        source = model.seed_source(seed_from)
        run = self.layers.run
        if source == "edit":
            from ..data import read_mask

            seed = read_mask(model.session.edit_path(image_id))
        else:
            seed = run.given(image_id) if source == "original" else run.corrected(image_id)
        seed = np.asarray(seed).astype(np.uint8)
        layer = self.layers.set_layer("edit", "labels", seed.copy(), contour=0, opacity=0.6)
        layer.contour = 0
        layer.editable = True
        model.start_edit(seed, self.drawing)
        self.layers.viewer.layers.selection.active = layer
        layer.selected_label = 1
        layer.brush_size = max(2, seed.shape[0] // 40)
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
                layer.contour = contour_width(layer.data.shape)
            else:
                self.layers.remove("edit")
        self.layers.activate_image()
