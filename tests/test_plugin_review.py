"""The Review and Export widgets in a real napari viewer, on a real (tiny) trained run folder: the right layers
for the selected row, decisions by key and by button written to review.json at once, reopening restores them,
and the export writes exactly the chosen masks."""

from __future__ import annotations

import csv
import getpass
import json
import shutil

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _scores import raise_suspicions  # noqa: E402

from crl_napari import pipeline  # noqa: E402
from crl_napari.cascade import TrainConfig  # noqa: E402
from crl_napari.native import native_mask  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory):
    """One tiny crl run (12 training phantoms, half of the masks corrupted), trained and scored once per
    session; tests review copies of it (see ``run_dir``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_sample_set(tmp_path_factory.mktemp("review-data") / "set", n=16, size=64, noise_ratio=0.5,
                                seed=2)
        out = tmp_path_factory.mktemp("review-runs") / "run"
        # small but it learns (a few CPU seconds): the corrected masks differ from the given ones and from
        # an all-foreground or empty mask, so the checks below can tell the masks apart
        config = TrainConfig(strategy="crl", epochs=8, batch_size=4, width=8, depth=3, lr=0.01, augment=False,
                             device="cpu")
        for _ in pipeline.train_run(data, out, config, size=64):
            pass
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture
def run_dir(tiny_run_template, tmp_path):
    """A private copy of the tiny run (its config still points at the session's data folder)."""
    return shutil.copytree(tiny_run_template, tmp_path / "run")


def _review(viewer, run_dir=None):
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
    if run_dir is not None:
        assert widget.open_run(run_dir), widget.last_message
    return widget


def _press(viewer, qtbot, key: str) -> None:
    """A real key press on the viewer's canvas (napari's key handling, active layer first)."""
    from qtpy.QtCore import Qt

    mod = Qt.KeyboardModifier.NoModifier
    if key.startswith("Shift-"):
        mod, key = Qt.KeyboardModifier.ShiftModifier, key[len("Shift-"):]
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, getattr(Qt.Key, f"Key_{key}"), mod)


def _cell(widget, row: int, col: int) -> str:
    """The text the review table shows in (row, col)."""
    return widget.table.model().index(row, col).data()


def _decisions(run_dir) -> dict:
    return json.loads((run_dir / "review.json").read_text())["decisions"]


def test_review_shows_the_layers_of_the_selected_row(make_napari_viewer, run_dir):
    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    run = RunFolder(run_dir)
    scores = run.scores()
    table_ids = [_cell(widget, i, 1) for i in range(widget.table.model().rowCount())]
    assert table_ids == [r["id"] for r in scores]  # the queue's order (scoring.rank)
    table_scores = [float(_cell(widget, i, 2)) for i in range(widget.table.model().rowCount())]
    assert table_scores == pytest.approx([r["suspicion"] for r in scores], abs=1e-3)
    assert _cell(widget, 0, 4) == "pending"
    assert widget.current_id == scores[0]["id"]
    assert widget.counts_label.text().startswith(f"Reviewed 0 / {len(scores)}")

    widget.table.selectRow(3)  # the reviewer clicks the fourth row
    image_id = scores[3]["id"]
    assert widget.current_id == image_id
    np.testing.assert_array_equal(widget.layer("image").data, run.image(image_id))
    np.testing.assert_array_equal(widget.layer("original").data > 0, run.given(image_id))
    # the correction as accepting it exports it (native.native_mask; the originals are the training size here)
    np.testing.assert_array_equal(widget.layer("corrected").data, native_mask(run.prob(image_id), (64, 64)))
    assert widget.layer("original").contour > 0 and widget.layer("corrected").contour > 0
    assert widget.layer("original").data.shape == widget.layer("image").data.shape == (64, 64)  # training size
    c_orig = widget.layer("original").colormap.map(np.array([1]))[0]
    c_corr = widget.layer("corrected").colormap.map(np.array([1]))[0]
    assert not np.allclose(c_orig, c_corr)  # two distinct colours
    for role, getter in (("probability", run.prob), ("uncertainty", run.uncertainty)):
        layer = widget.layer(role)
        assert layer is not None and not layer.visible  # hidden by default
        layer.visible = True  # shown: it holds the selected row's map (loaded lazily while hidden)
        np.testing.assert_allclose(layer.data, getter(image_id))
    widget.table.selectRow(4)  # while shown, a row switch updates it at once
    np.testing.assert_allclose(widget.layer("probability").data, run.prob(scores[4]["id"]))
    widget.layer("probability").visible = widget.layer("uncertainty").visible = False
    widget.table.selectRow(3)
    assert widget.layer("edit") is None
    assert len(viewer.layers) == 5  # reused, not stacked up, when the row changes
    assert image_id in widget.info_label.text()


