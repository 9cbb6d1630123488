"""Issue 11: review and edit at the radiograph's own resolution, in a real napari viewer that already holds other
layers. The run's originals are 300 x 240 phantoms (non-square) trained at 32 px: every review layer must lie on
the original pixel grid, an edit is painted and saved at 300 x 240 and exported unchanged, the correction shown
is the one exported (``native_correction.corrected_mask``: the original mask's border moved as the nets agree,
smooth, not 9 x 9 blocks), and data that moved is found again once the reviewer points at it, for good."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from crl_napari import pipeline  # noqa: E402
from crl_napari.cascade import TrainConfig  # noqa: E402
from crl_napari.data import read_mask  # noqa: E402
from crl_napari.export import export, upsample_nearest  # noqa: E402
from crl_napari.native import native_mask  # noqa: E402
from crl_napari.native_correction import corrected_mask  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = pytest.mark.gui
H, W = 300, 240  # the originals: larger than the training size and not square
SIZE = 32


@pytest.fixture(scope="session")
def native_template(tmp_path_factory):
    """Phantoms written at 300 px and cut to 300 x 240, trained at 32 px (width 4), scored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("native-review")
        data = write_sample_set(root / "data", n=8, size=H, noise_ratio=0.5, seed=1)
        x0 = (H - W) // 2
        for sub in ("images", "masks", "clean_masks"):
            for p in (data / sub).glob("*.png"):
                iio.imwrite(p, iio.imread(p)[:, x0:x0 + W])
        # width 4 at 32 px: a few CPU seconds, enough to learn lung-like corrections (a quarter of the image)
        config = TrainConfig(strategy="crl", epochs=12, batch_size=2, width=4, depth=3, lr=0.05, augment=False,
                             device="cpu")
        for _ in pipeline.train_run(data, root / "run", config, size=SIZE):
            pass
    finally:
        torch.set_num_threads(before)
    return root / "run", data


@pytest.fixture
def native_run(native_template, tmp_path):
    return shutil.copytree(native_template[0], tmp_path / "run")


def _open(viewer, run_dir):
    """The Review widget opened on ``run_dir`` through its own controls (typed path, Open)."""
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
    widget.run_edit.setText(str(run_dir))
    widget.open_btn.click()
    assert widget.session is not None, widget.last_message
    return widget


def _originals(run, image_id):
    row = next(r for r in run.case_rows() if r.id == image_id)
    return iio.imread(row.image_path), read_mask(row.mask_path)


def _correction(run, image_id, original_mask=None):
    """What Review shows and the export writes at the original size: the ORIGINAL mask's border moved as the
    nets agree (the run keeps the nets' map beside the correction's), not the training-size correction resampled."""
    mask = _originals(run, image_id)[1] if original_mask is None else original_mask
    return corrected_mask(run, image_id, (H, W), mask)


def _world_box(layer) -> np.ndarray:
    """The outer edges of ``layer``'s pixels in world coordinates: [[top, left], [bottom, right]]."""
    h, w = layer.data.shape[-2:]
    return np.array([layer.data_to_world((-0.5, -0.5)), layer.data_to_world((h - 0.5, w - 0.5))])


