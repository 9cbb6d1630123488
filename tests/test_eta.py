"""The ETA extrapolates a run's time from its first steps, stage by stage, for the CLI and the widget alike."""

import numpy as np
import pytest

from crl_napari import cascade
from crl_napari.eta import Eta, format_seconds
from crl_napari.events import EpochEnd, Finished, Started, Step
from crl_napari.settings import TrainConfig


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def feed(eta, clock, event, seconds=0.0):
    clock.t += seconds
    eta.update(event)


def test_eta_from_the_first_steps_then_per_stage():
    cfg = TrainConfig(strategy="crl", epochs=4, k=2)  # 2 epochs of stage 1, 2 of stage 2
    clock = Clock()
    eta = Eta(clock)
    feed(eta, clock, Started(cfg, "cpu", 50, 5, 0))
    assert eta.remaining() is None
    feed(eta, clock, Step(0, 0, 5, 1.0), 10.0)  # the first step pays the warm-up: not a rate
    assert eta.remaining() is None
    feed(eta, clock, Step(0, 1, 5, 1.0), 1.0)
    # 18 steps left at 1 s each
    assert eta.remaining() == pytest.approx(18.0) and eta.total() == pytest.approx(11.0 + 18.0)
    for s in range(2, 5):
        feed(eta, clock, Step(0, s, 5, 1.0), 1.0)
    feed(eta, clock, EpochEnd(0, 4, 1, (1.0,), 1.0, 0.1, 5.0, None), 0.0)
    for s in range(5):  # epoch 2: stage 1
        feed(eta, clock, Step(1, s, 5, 1.0), 1.0)
    assert eta.remaining() == pytest.approx(10.0)  # stage 2 not seen yet: costed at the measured rate
    feed(eta, clock, Step(2, 0, 5, 1.0), 3.0)  # stage 2 steps take 3 s
    feed(eta, clock, Step(2, 1, 5, 1.0), 3.0)
    assert eta.remaining() == pytest.approx(8 * 3.0)
    feed(eta, clock, Finished([], 4, False))
    assert eta.remaining() == 0.0


def test_eta_of_a_resumed_run_counts_only_the_epochs_left():
    clock = Clock()
    eta = Eta(clock)
    feed(eta, clock, Started(TrainConfig(strategy="ss", epochs=10), "cpu", 8, 4, 8))
    for s in range(3):
        feed(eta, clock, Step(8, s, 4, 1.0), 2.0)
    assert eta.remaining() == pytest.approx((2 * 4 - 3) * 2.0)


def test_eta_follows_a_real_run():
    rng = np.random.default_rng(0)
    y = (rng.random((8, 16, 16)) > 0.5).astype(np.uint8)
    x = (y + rng.normal(0, 0.3, y.shape)).astype(np.float32)[:, None]
    cfg = TrainConfig(strategy="vanilla", epochs=2, batch_size=4, width=4, depth=2, device="cpu", threads=1)
    eta = Eta()
    estimates = []
    for ev in cascade.train(x, y, cfg):
        eta.update(ev)
        estimates.append(eta.remaining())
    assert estimates[:2] == [None, None]  # Started, then the warm-up step
    assert all(e is not None and e >= 0 for e in estimates[2:]) and estimates[-1] == 0.0


def test_format_seconds():
    assert [format_seconds(s) for s in (42, 185, 3720)] == ["42 s", "3 min 05 s", "1 h 02 min"]


def test_a_run_of_hours_gets_a_cheaper_suggestion_and_a_short_one_none():
    clock = Clock()
    short, long_ = Eta(clock), Eta(clock)
    for eta, per_step in ((short, 0.5), (long_, 30.0)):
        feed(eta, clock, Started(TrainConfig(strategy="crl", epochs=100), "cpu", 385, 13, 0))
        feed(eta, clock, Step(0, 0, 13, 1.0), per_step)
        feed(eta, clock, Step(0, 1, 13, 1.0), per_step)
    assert short.long_run_warning() is None  # 1,300 steps at 0.5 s: about 11 min
    warning = long_.long_run_warning()  # 1,300 steps at 30 s: about 11 h
    assert warning.startswith("warning: about 10 h") and "on cpu" in warning and "--size 128" in warning
    assert Eta(clock).long_run_warning() is None  # nothing measured yet
