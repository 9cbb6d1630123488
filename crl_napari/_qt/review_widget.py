"""The Review widget: the worst masks first, the original and the corrected mask over the image, one key per
decision, every decision on disk the moment it is made.

It presents a :class:`crl_napari.review_model.ReviewModel` (order, filter, navigation, edit state, undo: all
decided there, without Qt) through small parts: the table (:mod:`.review_table`), the layers
(:mod:`.review_layers`), the edit layer (:mod:`.edit_controller`), the keys (:mod:`.review_keys`), the
controls (:mod:`.review_controls`) and the export form shared with the Export dock (:mod:`.export_form`).
The reviewer's name and the recent runs are remembered (:mod:`.review_settings`).
"""

from __future__ import annotations

import weakref
from functools import partial
from pathlib import Path

import napari
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget
from superqt import QCollapsible

from .. import second_pass
from ..review import ReviewSession, default_reviewer
from ..review_model import ReviewModel
from ..runs import RunError, RunFolder
from ..scoring import keep_advice
from ._common import report_error, run_link, scroll_area
from ._plots import ScoreHistogram
from .edit_controller import EditController
from .export_form import POLICIES, ExportForm, policy_label
from .retrain import RetrainControl
from .review_actions import ReviewActions
from .review_controls import BatchRow, DecisionPanel, FilterRow, InfoPanel, QueueRow, RunRow, legend
from .review_keys import KEYS, TableKeys, bind_keys, describe_keys, unbind_keys
from .review_layers import COLORS, LAYERS, LayerPresenter
from .review_table import ReviewTable

__all__ = ["ReviewWidget", "KEYS", "LAYERS", "COLORS", "describe_keys"]


def _is_scored(path: str | Path) -> bool:
    try:
        has = RunFolder(path).has_scores
    except RunError:
        return False
    return bool(has() if callable(has) else has)  # a property today; the run gateway may make it a method