def test_switching_rows_back_and_forth_shows_each_case_as_on_disk(make_napari_viewer, qtbot, run_dir):
    """Row switches write into the layers' arrays and read cases ahead in a thread: going back to a row shows
    it exactly as on disk, and the layer-list thumbnails catch up once the reviewer pauses."""
    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    run = RunFolder(run_dir)
    ids = [r["id"] for r in run.scores()]
    for row in [0, 5, 2, 0, 7, 5, 0, 2]:
        widget.table.selectRow(row)
        np.testing.assert_array_equal(widget.layer("image").data, run.image(ids[row]))
        np.testing.assert_array_equal(widget.layer("original").data > 0, run.given(ids[row]))
        np.testing.assert_array_equal(widget.layer("corrected").data, native_mask(run.prob(ids[row]), (64, 64)))
    image = widget.layer("image")
    image.refresh()  # napari's own thumbnail of row 2's image
    expected = image.thumbnail.copy()
    widget.table.selectRow(5)
    widget.table.selectRow(2)  # the switches leave the thumbnail for later ...
    qtbot.waitUntil(lambda: not widget.layers.stale_thumbnails, timeout=TIMEOUT_MS)  # ... once the reviewer pauses
    np.testing.assert_array_equal(image.thumbnail, expected)


def test_train_and_review_docked_together_fit_a_laptop_screen(make_napari_viewer, run_dir):
    """Both docks on napari's right, a run open: the window still fits a 1366 x 768 screen (the forms scroll)."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    _review(viewer, run_dir)
    QApplication.processEvents()
    window = viewer.window._qt_window
    assert window.minimumSizeHint().height() <= 768 - 40  # a taskbar's worth to spare


def test_decisions_by_key_and_button_go_to_review_json(make_napari_viewer, qtbot, run_dir):
    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    ids = [r["id"] for r in RunFolder(run_dir).scores()]
    assert widget.reviewer_edit.text() == getpass.getuser()

    assert widget.looks_clean(ids[0])  # the queue starts under the recommended threshold (scoring.rank) ...
    _press(viewer, qtbot, "A")  # ... where Accept takes a second press in a row
    assert not (run_dir / "review.json").exists()
    _press(viewer, qtbot, "A")  # accepted; the next pending one is shown
    assert _decisions(run_dir)[ids[0]]["status"] == "accepted"
    assert _decisions(run_dir)[ids[0]]["reviewer"] == getpass.getuser() and _decisions(run_dir)[ids[0]]["time"]
    assert widget.current_id == ids[1]

    widget.reviewer_edit.setText("dr house")
    widget.reviewer_edit.editingFinished.emit()
    widget.keep_btn.click()
    assert _decisions(run_dir)[ids[1]] == {**_decisions(run_dir)[ids[1]], "status": "kept", "reviewer": "dr house"}
    assert widget.current_id == ids[2]

    _press(viewer, qtbot, "D")  # edit, seeded from the corrected mask
    edit = widget.layer("edit")
    assert edit is not None and viewer.layers.selection.active.name == edit.name and edit.mode == "paint"
    np.testing.assert_array_equal(edit.data, native_mask(RunFolder(run_dir).prob(ids[2]), (64, 64)))
    drawn = np.zeros((64, 64), np.uint8)
    drawn[10:30, 5:25] = 1
    edit.data = drawn
    _press(viewer, qtbot, "S")  # S reaches the viewer although the labels layer is active
    d = _decisions(run_dir)[ids[2]]
    assert d["status"] == "edited" and d["edit"] == f"edits/{ids[2]}.png"
    np.testing.assert_array_equal(iio.imread(run_dir / "edits" / f"{ids[2]}.png") > 0, drawn > 0)
    assert _cell(widget, 2, 4).startswith("edited")
    assert widget.counts_label.text().startswith(f"Reviewed 3 / {len(ids)}")

    _press(viewer, qtbot, "U")  # undo the edit: pending again, the drawing gone, that image shown
    assert ids[2] not in _decisions(run_dir)
    assert not (run_dir / "edits" / f"{ids[2]}.png").exists()
    assert widget.current_id == ids[2] and _cell(widget, 2, 4) == "pending"
    widget.undo_btn.click()  # and the keep
    assert set(_decisions(run_dir)) == {ids[0]} and widget.current_id == ids[1]

    _press(viewer, qtbot, "N")
    assert widget.current_id == ids[2]
    _press(viewer, qtbot, "Shift-N")
    _press(viewer, qtbot, "Shift-N")
    assert widget.current_id == ids[0]

    from qtpy.QtCore import Qt

    qtbot.keyClick(widget.table, Qt.Key.Key_K)  # the keys also work while the table has the focus
    assert _decisions(run_dir)[ids[0]]["status"] == "kept" and widget.current_id == ids[1]


def _accept(widget) -> None:
    """Accept the image shown: one under the run's recommended threshold ("looks clean") takes a second press."""
    shown = widget.current_id
    widget.accept()
    if widget.session.status(shown) != "accepted":
        assert widget.looks_clean(shown) and widget.current_id == shown
        widget.accept()
    assert widget.session.status(shown) == "accepted"


