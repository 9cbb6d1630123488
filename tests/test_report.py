"""The summary figure (crl_napari.report) of a tiny trained run: it marks where stage 2 began and the export's
threshold when one is given."""

from __future__ import annotations

import pytest
import torch

from crl_napari import pipeline
from crl_napari.cascade import TrainConfig
from crl_napari.phantoms import write_sample_set
from crl_napari.report import summary_figure, summary_plot
from crl_napari.runs import RunFolder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_sample_set(tmp_path_factory.mktemp("report-data") / "set", n=8, size=32, noise_ratio=0.5,
                                seed=3)
        out = tmp_path_factory.mktemp("report-runs") / "run"
        config = TrainConfig(strategy="crl", epochs=2, batch_size=4, width=4, depth=2, lr=0.05, device="cpu")
        for _ in pipeline.train_run(data, out, config, size=32):
            pass
    finally:
        torch.set_num_threads(before)
    return out


def _lines(fig, label_start: str) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith(label_start)]


def test_the_summary_marks_stage_2_and_the_export_threshold(tiny_run):
    run = RunFolder(tiny_run)
    assert [str(h["stage"]) for h in run.history()] == ["1", "2"]
    fig = summary_plot(run, threshold=0.15)
    (stage2,) = _lines(fig, "stage 2 begins")
    assert list(stage2.get_xdata()) == [1.5, 1.5]  # between epoch 1 and epoch 2
    (mark,) = _lines(fig, "export threshold 0.15")
    assert list(mark.get_xdata()) == [0.15, 0.15]
    legend = mark.axes.get_legend()
    assert legend is not None and any("export threshold" in t.get_text() for t in legend.get_texts())
    assert not _lines(summary_plot(run), "export threshold")  # none given: none drawn
    path = summary_figure(tiny_run, threshold=0.15)
    assert path == tiny_run / "summary.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
