"""The Train widget in a real napari viewer: a tiny training runs in the thread worker to the end, can be
stopped midway and resumed, trains from layers, and reports user mistakes as notifications."""

from __future__ import annotations

import re
import sys

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crl_napari.cascade import EpochEnd  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

TINY = {"strategy": "crl", "epochs": 2, "batch_size": 8, "width": 4, "depth": 3, "lr": 0.05}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("train-data") / "set", n=16, size=64, noise_ratio=0.5, seed=1)


def _train_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    return widget


def _configure(widget, data, out, **overrides):
    widget.data_dir.value = data
    widget.out_dir.value = out
    widget.size.value = 64
    widget.device.value = "cpu"
    for name, value in {**TINY, **overrides}.items():
        widget.cfg[name].value = value


def test_train_widget_runs_a_tiny_training_to_the_end(make_napari_viewer, qtbot, tiny_data, tmp_path):
    viewer = make_napari_viewer()
    widget = _train_widget(viewer)
    assert widget.cfg["epochs"].value == 100 and widget.cfg["batch_size"].value == 32  # the paper's defaults
    assert widget.cfg["lr"].value == pytest.approx(1e-3) and widget.cfg["strategy"].value == "crl"
    assert widget.device_label.value in ("cpu", "mps") or widget.device_label.value.startswith("cuda")
    out = tmp_path / "run"
    _configure(widget, tiny_data, out)
    widget.start()
    assert widget.running and not widget.start_btn.enabled and widget.stop_btn.enabled
    shown = []  # the status line after each epoch
    widget.worker.yielded.connect(lambda ev: shown.append(widget.status.value) if isinstance(ev, EpochEnd) else None)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    assert widget.device_label.value == "cpu"
    # the pace: measured seconds per step and the time left, from the second step on
    assert shown[-1].startswith("Epoch 2/2") and re.search(r"\d+\.\d+ s/step · about \d+ s left", shown[-1]), shown
    # the plot marks where stage 2 began (k defaults to half of the 2 epochs)
    assert widget.plot.stages == [1, 2] and widget.plot.stage2_start == 2
    bar = widget.progress.pbar  # every step of the 2 epochs drawn (the last ones at the epoch's end)
    assert bar.value() == bar.maximum() == bar.steps > 0 and bar.isVisible() == widget.native.isVisible()
    assert _stage2_pixels(widget.plot) > 10
    widget.plot.clear()
    widget.plot.add(0, (0.5, 0.5, 0.5), 0.5, stage=1)
    widget.plot.add(1, (0.4, 0.4, 0.4), 0.5, stage=1)  # vanilla / ss: no stage 2, no mark
    assert widget.plot.stage2_start is None and _stage2_pixels(widget.plot, x=widget.plot.width() / 2) == 0
    run = RunFolder(out)
    assert run.has_scores and len(run.history()) == 2
    assert len(run.scores()) == len(run.cases()) == 12  # the training split of 16 phantoms
    assert len(widget.plot.epochs) == 2 and len(widget.plot.losses[0]) == 3  # three nets, one point per epoch
    assert widget.review_btn.enabled and not widget.resume_btn.enabled  # finished: nothing to resume
    # the Review widget opens on the run just trained
    widget.open_review()
    from crl_napari._qt._common import run_link

    review = run_link(viewer).review_widget
    assert review is not None and review.session is not None and review.session.run_dir == out
    assert review.layer("image") is not None