def _accept_keep_and_edit(widget, box) -> np.ndarray:
    """Accept the first image, keep the second, and save an edit of the third that fills ``box``."""
    _accept(widget)
    widget.keep()
    widget.start_edit()
    drawn = np.zeros((64, 64), np.uint8)
    drawn[box] = 1
    widget.layer("edit").data = drawn
    widget.save_edit()
    return drawn


def test_reopening_the_run_restores_every_decision(make_napari_viewer, qtbot, run_dir):
    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    ids = [r["id"] for r in RunFolder(run_dir).scores()]
    mask = _accept_keep_and_edit(widget, np.s_[20:40, 20:40])
    before = _decisions(run_dir)
    viewer.window.remove_dock_widget("all")

    viewer2 = make_napari_viewer()
    again = _review(viewer2, run_dir)
    assert [again.session.status(i) for i in ids[:4]] == ["accepted", "kept", "edited", "pending"]
    assert [_cell(again, i, 4).split(" ·")[0] for i in range(4)] == ["accepted", "kept", "edited",
                                                                               "pending"]
    assert again.current_id == ids[3]  # the first image still to review
    assert again.counts_label.text().startswith(f"Reviewed 3 / {len(ids)}")
    again.select(ids[2])  # the edited one shows its drawing
    np.testing.assert_array_equal(again.layer("edit").data > 0, mask > 0)
    assert _decisions(run_dir) == before
    again.undo()  # the history survives reopening
    assert ids[2] not in _decisions(run_dir) and again.current_id == ids[2]


def test_filters_navigation_and_an_unsaved_edit(make_napari_viewer, qtbot, run_dir):
    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    rows = RunFolder(run_dir).scores()
    ids = [r["id"] for r in rows]
    _accept(widget)
    widget.filter_combo.setCurrentText("pending")
    assert ids[0] not in widget.visible_ids() and widget.visible_ids()[0] == ids[1]
    cut = rows[4]["suspicion"]
    widget.min_score.setValue(cut)
    shown = widget.visible_ids()
    assert widget.current_id in shown  # the image on screen stays listed, whatever its score
    assert all(r["suspicion"] >= cut - 1e-3 for r in rows if r["id"] in shown and r["id"] != widget.current_id)
    assert len(shown) < len(ids)
    widget.filter_combo.setCurrentText("all")
    widget.min_score.setValue(0)
    assert widget.visible_ids() == ids

    # an edit left without saving is saved, not lost
    widget.select(ids[5])
    widget.start_edit()
    drawn = 1 - (widget.layer("edit").data > 0).astype(np.uint8)
    widget.layer("edit").data = drawn
    widget.next()
    assert widget.current_id == ids[6]
    assert _decisions(run_dir)[ids[5]]["status"] == "edited"
    np.testing.assert_array_equal(iio.imread(run_dir / "edits" / f"{ids[5]}.png") > 0, drawn > 0)
    # an edit opened and left unchanged records nothing
    widget.start_edit()
    widget.previous()
    assert ids[6] not in _decisions(run_dir) and widget.layer("edit") is not None  # ids[5]'s edit shown


