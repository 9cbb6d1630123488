"""Our options in the Train widget, on the user's path (a viewer that already holds other layers, the fields under
Advanced, the buttons in the order a person presses them):

* second_pass: both passes train in the background as the command line trains them (second_pass.train_passes);
  the person stops in the first pass and in the second, resumes each time, and opens the result in the Review
  widget, which lists the second pass's scores. The status line says which pass runs and shows the run folder
  being written.
* average_bn: a stop that lands after the last epoch, before the BatchNorm statistics are recomputed, says so,
  and Resume finishes the run with the recomputed statistics (the checkpoint says it holds them).
"""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

from crl_napari import cascade, runs  # noqa: E402
from crl_napari.cache import CacheProgress  # noqa: E402
from crl_napari.cascade import EpochEnd  # noqa: E402
from crl_napari.checkpoint import read_checkpoint  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.rounds import RoundStarted  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402
from crl_napari.scoring import rank  # noqa: E402
from crl_napari.settings import SETTING_HELP  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

TINY = {"strategy": "crl", "epochs": 2, "batch_size": 8, "width": 4, "depth": 3, "lr": 0.05}
TIMEOUT_MS = 120_000


def _train_widget_in_use(make_napari_viewer, tmp_path, **settings):
    """A viewer already holding other layers, its Train widget filled in for a tiny run of the sample phantoms."""
    data = write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.5, seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="someone's labels")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    widget.data_dir.value = data
    widget.out_dir.value = tmp_path / "run"
    widget.size.value = 64
    widget.device.value = "cpu"
    for name, value in {**TINY, **settings}.items():
        widget.cfg[name].value = value
    return viewer, widget


def _press(qtbot, widget, button, watch, in_worker: bool = False) -> None:
    """Press Start or Resume and wait for the worker to end, ``watch`` seeing every event it yields: in the
    viewer's thread after the widget showed it, or (``in_worker``) in the worker's, before the engine goes on."""
    from qtpy.QtCore import Qt

    button.native.click()
    how = Qt.ConnectionType.DirectConnection if in_worker else Qt.ConnectionType.AutoConnection
    widget.worker.yielded.connect(watch, how)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _scores(path) -> dict[str, tuple[float, float]]:
    """{id: (suspicion, peer uncertainty)} of a scores.csv (at width 4 after 2 epochs the two passes' binary
    corrections, hence suspicions, can coincide; their probabilities, hence uncertainties, do not)."""
    with open(path, newline="") as fh:
        return {r["id"]: (float(r["suspicion"]), float(r["uncertainty"])) for r in csv.DictReader(fh)}


