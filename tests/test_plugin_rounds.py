"""The Review widget's "Retrain with my decisions", as a reviewer uses it: open a run in the Review dock of a
viewer that already holds other layers, decide a few images with the buttons, press Retrain, keep
reviewing while the round trains, and find the queue re-ranked with the same image on screen and every decision
kept (the ones made during training too), the round shown."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from _scores import raise_suspicions  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from crl_napari import cli, runs  # noqa: E402
from crl_napari._qt.train_worker import WORKER_NICE, gui_torch_threads  # noqa: E402
from crl_napari.events import Finished, Started  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.rounds import RoundStarted  # noqa: E402
from crl_napari.scoring import recommended_threshold  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A crl run that learns something in a few CPU seconds (as test_plugin_review's), so scores differ."""
    root = tmp_path_factory.mktemp("plugin-rounds")
    data = write_sample_set(root / "set", n=16, size=64, noise_ratio=0.0, seed=2)
    assert cli.main(["train", str(data), "--out", str(root / "run"), "--simulate-noise", "0.5", "--size", "64",
                     "--width", "8", "--depth", "3", "--epochs", "8", "--batch-size", "4", "--lr", "0.01",
                     "--no-augment", "--device", "cpu", "--quiet",
                     # one pass: a run the dock's Second pass and rounds start from (the setting off, or older)
                     "--second-pass", "0",
                     # not the viewer's count: the round must train with the viewer's, whatever the run's
                     "--threads", str(gui_torch_threads() + 1)]) == 0
    return root / "run"


def test_retrain_reranks_the_queue_keeps_the_image_and_every_decision(make_napari_viewer, qtbot, trained,
                                                                       tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="someone else's image")
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="someone else's labels")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")  # Plugins > Review masks
    widget.run_edit.setText(str(run))
    widget.open_btn.click()
    assert widget.model is not None, widget.last_message
    assert "Queue scored by round 1" in widget.retrain.status.text()
    before_order = widget.model.ids
    before_scores = [r["suspicion"] for r in widget.session.rows]
    assert len(set(before_scores)) > 1  # a run that ranks
    # the reviewer decides the first three images with the buttons, moving on to the next each time
    for button in (widget.accept_btn, widget.keep_btn, widget.accept_btn):
        shown = widget.current_id
        button.click()
        if widget.current_id == shown:  # under the run's recommended threshold Accept takes a second press
            assert button is widget.accept_btn and widget.looks_clean(shown)
            button.click()
    decided = {i: widget.session.status(i) for i in before_order if widget.session.status(i) != "pending"}
    assert sorted(decided.values()) == ["accepted", "accepted", "kept"]
    shown = widget.current_id
    assert shown not in decided

    _, exp = viewer.window.add_plugin_dock_widget("crl-napari", "Export cleaned dataset")  # open beside the review
    first_threshold = float(exp.threshold.value)
    widget.retrain.warm_epochs.setValue(2)
    widget.retrain.retrain_btn.click()
    assert widget.retrain.running and not widget.retrain.retrain_btn.isEnabled()
    # seen in the worker's own thread (a direct connection): it trains at lowered priority, the viewer's threads
    in_worker, said = [], []
    widget.retrain.worker.yielded.connect(  # after the control's own handler: what it shows for the event
        lambda ev: said.append(widget.retrain.status.text()) if isinstance(ev, RoundStarted) else None)
    widget.retrain.worker.yielded.connect(
        lambda ev: in_worker.append((ev.threads, _nice())) if isinstance(ev, Started) else None,
        Qt.ConnectionType.DirectConnection)
    widget.flag_btn.click()  # reviewing goes on while the round trains
    flagged = shown
    shown = widget.current_id
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)

    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    lowered = max(_nice(), WORKER_NICE) if sys.platform.startswith("linux") else _nice()  # nice only rises
    assert in_worker == [(gui_torch_threads(), lowered)]
    assert len(said) == 1 and "Training round 2" in said[0], said
    assert "the queue is round 1's, decisions made now count for round 3" in said[0]  # while round 2 trains
    assert "scored by round 2" in widget.retrain.status.text()
    assert widget.session.round == 2
    # re-ranked from the new scores: the table lists the new order, the same image is on screen
    new_order = [r.id for r in runs.read_score_rows(run)]
    assert widget.model.ids == new_order and new_order != before_order
    table = widget.table.model()
    listed = [table.index(r, 1).data() for r in range(table.rowCount())]
    assert [i for i in listed if i in new_order] == new_order  # the table's rows, in the new rank order
    assert widget.current_id == shown
    # the Export dock shows the new scores' recommended threshold (exported as shown, it is that one exactly)
    new_threshold = recommended_threshold([r.suspicion for r in runs.read_score_rows(run)])
    assert float(exp.threshold.value) == round(new_threshold, 3) != first_threshold
    # every decision intact, the one made during training too, tagged with the round whose scores were shown
    stored = json.loads((run / "review.json").read_text())["decisions"]
    assert {i: d["status"] for i, d in stored.items()} == {**decided, flagged: "flagged"}
    assert {d["round"] for d in stored.values()} == {1}
    widget.keep_btn.click()
    stored = json.loads((run / "review.json").read_text())["decisions"]
    assert stored[shown]["round"] == 2
    assert [r.number for r in runs.read_rounds(run)] == [1, 2]