def test_review_reports_a_bad_folder_and_releases_its_keys(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = _review(viewer)
    assert not widget.open_run(tmp_path)
    assert errors and "config.json" in errors[-1]
    from napari.utils.key_bindings import coerce_keybinding

    assert coerce_keybinding("A") in viewer.keymap
    viewer.window.remove_dock_widget("all")
    assert coerce_keybinding("A") not in viewer.keymap and coerce_keybinding("Shift-N") not in viewer.keymap


def _manifest(dest) -> dict:
    with open(dest / "manifest.csv", newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def test_export_writes_exactly_the_chosen_masks(make_napari_viewer, qtbot, run_dir, tmp_path):
    viewer = make_napari_viewer()
    review = _review(viewer, run_dir)
    run = RunFolder(run_dir)
    rows = run.scores()
    ids = [r["id"] for r in rows]
    drawn = _accept_keep_and_edit(review, np.s_[5:50, 10:30])

    _, exp = viewer.window.add_plugin_dock_widget("crl-napari", "Export cleaned dataset")
    assert str(exp.run_dir.value) == str(run_dir)  # follows the run the review opened
    # and what the review chose for unreviewed images: nothing yet, so the recommended policy (these nets can tell
    # right masks from wrong ones); the user picks the other one here
    assert exp.policy.value == "accept the correction above a score"
    exp.policy.value = "keep the original mask"
    dest = tmp_path / "clean"
    exp.dest.value = dest
    exp.run_export()
    qtbot.waitUntil(lambda: not exp.busy, timeout=TIMEOUT_MS)
    assert exp.report is not None, exp.last_error
    man = _manifest(dest)
    held_out = [i for i in man if i not in ids]  # the test split: exported too, with its original masks
    assert len(ids) == 12 and len(held_out) == 4 and {man[i]["split"] for i in held_out} == {"test"}
    assert {man[i]["mask_source"] for i in held_out} == {"original"}
    cases = {c["id"]: c for c in run.cases()}

    def exported(i):
        return iio.imread(dest / "masks" / f"{i}.png") > 0

    def original(i):
        return iio.imread(cases[i]["mask_path"]) > 0

    assert not np.array_equal(run.corrected(ids[0]), original(ids[0]))  # so the check below means something
    def correction(i):  # at the original size: the probability resampled, thresholded and cleaned up
        return native_mask(run.prob(i), original(i).shape).astype(bool)

    np.testing.assert_array_equal(exported(ids[0]), correction(ids[0]))
    np.testing.assert_array_equal(exported(ids[1]), original(ids[1]))
    np.testing.assert_array_equal(exported(ids[2]), drawn > 0)
    for i in ids[3:]:
        np.testing.assert_array_equal(exported(i), original(i))  # unreviewed: kept, as chosen
    assert [man[i]["mask_source"] for i in ids[:4]] == ["corrected", "original", "edited", "original"]

    # the other policy: unreviewed images above a score get the correction
    assert not exp.threshold.native.isVisibleTo(exp.native)  # only for that policy
    exp.policy.value = "accept the correction above a score"
    assert exp.threshold.native.isVisibleTo(exp.native)
    # the score starts at the run's recommended threshold, and exported as shown it is that very one (the command
    # line's default), not the field's rounding of it
    from crl_napari.scoring import recommended_threshold

    recommended = recommended_threshold([r["suspicion"] for r in rows])
    assert float(exp.threshold.value) == round(recommended, 3) and 0.0 < recommended < 0.5
    exp.dest.value = tmp_path / "clean-recommended"
    exp.run_export()
    qtbot.waitUntil(lambda: not exp.busy, timeout=TIMEOUT_MS)
    assert exp.report is not None and exp.report.threshold == recommended, exp.last_error
    man_r = _manifest(tmp_path / "clean-recommended")
    assert {i: man_r[i]["mask_source"] for i in ids[3:]} == {
        r["id"]: "corrected_by_policy" if r["suspicion"] >= recommended else "original" for r in rows[3:]}
    cut = sorted(r["suspicion"] for r in rows[3:])[len(rows[3:]) // 2]  # unreviewed images on both sides of it
    exp.threshold.value = cut
    exp.dest.value = tmp_path / "clean2"
    exp.run_export()
    qtbot.waitUntil(lambda: not exp.busy, timeout=TIMEOUT_MS)
    assert exp.report is not None, exp.last_error
    man2 = _manifest(tmp_path / "clean2")
    sources = []
    for r in rows[3:]:
        expected = "corrected_by_policy" if r["suspicion"] >= float(exp.threshold.value) else "original"
        assert man2[r["id"]]["mask_source"] == expected
        sources.append(expected)
        if expected == "corrected_by_policy":
            np.testing.assert_array_equal(iio.imread(tmp_path / "clean2" / "masks" / f"{r['id']}.png") > 0,
                                          correction(r["id"]))
    assert "corrected_by_policy" in sources and "original" in sources
    assert [man2[i]["mask_source"] for i in ids[:3]] == ["corrected", "original", "edited"]  # decisions win

    # clean-up is on by default; unticked, the accepted correction is the resampled mask as it is
    assert exp.cleanup.value is True
    exp.cleanup.value = False
    exp.dest.value = tmp_path / "clean3"
    exp.run_export()
    qtbot.waitUntil(lambda: not exp.busy, timeout=TIMEOUT_MS)
    assert exp.report is not None, exp.last_error
    raw = native_mask(run.prob(ids[0]), original(ids[0]).shape, cleanup=False).astype(bool)
    np.testing.assert_array_equal(iio.imread(tmp_path / "clean3" / "masks" / f"{ids[0]}.png") > 0, raw)


def test_export_refuses_a_destination_inside_the_run(make_napari_viewer, qtbot, run_dir, errors):
    viewer = make_napari_viewer()
    review = _review(viewer, run_dir)
    review.export_widget.dest.value = run_dir / "export"
    assert str(review.export_widget.run_dir.value) == str(run_dir)
    review.export_widget.run_export()
    qtbot.waitUntil(lambda: not review.export_widget.busy, timeout=TIMEOUT_MS)
    assert review.export_widget.report is None
    assert "refusing to export into the run folder" in review.export_widget.last_error
    assert any("refusing" in e for e in errors)
    assert not (run_dir / "export").exists()


def test_reader_opens_a_run_folder(make_napari_viewer, run_dir):
    import napari.layers

    viewer = make_napari_viewer()
    viewer.open(str(run_dir), plugin="crl-napari")
    run = RunFolder(run_dir)
    ids = [c["id"] for c in run.cases()]
    image, given, corrected = viewer.layers
    assert isinstance(image, napari.layers.Image) and image.data.shape == (len(ids), 64, 64)
    assert isinstance(given, napari.layers.Labels) and isinstance(corrected, napari.layers.Labels)
    assert image.metadata["crl_ids"] == ids
    np.testing.assert_array_equal(given.data[3] > 0, run.given(ids[3]))
    np.testing.assert_array_equal(corrected.data[3] > 0, run.corrected(ids[3]))


def test_review_and_reader_on_a_run_the_cli_is_still_training(make_napari_viewer, qtbot, tmp_path, errors):
    """Issue #4: the plugin opens a run folder while ``crl-napari train`` (another process) writes into it: a
    clear "not scored yet" (or "not a run folder" before its first file) each time, never a crash or a
    half-read file; once the CLI is done the same widget opens the run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.5, seed=3)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen(
        [sys.executable, "-m", "crl_napari.cli", "train", str(data), "--out", str(run), "--size", "32", "--width",
         "4", "--depth", "2", "--epochs", "25", "--batch-size", "4", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
    attempts = mid_training = 0
    try:
        while child.poll() is None:
            scored = (run / "scores.csv").is_file()
            opened = widget.open_run(run)
            assert opened == scored or scored  # scores.csv may appear between the check and the open
            if not opened:
                attempts += 1
                mid_training += (run / "checkpoint.pt").is_file()
                if (run / "cases.csv").is_file():  # the reader reads a consistent snapshot (stacks of one size)
                    viewer.open(str(run), plugin="crl-napari")
                    assert len({layer.data.shape for layer in viewer.layers}) == 1
                    viewer.layers.clear()
            qtbot.wait(150)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.wait() == 0, child.stderr.read()
    assert attempts >= 3 and mid_training >= 1, (attempts, mid_training)
    assert errors and all("not been scored yet" in e or "not a run folder" in e for e in errors), sorted(set(errors))
    assert widget.open_run(run) and widget.table.model().rowCount() == len(RunFolder(run).scores())


def test_statuses_comments_batch_and_the_remembered_reviewer(make_napari_viewer, qtbot, run_dir, tmp_path):
    """Issue 13 on the user's path: a viewer that already holds another image, the run typed into the folder
    field, Q / Shift-X on the canvas, a comment, "accept many" previewed then applied and undone with one U;
    the reviewer's name and the run are remembered for the next session; the export leaves the excluded out."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((100, 150)), name="someone else's image")
    widget = _review(viewer)
    widget.reviewer_edit.clear()
    qtbot.keyClicks(widget.reviewer_edit, "dr grey")
    widget.reviewer_edit.editingFinished.emit()
    qtbot.keyClicks(widget.run_edit, str(run_dir))
    qtbot.keyClick(widget.run_edit, Qt.Key.Key_Return)
    assert widget.session is not None, widget.last_message
    assert "someone else's image" in viewer.layers
    rows = RunFolder(run_dir).scores()
    ids = [r["id"] for r in rows]

    _press(viewer, qtbot, "Q")
    assert _decisions(run_dir)[ids[0]] == {**_decisions(run_dir)[ids[0]], "status": "flagged", "reviewer": "dr grey"}
    _press(viewer, qtbot, "Shift-X")
    assert _decisions(run_dir)[ids[1]]["status"] == "excluded" and widget.current_id == ids[2]
    assert _cell(widget, 1, 4) == "excluded · dr grey" and "excluded 1" in widget.counts_label.text()
    widget.select(ids[1])
    qtbot.keyClicks(widget.comment_edit, "rotated film")
    qtbot.keyClick(widget.comment_edit, Qt.Key.Key_Return)
    assert json.loads((run_dir / "review.json").read_text())["comments"] == {ids[1]: "rotated film"}
    assert _cell(widget, 1, 5) == "rotated film"

    cut = rows[6]["suspicion"]
    widget.threshold.setValue(cut)
    widget.preview_btn.click()  # the count and the ids first; nothing decided yet
    expected = [r["id"] for r in rows[2:] if r["suspicion"] >= widget.threshold.value() - 1e-12]
    assert widget.preview.text().startswith(f"{len(expected)} pending image(s)") and len(expected) >= 2
    assert all(i in widget.preview.text() for i in expected) and set(_decisions(run_dir)) == set(ids[:2])
    widget.apply_btn.click()
    assert {i: d["status"] for i, d in _decisions(run_dir).items() if i in expected} == dict.fromkeys(expected,
                                                                                                      "accepted")
    _press(viewer, qtbot, "U")  # one U undoes the whole batch
    assert set(_decisions(run_dir)) == set(ids[:2]) and widget.current_id == expected[0]

    export = widget.export_widget  # the export form inside the Review dock
    export.dest.value = tmp_path / "clean"
    export.run_export()
    qtbot.waitUntil(lambda: not export.busy, timeout=TIMEOUT_MS)
    assert export.report is not None and export.report.excluded == 1, export.last_error
    man = _manifest(tmp_path / "clean")
    assert man[ids[1]]["status"] == "excluded" and man[ids[1]]["comment"] == "rotated film"
    assert not (tmp_path / "clean" / "masks" / f"{ids[1]}.png").exists()
    viewer.window.remove_dock_widget("all")

    again = _review(make_napari_viewer())  # a later session on this computer
    assert again.reviewer_edit.text() == "dr grey"
    assert again.recent_combo.itemText(0) == str(run_dir.resolve())
    again.recent_combo.activated.emit(0)  # the reviewer picks the recent run
    assert again.session is not None and again.session.reviewer == "dr grey"
    again.keep()
    assert _decisions(run_dir)[ids[2]] == {**_decisions(run_dir)[ids[2]], "status": "kept", "reviewer": "dr grey"}


def test_the_hidden_maps_are_made_after_the_first_paint_one_layer_at_a_time(make_napari_viewer, qtbot, run_dir):
    """Each napari layer made holds the viewer for 0.2-0.5 s: the probability and uncertainty layers are made
    after the image is on screen, one per turn of the event loop (together they froze it for a second), hidden,
    right above the image."""
    from crl_napari._qt.review_layers import LAYERS, MAPS_DELAY_MS

    viewer = make_napari_viewer()
    widget = _review(viewer, run_dir)
    prob, unc = LAYERS["probability"], LAYERS["uncertainty"]
    assert prob not in viewer.layers and unc not in viewer.layers  # not in the first paint
    qtbot.waitUntil(lambda: prob in viewer.layers, timeout=10 * MAPS_DELAY_MS)
    assert unc not in viewer.layers  # the next one in a later turn
    qtbot.waitUntil(lambda: unc in viewer.layers, timeout=10 * MAPS_DELAY_MS)
    names = [layer.name for layer in viewer.layers]
    here = names.index(LAYERS["image"])
    assert names[here + 1:here + 3] == [prob, unc]
    assert not viewer.layers[prob].visible and not viewer.layers[unc].visible
    assert (widget.layer("probability").name, widget.layer("uncertainty").name) == (prob, unc)


def test_signals_explained_uncertainty_flip_and_zoom(make_napari_viewer, qtbot, run_dir):
    """Issue 13: the uncertainty map uses its own range (values of 0-0.3 were near black on a 0-1 scale), H shows
    it, J flips between the original and the corrected mask, G zooms to where they differ, the columns explain
    themselves in tooltips."""
    from qtpy.QtCore import Qt

    from crl_napari._qt.review_layers import disagreement_box

    lines = (run_dir / "scores.csv").read_text().splitlines()  # the worst image's correction: 2 extra pieces
    header, first = lines[0].split(","), lines[1].split(",")
    first[header.index("extra_pieces")] = "2"
    (run_dir / "scores.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((300, 200)), name="another image")
    widget = _review(viewer, run_dir)
    model = widget.table.model()
    assert model.data(model.index(0, 1), Qt.ItemDataRole.DecorationRole) is not None
    assert "2 more piece(s) than two lungs" in model.data(model.index(0, 1), Qt.ItemDataRole.ToolTipRole)
    extra = {r.id: r.extra_pieces for r in RunFolder(run_dir).score_rows()}
    marked = [model.data(model.index(i, 1), Qt.ItemDataRole.DecorationRole) is not None for i in range(len(extra))]
    assert marked == [extra[_cell(widget, i, 1)] > 0 for i in range(len(extra))] and marked[0]
    unc = widget.layer("uncertainty")
    assert not unc.visible
    _press(viewer, qtbot, "H")
    assert unc.visible and unc.contrast_limits[1] == pytest.approx(max(np.percentile(unc.data, 99.5), 0.05))
    assert unc.contrast_limits[1] < 1  # scaled to the map, not to 0-1
    original, corrected = widget.layer("original"), widget.layer("corrected")
    _press(viewer, qtbot, "J")
    assert original.visible and not corrected.visible
    _press(viewer, qtbot, "J")
    assert corrected.visible and not original.visible
    _press(viewer, qtbot, "J")
    assert original.visible and corrected.visible
    viewer.reset_view()
    fitted = viewer.camera.zoom
    box = disagreement_box(original.data, corrected.data)
    assert box is not None
    _press(viewer, qtbot, "G")
    rows, cols = box
    assert viewer.camera.zoom > fitted
    centre = np.asarray(viewer.camera.center[-2:])
    assert rows.start <= centre[0] <= rows.stop and cols.start <= centre[1] <= cols.stop
    header = widget.table.model()
    tips = [header.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole) for c in range(6)]
    assert all(tips) and "1 - Dice" in tips[2] and "1 - score" in tips[3]


def test_a_clean_looking_image_takes_a_second_press_to_accept_and_a_flagged_one_takes_one(make_napari_viewer,
                                                                                           qtbot, run_dir):
    """Issue 11's policy: at 75 % noise a correction of a clean mask is worse than the mask (Dice 0.93 against
    0.975). An image scored under the run's recommended threshold (scoring.recommended_threshold, computed once)
    is marked "looks clean" and its Accept needs a second press in a row; a flagged image is accepted with one;
    "accept many" starts at the recommended score and says when lowering it takes in clean-looking images."""
    from qtpy.QtCore import Qt

    from crl_napari.scoring import recommended_threshold

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((80, 90)), name="someone else's image")
    widget = _review(viewer)
    qtbot.keyClicks(widget.run_edit, str(run_dir))
    qtbot.keyClick(widget.run_edit, Qt.Key.Key_Return)
    assert widget.session is not None, widget.last_message
    score = {r["id"]: r["suspicion"] for r in RunFolder(run_dir).scores()}
    ids = widget.session.ids
    t = recommended_threshold(np.array([score[i] for i in ids]))
    assert widget.clean_below == t
    assert widget.threshold.value() == pytest.approx(t, abs=5e-4)  # the batch's default score
    assert widget.export_widget.threshold.value == pytest.approx(t, abs=5e-4)
    clean = [i for i in ids if score[i] < t]
    flagged = [i for i in ids if score[i] >= t]
    assert len(clean) >= 2 and len(flagged) >= 2

    widget.table.selectRow(widget._rows[flagged[0]])  # a flagged image: no mark, one press accepts
    assert widget.current_id == flagged[0] and widget.clean_label.text() == ""
    _press(viewer, qtbot, "A")
    assert _decisions(run_dir)[flagged[0]]["status"] == "accepted"

    widget.table.selectRow(widget._rows[clean[0]])  # a clean-looking one: marked; the first press only says so
    assert "looks clean: the given mask is likely better" in widget.clean_label.text()
    score_cell = widget.table.model().index(widget._rows[clean[0]], 2)  # the table marks it too
    assert score_cell.data(Qt.ItemDataRole.ForegroundRole).color().name() == "#00796b"
    assert "looks clean" in score_cell.data(Qt.ItemDataRole.ToolTipRole)
    assert widget.table.model().index(widget._rows[flagged[1]], 2).data(Qt.ItemDataRole.ForegroundRole) is None
    _press(viewer, qtbot, "A")
    assert clean[0] not in _decisions(run_dir) and widget.current_id == clean[0]
    assert "looks clean" in widget.last_message and "again" in widget.last_message
    _press(viewer, qtbot, "A")  # the second press in a row accepts
    assert _decisions(run_dir)[clean[0]]["status"] == "accepted"

    widget.table.selectRow(widget._rows[clean[1]])  # a press, then another image: the press does not carry over
    widget.accept_btn.click()
    widget.table.selectRow(widget._rows[flagged[1]])
    widget.table.selectRow(widget._rows[clean[1]])
    widget.accept_btn.click()
    assert clean[1] not in _decisions(run_dir)
    widget.accept_btn.click()  # the button is the key: the second press accepts
    assert _decisions(run_dir)[clean[1]]["status"] == "accepted"

    widget.undo()  # clean[1] pending again
    widget.preview_btn.click()  # at the recommended score no clean-looking image is in the batch
    assert widget.preview.text().startswith(f"{len(flagged) - 1} pending image(s)")
    assert "look clean" not in widget.preview.text()
    widget.threshold.setValue(0.0)
    widget.preview_btn.click()  # lowered: the preview says how many clean-looking ones it would take in
    assert f"— {len(clean) - 1} of them look clean" in widget.preview.text()


def test_a_row_switch_repaints_the_review_without_laying_out_the_window(make_napari_viewer, qtbot, run_dir):
    """A row switch changes the Review's labels (the image's line of facts, the clean mark), which asked for a new
    layout up through the scroll area, the dock and napari's main window: a second window composition on every
    switch (ui_latency). The scroll area passes a request on only when its content's minimum width changed."""
    from qtpy.QtCore import QEvent, QObject

    from crl_napari._qt._common import dock_of

    viewer = make_napari_viewer(show=True)  # a hidden window is never laid out
    viewer.add_image(np.zeros((40, 40), np.float32), name="someone's image")
    widget = _review(viewer, run_dir)
    qtbot.wait(300)  # the window shown, laid out

    class Requests(QObject):
        count = 0

        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.LayoutRequest:
                self.count += 1
            return False

    requests = Requests()
    dock_of(widget).installEventFilter(requests)
    facts = []
    for _ in range(4):
        before = widget.current_id
        _press(viewer, qtbot, "N")
        qtbot.wait(30)
        assert widget.current_id != before
        facts.append(widget.info_label.text())
    assert len(set(facts)) == 4  # four images' facts shown
    assert requests.count == 0


def test_opening_a_run_where_most_masks_look_wrong_gives_the_advice(make_napari_viewer, run_dir):
    """The open message carries the advice (scoring.keep_advice: a second pass, pointing at the button below, or a
    lower keep ratio) only where many given masks look wrong: the run's own scores first, then the same run with
    three quarters of its suspicions raised, then with 5 of 12 (the second pass on the recommended corrections)."""
    from crl_napari import second_pass
    from crl_napari._qt.export_form import policy_label
    from crl_napari.scoring import keep_advice, suggested_keep_ratio

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.uint8), name="someone else's layer")
    widget = _review(viewer, run_dir)
    own = [r.suspicion for r in RunFolder(run_dir).score_rows()]
    own_advice = keep_advice(own, 0.5, second_pass.advised(run_dir))
    assert widget.last_message.startswith(f"Opened {run_dir.name}: 12 images, in the queue's order for unreviewed "
                                          f"images getting: {policy_label(widget.session.unreviewed)} (Unreviewed")
    assert widget.last_message.endswith(f"{own_advice} (Second pass, below)" if own_advice else "(scoring.rank)")
    assert len(own) == 12
    raise_suspicions(run_dir)  # 9 of 12
    assert suggested_keep_ratio([r.suspicion for r in RunFolder(run_dir).score_rows()], 0.5) == 0.25
    assert widget.open_run(run_dir), widget.last_message
    assert widget.last_message.startswith(f"Opened {run_dir.name}: 12 images")
    assert widget.last_message.endswith("75% of the given masks look wrong, more than the 0.5 of each batch training "
                                        "learns from: a second pass on the corrections, or training again with keep "
                                        "ratio 0.25, may correct them better (Second pass, below)")
    assert widget.retrain.second_btn.isEnabled()
    raise_suspicions(run_dir, 5)  # many but not most: the second pass the default trains there
    assert widget.open_run(run_dir), widget.last_message
    assert widget.last_message.endswith("42% of the given masks look wrong: a second pass on the corrections the "
                                        "recommended threshold takes (the given masks elsewhere) may correct them "
                                        "better (Second pass, below)")


