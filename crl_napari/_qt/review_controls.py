"""The Review dock's controls: the run and reviewer fields (with the recent runs and the remembered name), the
filter, the decision buttons, the comment field and the batch action. :class:`.review_widget.ReviewWidget`
wires the decisions to the review model."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..review import default_reviewer
from ..scoring import DEFAULT_UNREVIEWED
from .export_form import POLICIES, policy_label
from .review_layers import COLORS
from .review_settings import ReviewSettings
from .review_table import CLEAN_COLOR

__all__ = ["RunRow", "FilterRow", "DecisionPanel", "InfoPanel", "BatchRow", "legend"]
_BATCH_LISTED = 30  # ids shown in the batch preview before "… and n more"
#: Shown in the dock while a drawing is open (napari's own label keys; S is this plugin's).
EDIT_HINT = ("Drawing in original pixels: paint (P), erase (E), fill (F), brush size in the layer controls; "
             "S saves, N moves on (a changed drawing is saved)")


CLEAN_MARK = "looks clean: the given mask is likely better"
CLEAN_TIP = ("This image's score is below the run's recommended threshold (Otsu's split of its scores). There the "
             "nets' correction is usually worse than the given mask: at 75 % noise, corrections of clean masks "
             "had Dice 0.93 against 0.975 for the masks themselves. Keep it (K) unless you see a real error.")
LOADING = "loading the original… (training-size copy shown)"
LOADING_TIP = "the radiograph is read at its own size in the background; Edit is on once it is shown"


def _score_box(prefix: str, value: float = 0.0) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(3)
    box.setPrefix(prefix)
    box.setValue(value)
    return box


class RunRow(QFormLayout):
    """Run folder (typed, browsed or picked from the recent ones) and the reviewer's name, remembered across
    restarts (:class:`.review_settings.ReviewSettings`). ``open_run(path)`` is called to open a folder."""

    def __init__(self, open_run, locate_data=None) -> None:
        super().__init__()
        self._open_run = open_run
        self._settings = ReviewSettings()
        row = QHBoxLayout()
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("a scored run folder")
        self.recent_combo = QComboBox()
        self.recent_combo.setToolTip("runs opened before")
        self.recent_combo.setMaximumWidth(28)
        self.recent_combo.view().setMinimumWidth(420)  # the list shows whole paths
        self.browse_btn = QPushButton("…")
        self.browse_btn.setFixedWidth(28)
        self.open_btn = QPushButton("Open")
        for w in (self.run_edit, self.recent_combo, self.browse_btn, self.open_btn):
            row.addWidget(w)
        self.addRow("Run folder", row)
        self.reviewer_edit = QLineEdit()
        self.reviewer_edit.setToolTip("recorded with every decision; remembered on this computer")
        self.addRow("Reviewer", self.reviewer_edit)
        self.reviewer_edit.setText(self._settings.reviewer or default_reviewer())
        originals = QHBoxLayout()
        self.originals_label = QLabel("")
        self.originals_label.setWordWrap(True)
        self.data_btn = QPushButton("Data folder…")
        self.data_btn.setToolTip("where the original radiographs are now, if the data moved; the run remembers it")
        originals.addWidget(self.originals_label, stretch=1)
        originals.addWidget(self.data_btn)
        self.addRow("Originals", originals)
        self.fill_recent()
        if locate_data is not None:
            self.data_btn.clicked.connect(lambda: self._locate(locate_data))
        self.browse_btn.clicked.connect(self._browse)
        self.open_btn.clicked.connect(lambda: open_run(self.run_edit.text()))
        self.run_edit.returnPressed.connect(lambda: open_run(self.run_edit.text()))
        self.recent_combo.activated.connect(lambda i: open_run(self.recent_combo.itemText(i)))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self.run_edit, "Open a run folder", self.run_edit.text())
        if path:
            self._open_run(path)

    def _locate(self, locate_data) -> None:
        path = QFileDialog.getExistingDirectory(self.data_btn, "Where are the original images now? (the folder "
                                                "holding images/ and masks/)")
        if path:
            locate_data(path)

    def show_originals(self, note: str | None, loading: bool = False) -> None:
        """Say where the image shown comes from: None (no run), "" (the original file), else why not;
        ``loading``: its training-size copy is shown while the original is read."""
        self.originals_label.setText(LOADING if loading else "" if note is None else "at their own size" if not note
                                     else "not found: training-size copies shown")
        self.originals_label.setToolTip(LOADING_TIP if loading else note or "")

    def opened(self, path: Path) -> None:
        """A run was opened: show it, and offer it first among the recent runs."""
        self.run_edit.setText(str(path))
        self._settings.add_recent_run(path)
        self.fill_recent()

    def fill_recent(self) -> None:
        self.recent_combo.clear()
        self.recent_combo.addItems(self._settings.recent_runs())
        self.recent_combo.setEnabled(self.recent_combo.count() > 0)

    def reviewer(self, fallback: str | None = None) -> str | None:
        """The name typed (remembered for next time), or ``fallback`` (else the login name) when blank: then the
        field shows the fallback again. None when the field is blank."""
        name = self.reviewer_edit.text().strip()
        if name:
            self._settings.reviewer = name
            return name
        self.reviewer_edit.setText(fallback or default_reviewer())
        return None


class FilterRow(QHBoxLayout):
    """Which rows the table lists: all or pending only, and a minimum score."""

    def __init__(self) -> None:
        super().__init__()
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(["all", "pending"])
        self.min_score = _score_box("score ≥ ")
        self.addWidget(self.filter_combo)
        self.addWidget(self.min_score)


class QueueRow(QHBoxLayout):
    """What the export gives images nobody reviews (export_form.POLICIES' words): the queue is ordered for it
    (scoring.rank) and the export follows it (ReviewSession.unreviewed, saved in the run)."""

    def __init__(self) -> None:
        super().__init__()
        self.unreviewed_combo = QComboBox()
        self.unreviewed_combo.addItems(list(POLICIES))
        self.unreviewed_combo.setCurrentText(policy_label(DEFAULT_UNREVIEWED))
        self.unreviewed_combo.setToolTip(
            "what the export gives the images you do not review; the queue puts first the images a look pays most "
            "for under it: with the correction above the run's recommended score, the images closest to that score "
            "where more than 40 % of the masks look wrong, else the masks just under it (the policy keeps those), "
            "most suspicious first; keeping the original masks, the most suspicious of all")
        self.addWidget(self.unreviewed_combo, stretch=1)


class DecisionPanel(QGridLayout):
    """One button per decision (the key in brackets), the edit buttons, navigation and undo."""

    def __init__(self) -> None:
        super().__init__()
        b = QPushButton
        self.accept_btn, self.keep_btn = b("Accept correction (A)"), b("Keep original (K)")
        self.flag_btn, self.exclude_btn = b("Flag: second opinion (Q)"), b("Exclude radiograph (⇧X)")
        self.edit_btn, self.save_btn, self.cancel_edit_btn = b("Edit (D)"), b("Save edit (S)"), b("Cancel edit")
        self.seed_combo = QComboBox()
        self.seed_combo.addItems(["from corrected", "from original"])
        self.seed_combo.setToolTip("the mask a new edit starts from")
        self.prev_btn, self.next_btn, self.undo_btn = b("Previous (⇧N)"), b("Next (N)"), b("Undo (U)")
        self.advance_check = QCheckBox("next image after a decision")
        self.advance_check.setChecked(True)
        cells = [(self.accept_btn, self.keep_btn), (self.flag_btn, self.exclude_btn),
                 (self.edit_btn, self.seed_combo), (self.save_btn, self.cancel_edit_btn),
                 (self.prev_btn, self.next_btn), (self.undo_btn, self.advance_check)]
        for r, (left, right) in enumerate(cells):
            self.addWidget(left, r, 0)
            self.addWidget(right, r, 1)
        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment on this image (Enter saves)")
        self.addWidget(self.comment_edit, len(cells), 0, 1, 2)
        # while editing, how to draw is said here: in the status bar it ran into napari's own key hints
        self.edit_hint = QLabel(EDIT_HINT)
        self.edit_hint.setWordWrap(True)
        self.edit_hint.setVisible(False)
        self.addWidget(self.edit_hint, len(cells) + 1, 0, 1, 2)

    def connect_to(self, widget) -> None:
        """Each button calls the widget's method of the same decision (the keys call the same methods)."""
        for btn, method in (("accept_btn", "accept"), ("keep_btn", "keep"), ("flag_btn", "flag"),
                            ("exclude_btn", "exclude"), ("edit_btn", "start_edit"), ("save_btn", "save_edit"),
                            ("cancel_edit_btn", "cancel_edit"), ("prev_btn", "previous"), ("next_btn", "next"),
                            ("undo_btn", "undo")):
            getattr(self, btn).clicked.connect(getattr(widget, method))

    def enable(self, has_image: bool, editing: bool, can_edit: bool = True) -> None:
        """``can_edit`` False: the image is shown by its training-size stand-in (nothing may be drawn on it)."""
        for b in (self.accept_btn, self.keep_btn, self.flag_btn, self.exclude_btn, self.prev_btn, self.next_btn,
                  self.undo_btn, self.comment_edit):
            b.setEnabled(has_image)
        self.edit_btn.setEnabled(has_image and not editing and can_edit)
        self.edit_btn.setToolTip("" if can_edit or not has_image else LOADING_TIP)
        self.save_btn.setEnabled(editing)
        self.cancel_edit_btn.setEnabled(editing)
        self.edit_hint.setVisible(editing)


class InfoPanel(QVBoxLayout):
    """The facts of the image shown (id, rank, score, Dice, status) and the counts per status."""

    def __init__(self) -> None:
        super().__init__()
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        # a fixed two-line height: a label that grows or shrinks with its text re-lays out (and repaints) the
        # whole dock on every row switch
        self.info_label.setFixedHeight(2 * self.info_label.fontMetrics().lineSpacing() + 10)
        self.info_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # the policy's mark on an image whose correction is likely worse than its mask: placed by the widget beside
        # the legend (no line of its own: the dock must not grow), always there (empty on flagged images) with a
        # fixed height, so a row switch re-lays out nothing
        self.clean_label = QLabel("")
        self.clean_label.setFixedHeight(self.clean_label.fontMetrics().lineSpacing() + 4)
        # nor wider: its text takes the room left beside the legend (a wider dock squeezed napari's canvas to nothing)
        self.clean_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.clean_label.setStyleSheet(f"color: {CLEAN_COLOR}; font-weight: bold")
        # wrapped, in a fixed two-line height: unwrapped, its ~640 px made the dock so wide that napari's default
        # window left its canvas 56 px wide, or none (then nothing is drawn)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        self.counts_label.setFixedHeight(2 * self.counts_label.fontMetrics().lineSpacing() + 6)
        self.addWidget(self.info_label)
        self.addWidget(self.counts_label)

    def show_image(self, row: dict, place: int, total: int, status: str) -> None:
        """The image shown: its id, ``place`` in the queue of ``total`` (ReviewModel.position), scores, decision."""
        dice = row.get("dice_given_corrected")
        self.info_label.setText(
            f"<b>{row['id']}</b> · {place} of {total} in the queue · score {row['suspicion']:.3f}"
            + ("" if dice is None else f" · Dice(original, corrected) {dice:.3f}") + f" · <i>{status}</i>")

    def show_clean(self, threshold: float | None, score: float) -> None:
        """The mark of an image that looks clean (``threshold``: the run's recommended one it is under), or none."""
        if threshold is None:
            self.clean_label.setText("")
            self.clean_label.setToolTip("")
            return
        self.clean_label.setText(f"✓ {CLEAN_MARK}")
        self.clean_label.setToolTip(f"score {score:.3f} < {threshold:.3f}, the run's recommended threshold. "
                                    f"{CLEAN_TIP} Accept (A) needs a second press.")

    def show_counts(self, c: dict[str, int]) -> None:
        self.counts_label.setText(
            f"Reviewed {c['reviewed']} / {c['total']}  ·  accepted {c['accepted']}  ·  kept {c['kept']}  ·  "
            f"edited {c['edited']}  ·  flagged {c['flagged']}  ·  excluded {c['excluded']}  ·  "
            f"pending {c['pending']}")


class BatchRow(QWidget):
    """"Accept corrections with score ≥ x": a preview of the count and the ids, then one undoable step.
    ``model()`` returns the open ReviewModel (or None); ``guard(action, context)`` runs a model action and reports
    its failure; ``message(text)`` shows a line."""

    def __init__(self, model, guard, message) -> None:
        super().__init__()
        self._model, self._guard, self._message = model, guard, message
        self._ids: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.threshold = _score_box("score ≥ ", 0.5)  # the run's recommended threshold once one is open
        self.recommended: float | None = None
        self.preview_btn = QPushButton("Accept corrections…")
        self.preview_btn.setToolTip("lists the pending images at or above the score first")
        self.apply_btn = QPushButton("Accept these")
        self.apply_btn.setEnabled(False)
        for w in (self.threshold, self.preview_btn, self.apply_btn):
            row.addWidget(w)
        layout.addLayout(row)
        self.preview = QLabel("")
        self.preview.setWordWrap(True)
        self.preview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.preview)
        self.preview_btn.clicked.connect(self.preview_batch)
        self.apply_btn.clicked.connect(self.apply_batch)
        self.threshold.valueChanged.connect(self.clear)

    def preview_batch(self) -> None:
        """List the pending images the batch would accept (count and ids) before anything changes."""
        model = self._model()
        if model is None:
            return self._message("Open a run folder first")
        ids = self._ids = model.batch_candidates(self.threshold.value())
        more = f" … and {len(ids) - _BATCH_LISTED} more" if len(ids) > _BATCH_LISTED else ""
        clean = 0 if self.recommended is None else sum(model.score(i) < self.recommended for i in ids)
        warn = (f" — {clean} of them look clean (score under the recommended {self.recommended:.3f}): their given "
                "masks are likely better" if clean else "")
        self.preview.setText(f"{len(ids)} pending image(s) with score ≥ {self.threshold.value():.3f}{warn}"
                             + (f": {', '.join(ids[:_BATCH_LISTED])}{more}" if ids else ""))
        self.apply_btn.setEnabled(bool(ids))

    def apply_batch(self) -> None:
        """Accept the corrections the preview listed, as one undoable step (U undoes all of them)."""
        ids = self._ids
        self.clear()
        changed = self._guard(lambda: self._model().accept_batch(ids), "accept many") if ids else None
        if changed is not None:
            self._message(f"Accepted {len(changed)} correction(s); U undoes them together")

    def set_recommended(self, threshold: float) -> None:
        """A run was opened: its recommended threshold (scoring.recommended_threshold) is the default score."""
        self.recommended = threshold
        self.threshold.setValue(threshold)
        self.threshold.setToolTip(f"recommended for this run: {threshold:.3f} (Otsu's split of its scores); below it "
                                  "a correction is likely worse than the given mask")
        self.clear()

    def clear(self, *_args) -> None:
        self._ids = []
        self.apply_btn.setEnabled(False)
        self.preview.setText("")


def legend() -> QLabel:
    return QLabel(
        f'<span style="color:{COLORS["original"]}">■</span> original &nbsp; '
        f'<span style="color:{COLORS["corrected"]}">■</span> corrected &nbsp; '
        f'<span style="color:{COLORS["edit"]}">■</span> edited'
    )
