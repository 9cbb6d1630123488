"""Two tiny plots drawn with QPainter: the training curves and the score histogram.

They repaint on the GUI thread whenever the data change (every epoch, every review row switch), so they must
cost a millisecond or two; a matplotlib canvas took 50-180 ms per redraw on a 2-core CPU
(benchmarks/ui_latency.py), which stalled the viewer while it trained and slowed every row switch.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

AXIS = QColor("#7a7a7a")
TEXT = QColor("#9a9a9a")
NET_COLORS = ("#1f77b4", "#ff7f0e", "#d62728")
SELECTED_COLOR = "#2ca02c"
STAGE2_COLOR = "#b58cf0"  # the stage-2 mark: none of the curves' colours


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class _Plot(QWidget):
    """Axes frame, ticks and labels shared by both plots; subclasses draw inside ``self._area``."""

    margins = (34, 8, 8, 22)  # left, top, right, bottom (px)

    def __init__(self, min_height: int) -> None:
        super().__init__()
        self.setMinimumHeight(min_height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._font = QFont(self.font())
        self._font.setPointSizeF(max(6.0, self._font.pointSizeF() * 0.75))

    def _area(self) -> QRectF:
        left, top, right, bottom = self.margins
        return QRectF(left, top, max(self.width() - left - right, 10), max(self.height() - top - bottom, 10))

    def _frame(self, p: QPainter, area: QRectF, xs: tuple[float, float], ys: tuple[float, float],
               xticks: list[float], yticks: list[float], xlabel: str) -> None:
        p.setFont(self._font)
        p.setPen(QPen(AXIS, 1))
        p.drawLine(area.bottomLeft(), area.bottomRight())
        p.drawLine(area.bottomLeft(), area.topLeft())
        p.setPen(TEXT)
        fm = p.fontMetrics()
        for t in xticks:
            x = self._x(t, xs, area)
            p.drawLine(QPointF(x, area.bottom()), QPointF(x, area.bottom() + 3))
            label = _fmt(t)
            p.drawText(QPointF(x - fm.horizontalAdvance(label) / 2, area.bottom() + 4 + fm.ascent()), label)
        for t in yticks:
            y = self._y(t, ys, area)
            p.drawLine(QPointF(area.left() - 3, y), QPointF(area.left(), y))
            label = _fmt(t)
            p.drawText(QPointF(area.left() - 5 - fm.horizontalAdvance(label), y + fm.ascent() / 2 - 1), label)
        if xlabel:
            p.drawText(QPointF(area.right() - fm.horizontalAdvance(xlabel), self.height() - 2), xlabel)

    @staticmethod
    def _x(v: float, xs: tuple[float, float], area: QRectF) -> float:
        return area.left() + (v - xs[0]) / max(xs[1] - xs[0], 1e-12) * area.width()

    @staticmethod
    def _y(v: float, ys: tuple[float, float], area: QRectF) -> float:
        return area.bottom() - (v - ys[0]) / max(ys[1] - ys[0], 1e-12) * area.height()


class LossPlot(_Plot):
    """Loss of each net (left axis) and the fraction of the batch trained on given labels (right axis, 0-1,
    dashed green), one point per epoch; a dotted line where stage 2 (corrected labels) begins."""

    margins = (34, 20, 30, 22)  # the top row holds the two axis titles
    LOSS_TITLE = "loss"
    FRACTION_TITLE = "fraction trained on given labels"

    def __init__(self) -> None:
        super().__init__(160)
        self.epochs: list[int] = []
        self.losses: list[tuple[float, ...]] = []
        self.selected: list[float] = []
        self.stages: list[int] = []

    def clear(self) -> None:
        self.epochs, self.losses, self.selected, self.stages = [], [], [], []
        self.update()

    def add(self, epoch: int, losses: tuple[float, ...], selected: float, stage: int = 1) -> None:
        self.epochs.append(epoch + 1)
        self.losses.append(tuple(losses))
        self.selected.append(selected)
        self.stages.append(int(stage))
        self.update()

    @property
    def stage2_start(self) -> int | None:
        """The first epoch (1-based, as on the axis) trained in stage 2; None before it."""
        return next((e for e, st in zip(self.epochs, self.stages, strict=True) if st >= 2), None)

    def stage2_x(self) -> float | None:
        """Where the stage-2 mark is drawn (widget pixels): halfway between the last stage-1 epoch and the first
        stage-2 epoch."""
        start = self.stage2_start
        if start is None:
            return None
        return self._x(start - 0.5, self._xs(), self._area())

    def _xs(self) -> tuple[float, float]:
        return 0.5, max(self.epochs, default=1) + 0.5

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = self._area()
        n = max(self.epochs, default=1)
        xs = self._xs()
        values = [v for row in self.losses for v in row if math.isfinite(v)]
        top = max(values, default=1.0) * 1.05 or 1.0
        ys = (0.0, top)
        xticks = [t for t in nice_ticks(1, max(n, 2), 4) if t == int(t) and 1 <= t <= n] or [1]
        self._frame(p, area, xs, ys, xticks, nice_ticks(0, top, 3), "epoch")
        fm = p.fontMetrics()
        title_y = area.top() - 6
        p.drawText(QPointF(2, title_y), self.LOSS_TITLE)
        p.setPen(QColor(SELECTED_COLOR))
        p.drawText(QPointF(self.width() - 2 - fm.horizontalAdvance(self.FRACTION_TITLE), title_y),
                   self.FRACTION_TITLE)
        for t in (0.0, 0.5, 1.0):
            y = self._y(t, (0, 1.05), area)
            p.drawText(QPointF(area.right() + 4, y + fm.ascent() / 2 - 1), _fmt(t))
        stage2 = QPen(QColor(STAGE2_COLOR), 1.2, Qt.PenStyle.DotLine)
        x2 = self.stage2_x()
        if x2 is not None:
            p.setPen(stage2)
            p.drawLine(QPointF(x2, area.top()), QPointF(x2, area.bottom()))
        n_nets = max((len(r) for r in self.losses), default=0)
        for i in range(n_nets):
            pts = [(e, r[i]) for e, r in zip(self.epochs, self.losses, strict=True) if i < len(r)]
            self._polyline(p, area, xs, ys, pts, QPen(QColor(NET_COLORS[i % 3]), 1.4))
        dashed = QPen(QColor(SELECTED_COLOR), 1.2, Qt.PenStyle.DashLine)
        self._polyline(p, area, xs, (0, 1.05), list(zip(self.epochs, self.selected, strict=True)), dashed)
        x = area.right() - 4
        legend = [(f"net {i + 1}", QPen(QColor(NET_COLORS[i % 3]), 2)) for i in range(n_nets)]
        legend += [("given labels", dashed)] if n_nets else []
        legend += [("stage 2", stage2)] if x2 is not None else []
        for label, pen in reversed(legend):  # top right
            x -= fm.horizontalAdvance(label) + 16
            p.setPen(pen)
            p.drawLine(QPointF(x, area.top() + 6), QPointF(x + 10, area.top() + 6))
            p.setPen(TEXT)
            p.drawText(QPointF(x + 13, area.top() + 6 + fm.ascent() / 2 - 1), label)
        p.end()

    def _polyline(self, p: QPainter, area: QRectF, xs, ys, pts: list[tuple[float, float]], pen: QPen) -> None:
        pts = [(x, y) for x, y in pts if math.isfinite(y)]
        if not pts:
            return
        p.setPen(pen)
        if len(pts) == 1:
            x, y = pts[0]
            p.drawEllipse(QPointF(self._x(x, xs, area), self._y(y, ys, area)), 1.5, 1.5)
            return
        path = QPainterPath(QPointF(self._x(pts[0][0], xs, area), self._y(pts[0][1], ys, area)))
        for x, y in pts[1:]:
            path.lineTo(self._x(x, xs, area), self._y(y, ys, area))
        p.drawPath(path)


class ScoreHistogram(_Plot):
    """Histogram of the suspicion scores (20 bins); a solid marker for the image shown and a dashed line for
    the score filter."""

    def __init__(self, marker_color: str = "#ff3b30") -> None:
        super().__init__(110)
        self.counts = np.zeros(0, int)
        self.hi = 1.0
        self.current: float | None = None
        self.cutoff: float | None = None
        self._marker = QColor(marker_color)

    def set_scores(self, scores: list[float]) -> None:
        self.hi = max(max(scores, default=0.0), 1e-6)
        self.counts = np.histogram(scores, bins=20, range=(0, self.hi))[0] if scores else np.zeros(0, int)
        self.update()

    def mark(self, score: float | None, cutoff: float | None = None) -> None:
        self.current, self.cutoff = score, (cutoff or None)
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        area = self._area()
        xs = (0.0, self.hi * 1.02)
        top = max(int(self.counts.max()) if self.counts.size else 1, 1)
        ys = (0.0, top * 1.05)
        yticks = [t for t in nice_ticks(0, top, 2) if t == int(t)]
        self._frame(p, area, xs, ys, nice_ticks(0, self.hi, 4), yticks, "suspicion score")
        width = self.hi / max(len(self.counts), 1)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("#5b8fd9"))
        for i, c in enumerate(self.counts):
            if c:
                x0, x1 = self._x(i * width, xs, area), self._x((i + 1) * width, xs, area)
                y = self._y(float(c), ys, area)
                p.drawRect(QRectF(x0 + 0.5, y, max(x1 - x0 - 1, 1), area.bottom() - y))
        for value, pen in ((self.cutoff, QPen(TEXT, 1, Qt.PenStyle.DashLine)), (self.current, QPen(self._marker, 2))):
            if value is not None and math.isfinite(value):
                x = self._x(value, xs, area)
                p.setPen(pen)
                p.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        p.end()