def _open_in_a_busy_viewer(make_napari_viewer, native_run):
    """The run opened in Review in a viewer that already holds someone's image and labels: (viewer, widget, run,
    the image shown)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((50, 70)), name="someone's image")
    viewer.add_labels(np.zeros((50, 70), np.uint8), name="someone's labels")
    widget = _open(viewer, native_run)
    return viewer, widget, RunFolder(native_run), widget.current_id


def test_every_review_layer_lies_on_the_original_pixel_grid(make_napari_viewer, native_run):
    viewer, widget, run, image_id = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    image, mask = _originals(run, image_id)
    assert image.shape[:2] == (H, W)

    for role in ("image", "original", "corrected"):  # at the original size, scale 1
        layer = widget.layer(role)
        assert layer.data.shape == (H, W) and tuple(layer.scale) == (1, 1), role
    for role in ("probability", "uncertainty"):  # kept at training size, laid over the original grid
        layer = widget.layer(role)
        layer.visible = True
        assert layer.data.shape == (SIZE, SIZE)
        np.testing.assert_allclose(layer.scale, (H / SIZE, W / SIZE))
        np.testing.assert_allclose(_world_box(layer), [[-0.5, -0.5], [H - 0.5, W - 0.5]])
    np.testing.assert_array_equal(widget.layer("original").data > 0, mask)  # the original mask file itself
    correction = _correction(run, image_id)
    np.testing.assert_array_equal(widget.layer("corrected").data, correction)  # what the export writes
    # made from the original mask, not only resampled from the training size: they differ along the border
    assert run.nets_prob(image_id) is not None and (correction != native_mask(run.prob(image_id), (H, W))).any()
    # smooth, not the training pixels blown up: the nearest-neighbour blocks (9.4 x 7.5 px) are not what is shown
    blocks = upsample_nearest(run.corrected(image_id).astype(np.uint8), (H, W))
    assert (widget.layer("corrected").data != blocks).sum() > 50
    assert widget.run_row.originals_label.text() == "at their own size"

    # the status bar's coordinates are original pixels
    viewer.layers.selection.active = widget.layer("image")
    viewer.mouse_over_canvas = True
    viewer.cursor.position = (201.0, 117.0)
    viewer.update_status_from_cursor()
    assert viewer.status["coordinates"].startswith("[201, 117]"), viewer.status

    # the view fits the image: its whole extent in the canvas, filling it along one axis
    extent = np.asarray(widget.layer("image").extent.world, float)[:, -2:]
    centre = np.asarray(viewer.camera.center[-2:])
    canvas = np.asarray(viewer.canvas.size, float)
    box = (extent - centre) * viewer.camera.zoom + canvas / 2
    assert (box[0] >= -1).all() and (box[1] <= canvas + 1).all() and ((box[1] - box[0]) / canvas).max() > 0.9

    # another row: the same layers, reused
    widget.next()
    assert widget.current_id != image_id
    assert widget.layer("image").data.shape == (H, W)
    np.testing.assert_array_equal(widget.layer("corrected").data, _correction(run, widget.current_id))
    assert len(viewer.layers) == 2 + 5


def test_an_edit_is_painted_saved_and_exported_at_the_original_size(make_napari_viewer, qtbot, native_run,
                                                                     tmp_path):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((50, 70)), name="someone's image")
    widget = _open(viewer, native_run)
    run = RunFolder(native_run)
    accepted = widget.current_id
    widget.accept()
    if widget.current_id == accepted:  # a clean-looking image (under the recommended threshold) takes two presses
        assert widget.looks_clean(accepted)
        widget.accept()
    edited = widget.current_id
    assert edited != accepted
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_D)  # edit, seeded from the correction
    edit = widget.layer("edit")
    assert edit.data.shape == (H, W) and edit.mode == "paint" and tuple(edit.scale) == (1, 1)
    np.testing.assert_array_equal(edit.data, _correction(run, edited))
    assert 4 <= edit.brush_size <= 12  # about 1/50 of the image, in original pixels
    seed = np.asarray(edit.data).copy()
    # a stroke of the brush over background, in original pixels (where depends on what the nets made)
    r, c = next((r, c) for r in range(20, H - 20, 5) for c in range(20, W - 30, 5)
                if not seed[r - 15:r + 15, c - 15:c + 20].any())
    edit.paint((r, c), 1)
    edit.paint((r, c + 4), 1)
    drawn = np.asarray(edit.data).copy()
    assert drawn[r, c] == 1 and drawn[r, c + 2] == 1 and (drawn != seed).sum() > 10
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_S)
    saved = iio.imread(native_run / "edits" / f"{edited}.png")
    assert saved.shape == (H, W)
    np.testing.assert_array_equal(saved > 0, drawn > 0)

    report = export(native_run, tmp_path / "clean")
    assert report.counts["edited"] == 1 and report.counts["corrected"] == 1
    np.testing.assert_array_equal(iio.imread(tmp_path / "clean" / "masks" / f"{edited}.png") > 0, drawn > 0)
    exported = iio.imread(tmp_path / "clean" / "masks" / f"{accepted}.png") > 0
    np.testing.assert_array_equal(exported, _correction(run, accepted) > 0)

    # the session refuses a drawing of any other size, naming the sizes it takes
    with pytest.raises(ValueError, match=r"\(300, 240\) \(the original image's size\), or \(32, 32\)"):
        widget.session.edit(edited, np.zeros((100, 100), np.uint8))


def test_an_older_training_size_edit_still_shows_and_exports(make_napari_viewer, native_run, tmp_path):
    viewer = make_napari_viewer()
    widget = _open(viewer, native_run)
    image_id = widget.current_id
    small = np.zeros((SIZE, SIZE), np.uint8)
    small[8:20, 4:14] = 1
    widget.session.edit(image_id, small)  # as edits were saved before they were native
    widget.next()
    widget.select(image_id)
    layer = widget.layer("edit")
    np.testing.assert_allclose(_world_box(layer), [[-0.5, -0.5], [H - 0.5, W - 0.5]])
    export(native_run, tmp_path / "clean")
    np.testing.assert_array_equal(iio.imread(tmp_path / "clean" / "masks" / f"{image_id}.png") > 0,
                                  upsample_nearest(small, (H, W)) > 0)


def _move_data(run_dir, data, new_root):
    """The data folder moved to ``new_root``: the run still names its old place, which is gone."""
    shutil.copytree(data, new_root)
    old = run_dir.parent / "gone"
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["root"] = str(old)
    (run_dir / "config.json").write_text(json.dumps(config))
    with open(run_dir / "cases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["image_path"] = r["image_path"].replace(str(data), str(old))
        r["mask_path"] = r["mask_path"].replace(str(data), str(old))
    with open(run_dir / "cases.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_moved_data_falls_back_then_is_found_once_pointed_at(make_napari_viewer, native_template, native_run,
                                                             tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    new_root = tmp_path / "elsewhere" / "data"
    _move_data(native_run, native_template[1], new_root)
    viewer = make_napari_viewer()
    widget = _open(viewer, native_run)
    image = widget.layer("image")  # the training-size copy, laid over the original grid; masks still native
    assert image.data.shape == (SIZE, SIZE)
    np.testing.assert_allclose(_world_box(image), [[-0.5, -0.5], [H - 0.5, W - 0.5]])
    image_id = widget.current_id
    # without the original mask at hand, the training-size correction resampled (smooth all the same)
    np.testing.assert_array_equal(widget.layer("corrected").data, native_mask(RunFolder(native_run).prob(image_id),
                                                                              (H, W)))
    assert "training-size copy" in widget.last_message and "Data folder" in widget.last_message
    assert "not found" in widget.run_row.originals_label.text()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(new_root)))
    widget.data_btn.click()  # the reviewer points at the new place once
    assert widget.layer("image").data.shape == (H, W), widget.last_message
    assert widget.run_row.originals_label.text() == "at their own size"
    assert widget.current_id == image_id  # now from the original mask found there
    moved = read_mask(next((new_root / "masks").glob(f"{image_id}.*")))
    np.testing.assert_array_equal(widget.layer("corrected").data, _correction(RunFolder(native_run), image_id, moved))
    assert json.loads((native_run / "data_root.json").read_text())["root"] == str(new_root.resolve())
    viewer.window.remove_dock_widget("all")

    again = _open(make_napari_viewer(), native_run)  # remembered on reopening
    assert again.layer("image").data.shape == (H, W)
    report = export(native_run, tmp_path / "clean")  # and by the export, without being told
    assert report.n_images == 8

    # a folder that is not this run's data is refused, and nothing is remembered
    (tmp_path / "wrong" / "images").mkdir(parents=True)
    assert not again.set_data_root(tmp_path / "wrong")
    assert json.loads((native_run / "data_root.json").read_text())["root"] == str(new_root.resolve())


def test_edit_mode_keeps_the_legend_colours_and_a_short_status(make_napari_viewer, native_run):
    """Issue 13: while drawing, the filled edit lay over the outlines and tinted them (red looked orange, cyan
    green), and the long drawing hint in the status bar ran into napari's own key hints."""
    from crl_napari._qt.review_controls import EDIT_HINT
    from crl_napari._qt.review_layers import COLORS

    viewer = make_napari_viewer(show=True)
    widget = _open(viewer, native_run)
    widget.start_edit()
    layers = list(viewer.layers)
    edit, original, corrected = widget.layer("edit"), widget.layer("original"), widget.layer("corrected")
    assert layers.index(edit) < min(layers.index(original), layers.index(corrected))  # outlines drawn over it
    for layer, role in ((original, "original"), (corrected, "corrected"), (edit, "edit")):
        expected = np.array([int(COLORS[role][i:i + 2], 16) / 255 for i in (1, 3, 5)])
        np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0][:3], expected, atol=0.01)
    assert original.opacity == corrected.opacity == 1.0
    assert len(viewer.status) <= 40 and "S saves" in viewer.status  # a short line beside napari's hints
    assert widget.edit_hint.isVisibleTo(widget) and widget.edit_hint.text() == EDIT_HINT
    widget.save_edit()
    assert not widget.edit_hint.isVisibleTo(widget)
    widget.select(widget.model.ids[0])
    shown = widget.layer("edit")  # a saved drawing, shown as an outline, also under the others
    layers = list(viewer.layers)
    assert layers.index(shown) < min(layers.index(original), layers.index(corrected))


