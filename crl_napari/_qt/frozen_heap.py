"""While a job trains in the viewer, Python's full garbage collections skip the objects the viewer already held.

Why: a napari viewer with the plugin's docks holds some 430 000 objects the cyclic collector tracks, and a full
collection walks them all with the GIL held: 200-300 ms on two cores. While a round trains, the reviewer's row
switches make enough new objects that one starts every few switches, in whichever thread allocates next, the
training thread's included, and the viewer's thread waits for the GIL meanwhile (perf on benchmarks/ui_round.py,
1 Dec 2026: 291 of the 297 samples of a 295 ms stall were ``gc_collect_main`` on the training thread; the viewer's
thread had 3). :func:`hold` collects the young generations, then ``gc.freeze()`` moves every object alive to the
permanent generation that collections skip; the last :func:`release` gives them back (``gc.unfreeze()``). Objects
made during the job are collected as always.

The cost: cyclic garbage of the viewer's from before the job (what the next full collection would have freed),
and any object of the viewer's that becomes cyclic garbage while a job trains (a layer the user deletes then), is
freed when the last job ends, not before. A full collection first would free the former but held the click that
starts the job 242 ms (against 2 ms; benchmarks/ui_latency.py, 1 Dec 2026). The collector is the whole process's,
so this is done only while the plugin trains, and undone after.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["hold", "holders", "release"]

_lock = threading.Lock()
_holders = 0


def hold() -> None:
    """A job starts: collect the young generations' garbage (milliseconds), then freeze the rest until the last job
    ends."""
    global _holders
    with _lock:
        _holders += 1
        if _holders == 1:
            gc.collect(1)
            gc.freeze()


def release() -> None:
    """A job ended (or its widget went away): the last one gives the frozen objects back to the collector."""
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()


def holders() -> int:
    """How many jobs hold the heap frozen now."""
    return _holders
