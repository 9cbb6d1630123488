"""Glue shared by the widgets: messages, the background worker, and the run the widgets of one viewer share.

The engine does the work; this module only moves its results to the screen. Errors the user can fix (a bad
folder, a run that is not scored yet, an export into the data) become one-line napari notifications; anything
else is a bug and goes to napari's error notification with its traceback.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget
from superqt.utils import FunctionWorker, GeneratorWorker

from .. import user_errors

log = logging.getLogger(__name__)


class _VerticalScroll(QScrollArea):
    """Scrolls vertically only; as wide as its content needs (measured when asked: styles change it)."""

    def minimumSizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is not None:
            hint.setWidth(content.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width())
        return hint

    _content_width = -1  # the content's minimum width the dock was last told of

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        # the content's layout changed (a run opened, a row of buttons grew) and its minimum width may have too:
        # the dock around this area keeps the old one until told, and the content's right side was cut off. Told
        # only when that width changed: every request laid out napari's whole window and composed it once more
        # (a second composition on each review row switch, whose labels change their text; ui_latency)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            width = obj.minimumSizeHint().width()
            if width != self._content_width:
                self._content_width = width
                self.updateGeometry()
        return super().eventFilter(obj, event)


def scroll_area(content: QWidget, min_height: int = 0) -> QScrollArea:
    """``content`` in a frameless vertical scroll area, so a dock may be shorter than the content: our docks
    stacked on napari's right otherwise make its window taller than a laptop screen. It keeps the content's
    minimum width (nothing is cut off at the side)."""
    area = _VerticalScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(content)
    area.setMinimumHeight(min_height)
    return area


# ------------------------------------------------------------------------------- docks and the view


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The dock widget holding ``widget`` (None when it is not docked)."""
    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def tabify_beside(beside: QWidget, widget: QWidget) -> bool:
    """Put ``widget``'s dock in a tab of ``beside``'s dock and raise it; False when either is not docked in
    the same main window. Two tall panels stacked on napari's right squash each other: the lower one's table
    ended below a laptop's screen."""
    first, second = dock_of(beside), dock_of(widget)
    window = first.parentWidget() if first is not None else None
    if second is None or second is first or not isinstance(window, QMainWindow) or second.parentWidget() is not window:
        return False
    if second not in window.tabifiedDockWidgets(first):
        window.tabifyDockWidget(first, second)
    second.show()
    second.raise_()
    return True


def _plane_extent(layer) -> np.ndarray:
    """The layer's extent in world coordinates over its last two axes (the image plane)."""
    return np.asarray(layer.extent.world, dtype=float)[:, -2:]


def focus_on(viewer, layer, own: list | tuple = ()) -> list:
    """Show ``layer``'s image plane alone and fit the view to it: every visible layer of another size is
    hidden (never removed: the user's layers stay in the layer list), and, when ``own`` names the layers that
    belong with ``layer`` (the review's), every other one too (a radiograph at its own size may share the plane
    of the user's layers). Then the camera fits ``layer``. Returns the layers it hid."""
    # docks just added, tabified or grown: lay them out first, so the fit is for the canvas they leave
    QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
    plane = _plane_extent(layer)
    hidden = []
    for other in viewer.layers:
        if other is layer or other in own or not other.visible:
            continue
        if own or not np.allclose(_plane_extent(other), plane):
            other.visible = False
            hidden.append(other)
    viewer.reset_view(layers=[layer])
    # on a busy machine the docks can still be resized after this call (a later event-loop pass): fit again once
    # they have settled, so the image is never left larger than the canvas it ends up with
    QTimer.singleShot(REFIT_MS, lambda: _refit(viewer, layer))
    return hidden


REFIT_MS = 250


def _refit(viewer, layer) -> None:
    try:
        if layer in viewer.layers and layer.visible:
            viewer.reset_view(layers=[layer])
    except RuntimeError:  # the viewer was closed meanwhile
        pass


def is_user_error(exc: BaseException) -> bool:
    """A message for the person at the viewer (user_errors.INTERACTIVE_ERRORS), not a bug's traceback."""
    return user_errors.is_user_error(exc, interactive=True)


