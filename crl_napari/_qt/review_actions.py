"""What each review key and button does: forward to the review model
(:class:`crl_napari.review_model.ReviewModel`), say what happened in the status bar, report a refusal as a status
line and a failure as a notification. Mixed into :class:`.review_widget.ReviewWidget`, which provides ``model``,
``edits`` (the edit controller), the fields read here and ``_show_current`` / ``_message``.
"""

from __future__ import annotations

import numpy as np

from ..review_model import ReviewModelError
from ..scoring import recommended_threshold
from ._common import report_error, warn
from .review_layers import disagreement_box

__all__ = ["ReviewActions"]


def _decision(status: str, doc: str):
    def decide(self) -> None:
        self._decide(status)

    decide.__doc__ = doc
    return decide


class ReviewActions:
    """The review's verbs (each key of :data:`.review_keys.KEYS` names one of these methods)."""

    #: the run's recommended threshold (scoring.recommended_threshold of its scores, computed when it is opened):
    #: below it a correction is likely worse than the given mask (at 75 % noise, corrections of clean masks
    #: reached Dice 0.93 against 0.975 for the masks themselves)
    clean_below: float | None = None
    _accept_armed: str | None = None  # a clean-looking image whose Accept was pressed once

    def set_policy(self, scores) -> float:
        """The run was opened: its recommended threshold, once (``clean_below``), also the batch's default."""
        self.clean_below = recommended_threshold(scores)
        self._accept_armed = None
        return self.clean_below

    def looks_clean(self, image_id: str) -> bool:
        """Whether ``image_id``'s suspicion is below the run's recommended threshold: its given mask is likely
        better than the correction."""
        return self.clean_below is not None and self.model.score(image_id) < self.clean_below

    def accept(self) -> None:
        """Accept the corrected mask for the image shown. On an image that looks clean (:meth:`looks_clean`) the
        first press only says so and the second press in a row accepts; a flagged image takes one press."""
        image_id = None if self.model is None else self.model.current
        if image_id is not None and self.looks_clean(image_id) and self.model.status(image_id) != "accepted" \
                and self._accept_armed != image_id:
            self._accept_armed = image_id
            self._message(f"{image_id} looks clean: its given mask is likely better than the correction. Press "
                          "Accept (A) again to accept the correction anyway, or K to keep the mask")
            return
        self._accept_armed = None
        self._decide("accepted")

    def _guard(self, action, context: str, need_image: bool = False):
        """Run a model action; a refusal is a status line, anything else a notification. None on failure."""
        if need_image and (self.model is None or self.model.current is None):
            self._message("Open a run folder first")
            return None
        autosaved = None if self.model is None else self.model.last_autosaved
        try:
            result = action()
        except ReviewModelError as exc:
            self._message(str(exc))
            return None
        except Exception as exc:
            self._message(report_error(exc, context))
            return None
        if self.model is not None and self.model.last_autosaved not in (None, autosaved):
            warn(f"crl-napari: the unsaved edit of {self.model.last_autosaved} was saved")
            self.model.last_autosaved = None
        return result

    def _decide(self, status: str) -> None:
        image_id = self._guard(lambda: self.model.decide(status), f"{status} {self.current_id}", need_image=True)
        if image_id is not None:
            self._message(f"{image_id}: {self.model.status(image_id)}")

    keep = _decision("kept", "Keep the original mask for the image shown.")
    flag = _decision("flagged", "Flag the image shown for a second opinion (exported as if unreviewed).")
    exclude = _decision("excluded", "Exclude the radiograph shown from the export (listed in its manifest).")

    def select(self, image_id: str) -> None:
        """Show ``image_id`` (an open drawing of another image is saved if changed)."""
        if self.model is not None:
            self._guard(lambda: self.model.select(image_id), f"showing {image_id}")

    def next(self) -> None:
        """Show the next image of the table (wrapping around)."""
        self._guard(lambda: self.model.next(), "next", need_image=True)

    def previous(self) -> None:
        """Show the previous image of the table (wrapping around)."""
        self._guard(lambda: self.model.previous(), "previous", need_image=True)

    def start_edit(self) -> None:
        """Edit the mask of the image shown in an editable labels layer (paint mode)."""
        if self.model is not None and self.model.editing == self.model.current:
            return
        if self.model is not None and self.model.current is not None and self.layers.standin == self.model.current:
            self._message("The original radiograph is still loading: edit once it is shown")
            return  # never drawn on the training-size stand-in
        seed = "original" if self.seed_combo.currentIndex() == 1 else "corrected"
        image_id = self._guard(lambda: self.edits.start(seed), "edit", need_image=True)
        if image_id is not None:
            self._message(f"Editing {image_id} (S saves)")  # how to draw: in the dock, not beside napari's hints

    def save_edit(self) -> None:
        """Store the edit of the image shown as its decision."""
        image_id = self._guard(lambda: self.model.save_edit(), "saving the edit", need_image=True)
        if image_id is not None:
            self._message(f"{image_id}: edited")

    def cancel_edit(self) -> None:
        """Drop the edit in progress (nothing is stored)."""
        image_id = self._guard(lambda: self.model.cancel_edit(), "cancel", need_image=True)
        if image_id is not None:
            self._show_current()
            self._message(f"Edit of {image_id} cancelled")

    def undo(self) -> None:
        """Undo the last decision or batch (also one made before the run was reopened) and show its image."""
        ids = self._guard(lambda: self.model.undo(), "undo", need_image=True)
        if ids:
            more = f" and {len(ids) - 1} more" if len(ids) > 1 else ""
            self._message(f"Undone: {ids[0]}{more} ({self.model.status(ids[0])} again)")
        elif ids is not None:
            self._message("Nothing to undo")

    def toggle_uncertainty(self) -> None:
        """Show or hide where the nets disagree (the uncertainty map, scaled to its own range)."""
        layer = self.layer("uncertainty")
        if layer is None:
            self._message("Open a run folder first")
            return
        layer.visible = not layer.visible
        self._message("Uncertainty map " + ("shown (bright: the nets disagree)" if layer.visible else "hidden"))

    def flip_masks(self) -> None:
        """Show the original or the corrected mask alone, in turn (both again after the second press)."""
        original, corrected = self.layer("original"), self.layer("corrected")
        if original is None or corrected is None:
            self._message("Open a run folder first")
            return
        if original.visible and corrected.visible:
            corrected.visible, shown = False, "original (red)"
        elif original.visible:
            original.visible, corrected.visible, shown = False, True, "corrected (cyan)"
        else:
            original.visible, corrected.visible, shown = True, True, "original and corrected"
        self._message(f"Showing the {shown} mask")

    def zoom_to_disagreement(self) -> None:
        """Fit the view to where the original and the corrected mask differ."""
        original, corrected = self.layer("original"), self.layer("corrected")
        if original is None or corrected is None:
            self._message("Open a run folder first")
            return
        box = disagreement_box(original.data, corrected.data)
        if box is None:
            self._message("The original and the corrected mask agree everywhere")
            return
        rows, cols = box
        scale = np.asarray(original.scale[-2:], float)
        h, w = np.asarray(original.data.shape[-2:], float) * scale
        box_h, box_w = (rows.stop - rows.start) * scale[0], (cols.stop - cols.start) * scale[1]
        self.viewer.reset_view()  # the zoom that fits the whole image, then that much closer
        self.viewer.camera.zoom = float(self.viewer.camera.zoom * min(h / box_h, w / box_w))
        self.viewer.camera.center = ((rows.start + rows.stop) / 2 * scale[0] - 0.5 * scale[0],
                                     (cols.start + cols.stop) / 2 * scale[1] - 0.5 * scale[1])
        self._message(f"Zoomed to where the masks differ ({rows.stop - rows.start} x {cols.stop - cols.start} px)")

    def _on_comment(self) -> None:
        if self.model is not None and self.model.current is not None:
            text = self.comment_edit.text()
            if text.strip() != self.model.session.comment(self.model.current):
                self._guard(lambda: self.model.set_comment(text), "comment")
