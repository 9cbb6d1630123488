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
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QFileDialog, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..review import ReviewSession
from ..review import _default_reviewer as default_reviewer
from ..review_model import ReviewModel, ReviewModelError
from ..runs import RunError, RunFolder
from ._common import report_error, run_link, scroll_area, warn
from ._plots import ScoreHistogram
from .edit_controller import EditController
from .export_form import ExportForm
from .review_controls import BatchRow, DecisionPanel, FilterRow, RunRow, legend
from .review_keys import KEYS, TableKeys, bind_keys, describe_keys, unbind_keys
from .review_layers import COLORS, LAYERS, LayerPresenter
from .review_settings import ReviewSettings
from .review_table import ReviewTable

__all__ = ["ReviewWidget", "KEYS", "LAYERS", "COLORS", "describe_keys"]
_BATCH_LISTED = 30  # ids shown in the batch preview before "… and n more"


def _is_scored(path: str | Path) -> bool:
    try:
        return RunFolder(path).has_scores
    except RunError:
        return False


class ReviewWidget(QWidget):
    """Review the masks of a scored run, worst first (keys: :data:`.review_keys.KEYS`)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.model: ReviewModel | None = None
        self.run: RunFolder | None = None
        self.closed = self._was_docked = False
        self.last_message = ""
        self._batch_ids: list[str] = []
        self.settings = ReviewSettings()
        self.layers = LayerPresenter(viewer, self)
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
        parts = (RunRow(), FilterRow(), DecisionPanel(), BatchRow())
        for part in parts:  # their fields become this widget's attributes (run_edit, accept_btn, ...)
            for name, value in vars(part).items():
                if not name.startswith("_"):
                    setattr(self, name, value)
        self.batch = parts[3]
        parts[0].addRow("Show", parts[1])
        outer.addLayout(parts[0])
        outer.addWidget(self.table, stretch=1)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        # a fixed two-line height: a label that grows or shrinks with its text re-lays out (and repaints) the
        # whole dock on every row switch
        self.info_label.setFixedHeight(2 * self.info_label.fontMetrics().lineSpacing() + 10)
        self.info_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.counts_label = QLabel("")
        for w in (self.info_label, self.counts_label):
            outer.addWidget(w)
        outer.addLayout(parts[2])
        outer.addWidget(legend())
        outer.addWidget(self.histogram)
        for title, content in (("Accept many", self.batch), ("Export", self.export_widget.native)):
            box = QCollapsible(title)
            box.addWidget(content)
            outer.addWidget(box)
        self.reviewer_edit.setText(self.settings.reviewer or default_reviewer())
        self._fill_recent()
        frame = QVBoxLayout(self)
        frame.setContentsMargins(0, 0, 0, 0)
        frame.addWidget(scroll_area(body))

    def _connect(self) -> None:
        self._table.picked.connect(self.select)
        self.browse_btn.clicked.connect(self._browse)
        self.open_btn.clicked.connect(lambda: self.open_run(self.run_edit.text()))
        self.run_edit.returnPressed.connect(lambda: self.open_run(self.run_edit.text()))
        self.recent_combo.activated.connect(self._open_recent)
        self.reviewer_edit.editingFinished.connect(self._on_reviewer)
        self.filter_combo.currentIndexChanged.connect(self.apply_filter)
        self.min_score.valueChanged.connect(self.apply_filter)
        self.advance_check.toggled.connect(lambda on: self.model and setattr(self.model, "advance", on))
        for btn, method in ((self.accept_btn, self.accept), (self.keep_btn, self.keep), (self.flag_btn, self.flag),
                            (self.exclude_btn, self.exclude), (self.edit_btn, self.start_edit),
                            (self.save_btn, self.save_edit), (self.cancel_edit_btn, self.cancel_edit),
                            (self.prev_btn, self.previous), (self.next_btn, self.next), (self.undo_btn, self.undo),
                            (self.preview_btn, self.preview_batch), (self.apply_btn, self.apply_batch)):
            btn.clicked.connect(method)
        self.comment_edit.editingFinished.connect(self._on_comment)
        self.threshold.valueChanged.connect(self._clear_batch)

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
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run folder", self.run_edit.text())
        if path:
            self.open_run(path)

    def _fill_recent(self) -> None:
        self.recent_combo.clear()
        self.recent_combo.addItems(self.settings.recent_runs())

    def _open_recent(self, index: int) -> None:
        self.open_run(self.recent_combo.itemText(index))

    def _on_run_finished(self, path: str) -> None:
        """A run finished training in this viewer: offer it, and open it when nothing is open yet."""
        if self.closed:
            return
        if self.model is None and _is_scored(path):
            self.open_run(path)
        elif self.model is None or Path(path).resolve() != self.session.run_dir.resolve():
            self.run_edit.setText(path)

    def open_run(self, path: str | Path) -> bool:
        """Open a scored run folder and restore its decisions; False (and a notification) when it cannot."""
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
        model = ReviewModel(session)
        model.pending_only, model.min_score = self.filter_combo.currentText() == "pending", self.min_score.value()
        model.advance = self.advance_check.isChecked()
        self.run, self.model = run, model
        self.layers.open(run, session.ids)
        self._table.set_review(model)
        self.run_edit.setText(str(path))
        self.histogram.set_scores([r["suspicion"] for r in session.rows])
        self._update_counts()
        model.subscribe(self._on_model)
        if model.current is not None:
            self._show_current()
        link = run_link(self.viewer)
        if link.path is None or Path(link.path).resolve() != path.resolve():
            link.set(path)
        self.settings.add_recent_run(path)
        self._fill_recent()
        self._message(f"Opened {path.name}: {len(session.ids)} images, worst first")
        return True

    def _reviewer_name(self) -> str:
        return self.reviewer_edit.text().strip() or default_reviewer()

    def _on_reviewer(self) -> None:
        name = self.reviewer_edit.text().strip()
        if not name:
            self.reviewer_edit.setText(self.session.reviewer if self.session else default_reviewer())
            return
        self.settings.reviewer = name
        if self.session is not None:
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
            self._update_counts()
            if self.model.pending_only:
                self._table.refilter()
            if self.model.current in ids:
                self._show_current()
        elif event == "current":
            self._show_current()
        elif event == "filter":
            self._table.refilter()
            self._table.select(self.model.current)
            self.histogram.mark(self._current_score(), self.min_score.value())
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
        status = model.status(image_id)
        try:
            edit_file = model.session.edit_path(image_id) if status == "edited" else None
            self.layers.show(image_id, edit_file, editing=model.editing == image_id)
        except Exception as exc:
            self._message(report_error(exc, f"showing {image_id}"))
        r = model.row(image_id)
        dice = r.get("dice_given_corrected")
        self.info_label.setText(
            f"<b>{image_id}</b> · rank {r['rank']} of {len(model.ids)} · score {r['suspicion']:.3f}"
            + ("" if dice is None else f" · Dice(original, corrected) {dice:.3f}") + f" · <i>{status}</i>")
        self.comment_edit.setText(model.session.comment(image_id))
        self.histogram.mark(r["suspicion"], self.min_score.value())
        self._update_enabled()

    def _update_counts(self) -> None:
        c = self.model.counts()
        self.counts_label.setText(
            f"Reviewed {c['reviewed']} / {c['total']}  ·  accepted {c['accepted']}  ·  kept {c['kept']}  ·  "
            f"edited {c['edited']}  ·  flagged {c['flagged']}  ·  excluded {c['excluded']}  ·  "
            f"pending {c['pending']}")

    def _current_score(self) -> float | None:
        return None if self.current_id is None else self.model.score(self.current_id)

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

    # ----------------------------------------------------------------------------- the reviewer acts
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

    def accept(self) -> None:
        """Accept the corrected mask for the image shown."""
        self._decide("accepted")

    def keep(self) -> None:
        """Keep the original mask for the image shown."""
        self._decide("kept")

    def flag(self) -> None:
        """Flag the image shown for a second opinion (exported as if unreviewed)."""
        self._decide("flagged")

    def exclude(self) -> None:
        """Exclude the radiograph shown from the export (listed in its manifest)."""
        self._decide("excluded")

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
        seed = "original" if self.seed_combo.currentIndex() == 1 else "corrected"
        image_id = self._guard(lambda: self.edits.start(seed), "edit", need_image=True)
        if image_id is not None:
            self._message(f"Editing {image_id}: paint (P) / erase (E) / fill (F), then S to save")

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
        if ids is not None:
            self._message(f"Undone: {', '.join(ids[:3])}{' …' if len(ids) > 3 else ''} pending again" if ids
                          else "Nothing to undo")

    def _on_comment(self) -> None:
        if self.model is not None and self.model.current is not None:
            text = self.comment_edit.text()
            if text.strip() != self.model.session.comment(self.model.current):
                self._guard(lambda: self.model.set_comment(text), "comment")

    def preview_batch(self) -> None:
        """List the pending images the batch would accept (count and ids) before anything changes."""
        if self.model is None:
            return self._message("Open a run folder first")
        ids = self._batch_ids = self.model.batch_candidates(self.threshold.value())
        shown = ", ".join(ids[:_BATCH_LISTED]) + (f" … and {len(ids) - _BATCH_LISTED} more"
                                                   if len(ids) > _BATCH_LISTED else "")
        self.preview.setText(f"{len(ids)} pending image(s) with score ≥ {self.threshold.value():.3f}"
                             + (f": {shown}" if ids else ""))
        self.apply_btn.setEnabled(bool(ids))

    def apply_batch(self) -> None:
        """Accept the corrections listed by the preview, as one undoable step (U undoes all of them)."""
        ids, self._batch_ids = self._batch_ids, []
        changed = self._guard(lambda: self.model.accept_batch(ids), "accept many") if ids else None
        self._clear_batch()
        if changed is not None:
            self._message(f"Accepted {len(changed)} correction(s); U undoes them together")

    def _clear_batch(self, *_args) -> None:
        self._batch_ids = []
        self.apply_btn.setEnabled(False)
        self.preview.setText("")

    def _update_enabled(self) -> None:
        has = self.model is not None and self.model.current is not None
        editing = has and self.model.editing == self.model.current
        for b in (self.accept_btn, self.keep_btn, self.flag_btn, self.exclude_btn, self.prev_btn, self.next_btn,
                  self.undo_btn, self.comment_edit, self.preview_btn):
            b.setEnabled(has)
        self.edit_btn.setEnabled(has and not editing)
        self.save_btn.setEnabled(editing)
        self.cancel_edit_btn.setEnabled(editing)

    def _message(self, text: str) -> None:
        self.last_message = text
        self.viewer.status = text
