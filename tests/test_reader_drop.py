"""Files and folders dropped on a napari viewer that already holds a layer, through napari's own drop path
(QtViewer.dropEvent, no plugin named): a plain PNG goes to napari's builtin reader with no "Choose reader"
dialog; a run folder or a data folder opens as this plugin's layers.

What a user meets with folders, and why no manifest can change it (docs/internals.md, "opening folders"): npe2
offers every reader that accepts directories for every folder, whatever its filename patterns, and napari's
builtin reader accepts directories, so a dropped folder always brings up napari's "Choose reader" dialog
(napari builtins and this plugin, ours preselected because the names are listed sorted); the tests press OK on
it as a person would. ``viewer.open(folder)`` in a script uses napari's builtin reader unless ``plugin=`` says
otherwise (its default is ``plugin="napari"``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from crl_napari import pipeline  # noqa: E402
from crl_napari.cascade import TrainConfig  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = pytest.mark.gui
OURS = "CRL lung mask cleaning"  # the manifest's display_name, as the dialog lists it


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A data folder of 10 phantoms and a tiny trained, scored run on it."""
    root = tmp_path_factory.mktemp("drop")
    data = write_sample_set(root / "set", n=10, size=32, noise_ratio=0.5, seed=5)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(strategy="crl", epochs=2, batch_size=4, width=4, depth=2, augment=False, device="cpu")
        for _ in pipeline.train_run(data, root / "run", config, size=32):
            pass
    finally:
        torch.set_num_threads(before)
    return data, root / "run"


class DialogWatcher:
    """Records every modal dialog napari shows while a drop is handled, and answers it: OK with the reader
    that the dialog preselected (what a person pressing Enter gets), or Cancel."""

    def __init__(self, accept: bool = True):
        from qtpy.QtCore import QTimer

        self.seen: list[dict] = []
        self.accept = accept
        self.timer = QTimer()
        self.timer.timeout.connect(self._answer)
        self.timer.start(50)

    def _answer(self) -> None:
        from qtpy.QtWidgets import QApplication, QRadioButton

        dialog = QApplication.activeModalWidget()
        if dialog is None:
            return
        from qtpy.QtWidgets import QCheckBox

        buttons = dialog.findChildren(QRadioButton)
        self.seen.append({"title": dialog.windowTitle(), "readers": [b.text() for b in buttons],
                          "checked": [b.text() for b in buttons if b.isChecked()],
                          "remember": [b.text() for b in dialog.findChildren(QCheckBox)]})
        (dialog.accept if self.accept else dialog.reject)()

    def stop(self) -> None:
        self.timer.stop()


def _drop(viewer, path) -> None:
    """A drop of one local path on the canvas, as Qt delivers it (no modifier keys)."""
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    viewer.window._qt_viewer.dropEvent(event)


def _viewer_with_a_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20), np.float32), name="already here")
    return viewer


def test_a_plain_png_opens_with_napari_and_no_dialog(make_napari_viewer, qtbot, tmp_path):
    png = tmp_path / "chest.png"
    iio.imwrite(png, (np.arange(24 * 24).reshape(24, 24) % 256).astype(np.uint8))
    viewer = _viewer_with_a_layer(make_napari_viewer)
    watcher = DialogWatcher(accept=False)
    try:
        _drop(viewer, png)
        qtbot.wait(200)
    finally:
        watcher.stop()
    assert watcher.seen == []
    assert [layer.name for layer in viewer.layers] == ["already here", "chest"]
    assert viewer.layers["chest"].data.shape == (24, 24)
    viewer.open(str(png))  # the scripting path (napari's builtin reader by default) agrees
    assert len(viewer.layers) == 3


def _drop_and_wait(viewer, qtbot, folder, n_layers: int) -> list[dict]:
    """Drop ``folder`` on the canvas, answer napari's dialog as a person pressing OK would, wait until the
    viewer holds ``n_layers`` layers; the dialogs seen."""
    watcher = DialogWatcher()
    try:
        _drop(viewer, folder)
        qtbot.waitUntil(lambda: len(viewer.layers) == n_layers, timeout=20_000)
    finally:
        watcher.stop()
    return watcher.seen