def test_stop_while_the_round_scores_then_retrain_scores_the_rest(make_napari_viewer, qtbot, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    widget = _review_dock(make_napari_viewer, run)
    widget.keep_btn.click()
    widget.retrain.warm_epochs.setValue(1)
    widget.retrain.retrain_btn.click()
    # Stop pressed once the round is trained, while every image is scored: the flag the Stop button sets, set in
    # the worker's thread, lands before the first chunk
    widget.retrain.worker.yielded.connect(
        lambda ev: widget.retrain.stop_flag.set() if isinstance(ev, Finished) and not ev.stopped else None,
        Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    n = len(runs.read_score_rows(run))
    assert widget.retrain.last_outcome == "stopped", widget.retrain.status.text()
    assert widget.retrain.status.text() == (f"Stopped while scoring: 0/{n} images scored and kept; press Retrain to "
                                            "score the rest of this round.")
    assert [r.finished is None for r in runs.read_rounds(run)] == [False, True] and widget.session.round == 1

    seen: list = []
    widget.retrain.retrain_btn.click()
    widget.retrain.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    assert [e.resumed for e in seen if isinstance(e, RoundStarted)] == [True]
    assert [e.start_epoch for e in seen if isinstance(e, Started)] == [1]  # the round is not trained again
    assert "scored by round 2" in widget.retrain.status.text() and widget.session.round == 2


def _review_dock(make_napari_viewer, run):
    """The Review dock opened from the Plugins menu of a viewer that already holds someone else's image, with
    ``run`` opened in it as a user opens it (its path typed, Open pressed)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="someone else's image")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
    widget.run_edit.setText(str(run))
    widget.open_btn.click()
    return widget


def _nice() -> int | None:
    """This thread's nice value (None where the platform has none)."""
    if not hasattr(os, "getpriority"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id() if sys.platform.startswith("linux") else 0)


def test_the_advised_second_pass_trains_from_the_review_dock_and_reranks_the_queue(make_napari_viewer, qtbot,
                                                                                  trained, tmp_path):
    """A run trained without a second pass whose scores say most masks look wrong: opening it in the Review dock
    says so and points at "Second pass"; pressed, fresh nets train on every correction while the reviewer goes
    on deciding; the queue is re-ranked by round 2 with the decision kept, and the button is off from then on
    (a second pass comes once, before any round)."""
    run = shutil.copytree(trained, tmp_path / "run")
    raise_suspicions(run)
    widget = _review_dock(make_napari_viewer, run)
    assert widget.model is not None, widget.last_message
    assert "look wrong" in widget.last_message and "a second pass on the corrections" in widget.last_message
    assert widget.last_message.endswith("(Second pass, below)")
    n = len(widget.model.ids)
    before = {r.id: r.suspicion for r in runs.read_score_rows(run)}
    assert widget.retrain.second_btn.isEnabled()

    said: list = []
    widget.retrain.second_btn.click()
    assert widget.retrain.running and not widget.retrain.second_btn.isEnabled()
    widget.retrain.worker.yielded.connect(
        lambda ev: said.append(widget.retrain.status.text()) if isinstance(ev, RoundStarted) else None)
    kept = widget.current_id
    widget.keep_btn.click()  # reviewing goes on meanwhile
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)

    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    assert len(said) == 1 and said[0].startswith(
        f"Training the second pass (round 2, fresh nets on the first pass's corrections of {n} image(s)"), said
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass) for r in rounds] == [(1, False), (2, True)] and rounds[1].finished
    assert rounds[1].decisions == {"corrected": n}
    assert "scored by round 2" in widget.retrain.status.text() and widget.session.round == 2
    assert widget.model.ids == [r.id for r in runs.read_score_rows(run)]  # the queue is round 2's ranking
    assert {r.id: r.suspicion for r in runs.read_score_rows(run)} != before  # of round 2's own scores
    stored = json.loads((run / "review.json").read_text())["decisions"]
    assert {i: d["status"] for i, d in stored.items()} == {kept: "kept"}
    assert not widget.retrain.second_btn.isEnabled() and widget.retrain.retrain_btn.isEnabled()

    # the next review round: the images nobody decided on train on the labels the second pass trained on (kept)
    assert (run / "rounds" / "2" / runs.ROUND_LABELS).is_file()
    said.clear()
    widget.retrain.warm_epochs.setValue(1)
    widget.retrain.retrain_btn.click()
    widget.retrain.worker.yielded.connect(
        lambda ev: said.append(widget.retrain.status.text()) if isinstance(ev, RoundStarted) else None)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    assert len(said) == 1 and "round 3 (warm start from round 2, 1 epoch(s); 1 trusted; 0 left out; the rest on " \
        "round 2's labels)" in said[0], said
    assert "scored by round 3" in widget.retrain.status.text()