def test_large_images_carry_their_outlines_and_still_edit_and_save_masks(make_napari_viewer, native_run,
                                                                          monkeypatch):
    """From case_cache.OUTLINE_PX on (3000 px radiographs), napari's own contour took seconds per redraw, so the
    read-ahead codes each outline into its mask (2 = outline, 1 = inside): drawn in the legend's colour, the mask
    still ``> 0``, and an edit still seeded, painted and saved as a plain 0/1 mask. Lowered to 256 px here."""
    from crl_napari import case_cache
    from crl_napari._qt.review_layers import COLORS

    monkeypatch.setattr(case_cache, "OUTLINE_PX", 256)
    viewer = make_napari_viewer()
    widget = _open(viewer, native_run)
    run = RunFolder(native_run)
    image_id = widget.current_id
    correction = _correction(run, image_id)
    corrected = widget.layer("corrected")
    np.testing.assert_array_equal(corrected.data > 0, correction > 0)
    assert set(np.unique(corrected.data)) == {0, 1, 2} and corrected.contour == 0
    band = (corrected.data == 2) & (correction > 0)
    assert band.any() and not (corrected.data[1:-1, 1:-1] == 2)[correction[1:-1, 1:-1] == 0].any()
    colour = corrected.colormap.map(np.array([1, 2]))
    assert colour[0][3] == 0  # the inside is transparent, the outline in the legend's cyan
    np.testing.assert_allclose(colour[1][:3], [int(COLORS["corrected"][i:i + 2], 16) / 255 for i in (1, 3, 5)],
                               atol=0.01)
    widget.start_edit()
    np.testing.assert_array_equal(widget.layer("edit").data, correction)  # 0/1 to paint on
    widget.layer("edit").paint((150, 120), 0)
    drawing = np.asarray(widget.layer("edit").data).copy()
    widget.save_edit()
    np.testing.assert_array_equal(iio.imread(native_run / "edits" / f"{image_id}.png") > 0, drawing > 0)
    widget.select(image_id)
    shown = widget.layer("edit")  # the saved drawing: its outline coded too
    np.testing.assert_array_equal(shown.data > 0, drawing > 0)
    assert shown.contour == 0 and 2 in np.unique(shown.data)


