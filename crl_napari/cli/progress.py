"""Progress records as lines on stderr, few enough for a server's log."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cache import CacheProgress

EVERY_SECONDS = 30.0  # one line per step this often: caching 50,000 images takes minutes, scoring them hours


class ProgressLines:
    """Which CacheProgress records (caching, writing the run folder, scoring) get a line: the first of each step,
    its last, and one every EVERY_SECONDS between."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.what: str | None = None
        self.last = float("-inf")

    def due(self, ev: CacheProgress) -> bool:
        now = self.clock()
        if ev.what != self.what or ev.left == 0 or now - self.last >= EVERY_SECONDS:
            self.what, self.last = ev.what, now
            return True
        return False
