"""A new user's first session, walked as a person would: File > Open Sample, Plugins > Train on the built-in
sample set, then "Open in review". The review has to land well in a viewer that already holds the (larger)
sample image: the Review panel in a tab beside Train with its table on screen, the sample layers hidden (not
removed), the view fitted to the review image, and the window still fitting a laptop screen."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

LAPTOP = (1366, 768 - 40)  # a 1366 x 768 screen less a taskbar
TINY = {"strategy": "crl", "epochs": 1, "batch_size": 8, "width": 4, "depth": 3, "lr": 0.05}
MIN_ROWS = 5  # table rows the reviewer sees at once
TIMEOUT_MS = 120_000


def _canvas_box(viewer, layer) -> tuple[np.ndarray, np.ndarray]:
    """``layer``'s image plane in canvas pixels ([[top, left], [bottom, right]]) and the canvas size (h, w)."""
    extent = np.asarray(layer.extent.world, dtype=float)[:, -2:]
    center = np.asarray(viewer.scene.camera.center, dtype=float)[-2:]
    size = np.asarray(viewer.canvas.size, dtype=float)
    return (extent - center) * viewer.scene.camera.zoom + size / 2, size


def test_open_sample_train_then_open_in_review_lands_well(make_napari_viewer, qtbot, tmp_path, errors):
    from qtpy.QtWidgets import QApplication, QTabBar

    from crl_napari._qt._common import dock_of, run_link

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    sample = viewer.open_sample("crl-napari", "chest_xray_phantoms")  # File > Open Sample
    assert len(sample) == 3 and all(layer in viewer.layers for layer in sample)
    train_dock, train = viewer.window.add_plugin_dock_widget("crl-napari", "Train")  # Plugins > Train

    train.sample_btn.native.click()  # "Use the built-in sample set"
    assert Path(str(train.data_dir.value)).is_dir()
    out = tmp_path / "run"
    train.out_dir.value = out
    train.size.value = 32
    train.device.value = "cpu"
    for name, value in TINY.items():
        train.cfg[name].value = value
    train.start_btn.native.click()
    qtbot.waitUntil(lambda: not train.running, timeout=TIMEOUT_MS)
    assert train.last_outcome == "finished", train.last_error
    assert train.review_btn.enabled

    train.review_btn.native.click()  # "Open in review"
    QApplication.processEvents()
    review = run_link(viewer).review_widget
    assert review is not None and review.session is not None and review.session.run_dir == out
    image = review.layer("image")
    # the radiograph at its own size (the sample set's 256 px), not the 32 px it was trained at (issue 11)
    assert image is not None and image.data.shape == (256, 256) and image.visible

    # the Review panel: a tab beside Train in the same dock area, raised; Train's tab is behind it
    review_dock = dock_of(review)
    assert review_dock is not None and review_dock is not train_dock
    assert window.dockWidgetArea(review_dock) == window.dockWidgetArea(train_dock)
    assert review_dock in window.tabifiedDockWidgets(train_dock)
    tabs = [bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count() >= 2
            and {bar.tabText(i) for i in range(bar.count())} >= {train_dock.windowTitle(), review_dock.windowTitle()}]
    assert len(tabs) == 1 and tabs[0].tabText(tabs[0].currentIndex()) == review_dock.windowTitle()
    assert review_dock.isVisible() and not review_dock.visibleRegion().isEmpty()
    assert train.native.visibleRegion().isEmpty()

    # its table is on screen, inside the window, with room for several rows
    table = review.table
    top_left = table.mapTo(window, table.rect().topLeft())
    bottom_right = table.mapTo(window, table.rect().bottomRight())
    assert window.rect().contains(top_left) and window.rect().contains(bottom_right), (top_left, bottom_right)
    seen = table.visibleRegion().boundingRect()
    row_h = table.verticalHeader().defaultSectionSize()
    assert seen.height() >= MIN_ROWS * row_h and table.model().rowCount() >= MIN_ROWS, (seen, row_h)

    # the sample layers are hidden, not removed; the review's own layers are shown
    assert all(layer in viewer.layers and not layer.visible for layer in sample)
    assert review.layer("original").visible and review.layer("corrected").visible

    # the camera fits the review image: all of it inside the canvas, filling most of it along one axis (once the
    # docks have settled: on a busy machine they may still be laid out after the click returns)
    def fitted() -> bool:
        box, canvas = _canvas_box(viewer, image)
        return bool((box[0] >= -0.5).all() and (box[1] <= canvas + 0.5).all())

    qtbot.waitUntil(fitted, timeout=3_000)
    box, canvas = _canvas_box(viewer, image)
    assert ((box[1] - box[0]) / canvas).max() >= 0.8, (box, canvas)

    # and the window still fits a laptop screen
    hint = window.minimumSizeHint()
    assert hint.width() <= LAPTOP[0] and hint.height() <= LAPTOP[1], hint
    assert window.width() <= LAPTOP[0] and window.height() <= LAPTOP[1], window.size()

    # "Open in review" again (the reviewer went back to Train): the same panel, no second one, still fitted
    train_dock.raise_()
    train.review_btn.native.click()
    QApplication.processEvents()
    assert run_link(viewer).review_widget is review and dock_of(review) is review_dock
    assert tabs[0].tabText(tabs[0].currentIndex()) == review_dock.windowTitle()
    assert all(layer in viewer.layers for layer in sample) and not errors


def test_a_dock_grows_with_its_scrolling_form(make_napari_viewer, qtbot):
    """A form that widens after it was docked (the Review panel once a run opens) widens its dock: before, the
    dock kept its first width and the form's right side, the table's columns with it, was cut off."""
    from qtpy.QtWidgets import QApplication, QPushButton, QVBoxLayout, QWidget

    from crl_napari._qt._common import dock_of, scroll_area

    viewer = make_napari_viewer(show=True)
    body = QWidget()
    QVBoxLayout(body).addWidget(QPushButton("narrow"))
    panel = QWidget()
    QVBoxLayout(panel).addWidget(scroll_area(body))
    viewer.window.add_dock_widget(panel, name="form", area="right")
    QApplication.processEvents()
    before = dock_of(panel).width()
    wide = QPushButton("wider than the dock was")
    wide.setMinimumWidth(before + 120)
    body.layout().addWidget(wide)
    window = viewer.window._qt_window

    def fits() -> bool:
        return (dock_of(panel).width() > before
                and wide.mapTo(window, wide.rect().topRight()).x() <= window.width())

    qtbot.waitUntil(fits, timeout=5_000)
    assert wide.visibleRegion().boundingRect().width() == wide.width()  # not cut off
