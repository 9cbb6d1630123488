"""The Train widget with second pass 3 (second_pass.KEEP: fresh nets on the given masks with the keep ratio the first
pass's scores suggest) and the two resumes of a second pass, on the user's path: a viewer that already holds other
layers, the fields filled in and the buttons pressed as a person would.

* Mode 3 from the form, stopped in its second pass and resumed: the plot shows the whole second pass, the epochs
  before the stop too (as a resumed first pass shows its own), and the form the keep ratio it trains with.
* Mode 3 where nothing is suggested: the run is finished after the first pass, the status line says why.
* A run whose process ended between the first pass's scores and the second pass's start (the state built with the
  engine itself): Resume is offered and trains the second pass, without training or scoring the first again.
"""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

from crl_napari import runs, second_pass  # noqa: E402
from crl_napari.events import EpochEnd, Started  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.pipeline import ScoresReady  # noqa: E402
from crl_napari.rounds import RoundStarted  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402
from crl_napari.settings import TrainConfig  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

# tests/test_second_pass_keep.py's tiny run: at 75 % simulated noise its scores suggest keep ratio 0.22, with clean
# masks nothing
TINY = {"width": 4, "depth": 2, "epochs": 6, "batch_size": 3, "lr": 0.1, "augment": False}
TIMEOUT_MS = 120_000


class Kill(Exception):
    """The process ends between two events of the stream."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("keep_gui") / "set", n=12, size=32, noise_ratio=0.0, seed=3)


def _train_widget_in_use(make_napari_viewer, data, out, noise: float):
    """A viewer already holding other layers, its Train widget filled in: the tiny run with second pass 3."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="someone's labels")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    widget.torch_threads = 1  # the scores the suggestion is read from, the same on any machine
    widget.data_dir.value = data
    widget.out_dir.value = out
    widget.size.value = 32
    widget.device.value = "cpu"
    widget.simulate_noise.value = noise
    for name, value in TINY.items():
        widget.cfg[name].value = value
    widget.cfg["second_pass"].value = second_pass.KEEP
    return viewer, widget


def _press(qtbot, widget, button, watch, in_worker: bool = False) -> None:
    """Press Start or Resume and wait for the worker to end, ``watch`` seeing every event it yields (in the worker's
    thread with ``in_worker``, before the engine goes on)."""
    from qtpy.QtCore import Qt

    button.native.click()
    how = Qt.ConnectionType.DirectConnection if in_worker else Qt.ConnectionType.AutoConnection
    widget.worker.yielded.connect(watch, how)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_mode_3_from_the_form_stopped_in_its_second_pass_resumes_with_its_keep_ratio_and_whole_curve(
        make_napari_viewer, qtbot, tmp_path, data):
    viewer, widget = _train_widget_in_use(make_napari_viewer, data, tmp_path / "run", 0.75)
    out = widget.form.out
    state = {"second": False}

    def stop_in_the_second_pass(ev):  # the flag the Stop button sets, in the worker's thread: no race
        state["second"] = state["second"] or (isinstance(ev, RoundStarted) and ev.second_pass)
        if state["second"] and isinstance(ev, EpochEnd) and ev.epoch == 1:
            widget.stop_flag.set()

    _press(qtbot, widget, widget.start_btn, stop_in_the_second_pass, in_worker=True)
    assert widget.last_outcome == "stopped", widget.last_error
    assert widget.status.value.startswith("Second pass · Stopped during epoch 3"), widget.status.value
    assert [(r.number, r.keep_ratio, r.finished is None) for r in runs.read_rounds(out)] == \
        [(1, 0.5, False), (2, 0.22, True)]
    assert widget.plot.epochs == [1, 2] and widget.resume_btn.enabled

    said: list[str] = []
    _press(qtbot, widget, widget.resume_btn, lambda ev: said.append(widget.status.value))
    assert widget.last_outcome == "finished", widget.last_error
    assert any(s.startswith("Second pass (round 2, fresh nets): resuming on the given masks with keep ratio 0.22")
               for s in said), said
    assert widget.status.value.startswith("Second pass · Done: 9 images scored")
    # the whole second pass on the plot, the epochs before the stop too, as its history.csv holds them
    history = RunFolder(out).history_rows()  # the second pass's (its files are the run's now)
    assert [h.epoch + 1 for h in history] == widget.plot.epochs == [1, 2, 3, 4, 5, 6]
    assert [h.losses for h in history] == [pytest.approx(losses, abs=1e-5) for losses in widget.plot.losses]
    assert widget.cfg["keep_ratio"].value == pytest.approx(0.22)  # the form shows what the pass trains with
    assert [(r.keep_ratio, r.finished is not None) for r in runs.read_rounds(out)] == [(0.5, True), (0.22, True)]
    assert RunFolder(out).train_config.keep_ratio == 0.22
    assert not widget.resume_btn.enabled and widget.review_btn.enabled
    assert "another image" in viewer.layers and "someone's labels" in viewer.layers


def test_mode_3_with_nothing_suggested_finishes_after_the_first_pass_and_says_why(make_napari_viewer, qtbot,
                                                                                  tmp_path, data):
    _, widget = _train_widget_in_use(make_napari_viewer, data, tmp_path / "run", 0.0)
    out = widget.form.out
    seen: list = []
    _press(qtbot, widget, widget.start_btn, seen.append)
    assert widget.last_outcome == "finished", widget.last_error
    assert sum(isinstance(e, Started) for e in seen) == 1 and sum(isinstance(e, ScoresReady) for e in seen) == 1
    assert widget.status.value.startswith("No second pass: 33% of the given masks look wrong"), widget.status.value
    assert not (out / runs.ROUNDS).exists() and RunFolder(out).has_scores
    assert not widget.resume_btn.enabled and widget.review_btn.enabled  # a finished run: nothing to resume


