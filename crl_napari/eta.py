"""How long a run will take, from the first steps' timing, for the command line and the Train widget alike.

Feed every training event to :class:`Eta`; after a few steps it extrapolates. The first step of a run is left
out of the rate (it pays one-off costs: allocation, kernel choice), and the time between steps includes what
each epoch adds (validation, checkpoint), so the estimate covers the whole run, not just the arithmetic.
Stage 2 of crl costs more per step than stage 1: once stage-2 steps have been seen, the remaining stage-2
steps are costed at their own rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .events import Event, Finished, Started, Step

WARMUP_STEPS = 1  # steps left out of the rate
MIN_STEPS = 2  # steps measured before any estimate


class Eta:
    """``eta.update(event)`` for every event; ``eta.remaining()`` and ``eta.total()`` in seconds, or None
    until enough steps were seen. ``clock`` is the time source (seconds, monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self.started: Started | None = None
        self.t_start = 0.0
        self.done = 0  # steps this session
        self.last: tuple[float, int, int] | None = None  # time, stage, steps done at the last Step
        self.spent = {1: 0.0, 2: 0.0}  # measured seconds and steps per stage (warm-up left out)
        self.counted = {1: 0, 2: 0}
        self.finished = False

    def update(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, Started):
            self._reset()
            self.started, self.t_start = event, now
        elif isinstance(event, Step) and self.started is not None:
            stage = self._stage(event.epoch)
            if self.done >= WARMUP_STEPS and self.last is not None:
                self.spent[stage] += now - self.last[0]
                self.counted[stage] += 1
            self.done += 1
            self.last = (now, stage, self.done)
        elif isinstance(event, Finished):
            self.finished = True

    def elapsed(self) -> float:
        return self.clock() - self.t_start if self.started is not None else 0.0

    def remaining(self) -> float | None:
        """Seconds left, extrapolated from the measured steps; 0 once finished; None while unknown."""
        if self.finished:
            return 0.0
        s = self.started
        measured = self.counted[1] + self.counted[2]
        if s is None or measured < MIN_STEPS - WARMUP_STEPS or self.done < MIN_STEPS:
            return None
        mean = (self.spent[1] + self.spent[2]) / measured
        rate = {st: self.spent[st] / self.counted[st] if self.counted[st] else mean for st in (1, 2)}
        total_steps = (s.config.epochs - s.start_epoch) * s.steps_per_epoch
        left = max(0, total_steps - self.done)
        k = s.config.stage2_epoch
        first_stage2 = 0 if k is None else max(0, k - s.start_epoch) * s.steps_per_epoch
        left_stage2 = 0 if k is None else max(0, min(left, total_steps - max(first_stage2, self.done)))
        return (left - left_stage2) * rate[1] + left_stage2 * rate[2]

    def seconds_per_step(self) -> float | None:
        """The measured mean seconds per step (warm-up left out), or None before any."""
        measured = self.counted[1] + self.counted[2]
        return (self.spent[1] + self.spent[2]) / measured if measured else None

    def text(self) -> str:
        """"0.42 s/step · about 3 min 05 s left" for a status line; "" while unknown."""
        per_step, rest = self.seconds_per_step(), self.remaining()
        if per_step is None or rest is None:
            return ""
        return f"{per_step:.2f} s/step · about {format_seconds(rest)} left"

    def total(self) -> float | None:
        """Seconds the whole run (this session of it) will take: elapsed + remaining."""
        rest = self.remaining()
        return None if rest is None else self.elapsed() + rest

    def long_run_warning(self, cheaper: str = "--size 128 --width 16 --epochs 20") -> str | None:
        """A warning with a cheaper suggestion when the measured run would take longer than LONG_RUN; None
        otherwise (or before a pace is measured). The CLI prints it once; the Train widget shows it."""
        total = self.total()
        if total is None or total <= LONG_RUN:
            return None
        return (f"warning: about {format_seconds(total)} on {self.started.device}. For a first look, a cheaper run: "
                f"{cheaper} (about 20x less work; see the README's quick profile), or a GPU machine.")

    def _stage(self, epoch: int) -> int:
        k = self.started.config.stage2_epoch if self.started else None
        return 2 if k is not None and epoch >= k else 1


LONG_RUN = 3600.0  # seconds: a run longer than this gets a cheaper suggestion


def format_seconds(seconds: float) -> str:
    """"1 h 02 min", "3 min 05 s", "42 s": for a progress line."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
