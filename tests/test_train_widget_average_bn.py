"""The Train widget with average_bn (ours): in a viewer already in use, the person sets average_last and average_bn
under Advanced and trains; a stop that lands after the last epoch, before the BatchNorm statistics are recomputed,
says so, and Resume finishes the run with the recomputed statistics (the checkpoint says it holds them)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from crl_napari import cascade  # noqa: E402
from crl_napari.cache import CacheProgress  # noqa: E402
from crl_napari.cascade import EpochEnd  # noqa: E402
from crl_napari.checkpoint import read_checkpoint  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402

pytestmark = pytest.mark.gui

TINY = {"strategy": "crl", "epochs": 2, "batch_size": 8, "width": 4, "depth": 3, "lr": 0.05}
TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def _modest_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the GUI suite shares small CI machines
    yield
    torch.set_num_threads(before)


def test_a_stop_before_the_batchnorm_pass_resumes_to_the_recomputed_nets(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import Qt

    data = write_sample_set(tmp_path / "set", n=16, size=64, noise_ratio=0.5, seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="another image")  # a viewer already in use
    _, widget = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
    out = tmp_path / "run"
    widget.data_dir.value = data
    widget.out_dir.value = out
    widget.size.value = 64
    widget.device.value = "cpu"
    for name, value in {**TINY, "average_last": 1, "average_bn": 1}.items():
        widget.cfg[name].value = value
    widget.start_btn.native.click()

    def stop_after_the_last_epoch(ev):  # in the worker's thread, before the engine goes on: no race
        if isinstance(ev, EpochEnd) and ev.epoch == TINY["epochs"] - 1:
            widget.stop_flag.set()

    widget.worker.yielded.connect(stop_after_the_last_epoch, Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "stopped", widget.last_error
    assert widget.status.value.startswith("Stopped after the last epoch, before its BatchNorm statistics were "
                                          "recomputed"), widget.status.value
    ckpt = read_checkpoint(out / cascade.CHECKPOINT)
    assert ckpt["epoch"] == 1 and "batchnorm_recomputed" not in ckpt["average"]
    assert widget.resume_btn.enabled and not RunFolder(out).has_scores

    said = []
    widget.resume_btn.native.click()
    widget.worker.yielded.connect(lambda ev: said.append(widget.status.value) if isinstance(ev, CacheProgress)
                                  else None)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_outcome == "finished", widget.last_error
    assert said and said[-1].startswith("recomputing the BatchNorm statistics: 12/12 images"), said
    assert read_checkpoint(out / cascade.CHECKPOINT)["average"]["batchnorm_recomputed"] is True
    assert RunFolder(out).has_scores and RunFolder(out).train_config.average_bn == 1