def error_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def report_error(exc: BaseException, context: str = "") -> str:
    """Show ``exc`` to the user and return the text shown.

    User mistakes: a plain notification with the engine's message (no traceback). Anything else: logged and
    handed to napari's error notification, which offers the traceback for a bug report.
    """
    msg = error_message(exc)
    text = f"{context}: {msg}" if context else msg
    if is_user_error(exc):
        show_error(text)
    else:
        log.error("crl-napari: unexpected error%s", f" ({context})" if context else "", exc_info=exc)
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)
    return text


def info(text: str) -> None:
    show_info(text)


def warn(text: str) -> None:
    show_warning(text)


# ------------------------------------------------------------------------------------------- workers


class _Carried(Exception):
    """Carries a RuntimeError out of a generator worker. superqt's GeneratorWorker takes a RuntimeError raised
    by the generator for "the worker was deleted" and drops it (a warning; neither ``errored`` nor
    ``finished``), so a TrainingError (out of memory, NaN loss) would leave a widget busy forever."""

    def __init__(self, exc: RuntimeError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _start(worker_class: type, func: Callable[..., Any], args: tuple, kwargs: dict,
           **slots: Callable[..., None]) -> Any:
    """Start ``func(*args, **kwargs)`` in a superqt worker of ``worker_class`` with ``slots`` connected to its
    signals by name (``yielded=...``). superqt's worker class is used (napari's relays every error as a
    traceback notification); errors go to the ``errored`` slot and are never re-raised in the GUI thread."""
    worker = create_worker(func, *args, _worker_class=worker_class, _ignore_errors=True, **kwargs)
    for signal, slot in slots.items():
        getattr(worker, signal).connect(slot)
    worker.start()
    return worker


def start_generator(
    gen_func: Callable[..., Iterator],
    *args: Any,
    on_yield: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    on_done: Callable[[], None],
    **kwargs: Any,
) -> GeneratorWorker:
    """Run ``gen_func(*args, **kwargs)`` in a napari thread worker; every yielded value goes to ``on_yield``
    in the GUI thread. ``worker.quit()`` aborts between two yields. ``on_done`` runs last, whatever happened."""
    def guarded(*a: Any, **kw: Any) -> Iterator:
        try:
            yield from gen_func(*a, **kw)
        except RuntimeError as exc:
            raise _Carried(exc) from None

    return _start(GeneratorWorker, guarded, args, kwargs, yielded=on_yield, finished=on_done,
                  errored=lambda exc: on_error(exc.exc if isinstance(exc, _Carried) else exc))


def start_function(func: Callable[..., Any], *args: Any, on_return: Callable[[Any], None],
                   on_error: Callable[[BaseException], None], on_done: Callable[[], None],
                   **kwargs: Any) -> FunctionWorker:
    """Run ``func`` in a napari thread worker; its result goes to ``on_return`` in the GUI thread."""
    return _start(FunctionWorker, func, args, kwargs, returned=on_return, errored=on_error, finished=on_done)


class StopFlag:
    """The ``should_stop`` the engine polls between training steps (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


# -------------------------------------------------------------------------- the run a viewer works on


class RunLink:
    """The run folder the crl-napari widgets of one viewer share: the train widget announces the run it
    finished, the review widget the run it opened; the export widget follows. psygnal holds its listeners
    weakly, so a closed widget is never kept alive by this link."""

    changed = Signal(str)
    #: the review opened a run, or chose again what the export gives images nobody reviews: (path, that choice,
    #: the run's recommended threshold from its current scores); every export form on that run follows
    reviewed = Signal(str, str, float)

    def __init__(self) -> None:
        self.path: str | None = None
        self._review = None  # weakref to the open review widget

    def set(self, path: str | Path) -> None:
        self.path = str(path)
        self.changed.emit(self.path)

    @property
    def review_widget(self):
        """The review widget open in this viewer (None when there is none or it was closed)."""
        widget = self._review() if self._review is not None else None
        if widget is not None:
            try:
                widget.isVisible()  # raises once Qt deleted it
            except RuntimeError:
                return None
        return widget

    @review_widget.setter
    def review_widget(self, widget) -> None:
        self._review = weakref.ref(widget) if widget is not None else None


_LINKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_link(viewer) -> RunLink:
    """The RunLink of ``viewer`` (created on first use, dropped with the viewer). napari hands each plugin
    widget its own proxy of the viewer; the link belongs to the viewer behind them."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    link = _LINKS.get(viewer)
    if link is None:
        link = _LINKS[viewer] = RunLink()
    return link