def test_choosing_what_unreviewed_images_get_orders_the_queue_and_the_export_follows(make_napari_viewer, qtbot,
                                                                                      run_dir, tmp_path):
    """The Review dock's Unreviewed choice, as a reviewer uses it in a viewer that already holds other layers: the
    queue starts as the recommended policy's (scores.csv's rank); chosen "keep the original mask", the table lists
    the most suspicious first (its # column the new places), the image shown and the decision made stay, the run
    remembers it, and the Export dock open beside it and a form made afterwards follow it and keep every unreviewed
    mask."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="someone else's image")
    widget = _review(viewer, run_dir)
    rows = RunFolder(run_dir).scores()
    assert widget.unreviewed_combo.currentText() == "accept the correction above a score"
    assert widget.visible_ids() == [r["id"] for r in rows]  # scores.csv's rank
    _, exp = viewer.window.add_plugin_dock_widget("crl-napari", "Export cleaned dataset")  # open beside it
    assert str(exp.run_dir.value) == str(run_dir) and exp.policy.value == "accept the correction above a score"
    widget.keep_btn.click()
    decided = widget.model.ids[0]
    shown = widget.current_id
    widget.unreviewed_combo.setCurrentText("keep the original mask")
    by_suspicion = [r["id"] for r in sorted(rows, key=lambda r: (-r["suspicion"], -r["uncertainty"]))]
    assert widget.visible_ids() == by_suspicion != [r["id"] for r in rows]
    assert widget.current_id == shown and widget.session.status(decided) == "kept"
    assert f"{by_suspicion.index(shown) + 1} of 12 in the queue" in widget.info_label.text()  # its new place
    listed = widget.table.model()  # the # column: places in the new queue
    assert [listed.data(listed.index(k, 0)) for k in range(3)] == ["1", "2", "3"]
    assert [listed.data(listed.index(k, 1)) for k in range(3)] == by_suspicion[:3]
    assert json.loads((run_dir / "review.json").read_text())["unreviewed"] == "keep"
    assert "Queue ordered for an export that gives unreviewed images: keep the original mask" in widget.last_message
    assert widget.export_widget.policy.value == "keep the original mask"  # the Review dock's own Export
    assert exp.policy.value == "keep the original mask"  # and the Export dock open beside it
    from crl_napari._qt.export_form import ExportForm

    later = ExportForm(viewer)  # a form made now (another viewer's dock, say) reads the choice from the run
    assert str(later.run_dir.value) == str(run_dir) and later.policy.value == "keep the original mask"
    exp.dest.value = tmp_path / "clean"
    exp.run_export()
    qtbot.waitUntil(lambda: not exp.busy, timeout=TIMEOUT_MS)
    assert exp.report is not None and exp.report.threshold is None, exp.last_error
    assert {v["mask_source"] for i, v in _manifest(tmp_path / "clean").items() if v["status"] == "pending"} == {
        "original"}
    assert widget.open_run(run_dir) and widget.unreviewed_combo.currentText() == "keep the original mask"
    assert widget.visible_ids() == by_suspicion