def test_the_finished_notice_gives_the_advice_when_most_masks_look_wrong(make_napari_viewer, qtbot, tiny_data,
                                                                         tmp_path):
    """A run that learns from 95 % of each batch while its scores say more masks than that look wrong: the notice
    that training finished carries the advice (scoring.keep_advice of the run's own scores): the lower keep ratio,
    and no second pass where too few masks look wrong for the default to train one."""
    from napari.utils.notifications import notification_manager

    from crl_napari import second_pass
    from crl_napari.scoring import keep_advice, noise_share

    notices: list[str] = []

    def grab(event):
        notices.append(str((event.value if hasattr(event, "value") else event).message))

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8), np.float32), name="another layer")
    widget = _train_widget(viewer)
    out = tmp_path / "run"
    _configure(widget, tiny_data, out, keep_ratio=0.95, drop_uncertain=0.0, second_pass=0)  # one pass: advised after
    notification_manager.notification_ready.connect(grab)
    try:
        widget.start()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    finally:
        notification_manager.notification_ready.disconnect(grab)
    assert widget.last_outcome == "finished", widget.last_error
    scores = [r.suspicion for r in RunFolder(out).score_rows()]
    advice = keep_advice(scores, 0.95, second_pass.advised(out))
    assert advice.endswith("may correct them better")  # this run's scores do suggest one
    # about a third of the masks look wrong: more than keep ratio 0.95 lets through, too few for the second pass the
    # default would train (second_pass.share_mode), so the advice names the keep ratio alone
    share = noise_share(scores)
    assert 0.05 < share <= second_pass.AUTO_SHARE and second_pass.advised(out) is None
    assert advice.startswith(f"{share:.0%} of the given masks look wrong")
    assert "training again with keep ratio" in advice
    assert "second pass" not in advice
    finished = [n for n in notices if "training finished" in n]
    assert len(finished) == 1, notices
    assert finished[0].endswith(f"is ready for review. {advice}"), notices


def _stage2_pixels(plot, x: float | None = None) -> int:
    """Pixels of the stage-2 mark's colour drawn in the plot area around ``x`` (the mark's own place by default),
    below the legend row."""
    from qtpy.QtGui import QColor

    from crl_napari._qt._plots import STAGE2_COLOR

    plot.resize(480, 170)  # the dock is not shown: give the plot a size to draw in
    image = plot.grab().toImage()  # (lays the plot out: measure after it)
    x = plot.stage2_x() if x is None else x
    area, want = plot._area(), QColor(STAGE2_COLOR)
    count = 0
    for col in range(int(x) - 1, int(x) + 2):
        for row in range(int(area.top()) + 14, int(area.bottom())):
            c = image.pixelColor(col, row)
            count += abs(c.red() - want.red()) + abs(c.green() - want.green()) + abs(c.blue() - want.blue()) < 60
    return count


def test_train_widget_stops_midway_and_resumes(make_napari_viewer, qtbot, tiny_data, tmp_path, monkeypatch):
    """Stop after the first epoch, then Resume: the history goes on from the checkpoint, the form shows the run's
    own settings, and the checkpoint is loaded only in the worker (runs.open_for_resume, then the engine): the
    viewer's thread never waits for it (seconds at the paper's width)."""
    import threading
    import time

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")  # a viewer already in use
    widget = _train_widget(viewer)
    out = tmp_path / "run"
    _configure(widget, tiny_data, out, epochs=6)
    widget.start()
    assert widget.worker is not None

    def stop_after_first_epoch(ev):
        if isinstance(ev, EpochEnd):
            widget.stop()

    widget.worker.yielded.connect(stop_after_first_epoch)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "stopped", widget.last_error
    run = RunFolder(out)
    before = run.history()
    assert 1 <= len(before) < 6 and run.has_checkpoint and not run.has_scores
    assert widget.resume_btn.enabled and widget.start_btn.enabled and not widget.stop_btn.enabled
    assert "Resume" in widget.status.value

    loads: list[str] = []  # the thread of every checkpoint load
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(threading.current_thread().name)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    widget.cfg["epochs"].value = 100  # resume uses the run's own settings, not the form's
    widget.size.value = 128
    plotted: list[int] = []  # the plot's epochs when the first new epoch arrives
    t0 = time.perf_counter()
    widget.resume_btn.native.click()
    returned_s = time.perf_counter() - t0
    widget.worker.yielded.connect(lambda ev: plotted.extend(widget.plot.epochs) if isinstance(ev, EpochEnd)
                                  and not plotted else None)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    assert loads and threading.main_thread().name not in loads, loads  # every load in the worker
    assert returned_s < 0.1, f"Resume held the viewer for {returned_s * 1e3:.0f} ms"
    assert widget.cfg["epochs"].value == 6 and widget.size.value == 64
    hist = RunFolder(out).history()
    assert [int(h["epoch"]) for h in hist] == list(range(6))
    assert hist[: len(before)] == before  # the epochs trained before the stop are kept as they were
    assert plotted == [e + 1 for e in range(len(before) + 1)]  # the old epochs were plotted before the new one
    assert RunFolder(out).has_scores and len(widget.plot.epochs) == 6


