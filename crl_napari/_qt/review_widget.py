"""The Review widget: the worst masks first, the original and the corrected mask over the image, one key per
decision, every decision on disk the moment it is made.

All decision state lives in :class:`crl_napari.review.ReviewSession` (which writes ``RUN/review.json``
atomically on every change); this widget only shows it and forwards the reviewer's keys and clicks.

Keys (bound on the viewer while the widget is open; none clashes with napari's image or labels keys):

====  ==================================================================
A     accept the correction
K     keep the original mask
D     draw: edit a mask (seeded from the corrected or the original mask)
S     save the edit
N     next image (in the table's order and filter)
⇧N    previous image
U     undo the last decision
====  ==================================================================
"""

from __future__ import annotations

import getpass
import weakref
from functools import partial
from pathlib import Path

import napari
import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..case_cache import CaseCache
from ..review import ReviewSession
from ..runs import RunFolder
from ._common import report_error, run_link, scroll_area, warn
from ._plots import ScoreHistogram
from .export_widget import ExportWidget

__all__ = ["ReviewWidget", "KEYS", "LAYERS", "COLORS", "describe_keys"]

#: key -> (method, description). Checked against napari's defaults: A, K, D, S, N, Shift-N and U are
#: bound neither by the viewer nor by Image or Labels layers (Labels use E, P, F, L, Z, M, X, B, digits).
KEYS = {
    "A": ("accept", "accept the correction"),
    "K": ("keep", "keep the original mask"),
    "D": ("start_edit", "edit (draw) the mask"),
    "S": ("save_edit", "save the edit"),
    "N": ("next", "next image"),
    "Shift-N": ("previous", "previous image"),
    "U": ("undo", "undo the last decision"),
}
#: role -> layer name
LAYERS = {
    "image": "crl image",
    "probability": "crl probability",
    "uncertainty": "crl uncertainty",
    "original": "crl original mask",
    "corrected": "crl corrected mask",
    "edit": "crl edited mask",
}
COLORS = {"original": "#ff3b30", "corrected": "#00e5ff", "edit": "#ffd60a"}
_STATUS_COLORS = {"accepted": "#2e7d32", "kept": "#616161", "edited": "#b28704", "pending": None}
_COLUMNS = ("#", "ID", "Score", "Dice", "Decision")
THUMBNAIL_DELAY_MS = 150  # layer-list thumbnails are redrawn once the reviewer has paused this long


def _default_reviewer() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name in some containers
        return "unknown"


def _contour_width(shape: tuple[int, ...]) -> int:
    """Outline width in training pixels: thin on small images, visible on large ones."""
    return 1 if max(shape) < 192 else 2


def _label_cmap(color: str) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})


def _key_handler(widget_ref, method: str, doc: str):
    """A viewer key binding calling ``widget.<method>()`` while the widget lives (napari wants a named
    function: its shortcut list shows ``__name__`` and ``__doc__``)."""

    def handler(_viewer=None) -> None:
        widget = widget_ref()
        if widget is None or widget._closed:
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


class _TableKeys(QObject):
    """The review keys while the table has the keyboard focus (the viewer's bindings do not see them)."""

    def __init__(self, widget: ReviewWidget) -> None:
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
        if method is None or widget is None or widget._closed:
            return False
        getattr(widget, method)()
        return True