def test_a_dropped_run_folder_opens_as_this_plugins_layers(make_napari_viewer, qtbot, folders):
    _, run_dir = folders
    viewer = _viewer_with_a_layer(make_napari_viewer)
    (dialog,) = _drop_and_wait(viewer, qtbot, run_dir, n_layers=4)
    # the two readers that accept folders; ours first (sorted by name) and so preselected
    assert dialog["title"] == "Choose reader" and dialog["readers"] == [OURS, "napari builtins"]
    assert dialog["checked"] == [OURS]
    # napari's own way to skip the question next time, for this one folder (its path is the preference's key)
    assert dialog["remember"] == [f"Remember this choice for folders labeled as {run_dir.resolve()}/."]
    names = [layer.name for layer in viewer.layers]
    assert names == ["already here", "run images", "run original masks", "run corrected masks"]
    run = RunFolder(run_dir)
    ids = [c["id"] for c in run.cases()]
    assert viewer.layers["run images"].data.shape == (len(ids), 32, 32)
    assert viewer.layers["run images"].metadata["crl_ids"] == ids
    np.testing.assert_array_equal(viewer.layers["run original masks"].data[1] > 0, run.given(ids[1]))


def test_a_dropped_data_folder_opens_as_stacks(make_napari_viewer, qtbot, folders):
    data, _ = folders
    viewer = _viewer_with_a_layer(make_napari_viewer)
    seen = _drop_and_wait(viewer, qtbot, data, n_layers=3)
    assert len(seen) == 1 and seen[0]["checked"] == [OURS]
    image, masks = viewer.layers["set images"], viewer.layers["set masks"]
    assert image.data.shape == masks.data.shape == (10, 32, 32)
    assert image.metadata["crl_ids"] == [f"phantom_{i:03d}" for i in range(10)]
    np.testing.assert_array_equal(masks.data[0] > 0, iio.imread(data / "masks" / "phantom_000.png") > 0)


def test_napari_offers_this_reader_for_folders_only(folders, tmp_path):
    """What the manifest claims (npe2's pattern matching, before any reader runs): folders, never files."""
    from napari.plugins import _npe2

    data, run_dir = folders
    png = tmp_path / "x.png"
    iio.imwrite(png, np.zeros((8, 8), np.uint8))
    for path in (png, data / "split.csv", run_dir / "cases.csv", run_dir / "config.json"):
        assert "crl-napari" not in _npe2.get_readers(str(path)), path
    for path in (data, run_dir):
        assert "crl-napari" in _npe2.get_readers(str(path))


def test_a_script_names_the_plugin_to_open_a_folder(make_napari_viewer, folders):
    """``viewer.open`` defaults to napari's builtin reader (plugin="napari"), which reads a run folder's files one
    by one and fails on cases.csv; with plugin=None napari refuses to choose between the two folder readers;
    plugin="crl-napari" opens it. The viewer's own layers are untouched by the failures."""
    from napari.errors import MultipleReaderError

    data, run_dir = folders
    viewer = _viewer_with_a_layer(make_napari_viewer)
    with pytest.raises(Exception, match="cases.csv"):
        viewer.open(str(run_dir))
    with pytest.raises(MultipleReaderError) as info:
        viewer.open(str(run_dir), plugin=None)
    assert sorted(info.value.available_plugins) == ["crl-napari", "napari"]
    assert [layer.name for layer in viewer.layers] == ["already here"]
    layers = viewer.open(str(run_dir), plugin="crl-napari")
    assert [layer.name for layer in layers] == ["run images", "run original masks", "run corrected masks"]
    assert [layer.name for layer in viewer.open(str(data), plugin="crl-napari")] == ["set images", "set masks"]
