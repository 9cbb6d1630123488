"""The training's progress bar, drawn in the dock that trains (the Train widget, the Review's next round).

Why not ``napari.utils.progress``: while one is open, napari's status bar plays an animated "in progress" GIF at
33 frames a second, and with an OpenGL canvas in the window every frame re-composes the whole window (software
OpenGL under Xvfb: 10-40 ms a frame on a busy machine). That animation was most of the viewer's stalls while it
trained: tick gaps over 50 ms, 33 in 20 s with it playing and none without, at load 8
(benchmarks/ui_latency.py). This bar never animates (never indeterminate) and repaints only when :meth:`draw` is
called: the steps are counted as they come and drawn with the status line, at most once a second.
"""

from __future__ import annotations

from qtpy.QtWidgets import QProgressBar

__all__ = ["StepBar"]


class StepBar(QProgressBar):
    """Counts steps (:meth:`step`) and shows them when :meth:`draw` is called; hidden until :meth:`begin`."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.total = 0
        self.setRange(0, 1)
        self.setValue(0)
        self.hide()

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
        """Show the steps counted so far (one repaint, only if something changed)."""
        top = max(self.total, 1)  # never 0: a (0, 0) range is Qt's busy animation
        if self.maximum() != top:
            self.setRange(0, top)
        text = f"{self.steps} / {self.total} steps" if self.total else "starting…"
        if self.format() != text:
            self.setFormat(text)
        value = min(self.steps, top) if self.total else 0
        if self.value() != value:
            self.setValue(value)