class ReviewWidget(QWidget):
    """Review the masks of a scored run, worst first. See the module docstring for the keys."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session: ReviewSession | None = None
        self.run: RunFolder | None = None
        self.current_id: str | None = None
        self._rows: dict[str, int] = {}
        self._layers: dict[str, object] = {}
        self._stale_maps: dict[str, tuple] = {}  # hidden map layers not yet showing the current image
        self._cases: CaseCache | None = None  # the open run's cases, read ahead in a background thread
        self._stale_thumbnails: set[str] = set()  # roles whose layer-list thumbnail still shows the last case
        self._thumbnail_timer = QTimer(self)
        self._thumbnail_timer.setSingleShot(True)
        self._thumbnail_timer.setInterval(THUMBNAIL_DELAY_MS)
        self._thumbnail_timer.timeout.connect(self._update_thumbnails)
        self._editing: str | None = None
        self._edit_seed: np.ndarray | None = None
        self._shown_once = False
        self._closed = False
        self._was_docked = False
        self._selecting = False
        self._previous_bindings: dict[str, object] = {}
        self.last_message = ""
        self._build()
        self._bind_keys()
        run_link(viewer).review_widget = self
        link = run_link(viewer)
        if link.path and (Path(link.path) / "scores.csv").is_file():
            self.run_edit.setText(link.path)
        link.changed.connect(self._on_run_finished)
        self.destroyed.connect(partial(ReviewWidget._unbind, weakref.ref(viewer), dict(self._previous_bindings)))
        self._update_enabled()

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        body = QWidget()  # all of it scrolls (see scroll_area)
        outer = QVBoxLayout(body)
        form = QFormLayout()
        row = QHBoxLayout()
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("a scored run folder")
        self.browse_btn = QPushButton("…")
        self.browse_btn.setFixedWidth(28)
        self.open_btn = QPushButton("Open")
        row.addWidget(self.run_edit)
        row.addWidget(self.browse_btn)
        row.addWidget(self.open_btn)
        form.addRow("Run folder", row)
        self.reviewer_edit = QLineEdit(_default_reviewer())
        self.reviewer_edit.setToolTip("recorded with every decision")
        form.addRow("Reviewer", self.reviewer_edit)
        frow = QHBoxLayout()
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(["all", "pending"])
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(3)
        self.min_score.setPrefix("score ≥ ")
        frow.addWidget(self.filter_combo)
        frow.addWidget(self.min_score)
        form.addRow("Show", frow)
        outer.addLayout(form)

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(180)
        outer.addWidget(self.table, stretch=1)

        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        # a fixed two-line height: a label that grows or shrinks with its text re-lays out (and repaints) the
        # whole dock on every row switch
        self.info_label.setFixedHeight(2 * self.info_label.fontMetrics().lineSpacing() + 10)
        self.info_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        outer.addWidget(self.info_label)
        self.counts_label = QLabel("")
        outer.addWidget(self.counts_label)

        grid = QGridLayout()
        self.accept_btn = QPushButton("Accept correction (A)")
        self.keep_btn = QPushButton("Keep original (K)")
        self.edit_btn = QPushButton("Edit (D)")
        self.save_btn = QPushButton("Save edit (S)")
        self.cancel_edit_btn = QPushButton("Cancel edit")
        self.seed_combo = QComboBox()
        self.seed_combo.addItems(["from corrected", "from original"])
        self.seed_combo.setToolTip("the mask a new edit starts from")
        self.prev_btn = QPushButton("Previous (⇧N)")
        self.next_btn = QPushButton("Next (N)")
        self.undo_btn = QPushButton("Undo (U)")
        self.advance_check = QCheckBox("next image after a decision")
        self.advance_check.setChecked(True)
        grid.addWidget(self.accept_btn, 0, 0)
        grid.addWidget(self.keep_btn, 0, 1)
        grid.addWidget(self.edit_btn, 1, 0)
        grid.addWidget(self.seed_combo, 1, 1)
        grid.addWidget(self.save_btn, 2, 0)
        grid.addWidget(self.cancel_edit_btn, 2, 1)
        grid.addWidget(self.prev_btn, 3, 0)
        grid.addWidget(self.next_btn, 3, 1)
        grid.addWidget(self.undo_btn, 4, 0)
        grid.addWidget(self.advance_check, 4, 1)
        outer.addLayout(grid)
        legend = QLabel(
            f'<span style="color:{COLORS["original"]}">■</span> original &nbsp; '
            f'<span style="color:{COLORS["corrected"]}">■</span> corrected &nbsp; '
            f'<span style="color:{COLORS["edit"]}">■</span> edited'
        )
        outer.addWidget(legend)

        self.histogram = ScoreHistogram(COLORS["original"])
        outer.addWidget(self.histogram)
        self.export_widget = ExportWidget(self.viewer)
        export_box = QCollapsible("Export")
        export_box.addWidget(self.export_widget.native)
        outer.addWidget(export_box)

        self.browse_btn.clicked.connect(self._browse)
        self.open_btn.clicked.connect(lambda: self.open_run(self.run_edit.text()))
        self.run_edit.returnPressed.connect(lambda: self.open_run(self.run_edit.text()))
        self.reviewer_edit.editingFinished.connect(self._on_reviewer)
        self.filter_combo.currentIndexChanged.connect(self.apply_filter)
        self.min_score.valueChanged.connect(self.apply_filter)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.accept_btn.clicked.connect(self.accept)
        self.keep_btn.clicked.connect(self.keep)
        self.edit_btn.clicked.connect(self.start_edit)
        self.save_btn.clicked.connect(self.save_edit)
        self.cancel_edit_btn.clicked.connect(self.cancel_edit)
        self.prev_btn.clicked.connect(self.previous)
        self.next_btn.clicked.connect(self.next)
        self.undo_btn.clicked.connect(self.undo)
        frame = QVBoxLayout(self)
        frame.setContentsMargins(0, 0, 0, 0)
        frame.addWidget(scroll_area(body))

    # ------------------------------------------------------------------------------------ key bindings
    def _bind_keys(self) -> None:
        # the same keys while the table has the focus (else its type-ahead search would eat the letters)
        self._table_keys = _TableKeys(self)
        self.table.installEventFilter(self._table_keys)
        ref = weakref.ref(self)
        for key, (method, doc) in KEYS.items():
            previous = self.viewer.bind_key(key, _key_handler(ref, method, doc), overwrite=True)
            self._previous_bindings[key] = previous

    @staticmethod
    def _unbind(viewer_ref, previous: dict, *_args) -> None:
        viewer = viewer_ref()
        if viewer is None:
            return
        for key in KEYS:
            bound = viewer.keymap.get(_coerce(key))
            if getattr(bound, "_crl_review", False):
                viewer.bind_key(key, previous.get(key), overwrite=True)

    def teardown(self) -> None:
        """Release the viewer's keys (also done when the widget is destroyed or taken out of its dock)."""
        if self._closed:
            return
        self._closed = True
        self._thumbnail_timer.stop()
        if self._cases is not None:
            self._cases.close()
        ReviewWidget._unbind(weakref.ref(self.viewer), self._previous_bindings)

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._was_docked = True
            elif self._was_docked:
                self.teardown()  # napari takes a closed dock's widget out with setParent(None)
        return super().event(ev)

    def closeEvent(self, ev) -> None:
        self.teardown()
        super().closeEvent(ev)

    # --------------------------------------------------------------------------------------- opening
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run folder", self.run_edit.text())
        if path:
            self.open_run(path)

    def _on_run_finished(self, path: str) -> None:
        """A run finished training in this viewer: offer it, and open it when nothing is open yet."""
        if self._closed:
            return
        if self.session is None and (Path(path) / "scores.csv").is_file():
            self.open_run(path)
        elif self.session is None or Path(path).resolve() != self.session.run_dir.resolve():
            self.run_edit.setText(path)

    def open_run(self, path: str | Path) -> bool:
        """Open a scored run folder and restore its decisions; False (and a notification) when it cannot."""
        text = str(path).strip()
        if not text:
            self._message(report_error(ValueError("choose a run folder first"), "review"))
            return False
        path = Path(text).expanduser()
        if self._editing is not None:
            self._finish_pending_edit()
        try:
            run = RunFolder(path)
            session = ReviewSession.open(path, reviewer=self._reviewer_name())
        except Exception as exc:
            self._message(report_error(exc, "review"))
            return False
        if self._cases is not None:
            self._cases.close()
        self.run, self.session = run, session
        self._cases = CaseCache(run, session.ids)
        self.current_id = None
        self.run_edit.setText(str(path))
        self._fill_table()
        self.histogram.set_scores([r["suspicion"] for r in session.rows])
        self._update_counts()
        self.apply_filter()
        first = session.next_pending() or (session.ids[0] if session.ids else None)
        if first is not None:
            self.select(first)
        link = run_link(self.viewer)
        if link.path is None or Path(link.path).resolve() != path.resolve():
            link.set(path)
        self._update_enabled()
        self._message(f"Opened {path.name}: {len(session.ids)} images, worst first")
        return True

    def _reviewer_name(self) -> str:
        return self.reviewer_edit.text().strip() or _default_reviewer()

    def _on_reviewer(self) -> None:
        name = self.reviewer_edit.text().strip()
        if not name:
            self.reviewer_edit.setText(self.session.reviewer if self.session else _default_reviewer())
            return
        if self.session is not None:
            self.session.reviewer = name

    # ----------------------------------------------------------------------------------------- table
    def _fill_table(self) -> None:
        s = self.session
        self._selecting = True
        self.table.setRowCount(0)
        self.table.setRowCount(len(s.ids))
        self._rows = {}
        for i, row in enumerate(s.rows):
            self._rows[row["id"]] = i
            dice = row.get("dice_given_corrected")
            cells = (str(row["rank"]), row["id"], f"{row['suspicion']:.3f}", "" if dice is None else f"{dice:.3f}")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col != 1:
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(i, col, item)
            self.table.setItem(i, 4, QTableWidgetItem(""))
            self._refresh_row(row["id"])
        self._selecting = False

    def _refresh_row(self, image_id: str) -> None:
        i = self._rows[image_id]
        status = self.session.status(image_id)
        d = self.session.decision(image_id)
        item = self.table.item(i, 4)
        item.setText(status if d is None else f"{status} · {d['reviewer']}")
        color = _STATUS_COLORS.get(status)
        item.setForeground(QBrush(QColor(color)) if color else QBrush())
        if d is not None:
            item.setToolTip(f"{status} by {d['reviewer']} at {d['time']}")

    def _update_counts(self) -> None:
        c = self.session.counts()
        self.counts_label.setText(
            f"Reviewed {c['reviewed']} / {c['total']}  ·  accepted {c['accepted']}  ·  kept {c['kept']}  ·  "
            f"edited {c['edited']}  ·  pending {c['pending']}"
        )

    def _is_visible_row(self, image_id: str) -> bool:
        row = self.session.row(image_id)
        if row["suspicion"] < self.min_score.value() - 1e-12:
            return False
        if self.filter_combo.currentText() == "pending" and self.session.status(image_id) != "pending":
            return False
        return True

    def apply_filter(self, *_args) -> None:
        """Hide the rows the filter excludes (the row on screen stays until you move on)."""
        if self.session is None:
            return
        for image_id, i in self._rows.items():
            self.table.setRowHidden(i, not (self._is_visible_row(image_id) or image_id == self.current_id))
        self.histogram.mark(self._current_score(), self.min_score.value())

    def visible_ids(self) -> list[str]:
        """The ids the table shows, in rank order."""
        if self.session is None:
            return []
        return [i for i in self.session.ids if not self.table.isRowHidden(self._rows[i])]

    def _current_score(self) -> float | None:
        if self.session is None or self.current_id is None:
            return None
        return self.session.row(self.current_id)["suspicion"]

    def _on_selection(self) -> None:
        if self._selecting or self.session is None:
            return
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        image_id = self.table.item(rows[0].row(), 1).text()
        if image_id != self.current_id:
            self.select(image_id)

    # ------------------------------------------------------------------------------------------- show
    def select(self, image_id: str) -> None:
        """Show ``image_id``: its row selected, the image and both masks in the viewer."""
        if self.session is None:
            return
        if self._editing is not None and self._editing != image_id:
            self._finish_pending_edit()
        previous = self.current_id
        self.current_id = image_id
        row = self._rows[image_id]
        self._selecting = True
        self.table.setRowHidden(row, False)
        self.table.selectRow(row)
        self.table.scrollToItem(self.table.item(row, 0))
        self._selecting = False
        if previous is not None and previous != image_id and previous in self._rows:
            self.table.setRowHidden(self._rows[previous], not self._is_visible_row(previous))
        try:
            self._show_layers(image_id)
        except Exception as exc:
            self._message(report_error(exc, f"showing {image_id}"))
        r = self.session.row(image_id)
        dice = r.get("dice_given_corrected")
        self.info_label.setText(
            f"<b>{image_id}</b> · rank {r['rank']} of {len(self.session.ids)} · score {r['suspicion']:.3f}"
            + ("" if dice is None else f" · Dice(original, corrected) {dice:.3f}")
            + f" · <i>{self.session.status(image_id)}</i>"
        )
        self.histogram.mark(r["suspicion"], self.min_score.value())
        self._update_enabled()

    def _layer(self, role: str, kind: str, data: np.ndarray, **kwargs):
        """The layer of ``role`` with new data (created again if the user deleted it)."""
        layer = self._layers.get(role)
        if layer is not None and layer in self.viewer.layers:
            old = layer.data
            if role != "edit" and isinstance(old, np.ndarray) and old.shape == data.shape and old.dtype == data.dtype:
                # same size as before (every image of a run is): copy into the layer's array and re-slice; a
                # new array makes napari recompute the viewer's dimensions for every layer, on each switch
                old[...] = data
                # same shape: the extent stands; the layer-list thumbnail follows once the reviewer pauses
                layer.refresh(extent=False, highlight=False, thumbnail=False)
                self._stale_thumbnails.add(role)
                self._thumbnail_timer.start()
            else:
                layer.data = np.array(data)  # a copy: later switches write into it, the source stays as read
            return layer
        name = LAYERS[role]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data = np.array(data)  # a copy, as above
        if kind == "image":
            layer = self.viewer.add_image(data, name=name, **kwargs)
        else:
            contour = kwargs.pop("contour", 0)
            layer = self.viewer.add_labels(data, name=name, colormap=_label_cmap(COLORS[role]), **kwargs)
            layer.contour = contour
        self._layers[role] = layer
        return layer

    def _show_layers(self, image_id: str) -> None:
        run = self.run
        image, given, corrected = self._cases.get(image_id)
        self._layer("image", "image", image, colormap="gray", contrast_limits=(0, 255))
        self._map_layer("probability", image_id, run.prob, colormap="inferno", opacity=0.5)
        self._map_layer("uncertainty", image_id, run.uncertainty, colormap="magma", opacity=0.6)
        line = _contour_width(given.shape)
        self._layer("original", "labels", given, contour=line, opacity=1.0)
        self._layer("corrected", "labels", corrected, contour=line, opacity=1.0)
        if self._editing == image_id:
            return
        edit_file = self.session.edit_path(image_id)
        if self.session.status(image_id) == "edited" and edit_file.is_file():
            from ..data import read_mask

            layer = self._layer("edit", "labels", read_mask(edit_file).astype(np.uint8), contour=line, opacity=1.0)
            layer.editable = False
        else:
            self._remove_layer("edit")
        if not self._shown_once:
            self._shown_once = True
            self.viewer.reset_view()
        self.viewer.layers.selection.active = self._layers["image"]

    def _update_thumbnails(self) -> None:
        """Bring the thumbnails in the layer list up to date (deferred: not part of a row switch)."""
        for role in sorted(self._stale_thumbnails):
            layer = self._layers.get(role)
            if layer is not None and layer in self.viewer.layers:
                layer.refresh(data_displayed=False, extent=False, highlight=False)
        self._stale_thumbnails.clear()

    def _map_layer(self, role: str, image_id: str, load, **kwargs) -> None:
        """The probability / uncertainty map (hidden by default). While hidden it is not reloaded on every row
        switch: it is brought up to date when the reviewer shows it, which keeps switching rows fast."""
        layer = self._layers.get(role)
        if layer is not None and layer in self.viewer.layers and not layer.visible:
            self._stale_maps[role] = (image_id, load)
            return
        self._stale_maps.pop(role, None)
        fresh = layer is None or layer not in self.viewer.layers
        layer = self._layer(role, "image", load(image_id), contrast_limits=(0, 1), blending="additive",
                            visible=False, **kwargs)
        if fresh:
            layer.events.visible.connect(lambda _event, role=role: self._refresh_map(role))

    def _refresh_map(self, role: str) -> None:
        layer = self._layers.get(role)
        if layer is not None and layer.visible and role in self._stale_maps:
            image_id, load = self._stale_maps.pop(role)
            layer.data = load(image_id)

    def _remove_layer(self, role: str) -> None:
        layer = self._layers.pop(role, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # -------------------------------------------------------------------------------------- decisions
    def _require(self) -> bool:
        if self.session is None or self.current_id is None:
            self._message("Open a run folder first")
            return False
        return True

    def accept(self) -> None:
        """Accept the corrected mask for the image shown."""
        self._decide("accept")

    def keep(self) -> None:
        """Keep the original mask for the image shown."""
        self._decide("keep")

    def _decide(self, what: str) -> None:
        if not self._require():
            return
        image_id = self.current_id
        if self._editing == image_id:
            self._end_edit(remove=True)
        try:
            getattr(self.session, what)(image_id)
        except Exception as exc:
            self._message(report_error(exc, f"{what} {image_id}"))
            return
        self._after_decision(image_id)

    def _after_decision(self, image_id: str, advance: bool = True, reshow: bool = True) -> None:
        self._refresh_row(image_id)
        self._update_counts()
        status = self.session.status(image_id)
        self._message(f"{image_id}: {status}")
        if not reshow:
            return
        if advance and self.advance_check.isChecked():
            nxt = self._neighbour(image_id, +1, pending_only=True)
            if nxt is not None:
                self.select(nxt)
                return
        self.select(image_id)

    def start_edit(self) -> None:
        """Edit the mask of the image shown in an editable labels layer (paint mode)."""
        if not self._require():
            return
        image_id = self.current_id
        if self._editing == image_id:
            return
        edit_file = self.session.edit_path(image_id)
        if self.session.status(image_id) == "edited" and edit_file.is_file():
            from ..data import read_mask

            seed = read_mask(edit_file)
        elif self.seed_combo.currentIndex() == 1:
            seed = self.run.given(image_id)
        else:
            seed = self.run.corrected(image_id)
        seed = seed.astype(np.uint8)
        layer = self._layer("edit", "labels", seed.copy(), contour=0, opacity=0.6)
        layer.contour = 0
        layer.editable = True
        self._editing, self._edit_seed = image_id, seed
        self.viewer.layers.selection.active = layer
        layer.selected_label = 1
        layer.brush_size = max(2, seed.shape[0] // 40)
        layer.mode = "paint"
        self._update_enabled()
        self._message(f"Editing {image_id}: paint (P) / erase (E) / fill (F), then S to save")

    def save_edit(self) -> None:
        """Store the edit of the image shown as its decision."""
        if not self._require():
            return
        if self._editing != self.current_id:
            self._message("Press D to start an edit first")
            return
        self._save_edit_of(self.current_id)

    def _save_edit_of(self, image_id: str, reshow: bool = True) -> bool:
        layer = self._layers.get("edit")
        try:
            self.session.edit(image_id, np.asarray(layer.data) > 0)
        except Exception as exc:
            self._message(report_error(exc, f"saving the edit of {image_id}"))
            return False
        self._end_edit(remove=not reshow)
        self._after_decision(image_id, reshow=reshow)
        return True

    def cancel_edit(self) -> None:
        """Drop the edit in progress (nothing is stored)."""
        if self._editing is not None:
            image_id = self._editing
            self._end_edit(remove=True)
            if image_id == self.current_id:
                self._show_layers(image_id)
            self._message(f"Edit of {image_id} cancelled")

    def _edit_modified(self) -> bool:
        layer = self._layers.get("edit")
        if layer is None or self._edit_seed is None or layer not in self.viewer.layers:
            return False
        return not np.array_equal(np.asarray(layer.data) > 0, self._edit_seed > 0)

    def _finish_pending_edit(self) -> None:
        """Leaving an image with an unsaved edit: a changed drawing is saved (nothing is lost), an
        unchanged one dropped."""
        image_id = self._editing
        if image_id is None:
            return
        if self._edit_modified():
            if self._save_edit_of(image_id, reshow=False):
                warn(f"crl-napari: the unsaved edit of {image_id} was saved")
                return
        self._end_edit(remove=True)

    def _end_edit(self, remove: bool) -> None:
        self._editing, self._edit_seed = None, None
        layer = self._layers.get("edit")
        if layer is not None and layer in self.viewer.layers:
            if remove:
                self._remove_layer("edit")
            else:
                layer.mode = "pan_zoom"
                layer.editable = False
                layer.contour = _contour_width(layer.data.shape)
        if "image" in self._layers and self._layers["image"] in self.viewer.layers:
            self.viewer.layers.selection.active = self._layers["image"]
        self._update_enabled()

    def undo(self) -> None:
        """Undo the last decision (also one made before the run was reopened) and show that image."""
        if self.session is None:
            self._message("Open a run folder first")
            return
        if self._editing is not None:
            if self._edit_modified():
                self._message("Save the edit (S) or cancel it before undoing a decision")
                return
            self._end_edit(remove=True)
        try:
            image_id = self.session.undo()
        except Exception as exc:
            self._message(report_error(exc, "undo"))
            return
        if image_id is None:
            self._message("Nothing to undo")
            return
        self._refresh_row(image_id)
        self._update_counts()
        self.select(image_id)
        self._message(f"Undone: {image_id} is {self.session.status(image_id)} again")

    # ------------------------------------------------------------------------------------ navigation
    def _neighbour(self, image_id: str, step: int, pending_only: bool = False) -> str | None:
        ids = self.session.ids
        i = ids.index(image_id)
        order = ids[i + 1:] + ids[:i] if step > 0 else list(reversed(ids[:i])) + list(reversed(ids[i + 1:]))
        for cand in order:
            if not self._is_visible_row(cand):
                continue
            if pending_only and self.session.status(cand) != "pending":
                continue
            return cand
        return None

    def next(self) -> None:
        """Show the next image of the table (wrapping around)."""
        if self._require():
            nxt = self._neighbour(self.current_id, +1)
            if nxt is not None:
                self.select(nxt)

    def previous(self) -> None:
        """Show the previous image of the table (wrapping around)."""
        if self._require():
            prev = self._neighbour(self.current_id, -1)
            if prev is not None:
                self.select(prev)

    # ------------------------------------------------------------------------------------------ misc
    def _update_enabled(self) -> None:
        has = self.session is not None and self.current_id is not None
        editing = has and self._editing == self.current_id
        for b in (self.accept_btn, self.keep_btn, self.prev_btn, self.next_btn, self.undo_btn):
            b.setEnabled(has)
        self.edit_btn.setEnabled(has and not editing)
        self.save_btn.setEnabled(editing)
        self.cancel_edit_btn.setEnabled(editing)

    def _message(self, text: str) -> None:
        self.last_message = text
        self.viewer.status = text

    def layer(self, role: str):
        """The layer of ``role`` (see LAYERS) or None."""
        layer = self._layers.get(role)
        return layer if layer is not None and layer in self.viewer.layers else None


def _coerce(key: str):
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)


def describe_keys() -> str:
    """The review keys as text (for help and the docs)."""
    return "\n".join(f"{k:8s} {doc}" for k, (_m, doc) in KEYS.items())

