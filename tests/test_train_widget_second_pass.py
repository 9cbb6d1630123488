"""The Train widget trains a second pass (TrainConfig.second_pass) as the command line does
(second_pass.train_passes): on the user's path, in a viewer that already holds other layers, the person sets
second_pass 1 under Advanced, presses Start, stops in the first pass and in the second, resumes each time, and
opens the result in the Review widget, which lists the second pass's scores. The status line says which pass runs
and shows the run folder being written."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crl_napari import runs  # noqa: E402
from crl_napari.cascade import EpochEnd  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.rounds import RoundStarted  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402
from crl_napari.settings import SETTING_HELP  # noqa: E402

pytestmark = pytest.mark.gui

TINY = {"strategy": "crl", "epochs": 2, "batch_size": 8, "width": 4, "depth": 3, "lr": 0.05}
TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def _modest_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the GUI suite shares small CI machines
    yield
    torch.set_num_threads(before)


def _scores(path) -> dict[str, tuple[float, float]]:
    """{id: (suspicion, peer uncertainty)} of a scores.csv (at width 4 after 2 epochs the two passes' binary
    corrections, hence suspicions, can coincide; their probabilities, hence uncertainties, do not)."""
    with open(path, newline="") as fh:
        return {r["id"]: (float(r["suspicion"]), float(r["uncertainty"])) for r in csv.DictReader(fh)}


def test_the_train_widget_trains_a_second_pass_stops_in_each_and_reviews_its_scores(make_napari_viewer, qtbot,
                                                                                     tmp_path):
    data = write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.5, seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")  # a viewer already in use
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="someone's labels")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    out = tmp_path / "run"
    widget.data_dir.value = data
    widget.out_dir.value = out
    widget.size.value = 64
    widget.device.value = "cpu"
    for name, value in TINY.items():
        widget.cfg[name].value = value
    field = widget.cfg["second_pass"]  # under Advanced, with the engine's help, 0/1/2
    assert field in widget.advanced
    assert (field.value, field.min, field.max) == (0, 0, 2) and field.tooltip == SETTING_HELP["second_pass"]
    assert (widget.cfg["average_bn"].min, widget.cfg["average_bn"].max) == (0, 1)
    field.value = 1

    said: list[str] = []  # the status line after every event the widget showed
    state = {"second": False, "stop_in": "first"}

    def watch(ev):
        said.append(widget.status.value)
        if isinstance(ev, RoundStarted) and ev.second_pass:
            state["second"] = True
        if isinstance(ev, EpochEnd) and state["stop_in"] == ("second" if state["second"] else "first"):
            state["stop_in"] = None
            widget.stop()

    # Start; Stop after the first pass's first epoch
    widget.start_btn.native.click()
    widget.worker.yielded.connect(watch)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "stopped", widget.last_error
    assert any(s.startswith("writing the run folder: 12/12 images") for s in said), said
    assert any(s.startswith("First pass · Epoch 1/2") for s in said), said
    assert widget.status.value.startswith("First pass · Stopped during epoch")
    assert not RunFolder(out).has_scores and not (out / runs.ROUNDS).exists()
    assert widget.resume_btn.enabled

    # Resume: the first pass ends and is scored, the second starts; Stop after its first epoch
    state["stop_in"] = "second"
    widget.resume_btn.native.click()
    widget.worker.yielded.connect(watch)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
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
    widget.resume_btn.native.click()
    widget.worker.yielded.connect(watch)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
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
    ranked = [r.id for r in RunFolder(out).score_rows()]
    assert review.visible_ids() == ranked
    shown = {r["id"]: (float(r["suspicion"]), float(r["uncertainty"])) for r in review.session.rows}
    assert shown.keys() == second.keys() and all(shown[i] == pytest.approx(second[i]) for i in second)
    assert "another image" in viewer.layers and "someone's labels" in viewer.layers