def test_a_bad_data_folder_setting_is_one_line_naming_it(make_napari_viewer, native_run, errors):
    """RUN/data_root.json is read from disk like everything else: garbage there is one line naming the file, and
    the originals are still looked for where config.json says."""
    from crl_napari.runs import RunError

    (native_run / "data_root.json").write_text('{"root": 5}')
    with pytest.raises(RunError, match=r"data_root\.json: expected"):
        RunFolder(native_run).moved_root  # noqa: B018
    viewer = make_napari_viewer()
    widget = _open(viewer, native_run)
    assert any("data_root.json" in e for e in errors) and len(errors) == 1
    assert widget.layer("image").data.shape == (H, W)  # found where the run was trained


def test_a_large_case_read_in_the_helper_process_is_the_one_read_here(native_run, monkeypatch, tmp_path):
    """Large originals (case_cache.LARGE_PX, lowered to 256 here) are read in the helper process so the viewer's
    GIL stays free: the arrays and the note are those a read in this process gives, and a reader's error comes
    back as itself, naming the file. The helper never runs the viewer's own script again (spawn would)."""
    import sys
    import types

    from crl_napari import case_cache, case_process
    from crl_napari.runs import RunError

    script = tmp_path / "users_script.py"  # a napari script without a __name__ guard
    script.write_text(f"open({str(tmp_path / 'ran-again')!r}, 'w').close()\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    case_process.stop_helper()
    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    run = RunFolder(native_run)
    ids = [r.id for r in run.case_rows()]
    here = case_cache.NativeCases(run, helper=False)
    helped = case_cache.NativeCases(run)
    assert helped.helper and helped.large(ids[0]) and case_process.helper_running()
    for id_ in ids[:2]:
        for mine, theirs in zip(helped(id_), here(id_), strict=True):
            assert mine.dtype == theirs.dtype
            np.testing.assert_array_equal(mine, theirs)
        assert helped.note(id_) == "" and helped(id_).corrected.shape == (H, W)
    (native_run / "corrected" / f"{ids[2]}_prob16.png").unlink()
    (native_run / "corrected" / f"{ids[2]}_prob.png").unlink(missing_ok=True)
    with pytest.raises(RunError, match=ids[2]):
        helped(ids[2])
    assert not (tmp_path / "ran-again").exists() and main.__file__ == str(script)
    small = case_cache.NativeCases(run)  # originals under LARGE_PX: read here, no helper asked
    monkeypatch.setattr(case_cache, "LARGE_PX", 1024)
    assert not case_cache.NativeCases(run).helper and not small.large(ids[0])


def test_a_large_radiograph_shows_its_training_size_copy_first_and_is_edited_only_at_its_own_size(
        make_napari_viewer, qtbot, native_run, monkeypatch):
    """Issue 11: a 3000 px original takes seconds to read. The run's training-size copy is shown at once, laid
    over the original grid, and swapped for the original when the helper has read it; Edit stays off until then
    (a key press is refused too), so nothing is ever drawn on the stand-in."""
    from qtpy.QtCore import Qt

    from crl_napari import case_cache, case_process

    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    case_process.stop_helper()  # a cold helper (its start takes seconds): the first image is not read yet
    viewer, widget, run, image_id = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    for role in ("image", "original", "corrected"):  # the stand-in: training size, on the original grid
        layer = widget.layer(role)
        assert layer.data.shape == (SIZE, SIZE), role
        np.testing.assert_allclose(_world_box(layer), [[-0.5, -0.5], [H - 0.5, W - 0.5]])
    np.testing.assert_array_equal(widget.layer("image").data, run.image(image_id))
    assert widget.layers.standin == image_id and "loading" in widget.run_row.originals_label.text()
    assert not widget.edit_btn.isEnabled() and widget.accept_btn.isEnabled()
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_D)  # the edit key: refused, said why
    assert widget.layer("edit") is None and widget.model.editing is None
    assert "still loading" in widget.last_message

    qtbot.waitUntil(lambda: widget.layers.standin is None, timeout=60_000)  # the helper has read it: swapped
    for role in ("image", "original", "corrected"):
        layer = widget.layer(role)
        assert layer.data.shape == (H, W) and tuple(layer.scale) == (1, 1), role
    np.testing.assert_array_equal(widget.layer("corrected").data, _correction(run, image_id))
    assert widget.run_row.originals_label.text() == "at their own size" and widget.edit_btn.isEnabled()
    assert len(viewer.layers) == 2 + 5
    widget.edit_btn.click()
    assert widget.layer("edit").data.shape == (H, W) and widget.model.editing == image_id