class ReviewWidget(ReviewActions, QWidget):
    """Review the masks of a scored run, in the review queue's order (keys: :data:`.review_keys.KEYS`)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.model: ReviewModel | None = None
        self.run: RunFolder | None = None
        self.closed = self._was_docked = self._said_fallback = False
        self.last_message = ""
        self.layers = LayerPresenter(viewer, self, on_native=self._on_native)
        self.edits = EditController(lambda: self.model, self.layers)
        self._table = ReviewTable(self)
        self.table = self._table.view
        self.histogram = ScoreHistogram(COLORS["original"])
        self.export_widget = ExportForm(viewer)
        self._lay_out()
        self._connect()
        self._previous_bindings = bind_keys(viewer, self)
        self.table.installEventFilter(TableKeys(self))
        link = run_link(viewer)
        link.review_widget = self
        if link.path and _is_scored(link.path):
            self.run_edit.setText(link.path)
        link.changed.connect(self._on_run_finished)
        self.destroyed.connect(partial(unbind_keys, weakref.ref(viewer), dict(self._previous_bindings)))
        self._update_enabled()

    def _lay_out(self) -> None:
        body = QWidget()  # all of it scrolls (see scroll_area)
        outer = QVBoxLayout(body)
        parts = (RunRow(self.open_run, self.set_data_root), FilterRow(), DecisionPanel(),
                 BatchRow(lambda: self.model, self._guard, self._message), InfoPanel(), QueueRow())
        for part in parts:  # their fields become this widget's attributes (run_edit, accept_btn, ...)
            for name, value in vars(part).items():
                if not name.startswith("_"):
                    setattr(self, name, value)
        self.run_row, self.decisions, self.batch, self.info = parts[0], parts[2], parts[3], parts[4]
        parts[0].addRow("Show", parts[1])
        parts[0].addRow("Unreviewed", parts[5])
        outer.addLayout(parts[0])
        outer.addWidget(self.table, stretch=1)
        outer.addLayout(self.info)
        outer.addLayout(self.decisions)
        marks = QHBoxLayout()  # the legend, and the policy's mark of a clean-looking image on the same line
        marks.addWidget(legend())
        marks.addStretch(1)
        marks.addWidget(self.clean_label)
        outer.addLayout(marks)
        self.retrain = RetrainControl(self)  # the next review round, trained with these decisions
        outer.addWidget(self.retrain)
        outer.addWidget(self.histogram)
        for title, content in (("Accept many", self.batch), ("Export", self.export_widget.native)):
            box = QCollapsible(title)
            box.addWidget(content)
            outer.addWidget(box)
        frame = QVBoxLayout(self)
        frame.setContentsMargins(0, 0, 0, 0)
        frame.addWidget(scroll_area(body))

    def _connect(self) -> None:
        self._table.picked.connect(self.select)
        self.reviewer_edit.editingFinished.connect(self._on_reviewer)
        self.filter_combo.currentIndexChanged.connect(self.apply_filter)
        self.unreviewed_combo.currentIndexChanged.connect(self._on_unreviewed)
        self.min_score.valueChanged.connect(self.apply_filter)
        self.advance_check.toggled.connect(lambda on: self.model and setattr(self.model, "advance", on))
        self.decisions.connect_to(self)
        self.comment_edit.editingFinished.connect(self._on_comment)

    # ------------------------------------------------------------------------------------- lifetime
    def teardown(self) -> None:
        """Release the viewer's keys (also done when the widget is destroyed or taken out of its dock)."""
        if self.closed:
            return
        self.closed = True
        self.layers.close()
        unbind_keys(weakref.ref(self.viewer), self._previous_bindings)

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._was_docked = True
            elif self._was_docked:
                self.teardown()  # napari takes a closed dock's widget out with setParent(None)
        return super().event(ev)

    def closeEvent(self, ev) -> None:  # noqa: N802 (Qt's name)
        self.teardown()
        super().closeEvent(ev)

    # --------------------------------------------------------------------------------------- opening
    def _on_run_finished(self, path: str) -> None:
        """A run finished training in this viewer: offer it, and open it when nothing is open yet."""
        if self.closed:
            return
        if self.model is None and _is_scored(path):
            self.open_run(path)
        elif self.model is None or Path(path).resolve() != self.session.run_dir.resolve():
            self.run_edit.setText(path)

    def open_run(self, path: str | Path, show: str | None = None) -> bool:
        """Open a scored run folder and restore its decisions; False (and a notification) when it cannot. ``show``:
        the image to show first when the run lists it (a re-ranked queue keeps the image on screen), else the first
        still to review."""
        text = str(path).strip()
        if not text:
            self._message(report_error(ValueError("choose a run folder first"), "review"))
            return False
        path = Path(text).expanduser()
        self._guard(lambda: self.model and self.model.close(), "saving the open edit")
        try:
            run = RunFolder(path)
            session = ReviewSession.open(path, reviewer=self._reviewer_name())
        except Exception as exc:
            self._message(report_error(exc, "review"))
            return False
        self.layers.remove("edit")
        self._said_fallback = False
        try:
            run.moved_root  # noqa: B018 - a bad data_root.json is said once here (the originals are then not found)
        except RunError as exc:
            self._message(report_error(exc, "review"))
        model = ReviewModel(session)
        model.pending_only, model.min_score = self.filter_combo.currentText() == "pending", self.min_score.value()
        model.advance = self.advance_check.isChecked()
        if show is not None and show in model.ids:
            # straight to it: showing the queue's first image and then this one again re-sliced the viewer twice at
            # 3000 px (the re-ranking after a round, ui_latency's round trial)
            model.current = show
        self.run, self.model = run, model
        self.layers.open(run, session.ids)
        self._table.set_review(model)
        scores = [r["suspicion"] for r in session.rows]
        self.histogram.set_scores(scores)
        recommended = self.set_policy(scores)  # once per run: the mark, the second press, the batch's default
        self.batch.set_recommended(recommended)
        self._table.source.clean_below = recommended
        self._show_unreviewed(session.unreviewed)
        self.info.show_counts(self.model.counts())
        model.subscribe(self._on_model)
        if model.current is not None:
            self._show_current()
        link = run_link(self.viewer)
        if link.path is None or Path(link.path).resolve() != path.resolve():
            link.set(path)
        # the export follows (this dock's own Export, an Export dock on the run): the choice, the scores' threshold
        link.reviewed.emit(str(path), session.unreviewed, recommended)
        self.run_row.opened(path)
        self.retrain.set_run(path)
        second = second_pass.advised(path, scores)  # many look wrong: a second pass ("Second pass"), a lower keep ratio
        advice = keep_advice(scores, run.keep_ratio, second)
        advice += " (Second pass, below)" if advice and second else ""
        self._message(f"Opened {path.name}: {len(session.ids)} images, in the queue's order for unreviewed images "
                      f"getting: {policy_label(session.unreviewed)} (Unreviewed; scoring.rank)"
                      + (f". {advice}" if advice else ""))
        if self._said_fallback:  # the originals cannot be read: that line matters more
            self._said_fallback = False
            self._say_originals(model.current)
        return True

    def _show_unreviewed(self, policy: str) -> None:
        """The queue's choice as the combo shows it (without choosing it again)."""
        self.unreviewed_combo.blockSignals(True)
        self.unreviewed_combo.setCurrentText(policy_label(policy))
        self.unreviewed_combo.blockSignals(False)

    def _on_unreviewed(self, *_args) -> None:
        """The reviewer chose what the export gives images nobody reviews: the queue is ordered for it (the image
        shown and every decision stay), the run remembers it, the export follows."""
        if self.model is None:
            return
        policy = POLICIES[self.unreviewed_combo.currentText()]
        if self._guard(lambda: self.model.requeue(policy) or True, "ordering the queue") is None:
            self._show_unreviewed(self.session.unreviewed)
            return
        self.layers.reorder(self.model.ids)
        if self.model.current is not None:
            self._show_current()  # its place in the new queue
        # the export follows: this dock's own Export and any Export dock on the run (RunLink.reviewed)
        run_link(self.viewer).reviewed.emit(str(self.session.run_dir), policy, self.clean_below)
        first = ("the masks just under the recommended score first (the export takes the corrections above it)"
                 if policy == "accept_above" else "the most suspicious masks first (the export keeps every mask "
                 "nobody reviews)")
        self._message(f"Queue ordered for an export that gives unreviewed images: {self.unreviewed_combo.currentText()}"
                      f"; {first}")

    def set_data_root(self, path: str | Path) -> bool:
        """The original images are now under ``path`` (the data moved): the run remembers it
        (``RunFolder.remember_data_root``), for this review, the next one and the export; the cases are read
        again from there. False (and a notification) when ``path`` is not this run's data folder."""
        if self.run is None or self.model is None:
            self._message("Open a run folder first")
            return False
        try:
            root = self.run.remember_data_root(path)
        except Exception as exc:
            self._message(report_error(exc, "data folder"))
            return False
        self.layers.open(self.run, self.model.ids)
        self._said_fallback = False
        if self.model.current is not None:
            self._show_current()
        self._message(f"Original images from {root} (remembered by the run)")
        return True

    def _reviewer_name(self) -> str:
        return self.reviewer_edit.text().strip() or default_reviewer()

    def _on_reviewer(self) -> None:
        name = self.run_row.reviewer(self.session.reviewer if self.session else None)
        if name and self.session is not None:
            self.session.reviewer = name

    # ---------------------------------------------------------------------------- what the model says
    @property
    def session(self) -> ReviewSession | None:
        return None if self.model is None else self.model.session

    @property
    def current_id(self) -> str | None:
        return None if self.model is None else self.model.current

    @property
    def _rows(self) -> dict[str, int]:
        """id -> table row (benchmarks/ui_latency.py clicks rows by it)."""
        return self._table.source.row_of

    def _on_model(self, event: str, ids: tuple[str, ...]) -> None:
        if event == "status":
            self._table.refresh(ids)
            self.info.show_counts(self.model.counts())
            if self.model.pending_only:
                self._table.refilter()
            if self.model.current in ids:
                self._show_current()
        elif event == "current":
            self._show_current()
        elif event == "filter":
            self._table.refilter()
            if self.model.current is not None:
                self._table.select(self.model.current)
                self.histogram.mark(self.model.score(self.model.current), self.min_score.value())
        elif event == "edit":
            if self.model.editing is None:
                self.edits.ended(keep_visible=False)
            self._update_enabled()
        elif event == "comment":
            self._table.refresh(ids)

    def _show_current(self) -> None:
        """The current image: its row selected, its layers, its line of facts. All a row switch does."""
        model, image_id = self.model, self.model.current
        self._table.select(image_id)
        if self._accept_armed != image_id:
            self._accept_armed = None  # a second press counts only on the image it was meant for
        status = model.status(image_id)
        self._show_layers(image_id)
        self._say_originals(image_id)
        r = model.row(image_id)
        self.info.show_image(r, model.position(image_id), len(model.ids), status)
        self.info.show_clean(self.clean_below if self.looks_clean(image_id) else None, r["suspicion"])
        self.comment_edit.setText(model.session.comment(image_id))
        self.histogram.mark(r["suspicion"], self.min_score.value())
        self._update_enabled()

    def _show_layers(self, image_id: str) -> None:
        model = self.model
        try:
            edit_file = model.session.edit_path(image_id) if model.status(image_id) == "edited" else None
            self.layers.show(image_id, edit_file, editing=model.editing == image_id)
        except Exception as exc:
            self._message(report_error(exc, f"showing {image_id}"))

    def _on_native(self, image_id: str, error: Exception | None) -> None:
        """The original of the image shown by its stand-in is on screen (the layers put it in) or cannot be read:
        say where the image comes from, and allow editing (a comment being typed stays)."""
        if self.closed or self.model is None or self.model.current != image_id:
            return
        if error is not None:
            self._message(report_error(error, f"showing {image_id}"))
            return
        self._say_originals(image_id)
        self._update_enabled()

    def _say_originals(self, image_id: str) -> None:
        """Where the image shown comes from; the first time an original cannot be read, one status line says why
        and what to do."""
        if self.layers.standin == image_id:
            self.run_row.show_originals(None, loading=True)
            return
        note = self.layers.note(image_id)
        self.run_row.show_originals(note)
        if note and not self._said_fallback:
            self._said_fallback = True
            self._message(f"Original radiograph not readable ({note}): showing the training-size copy. If the data "
                          "moved, point at it with 'Data folder…'")

    def apply_filter(self, *_args) -> None:
        """Hide the rows the filter excludes (the row on screen stays until you move on)."""
        if self.model is not None:
            self.model.set_filter(pending_only=self.filter_combo.currentText() == "pending",
                                  min_score=self.min_score.value())

    def visible_ids(self) -> list[str]:
        """The ids the table shows, in rank order."""
        return self._table.visible_ids() if self.model is not None else []

    def layer(self, role: str):
        """The layer of ``role`` (see LAYERS) or None."""
        return self.layers.layer(role)

    def _update_enabled(self) -> None:
        has = self.model is not None and self.model.current is not None
        loading = has and self.layers.standin == self.model.current  # nothing is drawn on a stand-in
        self.decisions.enable(has, has and self.model.editing == self.model.current, can_edit=not loading)
        self.preview_btn.setEnabled(has)

    def _message(self, text: str) -> None:
        self.last_message = text
        self.viewer.status = text