def test_resume_checks_the_run_in_the_worker(make_napari_viewer, qtbot, tiny_data, tmp_path):
    """A folder that is not a run, then a run whose data folder is gone: one line each, from the worker's
    checks (runs.open_for_resume), and the widget is ready again."""
    import shutil

    viewer = make_napari_viewer()
    widget = _train_widget(viewer)
    (tmp_path / "not-a-run").mkdir()
    widget.out_dir.value = tmp_path / "not-a-run"
    widget.resume()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "error" and "nothing to resume" in widget.last_error
    # a stopped run whose data folder was moved away: the form's data folder is asked for
    data = shutil.copytree(tiny_data, tmp_path / "data")
    out = tmp_path / "run"
    _configure(widget, data, out, epochs=3)
    widget.start()
    widget.worker.yielded.connect(lambda ev: widget.stop() if isinstance(ev, EpochEnd) else None)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "stopped", widget.last_error
    data.rename(tmp_path / "moved")  # the form still names where it was
    widget.resume()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "error" and "choose where it is now as the data folder" in widget.last_error
    widget.data_dir.value = tmp_path / "moved"
    widget.resume()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    assert len(RunFolder(out).history()) == 3


def test_train_widget_trains_from_layers(make_napari_viewer, qtbot, tmp_path):
    from crl_napari.phantoms import make_phantom

    viewer = make_napari_viewer()
    pairs = [make_phantom(seed, 64) for seed in range(6)]
    image = viewer.add_image(np.stack([p[0] for p in pairs]).astype(np.float32) / 255, name="xray")
    viewer.add_labels(np.stack([p[1] for p in pairs]).astype(np.uint8), name="lungs")
    widget = _train_widget(viewer)
    widget.source.value = "layers"
    assert widget.image_layer.value is image and widget.mask_layer.value.name == "lungs"
    out = tmp_path / "run"
    _configure(widget, "", out, epochs=1, batch_size=4)
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    data = tmp_path / "run-data"
    assert sorted(p.name for p in (data / "images").iterdir()) == [f"xray_{i:04d}.png" for i in range(6)]
    run = RunFolder(out)
    assert [r["id"] for r in run.cases()] == [f"xray_{i:04d}" for i in range(6)]
    assert np.array_equal(run.given("xray_0003"), pairs[3][1] > 0)  # the masks painted in the layer


def test_closing_the_viewer_stops_the_training(make_napari_viewer, qtbot, tiny_data, tmp_path):
    from superqt.utils import WorkerBase

    viewer = make_napari_viewer()
    widget = _train_widget(viewer)
    _configure(widget, tiny_data, tmp_path / "run", epochs=500)
    widget.start()
    flag, worker = widget.stop_flag, widget.worker
    started = []
    worker.yielded.connect(lambda ev: started.append(ev))
    qtbot.waitUntil(lambda: len(started) > 2, timeout=TIMEOUT_MS)
    viewer.close()
    assert flag()  # the engine was asked to stop after its current step
    qtbot.waitUntil(lambda: worker not in WorkerBase._worker_set, timeout=TIMEOUT_MS)
    assert len(RunFolder(tmp_path / "run").history()) < 500


def test_train_widget_reports_user_mistakes_as_notifications(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = _train_widget(viewer)
    widget.start()  # no run folder chosen
    assert "run folder" in widget.status.value and errors
    # a data folder without images/: the engine's message, from the worker, as a notification
    (tmp_path / "empty").mkdir()
    _configure(widget, tmp_path / "empty", tmp_path / "run")
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "error"
    assert "images/" in widget.last_error and any("images/" in e for e in errors)
    # an invalid configuration is refused before anything starts
    widget.cfg["keep_ratio"].value = 0.9
    widget.cfg["drop_uncertain"].value = 0.5
    widget.start()
    assert not widget.running and "keep_ratio" in widget.status.value
    # a single 2-D image layer cannot be trained on
    viewer.add_image(np.zeros((64, 64), np.float32), name="one")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="one mask")
    widget.cfg["keep_ratio"].value = 0.5
    widget.cfg["drop_uncertain"].value = 0.25
    widget.source.value = "layers"
    widget.out_dir.value = tmp_path / "run2"
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "error" and "at least 2 images" in widget.last_error


