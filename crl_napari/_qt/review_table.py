"""The review table: a Qt table model over the review model's rows (worst first), filtered by a proxy, shown in
a QTableView. Nothing is built per row, so a run of 100,000 images opens as fast as one of 100."""

from __future__ import annotations

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, QSortFilterProxyModel, Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..review_model import ReviewModel

__all__ = ["ReviewTable", "ReviewTableModel", "COLUMNS", "STATUS_COLORS"]

COLUMNS = ("#", "ID", "Score", "Dice", "Decision", "Note")
STATUS_COLORS = {"accepted": "#2e7d32", "kept": "#616161", "edited": "#b28704", "flagged": "#c62828",
                 "excluded": "#6a1b9a", "pending": None}
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_DISPLAY, _FG, _TIP, _ALIGN = (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole,
                               Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.TextAlignmentRole)


class ReviewTableModel(QAbstractTableModel):
    """One row per scored image in rank order; the fixed columns are formatted once, the decision and the note
    are read from the session when Qt paints them."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.review: ReviewModel | None = None
        self.ids: list[str] = []
        self._fixed: list[tuple[str, str, str, str]] = []
        self.row_of: dict[str, int] = {}

    def set_review(self, review: ReviewModel | None) -> None:
        self.beginResetModel()
        self.review = review
        self._fixed, self.ids = [], []
        if review is not None:
            for r in review.session.rows:
                dice = r.get("dice_given_corrected")
                self._fixed.append((str(r["rank"]), r["id"], f"{r['suspicion']:.3f}",
                                    "" if dice is None else f"{dice:.3f}"))
                self.ids.append(r["id"])
        self.row_of = {i: k for k, i in enumerate(self.ids)}
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 (Qt's name and signature)
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=_DISPLAY):  # noqa: N802
        if role == _DISPLAY and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=_DISPLAY):
        if not index.isValid() or self.review is None:
            return None
        row, col = index.row(), index.column()
        if col < 4:
            if role == _DISPLAY:
                return self._fixed[row][col]
            return _RIGHT if role == _ALIGN and col != 1 else None
        image_id = self.ids[row]
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


class _Filter(QSortFilterProxyModel):
    def filterAcceptsRow(self, row, parent) -> bool:  # noqa: N802 (Qt's name)
        source = self.sourceModel()
        return source.review is None or source.review.visible(source.ids[row])


class ReviewTable(QObject):
    """The table view and its models; ``picked`` says which image the reviewer clicked."""

    picked = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.source = ReviewTableModel(self)
        self.proxy = _Filter(self)
        self.proxy.setSourceModel(self.source)
        view = self.view = QTableView()
        view.setModel(self.proxy)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        view.verticalHeader().setVisible(False)
        view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 6)  # no per-row measuring
        header = view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
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
        self.proxy.invalidate()
        self._selecting = False

    def select(self, image_id: str) -> None:
        """Select and scroll to ``image_id``'s row (no ``picked``: the program moved, not the reviewer)."""
        index = self.proxy.mapFromSource(self.source.index(self.source.row_of[image_id], 0))
        if not index.isValid():
            return
        self._selecting = True
        self.view.selectRow(index.row())
        self.view.scrollTo(index)
        self._selecting = False

    def visible_ids(self) -> list[str]:
        """The ids the table lists, top to bottom."""
        return [self.source.ids[self.proxy.mapToSource(self.proxy.index(r, 0)).row()]
                for r in range(self.proxy.rowCount())]

    def _on_selection(self, *_args) -> None:
        if self._selecting:
            return
        rows = self.view.selectionModel().selectedRows()
        if rows:
            self.picked.emit(self.source.ids[self.proxy.mapToSource(rows[0]).row()])