def test_the_original_replaces_its_stand_in_one_layer_per_turn_of_the_event_loop(
        make_napari_viewer, qtbot, native_run, monkeypatch):
    """A new size re-slices every layer of the viewer on each of a layer's scale, translate and data: the swap of
    three layers held the viewer 170-220 ms at 3000 px (ui_latency). The image takes its original first, then each
    mask in a later turn; the stand-in stays named (Edit off) until the last one has."""
    from qtpy.QtCore import QTimer

    from crl_napari import case_cache, case_process

    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    case_process.stop_helper()  # a cold helper: the first image is shown by its stand-in
    viewer, widget, run, image_id = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    assert widget.layers.standin == image_id
    turned, seen = [], {}

    def on_image(_event) -> None:  # the image takes its original: has the loop turned before the next layer?
        if widget.layer("image").data.shape == (H, W) and not turned:
            turned.append(False)
            QTimer.singleShot(0, lambda: turned.__setitem__(0, True))

    def on_mask(role: str) -> None:
        if widget.layer(role).data.shape == (H, W):
            seen[role] = (turned[:1] == [True], widget.layers.standin, widget.layer("corrected").data.shape,
                          widget.edit_btn.isEnabled())
            turned[:] = [False]
            QTimer.singleShot(0, lambda: turned.__setitem__(0, True))

    widget.layer("image").events.data.connect(on_image)
    for role in ("original", "corrected"):
        widget.layer(role).events.data.connect(lambda _e, role=role: on_mask(role))
    qtbot.waitUntil(lambda: widget.layers.standin is None, timeout=60_000)
    # the original mask in a later turn than the image, while the corrected one is still the stand-in's and Edit off
    assert seen["original"] == (True, image_id, (SIZE, SIZE), False)
    assert seen["corrected"][:2] == (True, image_id)  # in a turn of its own, the stand-in named until it is in
    assert widget.edit_btn.isEnabled() and widget.run_row.originals_label.text() == "at their own size"
    np.testing.assert_array_equal(widget.layer("corrected").data, _correction(run, image_id))