def test_out_of_gpu_memory_is_a_clear_message_and_the_viewer_stays_alive(make_napari_viewer, qtbot, tiny_data,
                                                                         tmp_path, monkeypatch):
    """Out of GPU memory in the worker (injected as in tests/test_reliability.py: the second training forward
    raises CUDA's error): a notification and the status line suggest a smaller batch, no traceback, the
    widget is ready for the next Start, and that Start, with the smaller batch, trains in the same folder."""
    from napari.utils.notifications import ErrorNotification, NotificationSeverity, notification_manager

    from crl_napari.unet import UNet

    shown: list = []

    def grab(event):
        shown.append(event.value if hasattr(event, "value") else event)

    real = UNet.forward
    calls = {"n": 0}

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2:  # the first step went through
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB)")
        return real(self, x)

    monkeypatch.setattr(UNet, "forward", forward)
    notification_manager.notification_ready.connect(grab)
    try:
        viewer = make_napari_viewer()
        widget = _train_widget(viewer)
        out = tmp_path / "run"
        _configure(widget, tiny_data, out, epochs=1)
        widget.start()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    finally:
        notification_manager.notification_ready.disconnect(grab)
    assert calls["n"] == 2
    assert widget.last_outcome == "error" and widget.worker is None
    assert "out of GPU memory at batch size 8" in widget.status.value
    assert "smaller batch size, e.g. 4" in widget.status.value
    errors = [n for n in shown if getattr(n, "severity", None) == NotificationSeverity.ERROR]
    assert any("smaller batch" in str(n.message) for n in errors), [str(n.message) for n in shown]
    assert not any(isinstance(n, ErrorNotification) for n in shown), "an unexpected error (with traceback)"
    # ready for the next Start; the viewer still works
    assert widget.start_btn.enabled and not widget.stop_btn.enabled and not widget.resume_btn.enabled
    layer = viewer.add_image(np.zeros((32, 32), np.float32), name="after OOM")
    assert viewer.layers[-1] is layer and viewer.layers.selection.active is layer
    # what the message says, in the same folder (nothing was trained there yet)
    monkeypatch.undo()
    widget.cfg["batch_size"].value = 4
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    assert RunFolder(out).train_config.batch_size == 4 and RunFolder(out).has_scores


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
def test_the_training_thread_yields_the_cpu_to_the_viewer():
    """The worker lowers its own priority (the viewer's thread keeps its own), so on a busy machine the viewer
    is served first: the UI-latency benchmark's longest stalls were the checkpoint write competing with a
    redraw."""
    import os
    import threading

    from crl_napari._qt.train_worker import WORKER_NICE, background_priority

    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}

    def worker():
        background_priority()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["nice"] == max(WORKER_NICE, base)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # this thread is untouched


def test_the_train_status_line_warns_when_the_measured_run_takes_hours(qtbot):
    """The widget's status line carries the same warning and cheaper suggestion as the CLI (eta.long_run_warning),
    named in the form's own words, once a pace is measured; a short run gets none."""
    from crl_napari._qt.train_progress import TrainProgress
    from crl_napari.events import EpochEnd, Started, Step
    from crl_napari.settings import TrainConfig

    for per_step, warned in ((0.5, False), (30.0, True)):
        t = [100.0]
        progress = TrainProgress(clock=lambda t=t: t[0])
        progress.begin(resume=False)
        progress.show(Started(TrainConfig(strategy="crl", epochs=100), "cpu", 385, 13, 0))
        for step in range(13):
            t[0] += per_step
            progress.show(Step(0, step, 13, 1.0))
        progress.show(EpochEnd(0, 100, 1, (1.0, 1.0, 1.0), 1.0, 0.001, 13 * per_step, None))
        text = progress.status.value
        assert "s/step" in text
        assert ("warning: about" in text and "Image size 128, width 16, 20 epochs" in text) == warned, text
        progress.pbar.close()


