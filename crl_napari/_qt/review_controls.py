"""The Review dock's controls, laid out and nothing more: the run and reviewer fields, the filter, the
decision buttons, the comment field and the batch action. :class:`.review_widget.ReviewWidget` wires them to the
review model."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .review_layers import COLORS

__all__ = ["RunRow", "FilterRow", "DecisionPanel", "BatchRow", "legend"]


def _score_box(prefix: str, value: float = 0.0) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(3)
    box.setPrefix(prefix)
    box.setValue(value)
    return box


class RunRow(QFormLayout):
    """Run folder (typed, browsed or picked from the recent ones) and the reviewer's name."""

    def __init__(self) -> None:
        super().__init__()
        row = QHBoxLayout()
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("a scored run folder")
        self.recent_combo = QComboBox()
        self.recent_combo.setToolTip("runs opened before")
        self.recent_combo.setMaximumWidth(28)
        self.browse_btn = QPushButton("…")
        self.browse_btn.setFixedWidth(28)
        self.open_btn = QPushButton("Open")
        for w in (self.run_edit, self.recent_combo, self.browse_btn, self.open_btn):
            row.addWidget(w)
        self.addRow("Run folder", row)
        self.reviewer_edit = QLineEdit()
        self.reviewer_edit.setToolTip("recorded with every decision; remembered on this computer")
        self.addRow("Reviewer", self.reviewer_edit)


class FilterRow(QHBoxLayout):
    """Which rows the table lists: all or pending only, and a minimum score."""

    def __init__(self) -> None:
        super().__init__()
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(["all", "pending"])
        self.min_score = _score_box("score ≥ ")
        self.addWidget(self.filter_combo)
        self.addWidget(self.min_score)


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


class BatchRow(QWidget):
    """"Accept corrections with score ≥ x": a preview of the count and the ids, then one undoable step."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.threshold = _score_box("score ≥ ", 0.5)
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


def legend() -> QLabel:
    return QLabel(
        f'<span style="color:{COLORS["original"]}">■</span> original &nbsp; '
        f'<span style="color:{COLORS["corrected"]}">■</span> corrected &nbsp; '
        f'<span style="color:{COLORS["edit"]}">■</span> edited'
    )
