"""What the UI latency benchmarks share: a 10 ms QTimer that records when the main thread is free
(:class:`TickProbe`), a watcher thread that notes where the main thread was while it stalled
(:class:`StallSampler`), the statistics of the gaps, event-loop helpers, and the machine's description.

Used by benchmarks/ui_latency.py (training, the 128 px review) and benchmarks/ui_native.py (the review at the
radiograph's own size).
"""

from __future__ import annotations

import faulthandler
import gc
import os
import platform
import re
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent  # frames of the benchmark scripts are left out of a stall's place
GOAL_STALL_MS = 50.0
TICK_MS = 10


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


class GcProbe:
    """Python's full (generation 2) garbage collections while started: when, how long, and in which thread
    (a full collection holds the GIL, so the viewer's thread waits whichever thread runs it)."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float, bool]] = []  # (end, ms, on the main thread)
        self._t: dict[int, float] = {}

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        me = threading.get_ident()
        if phase == "start":
            self._t[me] = time.perf_counter()
        elif me in self._t:
            end = time.perf_counter()
            self.runs.append((end, (end - self._t.pop(me)) * 1e3, me == threading.main_thread().ident))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def stats(self, t0: float, t1: float) -> dict:
        got = [(ms, main) for end, ms, main in self.runs if t0 < end <= t1]
        return {"full_collections": len(got), "max_ms": round(max((ms for ms, _ in got), default=0.0), 1),
                "on_main_thread": sum(main for _, main in got)}


class TickProbe:
    """A QTimer on the main thread that records when it fires."""

    def __init__(self, interval_ms: int = TICK_MS) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer_running = False

    def start(self) -> None:
        self.ticks.clear()
        self.ticks.append(time.perf_counter())
        self.timer.start()
        self.timer_running = True

    def stop(self) -> None:
        self.timer_running = False
        self.timer.stop()

    def gaps(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """(end time, gap ms) of every tick gap ending in (t0, t1]."""
        t = self.ticks
        return [(t[i], (t[i] - t[i - 1]) * 1e3) for i in range(1, len(t)) if t0 < t[i] <= t1]


class StallSampler(threading.Thread):
    """Where the main thread is while it stalls: every ``period_ms``, once the probe has not ticked for
    ``after_ms``, the main thread's Python stack is summarised (innermost frame, nearest crl_napari frame, the
    slot the event loop called). Only the stack is read; the main thread is not interrupted."""

    def __init__(self, probe: TickProbe, after_ms: float = 30.0, period_ms: float = 5.0) -> None:
        super().__init__(daemon=True, name="stall-sampler")
        self.probe, self.after, self.period = probe, after_ms / 1e3, period_ms / 1e3
        self.main = threading.main_thread().ident
        self.worker: int | None = None  # the training thread's ident, once known
        self.samples: list[tuple[float, str, str, float]] = []  # time, main thread, worker, sampler's delay
        self._halt = threading.Event()

    def run(self) -> None:
        last = time.perf_counter()
        while not self._halt.wait(self.period):
            now = time.perf_counter()
            late, last = (now - last - self.period) * 1e3, now  # a late wake-up: the GIL or the CPU was taken
            ticks = self.probe.ticks
            if not ticks or not self.probe.timer_running:
                continue
            if now - ticks[-1] > self.after:
                stacks = thread_stacks()
                worker = where(stacks.get(self.worker)) if self.worker in stacks else "-"
                self.samples.append((now, where(stacks.get(self.main)), worker, late))

    def stop(self) -> None:
        self._halt.set()
        self.join(1.0)

    def during(self, t0: float, t1: float, which: int = 1) -> list:
        """Per sample taken in [t0, t1]: 1 the main thread's place, 2 the worker's, 3 the sampler's delay."""
        return [s[which] for s in self.samples if t0 <= s[0] <= t1]


def _short(f: traceback.FrameSummary) -> str:
    parts = Path(f.filename).parts
    return f"{'/'.join(parts[-2:])}:{f.name}"


def thread_stacks() -> dict[int, list[traceback.FrameSummary]]:
    """Every thread's Python stack (outermost first) by thread ident, read by faulthandler as text.

    Not sys._current_frames(): the frame objects it makes keep a frame's locals alive once the frame returns, and
    releasing them here freed the viewer's QPainter of a finished paint event in this thread (a segfault in
    QPainter::end at the round trial's end, caught under gdb on 1 Dec 2026)."""
    with tempfile.TemporaryFile("w+") as fh:
        faulthandler.dump_traceback(fh, all_threads=True)
        fh.seek(0)
        text = fh.read()
    stacks: dict[int, list[traceback.FrameSummary]] = {}
    current: list | None = None
    for line in text.splitlines():
        head = _THREAD.match(line)
        if head:
            current = stacks.setdefault(int(head.group(1), 16), [])
        elif current is not None and (frame := _FRAME.match(line)):
            current.insert(0, traceback.FrameSummary(frame.group(1), int(frame.group(2)), frame.group(3),
                                                     lookup_line=False))
    return stacks


_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-f]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def where(stack: list[traceback.FrameSummary] | None) -> str:
    if stack is None:
        return "?"
    stack = [f for f in stack if Path(f.filename).parent != HERE]
    if not stack:
        return "event loop, no Python running (Qt/OpenGL in C++, or waiting for the CPU)"
    picks = [stack[-1]]
    ours = [f for f in stack if "crl_napari" in f.filename]
    if ours and ours[-1] is not stack[-1]:
        picks.append(ours[-1])
    if stack[0] not in picks:
        picks.append(stack[0])
    return " < ".join(_short(f) for f in picks)


def gap_stats(gaps: list[tuple[float, float]]) -> dict:
    ms = [g for _, g in gaps]
    if not ms:
        return {"ticks": 0}
    return {"ticks": len(ms), "max_ms": round(max(ms), 2), "p99_ms": round(pct(ms, 99), 2),
            "p50_ms": round(pct(ms, 50), 2), "over_20ms": sum(g > 20 for g in ms),
            f"over_{GOAL_STALL_MS:g}ms": sum(g > GOAL_STALL_MS for g in ms), "over_100ms": sum(g > 100 for g in ms)}


def run_loop(seconds: float) -> None:
    """Let the main thread's event loop run (as napari's would) for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def wait_until(cond, timeout: float) -> bool:
    """Run the event loop (as napari's would, in 10 ms slices) until ``cond()`` or ``timeout`` s."""
    t = time.perf_counter()
    while not cond():
        if time.perf_counter() - t > timeout:
            return False
        run_loop(0.01)
    return True


def gl_renderer() -> str | None:
    try:
        import vispy

        lines = [ln.strip() for ln in vispy.sys_info().splitlines() if ln.strip().lower().startswith("gl ")]
        return "; ".join(lines) or None
    except Exception:
        return None


def machine() -> dict:
    import napari
    import qtpy

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
        "cpus_usable": usable, "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
        "napari": napari.__version__, "qt": f"{qtpy.API_NAME} {qtpy.QT_VERSION}", "python": platform.python_version(),
        "qt_platform": os.environ.get("QT_QPA_PLATFORM") or ("xcb" if os.environ.get("DISPLAY") else None),
        "display": os.environ.get("DISPLAY"), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