def test_the_train_widget_trains_a_second_pass_stops_in_each_and_reviews_its_scores(make_napari_viewer, qtbot,
                                                                                     tmp_path):
    viewer, widget = _train_widget_in_use(make_napari_viewer, tmp_path)
    out = widget.form.out
    field = widget.cfg["second_pass"]  # under Advanced, with the engine's help, 0-4 (4, AUTO, by default)
    assert field in widget.advanced
    assert (field.value, field.min, field.max) == (4, 0, 4) and field.tooltip == SETTING_HELP["second_pass"]
    field.value = 1

    said: list[str] = []  # the status line after every event the widget showed
    state = {"second": False, "stop_in": "first"}

    def watch(ev):
        said.append(widget.status.value)
        if isinstance(ev, RoundStarted) and ev.second_pass:
            state["second"] = True
        if isinstance(ev, EpochEnd) and state["stop_in"] == ("second" if state["second"] else "first"):
            state["stop_in"] = None
            widget.stop_btn.native.click()

    # Start; Stop after the first pass's first epoch
    _press(qtbot, widget, widget.start_btn, watch)
    assert widget.last_outcome == "stopped", widget.last_error
    assert any(s.startswith("writing the run folder: 12/12 images") for s in said), said
    assert any(s.startswith("First pass · Epoch 1/2") for s in said), said
    assert widget.status.value.startswith("First pass · Stopped during epoch")
    assert not RunFolder(out).has_scores and not (out / runs.ROUNDS).exists()
    assert widget.resume_btn.enabled

    # Resume: the first pass ends and is scored, the second starts; Stop after its first epoch
    state["stop_in"] = "second"
    _press(qtbot, widget, widget.resume_btn, watch)
    assert widget.last_outcome == "stopped", widget.last_error
    assert state["second"] and any("First pass · Done: 12 images scored" in s for s in said), said
    assert any(s.startswith("Second pass (round 2, fresh nets): training") for s in said), said
    assert any(s.startswith("Second pass · Epoch 1/2") for s in said), said
    assert widget.status.value.startswith("Second pass · Stopped during epoch")
    rounds = runs.read_rounds(out)
    assert [(r.number, r.second_pass, r.finished is None) for r in rounds] == [(1, False, False), (2, True, True)]
    assert widget.resume_btn.enabled  # the first pass is scored: only the unfinished second pass makes it so

    # Resume: the second pass goes on where it stopped and rescores the run
    said.clear()
    _press(qtbot, widget, widget.resume_btn, watch)
    assert widget.last_outcome == "finished", widget.last_error
    assert any(s.startswith("Second pass (round 2, fresh nets): resuming") for s in said), said
    assert widget.status.value.startswith("Second pass · Done: 12 images scored")
    rounds = runs.read_rounds(out)
    assert [(r.number, r.second_pass, r.finished is not None) for r in rounds] == [(1, False, True), (2, True, True)]
    first = _scores(runs.round_dir(out, 1) / runs.SCORES)  # the first pass kept in rounds/1/
    second = _scores(out / runs.SCORES)
    assert first.keys() == second.keys() and first != second
    assert not widget.resume_btn.enabled and widget.review_btn.enabled

    # Open in review: the Review widget lists the second pass's scores, in their rank order
    widget.review_btn.native.click()
    from crl_napari._qt._common import run_link

    review = run_link(viewer).review_widget
    assert review is not None and review.session is not None and review.session.run_dir == out
    rows = RunFolder(out).score_rows()  # the queue: the second pass's scores ranked for the review's export policy
    queue = rank(np.array([r.suspicion for r in rows]), np.array([r.uncertainty for r in rows]),
                 unreviewed=review.session.unreviewed)
    assert review.visible_ids() == [rows[i].id for i in np.argsort(queue)]
    shown = {r["id"]: (float(r["suspicion"]), float(r["uncertainty"])) for r in review.session.rows}
    assert shown.keys() == second.keys() and all(shown[i] == pytest.approx(second[i]) for i in second)
    assert "another image" in viewer.layers and "someone's labels" in viewer.layers


def test_a_stop_before_the_batchnorm_pass_resumes_to_the_recomputed_nets(make_napari_viewer, qtbot, tmp_path):
    _, widget = _train_widget_in_use(make_napari_viewer, tmp_path, average_last=1)
    out = widget.form.out
    field = widget.cfg["average_bn"]  # under Advanced, with the engine's help, 0/1
    assert field in widget.advanced
    assert (field.value, field.min, field.max) == (0, 0, 1) and field.tooltip == SETTING_HELP["average_bn"]
    field.value = 1

    def stop_after_the_last_epoch(ev):  # the flag the Stop button sets, in the worker's thread: no race
        if isinstance(ev, EpochEnd) and ev.epoch == TINY["epochs"] - 1:
            widget.stop_flag.set()

    _press(qtbot, widget, widget.start_btn, stop_after_the_last_epoch, in_worker=True)
    assert widget.last_outcome == "stopped", widget.last_error
    assert widget.status.value.startswith("Stopped after the last epoch, before its BatchNorm statistics were "
                                          "recomputed"), widget.status.value
    ckpt = read_checkpoint(out / cascade.CHECKPOINT)
    assert ckpt["epoch"] == 1 and "batchnorm_recomputed" not in ckpt["average"]
    assert widget.resume_btn.enabled and not RunFolder(out).has_scores

    said = []
    _press(qtbot, widget, widget.resume_btn,
           lambda ev: said.append(widget.status.value) if isinstance(ev, CacheProgress)
           and ev.what.startswith("recomputing") else None)
    assert widget.last_outcome == "finished", widget.last_error
    assert said and said[-1].startswith("recomputing the BatchNorm statistics: 12/12 images"), said
    assert read_checkpoint(out / cascade.CHECKPOINT)["average"]["batchnorm_recomputed"] is True
    assert RunFolder(out).has_scores and RunFolder(out).train_config.average_bn == 1
