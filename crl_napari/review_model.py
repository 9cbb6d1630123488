"""What the Review widget shows and decides, without Qt: order, filter, current image, navigation, the edit state
machine, counts, undo and the batch action, over one :class:`crl_napari.review.ReviewSession`.

The napari widget (``crl_napari._qt.review_widget``) only presents this model: it forwards keys and clicks to
its methods and redraws what the model announces through :meth:`ReviewModel.subscribe` (as napari-animation's
widget presents its Qt-free ``Animation``). Tests drive the model directly, without a display.

Edit states: ``idle`` -> ``editing`` (``start_edit``) -> ``idle`` again, either *saved* (``save_edit``, or moving
on with a drawing that differs from its seed: nothing a reviewer drew is lost) or *discarded* (``cancel_edit``,
moving on with an unchanged drawing, or a decision by key on the image being edited).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .review import ReviewSession

__all__ = ["ReviewModel", "ReviewModelError", "EVENTS"]

#: What subscribers hear: (event, ids). "current": the image shown changed; "status": the decisions of ids
#: changed; "filter": the set of visible rows changed; "edit": the edit state changed; "comment": a note changed.
EVENTS = ("current", "status", "filter", "edit", "comment")
_EPS = 1e-12


class ReviewModelError(ValueError):
    """A request the model refuses in its current state (the message says what to do instead)."""


class ReviewModel:
    """Navigation, filters and the edit state over a review session. Every change goes to the session (and so
    to ``review.json``) before the call returns."""

    def __init__(self, session: ReviewSession) -> None:
        self.session = session
        self.pending_only = False
        self.min_score = 0.0
        self.advance = True  # after a decision, move on to the next pending visible image
        self.current: str | None = None
        self.editing: str | None = None  # the image whose drawing is open, or None (idle)
        self._seed: np.ndarray | None = None
        self._read_drawing: Callable[[], np.ndarray] | None = None
        self.last_autosaved: str | None = None  # the last drawing saved by moving on (the widget tells the user)
        self.last_edit_outcome: str | None = None  # how the last edit ended: "saved" or "discarded"
        self._ids = session.ids
        self._index = {i: k for k, i in enumerate(self._ids)}
        self._score = dict(zip(self._ids, session.column("suspicion"), strict=True))
        self._listeners: list[Callable[[str, tuple[str, ...]], None]] = []
        first = session.next_pending() or (self._ids[0] if self._ids else None)
        self.current = first

    # ----------------------------------------------------------------------------------------- events
    def subscribe(self, listener: Callable[[str, tuple[str, ...]], None]) -> None:
        """Call ``listener(event, ids)`` after every change (see EVENTS)."""
        self._listeners.append(listener)

    def _emit(self, event: str, *ids: str) -> None:
        for listener in list(self._listeners):
            listener(event, ids)

    # ---------------------------------------------------------------------------------------- reading
    @property
    def ids(self) -> list[str]:
        """Every image id, in the queue's order (the session's rank: scoring.rank)."""
        return list(self._ids)

    def position(self, image_id: str) -> int:
        """``image_id``'s place in the queue, 1 = first."""
        return self._index[image_id] + 1

    @property
    def edit_state(self) -> str:
        """``"idle"`` or ``"editing"``."""
        return "idle" if self.editing is None else "editing"

    def score(self, image_id: str) -> float:
        return self._score[image_id]

    def status(self, image_id: str) -> str:
        return self.session.status(image_id)

    def counts(self) -> dict[str, int]:
        """Images per status, plus "total" and "reviewed" (see ReviewSession.counts)."""
        return self.session.counts()

    def passes_filter(self, image_id: str) -> bool:
        """Whether the filter lets ``image_id`` through (the current image is shown regardless: see visible)."""
        if self._score[image_id] < self.min_score - _EPS:
            return False
        return not (self.pending_only and self.session.status(image_id) != "pending")

    def visible(self, image_id: str) -> bool:
        """Whether the table lists ``image_id``: it passes the filter, or it is the image on screen (a row does
        not vanish under the reviewer's eyes; it goes once they move on)."""
        return image_id == self.current or self.passes_filter(image_id)

    def visible_ids(self) -> list[str]:
        """The ids the table lists, in the queue's order (one pass; all of them when no filter is set)."""
        if not self.pending_only and self.min_score <= 0:
            return list(self._ids)
        cut, status, score = self.min_score - _EPS, self.session.status, self._score
        return [i for i in self._ids if i == self.current
                or (score[i] >= cut and not (self.pending_only and status(i) != "pending"))]

    def requeue(self, unreviewed: str) -> None:
        """Order the queue for what the export gives images nobody reviewed (ReviewSession.choose_unreviewed:
        saved to review.json): the image shown, the decisions and the filter stay; the table lists the new order
        ("filter")."""
        if unreviewed == self.session.unreviewed and self.session.unreviewed_chosen:
            return
        self.session.choose_unreviewed(unreviewed)
        self._ids = self.session.ids
        self._index = {i: k for k, i in enumerate(self._ids)}
        self._emit("filter")

    # ------------------------------------------------------------------------------------- navigation
    def set_filter(self, pending_only: bool | None = None, min_score: float | None = None) -> None:
        if pending_only is not None:
            self.pending_only = bool(pending_only)
        if min_score is not None:
            self.min_score = float(min_score)
        self._emit("filter")

    def neighbour(self, step: int, pending_only: bool = False, start: str | None = None) -> str | None:
        """The next (step > 0) or previous visible image after ``start`` (the current one), wrapping around;
        with ``pending_only`` only pending ones. None when there is none."""
        start = self.current if start is None else start
        if start is None:
            return None
        i = self._index[start]
        ids = self._ids
        order = ids[i + 1:] + ids[:i] if step > 0 else ids[:i][::-1] + ids[i + 1:][::-1]
        for cand in order:
            if self.passes_filter(cand) and (not pending_only or self.session.status(cand) == "pending"):
                return cand
        return None

    def select(self, image_id: str) -> None:
        """Show ``image_id``; an open edit of another image is finished first (saved if changed)."""
        if image_id not in self._index:
            raise KeyError(f"unknown image id {image_id!r}")
        if self.editing is not None and self.editing != image_id:
            self._finish_edit()
        previous, self.current = self.current, image_id
        if previous != image_id:
            filtered = self.pending_only or self.min_score > 0
            if filtered and not self.passes_filter(image_id):
                self._emit("filter")  # shown although filtered out (undo, a click from elsewhere): listed now
            self._emit("current", image_id)
            if filtered and previous is not None and not self.passes_filter(previous):
                self._emit("filter")  # the row left behind is now hidden

    def next(self) -> str | None:
        nxt = self.neighbour(+1)
        if nxt is not None:
            self.select(nxt)
        return nxt

    def previous(self) -> str | None:
        prev = self.neighbour(-1)
        if prev is not None:
            self.select(prev)
        return prev

    def next_pending(self) -> str | None:
        nxt = self.neighbour(+1, pending_only=True)
        if nxt is not None:
            self.select(nxt)
        return nxt

    # -------------------------------------------------------------------------------------- decisions
    def _need_current(self) -> str:
        if self.current is None:
            raise ReviewModelError("no image to decide on: the run has no scored images")
        return self.current

    def decide(self, status: str) -> str:
        """Record ``status`` (accepted, kept, flagged, excluded) for the current image, then move on to the
        next pending image when ``advance`` is on. An unsaved drawing of this image is dropped: the key says
        what the reviewer wants instead. Returns the image decided."""
        image_id = self._need_current()
        actions = {"accepted": self.session.accept, "kept": self.session.keep, "flagged": self.session.flag,
                   "excluded": self.session.exclude}
        if status not in actions:
            raise ValueError(f"unknown decision {status!r}; expected one of {', '.join(actions)}")
        if self.editing == image_id:
            self._end_edit()
        actions[status](image_id)
        self._after_decision(image_id)
        return image_id

    def _after_decision(self, *ids: str) -> None:
        self._emit("status", *ids)
        if self.advance and len(ids) == 1 and ids[0] == self.current:
            self.next_pending()

    def set_comment(self, text: str, image_id: str | None = None) -> str:
        image_id = image_id or self._need_current()
        stored = self.session.set_comment(image_id, text)
        self._emit("comment", image_id)
        return stored

    def batch_candidates(self, min_score: float) -> list[str]:
        """Pending images with a suspicion score >= ``min_score``, in the queue's order: what the batch would accept."""
        return [i for i in self._ids if self._score[i] >= min_score - _EPS and self.session.status(i) == "pending"]

    def accept_batch(self, image_ids: list[str]) -> list[str]:
        """Accept the corrections of ``image_ids`` as ONE undoable step; returns those that changed."""
        if self.editing is not None and self.editing in image_ids:
            self._finish_edit()
        changed = self.session.decide_many(list(image_ids), "accepted")
        if changed:
            self._emit("status", *changed)
        return changed

    def undo(self) -> list[str]:
        """Undo the last decision or batch (also one made before reopening) and show its first image. Refused
        while a changed drawing is open: save or cancel it first. Returns the ids undone ([] if none)."""
        if self.editing is not None:
            if self.edit_modified():
                raise ReviewModelError("Save the edit (S) or cancel it before undoing a decision")
            self._end_edit()
        ids = self.session.undo_step()
        if ids:
            self._emit("status", *ids)
            self.select(ids[0])
        return ids

    # ------------------------------------------------------------------------------------------- edit
    def seed_source(self, preferred: str = "corrected") -> str:
        """Where a new drawing of the current image starts: its saved edit when it is edited, else
        ``preferred`` ("corrected" or "original")."""
        image_id = self._need_current()
        if self.session.status(image_id) == "edited" and self.session.edit_path(image_id).is_file():
            return "edit"
        if preferred not in ("corrected", "original"):
            raise ValueError(f"an edit starts from the corrected or the original mask, not {preferred!r}")
        return preferred

    def start_edit(self, seed: np.ndarray, read_drawing: Callable[[], np.ndarray]) -> None:
        """idle -> editing for the current image: ``seed`` is what the drawing started from (to tell a change),
        ``read_drawing()`` returns the drawing as it is now (the edit layer's data)."""
        image_id = self._need_current()
        if self.editing is not None and self.editing != image_id:
            self._finish_edit()
        self.editing, self._seed, self._read_drawing = image_id, np.asarray(seed) > 0, read_drawing
        self._emit("edit", image_id)

    def edit_modified(self) -> bool:
        """Whether the open drawing differs from its seed."""
        if self.editing is None or self._read_drawing is None:
            return False
        drawing = self._read_drawing()
        return drawing is not None and not np.array_equal(np.asarray(drawing) > 0, self._seed)

    def save_edit(self) -> str:
        """editing -> idle (saved): store the drawing as the current image's mask; then move on."""
        if self.editing is None or self.editing != self.current:
            raise ReviewModelError("Press D to start an edit first")
        image_id = self.editing
        self.session.edit(image_id, np.asarray(self._read_drawing()) > 0)
        self._end_edit("saved")
        self._after_decision(image_id)
        return image_id

    def cancel_edit(self) -> str | None:
        """editing -> idle (discarded): nothing is stored. Returns the image whose edit was dropped."""
        image_id = self.editing
        if image_id is not None:
            self._end_edit("discarded")
        return image_id

    def _finish_edit(self) -> str:
        """Leaving an image with an open drawing: saved when changed, dropped when not. Returns "saved" or
        "discarded"."""
        image_id = self.editing
        if self.edit_modified():
            self.session.edit(image_id, np.asarray(self._read_drawing()) > 0)
            self._end_edit("saved")
            self._emit("status", image_id)
            self.last_autosaved = image_id
            return "saved"
        self._end_edit("discarded")
        return "discarded"

    def _end_edit(self, outcome: str = "discarded") -> None:
        image_id = self.editing
        self.last_edit_outcome = outcome
        self.editing, self._seed, self._read_drawing = None, None, None
        if image_id is not None:
            self._emit("edit", image_id)

    def close(self) -> None:
        """Before the session goes (another run opened, the widget closed): finish an open drawing."""
        if self.editing is not None:
            self._finish_edit()

    def row(self, image_id: str) -> dict[str, Any]:
        return self.session.row(image_id)
