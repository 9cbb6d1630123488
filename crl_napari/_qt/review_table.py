"""The review table: a Qt table model over the review model's listed rows (in the queue's order), shown in a QTableView.
Nothing is built per row: cells are formatted as they are painted."""

from __future__ import annotations

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..review_model import ReviewModel

__all__ = ["ReviewTable", "ReviewTableModel", "COLUMNS", "COLUMN_TIPS", "STATUS_COLORS"]

COLUMNS = ("#", "ID", "Score", "Dice", "Decision", "Note")
WARN_COLOR = "#ff9800"  # the ID's mark for a correction in more pieces than two lungs
CLEAN_COLOR = "#00796b"  # the score of an image that looks clean (under the run's recommended threshold)
#: what each column means (the header's tooltip)
COLUMN_TIPS = (
    "the review queue, 1 = the image a look is worth most for, for what the export gives images nobody reviews "
    "(scoring.rank)",
    "image id (its file name); an orange mark: the correction is in more pieces than two lungs, look before "
    "accepting",
    "suspicion = 1 - Dice(original, corrected): how much the correction would change the mask; sorts the table; "
    "green: under the run's recommended threshold, the image looks clean (its given mask is likely better)",
    "Dice between the original and the corrected mask (1 - score): 1 = the nets agree with the mask",
    "your decision: accepted, kept, edited, flagged, excluded; empty = pending",
    "your comment on the image",
)
STATUS_COLORS = {"accepted": "#2e7d32", "kept": "#616161", "edited": "#b28704", "flagged": "#c62828",
                 "excluded": "#6a1b9a", "pending": None}
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_DISPLAY, _FG, _TIP, _ALIGN = (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole,
                               Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.TextAlignmentRole)
_DECO = Qt.ItemDataRole.DecorationRole


class ReviewTableModel(QAbstractTableModel):
    """One row per listed image (the review model's visible ids, queue order). Cells are formatted when Qt paints
    them and the filter is applied in one pass over the ids (no per-row call from Qt into Python), so a run of
    100,000 images opens and filters in a fraction of a second."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.review: ReviewModel | None = None
        self.ids: list[str] = []  # the listed ids, top to bottom
        self.row_of: dict[str, int] = {}
        self._rows: dict[str, dict] = {}
        self.clean_below: float | None = None  # the run's recommended threshold: scores under it are marked

    def set_review(self, review: ReviewModel | None) -> None:
        self.review = review
        self._rows = {} if review is None else {r["id"]: r for r in review.session.rows}
        self.relist()

    def relist(self) -> None:
        """List the ids the review model shows now (after a filter change or a decision under a filter)."""
        self.beginResetModel()
        self.ids = [] if self.review is None else self.review.visible_ids()
        self.row_of = {i: k for k, i in enumerate(self.ids)}
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 (Qt's name and signature)
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=_DISPLAY):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == _TIP:
            return COLUMN_TIPS[section]
        return None

    def data(self, index, role=_DISPLAY):
        if not index.isValid() or self.review is None:
            return None
        col, image_id = index.column(), self.ids[index.row()]
        if col < 4:
            if role == _DISPLAY:
                r = self._rows[image_id]
                if col == 0:
                    return str(self.review.position(image_id))
                if col == 1:
                    return image_id
                value = r["suspicion"] if col == 2 else r.get("dice_given_corrected")
                return "" if value is None else f"{value:.3f}"
            if col == 1 and self._rows[image_id].get("extra_pieces"):  # the warning mark: an orange square
                if role == _DECO:
                    return QColor(WARN_COLOR)
                if role == _TIP:
                    n = self._rows[image_id]["extra_pieces"]
                    return (f"the correction is in {n} more piece(s) than two lungs even after clean-up: look at it "
                            "before accepting")
            if col == 2 and self.clean_below is not None and self._rows[image_id]["suspicion"] < self.clean_below:
                if role == _FG:
                    return QBrush(QColor(CLEAN_COLOR))
                if role == _TIP:
                    return (f"under the recommended {self.clean_below:.3f}: looks clean, the given mask is likely "
                            "better than the correction (Accept needs a second press)")
            return _RIGHT if role == _ALIGN and col != 1 else None
        session = self.review.session
        if col == 5:
            note = session.comment(image_id)
            if role == _DISPLAY:
                return note.splitlines()[0][:40] if note else ""
            return note or None if role == _TIP else None
        status = session.status(image_id)
        if role == _DISPLAY:
            d = session.decision(image_id)
            return status if d is None else f"{status} · {d['reviewer']}"
        if role == _FG:
            color = STATUS_COLORS.get(status)
            return QBrush(QColor(color)) if color else None
        if role == _TIP:
            d = session.decision(image_id)
            return None if d is None else f"{status} by {d['reviewer']} at {d['time']}"
        return None

    def refresh(self, ids) -> None:
        """The decisions or notes of ``ids`` changed: repaint those cells."""
        for image_id in ids:
            row = self.row_of.get(image_id)
            if row is not None:
                self.dataChanged.emit(self.index(row, 4), self.index(row, 5))


class ReviewTable(QObject):
    """The table view and its models; ``picked`` says which image the reviewer clicked."""

    picked = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.source = ReviewTableModel(self)
        view = self.view = QTableView()
        view.setModel(self.source)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        view.verticalHeader().setVisible(False)
        view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 6)  # no per-row measuring
        header = view.horizontalHeader()  # fixed widths: measuring contents reads every row of a large run
        digits = view.fontMetrics().horizontalAdvance("0")
        for col, chars in enumerate((7, 0, 7, 7, 18, 12)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            if chars:
                header.resizeSection(col, chars * digits + 12)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        view.setMinimumHeight(180)
        self._selecting = False
        view.selectionModel().selectionChanged.connect(self._on_selection)

    def set_review(self, review: ReviewModel | None) -> None:
        self._selecting = True
        self.source.set_review(review)
        self._selecting = False

    def refresh(self, ids) -> None:
        """Repaint the decision and note of ``ids``."""
        self.source.refresh(ids)

    def refilter(self) -> None:
        self._selecting = True
        self.source.relist()
        self._selecting = False

    def select(self, image_id: str) -> None:
        """Select and scroll to ``image_id``'s row (no ``picked``: the program moved, not the reviewer)."""
        row = self.source.row_of.get(image_id)
        if row is None:
            return
        index = self.source.index(row, 0)
        self._selecting = True
        self.view.selectRow(index.row())
        self.view.scrollTo(index)
        self._selecting = False

    def visible_ids(self) -> list[str]:
        """The ids the table lists, top to bottom."""
        return list(self.source.ids)

    def _on_selection(self, *_args) -> None:
        if self._selecting:
            return
        rows = self.view.selectionModel().selectedRows()
        if rows:
            self.picked.emit(self.source.ids[rows[0].row()])
