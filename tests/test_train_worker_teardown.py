"""The Train widget's worker when its widget goes away (the dock closed, the viewer quit) mid-training: the engine
is told to stop and nothing raises, even when Qt has already deleted the worker's signals (as napari's quit does)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from qtpy import sip  # noqa: E402
from superqt.utils import create_worker  # noqa: E402

from crl_napari._qt._common import StopFlag  # noqa: E402
from crl_napari._qt.train_worker import _abandon  # noqa: E402

pytestmark = pytest.mark.gui


def _steps():
    yield 1


def test_abandoning_a_worker_whose_qt_half_is_gone_stops_the_engine_without_raising(qtbot):
    worker = create_worker(_steps, _start_thread=False)  # a real GeneratorWorker, never started
    sip.delete(worker.signals)  # what the viewer's quit leaves behind
    with pytest.raises(RuntimeError):
        _ = worker.yielded  # reading a signal now raises: what _abandon met
    flag = StopFlag()
    job = {"flag": flag, "worker": worker, "closing": None}
    _abandon(job)
    assert flag() and job == {}