def test_a_switch_to_a_stand_in_outlines_only_its_small_masks(make_napari_viewer, qtbot, native_run, monkeypatch):
    """napari outlines the data a Labels layer holds when its contour is set. Set before the stand-in's small masks
    came in, the contour was drawn on the large outline-coded masks still there: 0.4-0.6 s at 3000 px on every switch
    to an image not read yet and every re-ranking after a round (ui_latency's round trial). Only the stand-in's
    training-size masks are outlined; the large ones carry their outline in their data (OUTLINE_PX, lowered here)."""
    from napari.layers.labels import labels as napari_labels

    from crl_napari import case_cache, case_process

    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    monkeypatch.setattr(case_cache, "OUTLINE_PX", 256)
    case_process.stop_helper()
    viewer, widget, run, image_id = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    qtbot.waitUntil(lambda: widget.layers.standin is None, timeout=60_000)  # the original is in, outline coded
    assert all(widget.layer(r).data.shape == (H, W) and widget.layer(r).contour == 0 for r in ("original", "corrected"))
    real, outlined = napari_labels.get_contours, []

    def spy(labels, *args, **kwargs):
        outlined.append(labels.shape)
        return real(labels, *args, **kwargs)

    monkeypatch.setattr(napari_labels, "get_contours", spy)
    monkeypatch.setattr(widget.layers._cases, "request", lambda _id: None)  # the next image is not read yet
    other = next(i for i in widget.session.ids if i != image_id)
    widget.select(other)
    assert widget.layers.standin == other
    for role in ("original", "corrected"):
        layer = widget.layer(role)
        assert layer.data.shape == (SIZE, SIZE) and layer.contour > 0, role
    assert outlined and set(outlined) == {(SIZE, SIZE)}, outlined  # outlined, on the small masks only


