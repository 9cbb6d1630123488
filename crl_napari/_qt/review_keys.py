"""The review's keyboard: one key per decision, bound on the viewer while the Review widget is open, and the
same keys while its table has the focus (else the table's type-ahead search would eat the letters).

Checked against napari's default keymap (``napari.utils.shortcuts.default_shortcuts``): A, D and S are bound only
by Points/Shapes layers (never active during a review), K, N, Shift-N, U, Q, H, J and G by nothing. X is the Labels
layer's "swap labels" key (active while drawing), so excluding a radiograph is Shift-X.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, Qt

__all__ = ["KEYS", "KEY_GROUPS", "bind_keys", "unbind_keys", "TableKeys", "describe_keys"]

#: the keys by what they do: group -> {key: (method of the widget, description)}
KEY_GROUPS = {
    "decide": {
        "A": ("accept", "accept the correction"),
        "K": ("keep", "keep the original mask"),
        "Q": ("flag", "flag for a second opinion"),
        "Shift-X": ("exclude", "exclude the radiograph from the export"),
        "U": ("undo", "undo the last decision (or batch)"),
    },
    "draw": {"D": ("start_edit", "edit (draw) the mask"), "S": ("save_edit", "save the edit")},
    "move": {"N": ("next", "next image"), "Shift-N": ("previous", "previous image")},
    "look": {
        "H": ("toggle_uncertainty", "show / hide where the nets disagree (uncertainty map)"),
        "J": ("flip_masks", "flip between the original and the corrected mask"),
        "G": ("zoom_to_disagreement", "zoom to where the original and the corrected mask differ"),
    },
}
#: key -> (method of the widget, description), every group in one table
KEYS = {key: entry for group in KEY_GROUPS.values() for key, entry in group.items()}


def _handler(widget_ref: Callable, method: str, doc: str) -> Callable:
    """A viewer key binding calling ``widget.<method>()`` while the widget lives (napari wants a named
    function: its shortcut list shows ``__name__`` and ``__doc__``)."""

    def handler(_viewer=None) -> None:
        widget = widget_ref()
        if widget is None or widget.closed:
            return
        try:
            getattr(widget, method)()
        except RuntimeError:  # the Qt side was deleted
            pass

    handler.__name__ = f"crl_review_{method}"
    handler.__qualname__ = handler.__name__
    handler.__doc__ = f"crl-napari review: {doc}"
    handler._crl_review = True
    return handler


def bind_keys(viewer, widget) -> dict[str, object]:
    """Bind KEYS on ``viewer`` to ``widget``; returns what they replaced (for unbind_keys)."""
    ref = weakref.ref(widget)
    return {key: viewer.bind_key(key, _handler(ref, method, doc), overwrite=True)
            for key, (method, doc) in KEYS.items()}


def unbind_keys(viewer_ref: Callable, previous: dict, *_args) -> None:
    """Give the viewer its keys back (only those still bound by us)."""
    from napari.utils.key_bindings import coerce_keybinding

    viewer = viewer_ref()
    if viewer is None:
        return
    for key in KEYS:
        bound = viewer.keymap.get(coerce_keybinding(key))
        if getattr(bound, "_crl_review", False):
            viewer.bind_key(key, previous.get(key), overwrite=True)


class TableKeys(QObject):
    """The review keys while the table has the keyboard focus (the viewer's bindings do not see them)."""

    def __init__(self, widget) -> None:
        super().__init__(widget)
        self._widget = weakref.ref(widget)
        self._keys = {}
        for key, (method, _doc) in KEYS.items():
            shift = key.startswith("Shift-")
            letter = key.split("-")[-1]
            self._keys[(getattr(Qt.Key, f"Key_{letter}"), shift)] = method

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.KeyPress:
            return False
        mods = event.modifiers()
        if mods & ~(Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.KeypadModifier):
            return False  # Ctrl/Alt/Meta combinations stay with Qt
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        method = self._keys.get((Qt.Key(event.key()), shift))
        widget = self._widget()
        if method is None or widget is None or widget.closed:
            return False
        getattr(widget, method)()
        return True


def describe_keys() -> str:
    """The review keys as text, group by group (for help and the docs)."""
    return "\n".join(f"{group}:\n" + "\n".join(f"  {k:8s} {doc}" for k, (_m, doc) in keys.items())
                     for group, keys in KEY_GROUPS.items())
