"""The training's progress bar, drawn in the dock that trains (the Train widget, the Review's next round).

Why not ``napari.utils.progress``: while one is open, napari's status bar plays an animated "in progress" GIF at
33 frames a second, and with an OpenGL canvas in the window every frame re-composes the whole window (software
OpenGL under Xvfb: 10-40 ms a frame on a busy machine). That animation was most of the viewer's stalls while it
trained: tick gaps over 50 ms, 33 in 20 s with it playing and none without, at load 8
(benchmarks/ui_latency.py). Why not a QProgressBar either: its setValue repaints at once (a window composition of
its own), not with the status line beside it. This bar is drawn by the style as a progress bar, never animates
(never indeterminate), and asks for a repaint only in :meth:`draw`: the steps are counted as they come and drawn
with the status line, at most once a second, in one composition of the window.
"""

from __future__ import annotations

from qtpy.QtWidgets import QSizePolicy, QStyle, QStyleOptionProgressBar, QStylePainter, QWidget

__all__ = ["StepBar"]


class StepBar(QWidget):
    """Counts steps (:meth:`step`) and shows them when :meth:`draw` is called; hidden until :meth:`begin`."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.total = 0
        self.redraws = 0  # repaints asked for (each one composes the viewer's window)
        self._shown = (0, 1, "")  # value, maximum, text on screen
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.fontMetrics().height() + 8)
        self.hide()

    def value(self) -> int:
        return self._shown[0]

    def maximum(self) -> int:
        return self._shown[1]

    def text(self) -> str:
        return self._shown[2]

    def begin(self, total: int = 0) -> None:
        """A training starts: no step yet; ``total`` may follow (:meth:`set_total`) once the engine knows it."""
        self.steps, self.total = 0, max(0, int(total))
        self.draw()
        self.show()

    def set_total(self, total: int) -> None:
        self.total = max(0, int(total))

    def step(self, n: int = 1) -> None:
        """``n`` steps done; on screen at the next :meth:`draw`."""
        self.steps += n

    def draw(self) -> None:
        """Show the steps counted so far: one repaint, in the event loop's next paint, if anything changed."""
        top = max(self.total, 1)
        shown = ((min(self.steps, top), top, f"{self.steps} / {self.total} steps") if self.total
                 else (0, top, "starting…"))
        if shown != self._shown:
            self._shown = shown
            self.redraws += 1
            self.update()

    def sizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().sizeHint()
        hint.setHeight(self.minimumHeight())
        return hint

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        option = QStyleOptionProgressBar()
        option.initFrom(self)
        option.minimum, (option.progress, option.maximum, option.text) = 0, self._shown
        option.textVisible = True
        painter = QStylePainter(self)
        painter.drawControl(QStyle.ControlElement.CE_ProgressBar, option)