def test_the_step_bar_and_status_line_are_redrawn_together_at_most_once_a_second(qtbot):
    """Steps are counted as they come but drawn with the status line at most once a second (each redraw
    re-composes the viewer's window); an epoch's end draws at once, so the widget shows the last epoch and every
    step made."""
    from crl_napari._qt.train_progress import TrainProgress
    from crl_napari.events import EpochEnd, Started, Step
    from crl_napari.settings import TrainConfig

    t = [100.0]
    shown = TrainProgress(clock=lambda: t[0])
    qtbot.addWidget(shown.pbar)
    shown.begin(resume=False)
    before = shown.pbar.redraws
    shown.show(Started(TrainConfig(strategy="crl", epochs=2), "cpu", 40, 20, 0))
    assert shown.pbar.maximum() == 40 and shown.pbar.value() == 0
    for step in range(20):  # 20 steps in 2 s
        t[0] += 0.1
        shown.show(Step(0, step, 20, 1.0))
    assert shown.pbar.redraws - before <= 3 and shown.pbar.steps == 20  # counted, drawn two or three times
    assert shown.pbar.value() < 20
    shown.show(EpochEnd(0, 2, 1, (0.9, 0.8, 0.7), 1.0, 0.001, 2.0, None))
    assert shown.pbar.value() == 20 and shown.pbar.text() == "20 / 40 steps"
    assert shown.status.value.startswith("Epoch 1/2 · stage 1 · loss 0.8000")
    assert "keep ratio" not in shown.status.value
    shown.show(EpochEnd(1, 2, 1, (0.9, 0.8, 0.7), 0.5, 0.001, 2.0, None, keep=0.32))  # TrainConfig.keep_auto
    assert "· 2.0 s · keep ratio 0.32 (most masks look wrong) · " in shown.status.value
    shown.end()
    assert shown.pbar.value() == 20  # what was made stays on screen after the worker ends


def test_the_form_leaves_out_what_only_torchrun_or_the_worker_sets(make_napari_viewer):
    """The plugin trains in one process: the torchrun-only settings (global selection, SyncBatchNorm) and the
    DataLoader workers are not offered as form rows, while our heavy-noise options are (under Advanced)."""
    widget = _train_widget(make_napari_viewer())
    for name in ("global_selection", "sync_batchnorm", "workers", "threads"):
        assert name not in widget.cfg, name
    for name in ("average_last", "balance_area", "tta", "epochs"):
        assert name in widget.cfg, name


class _LayoutRequests:
    """Counts the layout requests that reach a dock (each one lays napari's main window out and composes it once
    more)."""

    def __init__(self, dock) -> None:
        from qtpy.QtCore import QEvent, QObject

        outer = self

        class Filter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
                if event.type() == QEvent.Type.LayoutRequest:
                    outer.count += 1
                return False

        self.count = 0
        self.filter = Filter()
        dock.installEventFilter(self.filter)


def test_the_pace_on_the_status_line_repaints_it_without_laying_out_the_window(make_napari_viewer, qtbot):
    """While training the status line changes once a second. A QLabel asked napari's whole window for a new layout
    on each text (a second window composition: the longest stalls left while training, ui_latency); the status
    line repaints itself only, and asks for a layout only when the new text needs another height."""
    from crl_napari._qt._common import dock_of
    from crl_napari.events import EpochEnd, Started
    from crl_napari.settings import TrainConfig

    viewer = make_napari_viewer(show=True)  # a hidden window is never laid out
    viewer.add_image(np.zeros((32, 32), np.float32), name="someone's image")
    widget = _train_widget(viewer)
    progress = widget.progress
    progress.begin(resume=False)
    progress.show(Started(TrainConfig(strategy="crl", epochs=9), "cpu", 40, 20, 0))

    def epoch(k: int) -> str:
        progress.show(EpochEnd(k, 9, 1, (0.9 - k / 100, 0.8, 0.7), 0.8, 0.001, 2.0 + k, None))
        qtbot.wait(20)
        return widget.status.value

    epoch(0)  # the first epoch's line may need another height than the start's
    qtbot.wait(300)  # the window shown, laid out
    requests = _LayoutRequests(dock_of(widget.native))
    texts = [epoch(k) for k in range(1, 6)]
    assert [text[:9] for text in texts] == [f"Epoch {k}/9" for k in range(2, 7)]
    assert requests.count == 0 and progress.pbar.isVisible()
    line = widget.status
    height = line.height()
    progress.say("a longer message: " + "the data folder has no masks for these images; " * 3)
    # more lines: laid out again, all of it shown
    qtbot.waitUntil(lambda: line.height() > height and line.height() >= line.heightForWidth(line.width()))
    assert requests.count > 0
    progress.end()
