"""A word-wrapped status line that changes its text without laying out the viewer's window again.

Why not a QLabel: ``QLabel.setText`` always asks its parent for a new layout, and every layout on the way up
passes the request on (``QLayout::activate`` ends in ``updateGeometry``), so each new text laid out the dock and
napari's main window again and the window was composed twice (two ``UpdateRequest`` events, each a full-window
composition through software OpenGL under Xvfb). While training, the pace is shown once a second: that second
composition was most of the longest main-thread stalls left (benchmarks/ui_latency.py). This line asks for a new
layout only when the new text needs another height at its width; otherwise it only repaints itself.
"""

from __future__ import annotations

from qtpy.QtCore import QRect, QSize, Qt
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import QSizePolicy, QStylePainter, QWidget

__all__ = ["StatusLine"]

_FLAGS = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)


class StatusLine(QWidget):
    """Plain text, wrapped at word boundaries; ``text()`` / ``setText()`` as a QLabel, ``value`` as magicgui's
    Label (the widgets and their tests read it so)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setText(text)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 (QLabel's name)
        text = str(text)
        if text == self._text:
            return
        width = self.width() if self.isVisible() and self.width() > 0 else None
        before = self.heightForWidth(width) if width else None
        self._text = text
        if width is None or self.heightForWidth(width) != before:
            self.updateGeometry()
        self.update()

    @property
    def value(self) -> str:
        return self._text

    @value.setter
    def value(self, text: str) -> None:
        self.setText(text)

    def _bound(self, width: int) -> QRect:
        return self.fontMetrics().boundingRect(QRect(0, 0, max(width, 1), 1 << 20), _FLAGS, self._text)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt's name)
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt's name)
        return max(self._bound(width).height(), self.fontMetrics().height()) if self._text else 0

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        width = self.fontMetrics().averageCharWidth() * 40
        return QSize(width, self.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(0, self.fontMetrics().height() if self._text else 0)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        painter = QStylePainter(self)
        painter.drawItemText(self.rect(), _FLAGS, self.palette(), self.isEnabled(), self._text,
                             QPalette.ColorRole.WindowText)
