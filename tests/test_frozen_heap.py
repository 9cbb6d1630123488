"""While the plugin trains, the viewer's objects are frozen for Python's garbage collector (crl_napari._qt.frozen_heap)
and given back when the last job ends or its widget goes away; garbage made meanwhile is still collected."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

pytest.importorskip("pytestqt")

from qtpy.QtWidgets import QWidget  # noqa: E402

from crl_napari._qt import frozen_heap  # noqa: E402
from crl_napari._qt.train_worker import TrainRunner  # noqa: E402

pytestmark = pytest.mark.gui


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen():
    assert frozen_heap.holders() == 0
    yield
    while frozen_heap.holders():
        frozen_heap.release()
    gc.unfreeze()


def test_hold_collects_then_freezes_and_the_last_release_unfreezes():
    before = weakref.ref(_Cycle())  # young cyclic garbage made before the job: freed when it starts, not frozen
    assert before() is not None
    frozen_heap.hold()
    assert before() is None and gc.get_freeze_count() > 0
    frozen_heap.hold()  # a second job
    during = weakref.ref(_Cycle())
    gc.collect()
    assert during() is None  # garbage made while training is collected as always
    frozen_heap.release()
    assert gc.get_freeze_count() > 0  # one job still runs
    frozen_heap.release()
    assert frozen_heap.holders() == 0 and gc.get_freeze_count() == 0
    frozen_heap.release()  # a release too many changes nothing
    assert frozen_heap.holders() == 0


def _job(seen: list, go: threading.Event, flag):
    seen.append((frozen_heap.holders(), gc.get_freeze_count() > 0))
    yield "started"
    while not (go.is_set() or flag()):
        go.wait(0.01)
    yield "done"


def test_a_training_holds_the_heap_frozen_until_it_finishes(qtbot):
    owner = QWidget()
    runner = TrainRunner(owner)
    seen, go, done = [], threading.Event(), []
    runner.start(_job, seen, go, on_event=lambda ev: None, on_error=lambda exc: None,
                 on_done=lambda: done.append(True))
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    assert seen == [(1, True)]
    go.set()
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert frozen_heap.holders() == 0 and gc.get_freeze_count() == 0


def test_a_widget_closed_while_training_gives_the_heap_back(qtbot):
    owner = QWidget()
    runner = TrainRunner(owner)
    seen = []
    runner.start(_job, seen, threading.Event(), on_event=lambda ev: None, on_error=lambda exc: None,
                 on_done=lambda: None)
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    assert frozen_heap.holders() == 1
    worker = runner.worker
    owner.deleteLater()  # the dock closed mid-training: the engine is told to stop
    qtbot.waitUntil(lambda: frozen_heap.holders() == 0, timeout=10_000)
    assert gc.get_freeze_count() == 0
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
