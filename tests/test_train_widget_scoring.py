"""The Train widget while every image is scored after training, on the user's path (a viewer that already holds
other layers, the form filled in, the buttons pressed): the status line counts the images scored, Stop stops the
scoring between two chunks and keeps what was scored, Resume scores the rest only (runs.ScoreProgress)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

from crl_napari import pipeline, runs  # noqa: E402
from crl_napari.cache import CacheProgress  # noqa: E402
from crl_napari.events import Started  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread", "score_chunks_of_16")]

TINY = {"width": 4, "depth": 2, "epochs": 2, "batch_size": 4, "lr": 0.05, "augment": False}
CHUNK = 16  # images per scoring chunk (conftest's score_chunks_of_16)
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("scoring_gui") / "set", n=48, size=64, noise_ratio=0.0, seed=4)


def _press(qtbot, widget, button, watch, in_worker: bool = False) -> None:
    """Press a button and wait for the worker to end, ``watch`` seeing every event it yields (in the worker's thread
    with ``in_worker``, before the engine goes on: the Stop button's flag set there lands at a known point)."""
    from qtpy.QtCore import Qt

    button.native.click()
    how = Qt.ConnectionType.DirectConnection if in_worker else Qt.ConnectionType.AutoConnection
    widget.worker.yielded.connect(watch, how)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_stop_while_scoring_keeps_the_scored_chunks_and_resume_scores_the_rest(make_napari_viewer, qtbot, tmp_path,
                                                                                data):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="someone's labels")
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    widget.torch_threads = 1
    widget.data_dir.value = data
    widget.out_dir.value = out = tmp_path / "run"
    widget.size.value = 32
    widget.device.value = "cpu"
    widget.simulate_noise.value = 0.5
    for name, value in TINY.items():
        widget.cfg[name].value = value

    said: list[str] = []

    def stop_after_the_first_chunk(ev):  # the flag the Stop button sets, in the worker's thread: no race
        if isinstance(ev, CacheProgress) and ev.what == "scoring":
            said.append(ev.text())
            if ev.decoded >= CHUNK:
                widget.stop_flag.set()

    _press(qtbot, widget, widget.start_btn, stop_after_the_first_chunk, in_worker=True)
    n = len(RunFolder(out).case_rows())
    assert n > 2 * CHUNK
    assert said[0] == f"scoring 0/{n} images" and said[-1].startswith(f"scoring {CHUNK}/{n} images · ")
    assert widget.last_outcome == "stopped", widget.last_error
    assert widget.status.value == (f"Stopped while scoring: {CHUNK}/{n} images scored and kept: press Resume to "
                                   "score the rest."), widget.status.value
    assert not (out / runs.SCORES).exists() and [p.name for p in (out / runs.SCORE_PROGRESS).iterdir()] == \
        ["000000000.npz"]
    assert widget.resume_btn.enabled and not widget.review_btn.enabled

    seen: list = []
    shown: list[str] = []
    _press(qtbot, widget, widget.resume_btn, lambda ev: (seen.append(ev), shown.append(widget.status.value)))
    assert f"Training finished; scoring (going on after a stop: {CHUNK} scored before) {n}/{n} images" in \
        " ".join(shown), shown  # the status line counts the images scored
    assert widget.last_outcome == "finished", widget.last_error
    assert [e.start_epoch for e in seen if isinstance(e, Started)] == [TINY["epochs"]]  # nothing trained again
    scoring = [e for e in seen if isinstance(e, CacheProgress) and e.what.startswith("scoring")]
    assert scoring[0].text() == f"scoring (going on after a stop: {CHUNK} scored before) {CHUNK}/{n} images"
    assert scoring[-1].decoded == n - CHUNK  # only the rest was scored
    assert widget.status.value.startswith(f"Done: {n} images scored"), widget.status.value
    assert not (out / runs.SCORE_PROGRESS).exists()
    assert not widget.resume_btn.enabled and widget.review_btn.enabled
    went_on = (out / runs.SCORES).read_bytes()
    pipeline.score_run(out)
    assert (out / runs.SCORES).read_bytes() == went_on  # as one uninterrupted scoring
    assert "another image" in viewer.layers and "someone's labels" in viewer.layers