def test_a_run_killed_before_its_second_pass_started_is_resumed_by_the_widget(make_napari_viewer, qtbot, tmp_path,
                                                                              data):
    out = tmp_path / "run"
    config = TrainConfig(**TINY, threads=1, second_pass=second_pass.KEEP)
    with pytest.raises(Kill):  # the process ends once the first pass's scores are written
        for ev in second_pass.train_passes(data, out, config, size=32, simulate_noise=0.75):
            if isinstance(ev, ScoresReady):
                raise Kill
    scores_ns = (out / runs.SCORES).stat().st_mtime_ns
    first = {n: (out / n).read_bytes() for n in (runs.CHECKPOINT, runs.SCORES, runs.HISTORY)}

    _, widget = _train_widget_in_use(make_napari_viewer, data, tmp_path / "elsewhere", 0.75)
    assert not widget.resume_btn.enabled
    widget.out_dir.value = out  # the person points the widget at the run they were training
    assert widget.resume_btn.enabled and not RunFolder.can_resume(out)

    seen: list = []
    said: list[str] = []

    def watch(ev):
        seen.append(ev)
        said.append(widget.status.value)

    _press(qtbot, widget, widget.resume_btn, watch)
    assert widget.last_outcome == "finished", widget.last_error
    assert [e.start_epoch for e in seen if isinstance(e, Started)] == [0]  # the second pass's, from scratch
    assert [e.metrics.get("round") for e in seen if isinstance(e, ScoresReady)] == [2]
    assert any(s.startswith("Second pass (round 2, fresh nets): training on the given masks with keep ratio 0.22")
               for s in said), said
    assert widget.status.value.startswith("Second pass · Done: 9 images scored")
    assert [r.keep_ratio for r in runs.read_rounds(out)] == [0.5, 0.22]
    kept = runs.round_dir(out, 1)
    assert {n: (kept / n).read_bytes() for n in first} == first  # the first pass kept as it was, not rescored
    assert (kept / runs.SCORES).stat().st_mtime_ns == scores_ns
    assert widget.plot.epochs == [1, 2, 3, 4, 5, 6] and not widget.resume_btn.enabled


def test_the_review_docks_second_pass_trains_the_mode_the_run_asked_for_when_it_never_started(
        make_napari_viewer, qtbot, tmp_path, data):
    """A run trained with second pass 3 and killed before it started, opened in the Review dock: "Second pass"
    trains the mode the run's settings asked for (the given masks with the suggested keep ratio), not the
    advice's mode 2."""
    out = tmp_path / "run"
    config = TrainConfig(**TINY, threads=1, second_pass=second_pass.KEEP)
    with pytest.raises(Kill):
        for ev in second_pass.train_passes(data, out, config, size=32, simulate_noise=0.75):
            if isinstance(ev, ScoresReady):
                raise Kill
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
    widget.run_edit.setText(str(out))
    widget.open_btn.click()
    assert widget.retrain.second_btn.isEnabled()
    seen: list = []
    widget.retrain.second_btn.click()
    widget.retrain.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.last_outcome == "finished", widget.retrain.status.text()
    started = [e for e in seen if isinstance(e, RoundStarted)]
    assert [(e.round, e.second_pass, e.keep_ratio, e.corrected) for e in started] == [(2, True, 0.22, 0)]
    assert [r.keep_ratio for r in runs.read_rounds(out)] == [0.5, 0.22]


@pytest.mark.parametrize("noise", [0.75, 0.0])
def test_the_default_decides_after_the_first_pass_and_says_a_pass_only_once_a_second_starts(make_napari_viewer,
                                                                                            qtbot, tmp_path, data,
                                                                                            noise):
    """second_pass 4, the form's default: at 75 % simulated noise (7 of 9 masks look wrong) the first pass's lines are
    plain, the second pass starts by itself on every correction and its lines say so; with clean masks one pass, its
    "Done" line left as it is (the reason is the command line's, not the status line's)."""
    viewer, widget = _train_widget_in_use(make_napari_viewer, data, tmp_path / "run", noise)
    widget.cfg["second_pass"].value = second_pass.AUTO
    out = widget.form.out
    said: list[str] = []
    _press(qtbot, widget, widget.start_btn, lambda ev: said.append(widget.status.value))
    assert widget.last_outcome == "finished", widget.last_error
    first = [s for s in said if "Epoch" in s][: TINY["epochs"]]
    assert len(first) == TINY["epochs"] and not any(s.startswith(("First pass", "Second pass")) for s in first), said
    if noise:
        assert any(s.startswith("Second pass (round 2, fresh nets): training on the first pass's corrections of 9 "
                                "image(s)") for s in said), said
        assert widget.status.value.startswith("Second pass · Done: 9 images scored"), widget.status.value
        assert [(r.number, r.second_pass, r.decisions) for r in runs.read_rounds(out)] == \
            [(1, False, {}), (2, True, {"corrected": 9})]
    else:
        assert widget.status.value.startswith("Done: 9 images scored"), widget.status.value
        assert not (out / runs.ROUNDS).exists() and not any("second pass" in s.lower() for s in said), said