def test_the_queue_opened_again_keeps_the_original_on_screen_until_its_case_is_read(make_napari_viewer, qtbot,
                                                                                     native_run, monkeypatch):
    """After a round the Review widget opens the run again to re-rank the queue (a new read-ahead). The image on
    screen keeps its original until its case is read again, instead of its training-size stand-in and back (napari
    re-slicing the whole viewer twice: 0.3-0.6 s at 3000 px, ui_latency's round trial); Edit is off meanwhile, and
    the case read anew (its new correction) then comes in."""
    from crl_napari import case_cache, case_process
    from crl_napari.case_cache import CaseCache

    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    case_process.stop_helper()
    viewer, widget, run, image_id = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    qtbot.waitUntil(lambda: widget.layers.standin is None, timeout=60_000)
    shapes = []  # every size a layer took from here on
    for role in ("image", "original", "corrected"):
        widget.layer(role).events.data.connect(lambda _e, role=role: shapes.append(widget.layer(role).data.shape))
    monkeypatch.setattr(CaseCache, "request", lambda self, id_: None)  # the new read-ahead has not read it yet
    assert widget.open_run(native_run)
    assert widget.current_id == image_id and widget.layers.standin == image_id and not widget.edit_btn.isEnabled()
    assert all(widget.layer(r).data.shape == (H, W) for r in ("image", "original", "corrected"))
    qtbot.waitUntil(lambda: widget.layers.standin is None, timeout=60_000)
    assert set(shapes) <= {(H, W)}, shapes  # written in place, never the stand-in's size
    np.testing.assert_array_equal(widget.layer("corrected").data > 0, _correction(run, image_id) > 0)
    assert widget.edit_btn.isEnabled()


def test_the_queue_opened_again_goes_straight_to_the_image_on_screen(make_napari_viewer, qtbot, native_run,
                                                                     monkeypatch):
    """After a round the queue is re-ranked with the image on screen kept (RetrainControl._refresh). Opening the run
    showed the new queue's first image, then the one on screen again: the layers took another image's stand-in and
    came back, napari re-slicing the viewer twice (97 ms, then the swap back, ui_latency's round trial). Now only
    the image on screen is shown, and its original stays until its case is read anew."""
    from crl_napari import case_cache, case_process
    from crl_napari.case_cache import CaseCache

    monkeypatch.setattr(case_cache, "LARGE_PX", 256)
    case_process.stop_helper()
    viewer, widget, run, first = _open_in_a_busy_viewer(make_napari_viewer, native_run)
    on_screen = next(i for i in widget.session.ids if i != first)
    widget.select(on_screen)
    qtbot.waitUntil(lambda: widget.current_id == on_screen and widget.layers.standin is None, timeout=60_000)
    shown, real = [], widget.layers.show
    monkeypatch.setattr(widget.layers, "show", lambda image_id, *a, **k: (shown.append(image_id), real(image_id, *a,
                                                                                                          **k))[1])
    shapes = []
    for role in ("image", "original", "corrected"):
        widget.layer(role).events.data.connect(lambda _e, role=role: shapes.append(widget.layer(role).data.shape))
    monkeypatch.setattr(CaseCache, "request", lambda self, id_: None)  # the new read-ahead has not read it yet
    assert widget.open_run(native_run, show=on_screen)
    assert widget.current_id == on_screen and set(shown) == {on_screen}, shown
    assert widget.table.currentIndex().row() == widget._rows[on_screen]  # its row selected in the table
    assert set(shapes) <= {(H, W)}, shapes