def test_where_many_but_not_most_masks_look_wrong_the_button_trains_on_the_recommended_corrections(
        make_napari_viewer, qtbot, trained, tmp_path):
    """The run's scores with 44 % of its masks looking wrong (the built-in sample set's kind): the open message
    names the second pass on the corrections the recommended threshold takes, and "Second pass" trains exactly
    that one (second_pass.RECOMMENDED, what the default trains there): round 2's labels are those images'
    corrections, the given masks elsewhere."""
    from crl_napari import second_pass
    from crl_napari.runs import RunFolder

    run = shutil.copytree(trained, tmp_path / "run")
    n = len(runs.read_score_rows(run))
    raise_suspicions(run, n * 44 // 100)
    rows = RunFolder(run).score_rows()
    take = second_pass.takes_correction(np.array([r.suspicion for r in rows]), second_pass.RECOMMENDED)
    assert 0 < take.sum() < n
    widget = _review_dock(make_napari_viewer, run)
    assert "a second pass on the corrections the recommended threshold takes" in widget.last_message
    assert widget.last_message.endswith("(Second pass, below)")
    widget.retrain.second_btn.click()
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass) for r in rounds] == [(1, False), (2, True)]
    assert rounds[1].decisions == {"corrected": int(take.sum())}
    assert runs.read_round_decisions(runs.round_dir(run, 2)) == {
        r.id: runs.CORRECTED for r, t in zip(rows, take, strict=True) if t}
    assert widget.session.round == 2


def test_a_stopped_second_pass_goes_on_when_pressed_again(make_napari_viewer, qtbot, trained, tmp_path):
    """Stop pressed during the second pass's first epoch: the run keeps round 1's scores and the stopped round;
    "Second pass" stays on and, pressed again, resumes the same round (not a new one) to its end."""
    run = shutil.copytree(trained, tmp_path / "run")
    widget = _review_dock(make_napari_viewer, run)
    widget.retrain.second_btn.click()
    widget.retrain.worker.yielded.connect(  # the flag the Stop button sets, in the worker's thread: no race
        lambda ev: widget.retrain.stop_flag.set() if isinstance(ev, Started) else None,
        Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "stopped", widget.retrain.status.text()
    rounds = runs.read_rounds(run)
    assert [(r.number, r.second_pass, r.finished is None) for r in rounds] == [(1, False, False), (2, True, True)]
    assert widget.session.round == 1 and widget.retrain.second_btn.isEnabled()

    seen: list = []
    widget.retrain.second_btn.click()
    widget.retrain.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    assert [(e.round, e.resumed, e.second_pass) for e in seen if isinstance(e, RoundStarted)] == [(2, True, True)]
    assert [r.number for r in runs.read_rounds(run)] == [1, 2] and runs.read_rounds(run)[1].finished
    assert widget.session.round == 2 and not widget.retrain.second_btn.isEnabled()
