"""The plugin as napari sees it: the npe2 manifest (packaged, valid, every command importable), the widgets
loaded through it, the sample data, the reader, and an engine that imports no GUI toolkit."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("npe2")

import numpy as np  # noqa: E402

from crl_napari.phantoms import write_sample_set  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDGETS = {"Train": "TrainWidget", "Review masks": "ReviewWidget", "Export cleaned dataset": "ExportWidget"}


def test_manifest_is_the_packaged_single_source_and_valid():
    import npe2

    (ep,) = [e for e in metadata.distribution("crl-napari").entry_points if e.group == "napari.manifest"]
    assert ep.value == "crl_napari._manifest:napari.yaml"
    pm = npe2.PluginManifest.from_distribution("crl-napari")  # validates the schema
    assert pm.name == "crl-napari"
    pm.validate_imports()  # every python_name resolves
    import crl_napari._manifest as packaged

    if (ROOT / "plugin_manifest" / "napari.yaml").is_file():  # a source checkout: no second copy anywhere
        assert Path(packaged.__file__).resolve().parent == (ROOT / "plugin_manifest").resolve()
        assert not (ROOT / "crl_napari" / "napari.yaml").exists()
    assert sorted(w.display_name for w in pm.contributions.widgets) == sorted(WIDGETS)
    assert [s.key for s in pm.contributions.sample_data] == ["chest_xray_phantoms"]
    (reader,) = pm.contributions.readers
    assert reader.accepts_directories and reader.filename_patterns == []  # folders only: files go to napari


@pytest.mark.gui
def test_widgets_load_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    for display_name, cls in WIDGETS.items():
        _, widget = viewer.window.add_plugin_dock_widget("crl-napari", display_name)
        assert type(widget).__name__ == cls


@pytest.mark.gui
def test_sample_data_opens(make_napari_viewer):
    import napari.layers

    viewer = make_napari_viewer()
    viewer.open_sample("crl-napari", "chest_xray_phantoms")
    kinds = [type(layer) for layer in viewer.layers]
    assert kinds.count(napari.layers.Image) == 1 and kinds.count(napari.layers.Labels) == 2
    image = next(la for la in viewer.layers if isinstance(la, napari.layers.Image))
    masks = [la for la in viewer.layers if isinstance(la, napari.layers.Labels)]
    assert all(m.data.shape == image.data.shape for m in masks)
    assert not np.array_equal(masks[0].data > 0, masks[1].data > 0)  # the given mask is a corrupted one


@pytest.mark.gui
def test_reader_opens_a_dataset_folder(make_napari_viewer, tmp_path):
    import napari.layers

    from crl_napari._qt.reader import get_reader

    data = write_sample_set(tmp_path / "set", n=6, size=64, noise_ratio=0.5, seed=4)
    assert get_reader(str(tmp_path)) is None  # not ours: napari asks other readers
    assert get_reader(str(data / "split.csv")) is None
    viewer = make_napari_viewer()
    viewer.open(str(data), plugin="crl-napari")
    image, masks = viewer.layers
    assert isinstance(image, napari.layers.Image) and isinstance(masks, napari.layers.Labels)
    assert image.data.shape == masks.data.shape == (6, 64, 64)
    ids = image.metadata["crl_ids"]
    assert ids == [f"phantom_{i:03d}" for i in range(6)]
    import imageio.v3 as iio

    np.testing.assert_array_equal(masks.data[2] > 0, iio.imread(data / "masks" / f"{ids[2]}.png") > 0)


def test_the_engine_imports_no_gui_toolkit():
    code = (
        "import importlib, pkgutil, sys, crl_napari\n"
        "for m in pkgutil.iter_modules(crl_napari.__path__):\n"
        "    if m.name not in ('_qt', '_manifest'):\n"
        "        importlib.import_module('crl_napari.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""
