"""How responsive the plugin stays: the longest main-thread stall while the Train widget trains in its thread
worker, and the time to switch rows in the Review widget. Goals on this machine's CPU: no stall over 50 ms,
no row switch over 100 ms.

A real napari viewer (shown; under Xvfb on a server) docks the plugin's Train widget, which trains the
``crl`` strategy on the built-in sample set (Start pressed as a user would). Meanwhile a 10 ms QTimer on the
main thread records when it fires; a *stall* is the gap between two ticks (the 10 ms interval included, so
an idle loop measures ~10 ms). The first ``--warmup`` seconds after Start are excluded from the verdict (the
Start click itself, the progress bar appearing, the worker loading the data) and reported apart, with the
click's own duration. Training runs once per ``--threads`` value (torch intra-op threads, set before Start
and again inside the worker thread, where it is checked); the verdict uses the first value (by default
what the plugin uses: every core but one, ``train_widget.gui_torch_threads``). The first training of the process
also pays one-time costs (the first forward and backward passes), as a user's first training in a fresh
napari does. For the longest stalls a watcher thread samples where the main
thread and the worker were (their Python stacks), so a stall can be traced to its code.

Then "Open in review" docks the Review widget on that run, and ``--switches`` row switches are timed: the
table row selected (as a click does), until the layers hold the new image and the canvas has drawn them.

Review at the radiograph's own size (issue 11): for each ``--native-sizes`` (default 256, 3000x3000 and
3000x2400), a run whose originals are that size (the phantoms written at 256 px, scaled up with a film-grain noise
so a PNG decodes like a radiograph's, trained at 64 px, one epoch) is opened in the Review widget: *first paint*
is the Open click until the canvas has drawn the first image (nothing is cached yet; from 1024 px on, the run's
training-size copy stands in for it), *original shown* until it has drawn the image at its own size; the longest
main-thread stall is reported while the original is read and while the read-ahead fills its cache, then
``--switches`` row switches are timed as above. Goals: row switch median <= 150 ms at 3000 x 3000, stalls <= 50 ms.
``--native-modes helper thread`` also measures the cases read in a thread of the viewer's process, as before the
helper process (``case_cache.LARGE_PX`` set out of reach: no helper, no stand-in), under the same load.

Writes benchmarks/results/ui_latency.json and ui_latency.md (``--out`` elsewhere). Run outside the tests,
with nothing else loading the CPU:

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python benchmarks/ui_latency.py
    ... benchmarks/ui_latency.py --quick      # plumbing check: seconds of training, numbers not meaningful
    ... benchmarks/ui_latency.py --native-only   # only the native-size review; the training numbers are kept
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOAL_STALL_MS = 50.0
GOAL_SWITCH_MS = 100.0
GOAL_NATIVE_SWITCH_MS = 150.0  # median row switch at 3000 x 3000 (issue 11)
NATIVE_SIZES = ["256", "3000x3000", "3000x2400"]
AFTER_DOCK_S = 3.0  # how long the main thread is watched after the Train widget docks
TICK_MS = 10

PROFILES = {
    # ~60-120 s of training on 2 CPU cores: 36 sample images at 128 px, three width-16 U-Nets, both stages
    "full": dict(size=128, width=16, depth=4, batch_size=8, epochs=8, lr=0.05, switches=30, warmup=2.0),
    # plumbing check: a few seconds of training
    "quick": dict(size=64, width=4, depth=3, batch_size=8, epochs=2, lr=0.05, switches=10, warmup=1.0),
}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


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
                frames = sys._current_frames()
                worker = _where(frames.get(self.worker)) if self.worker in frames else "-"
                self.samples.append((now, _where(frames.get(self.main)), worker, late))

    def stop(self) -> None:
        self._halt.set()
        self.join(1.0)

    def during(self, t0: float, t1: float, which: int = 1) -> list:
        """Per sample taken in [t0, t1]: 1 the main thread's place, 2 the worker's, 3 the sampler's delay."""
        return [s[which] for s in self.samples if t0 <= s[0] <= t1]


def _short(f: traceback.FrameSummary) -> str:
    parts = Path(f.filename).parts
    return f"{'/'.join(parts[-2:])}:{f.name}"


def _where(frame) -> str:
    if frame is None:
        return "?"
    stack = [f for f in traceback.extract_stack(frame) if Path(f.filename).name != Path(__file__).name]
    if not stack:
        return "event loop, no Python running (Qt/OpenGL in C++, or waiting for the CPU)"
    picks = [stack[-1]]
    ours = [f for f in stack if "crl_napari" in f.filename]
    if ours and ours[-1] is not stack[-1]:
        picks.append(ours[-1])
    if stack[0] not in picks:
        picks.append(stack[0])
    return " < ".join(_short(f) for f in picks)


def _gap_stats(gaps: list[tuple[float, float]]) -> dict:
    ms = [g for _, g in gaps]
    if not ms:
        return {"ticks": 0}
    return {"ticks": len(ms), "max_ms": round(max(ms), 2), "p99_ms": round(_pct(ms, 99), 2),
            "p50_ms": round(_pct(ms, 50), 2), "over_20ms": sum(g > 20 for g in ms),
            f"over_{GOAL_STALL_MS:g}ms": sum(g > GOAL_STALL_MS for g in ms), "over_100ms": sum(g > 100 for g in ms)}


def _run_loop(seconds: float) -> None:
    """Let the main thread's event loop run (as napari's would) for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def train_trial(viewer, widget, data: Path, out: Path, prof: dict, threads: int, device: str) -> dict:
    """Press Start on the Train widget and run the event loop until the worker is done, ticking all along."""
    from qtpy.QtCore import QEventLoop, QTimer

    from crl_napari._qt import train_worker as tw
    from crl_napari.cascade import EpochEnd, Started, Step

    torch.set_num_threads(threads)
    widget.torch_threads = threads  # the widget's own cap (every core but one) replaced by this trial's
    widget.data_dir.value = data
    widget.out_dir.value = out
    widget.size.value = prof["size"]
    widget.device.value = device
    settings = {"strategy": "crl", **{k: prof[k] for k in ("epochs", "batch_size", "width", "depth", "lr")}}
    for name, value in settings.items():
        widget.cfg[name].value = value

    in_worker: dict = {}
    real_job = tw.train_job

    def job(*args, **kwargs):  # the widget's own job, noting what torch uses in the worker thread
        # set here too: a pool thread keeps the OpenMP thread count of its first torch call, so a reused worker
        # thread ignores torch.set_num_threads() made on the main thread later
        torch.set_num_threads(threads)
        in_worker.update(torch_threads=torch.get_num_threads(), thread=threading.current_thread().name)
        sampler.worker = threading.get_ident()
        yield from real_job(*args, **kwargs)

    tw.train_job = job
    probe = TickProbe()
    sampler = StallSampler(probe)
    events: list[tuple[float, str]] = []
    epochs: list[float] = []
    try:
        probe.start()
        sampler.start()
        _run_loop(1.0)  # the idle loop, for reference
        t_idle_end = time.perf_counter()
        t_start = time.perf_counter()
        widget.start_btn.native.click()
        click_ms = (time.perf_counter() - t_start) * 1e3
        worker = widget.worker
        if worker is None:
            raise RuntimeError(f"training did not start: {widget.status.value}")

        def note(ev) -> None:
            now = time.perf_counter()
            events.append((now, type(ev).__name__ if not isinstance(ev, tuple) else str(ev[0])))
            if isinstance(ev, EpochEnd):
                epochs.append(ev.seconds)
                worst = max((g for _, g in probe.gaps(t_start, now)), default=0.0)
                print(f"  epoch {ev.epoch + 1}/{ev.epochs}: {ev.seconds:.1f} s, max stall so far {worst:.1f} ms",
                      flush=True)
            elif isinstance(ev, Started):
                print(f"  training on {ev.n_train} images, {ev.steps_per_epoch} steps per epoch ({ev.device})",
                      flush=True)

        worker.yielded.connect(note)
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        QTimer.singleShot(30 * 60 * 1000, loop.quit)  # never hang
        if widget.running:
            loop.exec_()
        t_end = time.perf_counter()
        _run_loop(0.3)  # what the worker's end brings to the main thread (notification, buttons)
        t_after = time.perf_counter()
    finally:
        probe.stop()
        sampler.stop()
        tw.train_job = real_job
    if widget.last_outcome != "finished":
        raise RuntimeError(f"training did not finish ({widget.last_outcome}): {widget.last_error}")
    warm_end = t_start + prof["warmup"]
    measured = probe.gaps(warm_end, t_after)
    top = sorted(measured, key=lambda g: -g[1])[:5]

    def during(t_end_gap: float, gap_ms: float) -> dict:
        t0 = t_end_gap - gap_ms / 1e3
        inside = sorted({name for t, name in events if t0 <= t <= t_end_gap})
        before = [name for t, name in events if t < t0]
        where = Counter(sampler.during(t0, t_end_gap)).most_common(3)
        in_job = Counter(sampler.during(t0, t_end_gap, 2)).most_common(2)
        late = sampler.during(t0, t_end_gap, 3)
        return {"at_s": round(t0 - t_start, 2), "ms": round(gap_ms, 1), "events_in_gap": inside,
                "after_event": before[-1] if before else None, "main_thread_in": [w for w, _ in where],
                "worker_in": [w for w, _ in in_job], "sampler_max_delay_ms": round(max(late), 1) if late else None}

    # stall time by where the main thread was (each sample stands for one sampling period)
    causes = Counter()
    for t, g in measured:
        if g > GOAL_STALL_MS:
            causes.update(sampler.during(t - g / 1e3, t))
    stall_causes = [{"where": w, "approx_ms": round(n * sampler.period * 1e3)} for w, n in causes.most_common(8)]

    n_steps = sum(name == Step.__name__ for _, name in events)
    return {
        "threads_set": threads, "torch_threads_in_worker": in_worker.get("torch_threads"),
        "worker_thread": in_worker.get("thread"), "device": widget.device_label.value,
        "training_seconds": round(t_end - t_start, 1), "epoch_seconds": [round(s, 2) for s in epochs],
        "steps": n_steps, "start_click_ms": round(click_ms, 1),
        "idle": _gap_stats(probe.gaps(probe.ticks[0] + 0.1, t_idle_end)),
        "warmup": {"seconds": prof["warmup"], **_gap_stats(probe.gaps(t_start, warm_end))},
        "measured": _gap_stats(measured),
        "all_after_start": _gap_stats(probe.gaps(t_start, t_after)),
        "largest_stalls": [during(t, g) for t, g in top],
        "stall_time_by_where": stall_causes,
    }


def review_trial(viewer, train, switches: int) -> dict:
    """"Open in review", then time ``switches`` row switches until the canvas has drawn the new image."""
    from qtpy.QtWidgets import QApplication

    from crl_napari._qt._common import run_link

    app = QApplication.instance()
    t0 = time.perf_counter()
    train.review_btn.native.click()
    review = run_link(viewer).review_widget
    app.processEvents()
    open_ms = (time.perf_counter() - t0) * 1e3
    if review is None or review.session is None:
        raise RuntimeError("the Review widget did not open the run")
    _run_loop(0.5)
    draws = [0]
    try:
        canvas = viewer.window._qt_viewer.canvas._scene_canvas  # napari's vispy SceneCanvas (private)
        canvas.events.draw.connect(lambda _e: draws.__setitem__(0, draws[0] + 1))
        drawn = True
    except AttributeError:
        drawn = False
    ids = review.session.ids
    n = len(ids)
    # jumps across the table (a click anywhere), never onto the row already shown
    order = [ids[(i * 7 + 3) % n] for i in range(switches + 1)]
    order = [b for a, b in zip([review.current_id, *order], order, strict=False) if a != b][:switches]
    total, select_only, undrawn = [], [], 0
    for image_id in order:
        row = review._rows[image_id]
        expected = review.layers.case(image_id).image  # the radiograph shown (its own size; cached or read now)
        before = draws[0]
        t = time.perf_counter()
        review.table.selectRow(row)  # what a click on the row does: itemSelectionChanged -> select
        t_sel = time.perf_counter()
        deadline = t + 5.0
        while True:
            app.processEvents()
            layer = review.layer("image")
            ok = layer is not None and np.array_equal(np.asarray(layer.data), expected)
            if ok and (not drawn or draws[0] > before):
                break
            if time.perf_counter() > deadline:
                undrawn += 1
                break
        app.processEvents()  # and whatever else the switch queued (the score histogram's redraw)
        total.append((time.perf_counter() - t) * 1e3)
        select_only.append((t_sel - t) * 1e3)
        if review.current_id != image_id:
            raise RuntimeError(f"row {row} did not show {image_id}")
        _run_loop(0.05)
    return {
        "switches": len(total), "images": n, "image_px": list(review.layers.case(ids[0]).image.shape),
        "open_review_ms": round(open_ms, 1), "waits_for_canvas_draw": drawn, "timed_out": undrawn,
        "median_ms": round(statistics.median(total), 1), "p95_ms": round(_pct(total, 95), 1),
        "max_ms": round(max(total), 1), "select_only_median_ms": round(statistics.median(select_only), 1),
        "all_ms": [round(x, 1) for x in total],
    }


def _parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def native_data(dest: Path, shape: tuple[int, int], n: int, seed: int = 0) -> Path:
    """A data folder of ``n`` phantoms at ``shape``: written at 256 px, scaled up (bicubic image, nearest mask)
    with a film-grain noise, so each PNG is as large to decode as a radiograph's (a smooth upscale compresses
    far better than a real image)."""
    from PIL import Image

    from crl_napari.phantoms import write_sample_set

    src = write_sample_set(dest.parent / f"{dest.name}-256", n=n, size=256, noise_ratio=0.5, seed=seed)
    if shape == (256, 256):
        return src
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for p in sorted((src / sub).glob("*.png")):
            im = Image.open(p)
            if sub == "images":
                big = np.asarray(im.convert("L").resize(shape[::-1], Image.BICUBIC), dtype=np.float32)
                big = np.clip(big + rng.normal(0, 6, big.shape).astype(np.float32), 0, 255).astype(np.uint8)
            else:
                big = np.asarray(im.convert("L").resize(shape[::-1], Image.NEAREST))
            Image.fromarray(big).save(dest / sub / p.name)
    (dest / "split.csv").write_text((src / "split.csv").read_text())
    return dest


def _wait_until(cond, timeout: float) -> bool:
    """Run the event loop (as napari's would, in 10 ms slices) until ``cond()`` or ``timeout`` s."""
    t = time.perf_counter()
    while not cond():
        if time.perf_counter() - t > timeout:
            return False
        _run_loop(0.01)
    return True


def _native_run(size: str, tmp: Path, n: int) -> tuple[Path, tuple[int, int], float]:
    """The run of ``n`` phantoms at ``size``, trained at 64 px (made once per size; the modes share it)."""
    from crl_napari import pipeline
    from crl_napari.cascade import TrainConfig

    shape = _parse_size(size)
    run_dir = tmp / f"run-{size}"
    t = time.perf_counter()
    if not (run_dir / "scores.csv").is_file():
        data = native_data(tmp / f"data-{size}", shape, n)
        config = TrainConfig(strategy="crl", epochs=1, batch_size=4, width=4, depth=3, lr=0.05, augment=False,
                             device="cpu")
        for _ in pipeline.train_run(data, run_dir, config, size=64):
            pass
    return run_dir, shape, time.perf_counter() - t


def native_trial(viewer, size: str, tmp: Path, switches: int, mode: str = "helper", n: int = 12) -> dict:
    """Open a run whose originals are ``size`` in the Review widget: first paint, the original on screen, the
    read-ahead, row switches. ``mode`` "helper": as the plugin reads (large originals in the helper process,
    the training-size stand-in first); "thread": every case read in the viewer's process, no stand-in (the
    reading before issue 11's stand-in, for comparison)."""
    from qtpy.QtWidgets import QApplication

    from crl_napari import case_cache, case_process

    app = QApplication.instance()
    run_dir, shape, prepare_s = _native_run(size, tmp, n)
    case_process.stop_helper()  # each trial starts it as a user's first open does
    large_px = case_cache.LARGE_PX
    if mode == "thread":
        case_cache.LARGE_PX = 1 << 30
    try:
        _, review = viewer.window.add_plugin_dock_widget("crl-napari", "Review masks")
        _run_loop(0.5)
        draws = [0]
        canvas = viewer.window._qt_viewer.canvas._scene_canvas  # napari's vispy SceneCanvas (private)
        canvas.events.draw.connect(lambda _e: draws.__setitem__(0, draws[0] + 1))
        probe = TickProbe()
        probe.start()
        review.run_edit.setText(str(run_dir))
        before = draws[0]
        t0 = time.perf_counter()
        review.open_btn.click()
        while draws[0] == before and time.perf_counter() - t0 < 30:
            app.processEvents()
        t_paint = time.perf_counter()
        first_shown = review.layer("image").data.shape
        gl = viewer.window._qt_viewer.canvas.native  # private: how large the canvas drew (width, height)
        canvas_px = [gl.width(), gl.height()]
        # the hidden maps' layers are made just after the first paint (review_layers.MAPS_DELAY_MS): a stall of
        # its own, once per opening, reported apart from the reading's
        _wait_until(lambda: all(review.layers._existing(r) is not None for r in ("probability", "uncertainty")), 60)
        t_maps = time.perf_counter()

        def native_drawn() -> bool:  # a draw since the stand-in was last seen, with the original in the layer
            layer = review.layer("image")
            if review.layers.standin is not None or layer.data.shape != shape:
                native_drawn.seen = draws[0]
                return False
            return draws[0] > native_drawn.seen or first_shown == shape

        native_drawn.seen = draws[0]
        _wait_until(native_drawn, 120)
        t_native = t_paint if first_shown == shape else time.perf_counter()  # the first paint was the original
        cache = review.layers._cases  # the read-ahead (private): wait until it holds what it reads first
        _wait_until(lambda: cache.wait(0), 120)
        t_ahead = time.perf_counter()
        _run_loop(0.2)
        probe.stop()

        def stalls(t_from: float, t_to: float) -> dict:  # gaps that start inside (t_from, t_to]
            return _gap_stats([(t, g) for t, g in probe.gaps(t_from, t_to) if t - g / 1e3 >= t_from])

        maps = stalls(t_paint, t_maps)
        while_native = stalls(t_maps, t_native) if t_native > t_maps else {"ticks": 0}
        while_ahead = stalls(max(t_native, t_maps), time.perf_counter())
        ids = review.session.ids
        order = [ids[(i * 7 + 3) % len(ids)] for i in range(switches + 1)]
        order = [b for a, b in zip([review.current_id, *order], order, strict=False) if a != b][:switches]
        total = []
        for image_id in order:
            expected = review.layers.case(image_id).image
            before = draws[0]
            t = time.perf_counter()
            review.table.selectRow(review._rows[image_id])
            while time.perf_counter() - t < 5:
                app.processEvents()
                layer = review.layer("image")
                if layer.data.shape == expected.shape and np.array_equal(layer.data, expected) and draws[0] > before:
                    break
            app.processEvents()
            total.append((time.perf_counter() - t) * 1e3)
            _run_loop(0.05)
        viewer.window.remove_dock_widget("all")
    finally:
        case_cache.LARGE_PX = large_px
    return {"originals": list(shape), "mode": mode, "first_image_px": list(first_shown), "images": len(ids),
            "cached": cache.cached, "prepare_s": round(prepare_s, 1), "first_paint_ms": round((t_paint - t0) * 1e3, 1),
            "native_ms": round((t_native - t0) * 1e3, 1), "read_ahead_s": round(t_ahead - t_native, 2),
            "maps_made_ms": round((t_maps - t0) * 1e3, 1), "stall_making_maps": maps, "canvas_px": canvas_px,
            "stall_while_reading_original": while_native, "stall_during_read_ahead": while_ahead,
            "switches": len(total), "median_ms": round(statistics.median(total), 1),
            "p90_ms": round(_pct(total, 90), 1), "max_ms": round(max(total), 1), "all_ms": [round(x, 1) for x in total]}


def run_native(viewer, sizes: list[str], switches: int, command: str, modes: tuple[str, ...] = ("helper",)) -> dict:
    """:func:`native_trial` for each size and mode, in temporary folders."""
    rows, load = [], [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="crl-ui-latency-native-") as tmp:
        for size in sizes:
            for mode in modes:
                print(f"native-size review at {size} ({mode}) ...", flush=True)
                r = native_trial(viewer, size, Path(tmp), switches, mode)
                r["load_average"] = [round(x, 2) for x in os.getloadavg()]
                rows.append(r)
                print(f"  first paint {r['first_paint_ms']} ms ({r['first_image_px']} px), original shown at "
                      f"{r['native_ms']} ms (max stall {r['stall_while_reading_original'].get('max_ms')} ms); "
                      f"read-ahead {r['read_ahead_s']} s (max stall {r['stall_during_read_ahead'].get('max_ms')} ms); "
                      f"{r['switches']} switches: median {r['median_ms']} ms, p90 {r['p90_ms']} ms, "
                      f"max {r['max_ms']} ms", flush=True)
    return {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "goal_median_ms_at_3000": GOAL_NATIVE_SWITCH_MS, "goal_stall_ms": GOAL_STALL_MS,
            "load_average_at_start": load, "sizes": rows}


def native_markdown(rows: list[dict], command: str, date: str, load: list | None = None) -> list[str]:
    busy = f"; load average at start {', '.join(map(str, load))} on {os.cpu_count()} CPUs" if load else ""
    lines = ["", "## Review at the radiograph's own size (issue 11)", "",
             f"Command: `{command}` ({date}{busy}). Each run: {rows[0]['images'] if rows else 0} phantoms at the size "
             "shown (scaled up from 256 px with film grain), trained at 64 px; the Review widget opened through its "
             "Open button. Mode *helper*: as the plugin reads (originals from "
             "1024 px on read in a helper process, the training-size copy shown until then); *thread*: every case "
             "read in a thread of the viewer's process, nothing shown before (the reading before this change). "
             "First paint: Open click until the canvas has drawn the first image (nothing is cached yet); original "
             "shown: until it has drawn the image at its own size. Stalls: longest gap of a 10 ms timer on the main "
             "thread: while the hidden map layers are made (once, 0.3 s after the first paint), while the original is "
             "read (ending with its layers put in), then while the read-ahead fills the cache (goal ≤ "
             f"{GOAL_STALL_MS:g} ms). Switches: once the read-ahead holds the run, table rows clicked across the "
             "list, until drawn.",
             "", "| originals | mode | first paint ms (px shown) | original shown ms | stall making maps ms "
             "| max stall reading the original ms | read-ahead s | max stall reading ahead ms | switch median ms "
             "| p90 ms | max ms | goal (median at 3000 x 3000) | load after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = ""
        if r["originals"] == [3000, 3000]:
            goal = f"≤ {GOAL_NATIVE_SWITCH_MS:g} ms: {'pass' if r['median_ms'] <= GOAL_NATIVE_SWITCH_MS else 'FAIL'}"
        first = r.get("first_image_px", r.get("image_px"))
        lines.append(f"| {r['originals'][0]} x {r['originals'][1]} | {r.get('mode', 'thread')} "
                     f"| {r['first_paint_ms']} ({first[0]} x {first[1]}) | {r.get('native_ms', r['first_paint_ms'])} "
                     f"| {r.get('stall_making_maps', {}).get('max_ms')} "
                     f"| {r.get('stall_while_reading_original', {}).get('max_ms')} | {r['read_ahead_s']} "
                     f"| {r['stall_during_read_ahead'].get('max_ms')} | {r['median_ms']} | {r['p90_ms']} "
                     f"| {r['max_ms']} | {goal} | {', '.join(map(str, r.get('load_average', [])))} |")
    return lines


def _gl_renderer() -> str | None:
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


def write_markdown(result: dict) -> str:
    r0 = result["training"][0]
    rv = result["review"]
    st = r0["measured"]
    ok_stall = st["max_ms"] <= GOAL_STALL_MS
    ok_switch = rv["max_ms"] <= GOAL_SWITCH_MS
    m = result["machine"]
    s = result["settings"]
    lines = [
        "# UI latency — the plugin while it trains, and review row switches",
        "",
    ]
    if result["quick"]:
        lines += ["**`--quick`: a plumbing check with seconds of training, not a measurement.**", ""]
    lines += [
        f"Command: `{result['command']}` ({result['date']}). Machine: {m['processor']}, {m['cpus_usable']} usable "
        f"CPUs, torch {m['torch']}, napari {m['napari']}, {m['qt']}; load average at start "
        f"{', '.join(map(str, m['load_average_at_start']))}.",
        f"Training: `crl` on the built-in sample set ({s['size']} px, width {s['width']}, depth {s['depth']}, "
        f"batch {s['batch_size']}, {s['epochs']} epochs, device {r0['device']}) in the Train widget's thread "
        f"worker, {r0['training_seconds']} s; torch threads in the worker: {r0['torch_threads_in_worker']}.",
        f"Stall = gap between two ticks of a {TICK_MS} ms QTimer on the main thread (interval included); the first "
        f"{s['warmup']} s after Start are excluded from the verdict (reported below).",
        "",
        "| what | goal | measured | pass |",
        "|---|---|---|---|",
        f"| longest main-thread stall while training ({r0['torch_threads_in_worker']} torch threads) "
        f"| ≤ {GOAL_STALL_MS:g} ms | max {st['max_ms']} ms, p99 {st['p99_ms']} ms, "
        f"{st[f'over_{GOAL_STALL_MS:g}ms']} of {st['ticks']} ticks > {GOAL_STALL_MS:g} ms "
        f"| {'pass' if ok_stall else 'FAIL'} |",
        f"| review row switch (until drawn; {rv['switches']} switches, {rv['image_px'][0]} px) "
        f"| ≤ {GOAL_SWITCH_MS:g} ms | median {rv['median_ms']} ms, p95 {rv['p95_ms']} ms, max {rv['max_ms']} ms "
        f"| {'pass' if ok_switch else 'FAIL'} |",
        "",
        f"Opening the Train widget: docked in {result['opening']['dock_ms']} ms (the first open imports torch); "
        f"longest main-thread stall in the {result['opening']['after_dock_s']} s after (a user filling in the "
        f"form): {result['opening']['after_dock'].get('max_ms')} ms.",
        "",
        "Per torch thread count (stalls after the warm-up; warm-up and Start click apart):",
        "",
        "| torch threads | training s | s/epoch | max stall ms | p99 ms | ticks > 50 ms | warm-up max ms "
        "| Start click ms | idle max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["training"]:
        sec = statistics.median(r["epoch_seconds"]) if r["epoch_seconds"] else float("nan")
        me, wu = r["measured"], r["warmup"]
        lines.append(
            f"| {r['torch_threads_in_worker']} | {r['training_seconds']} | {sec:.1f} | {me['max_ms']} | {me['p99_ms']} "
            f"| {me[f'over_{GOAL_STALL_MS:g}ms']} / {me['ticks']} | {wu.get('max_ms', '—')} | {r['start_click_ms']} "
            f"| {r['idle'].get('max_ms', '—')} |")
    lines += ["", f"Opening the run in review: {rv['open_review_ms']} ms. Largest stalls "
              f"({r0['torch_threads_in_worker']} threads, seconds after Start, what the worker had yielded just "
              "before):", ""]
    for g in r0["largest_stalls"]:
        lines.append(f"- {g['ms']} ms at {g['at_s']} s, after {g['after_event']}"
                     + (f", during {', '.join(g['events_in_gap'])}" if g["events_in_gap"] else "")
                     + (f"; main thread in `{g['main_thread_in'][0]}`" if g["main_thread_in"] else "")
                     + (f"; worker in `{g['worker_in'][0]}`" if g["worker_in"] else ""))
    if r0["stall_time_by_where"]:
        lines += ["", f"Where the main thread was during the stalls over {GOAL_STALL_MS:g} ms (sampled every 5 ms "
                  "once a tick is 30 ms late; approximate):", ""]
        lines += [f"- ~{c['approx_ms']} ms: `{c['where']}`" for c in r0["stall_time_by_where"]]
    native = result.get("native_review")
    if native:
        lines += native_markdown(native["sizes"], native["command"], native["date"],
                                 native.get("load_average_at_start"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="plumbing check: a few seconds of training")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch threads for each training run; the first decides the verdict (default: what the "
                    "plugin uses, every core but one, then torch's default when that differs)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--switches", type=int)
    ap.add_argument("--warmup", type=float, help="seconds after Start left out of the verdict")
    ap.add_argument("--device", default="cpu", help="the Train widget's device (default cpu: the goal is on CPU)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for ui_latency.json and ui_latency.md")
    ap.add_argument("--native-sizes", nargs="*", default=NATIVE_SIZES,
                    help="original sizes for the native-size review (H or HxW); none: skip it")
    ap.add_argument("--native-modes", nargs="+", default=["helper"], choices=["helper", "thread"],
                    help="how the native-size review reads: helper (the plugin's way) and/or thread (for comparison)")
    ap.add_argument("--native-only", action="store_true",
                    help="only the native-size review; the training and 128 px numbers of the JSON in --out are kept")
    args = ap.parse_args(argv)
    prof = dict(PROFILES["quick" if args.quick else "full"])
    for key in ("epochs", "size", "width", "switches", "warmup"):
        if getattr(args, key) is not None:
            prof[key] = getattr(args, key)
    from crl_napari._qt.train_widget import gui_torch_threads

    default_threads = torch.get_num_threads()
    threads = args.threads or list(dict.fromkeys([gui_torch_threads(), default_threads]))
    mach = machine()

    # napari's settings in a fresh file: its default window and dock layout, not the size a previous session
    # saved (a window taller than the screen is never drawn under Xvfb), and nothing written to ~/.config
    settings_dir = tempfile.mkdtemp(prefix="crl-ui-latency-settings-")
    os.environ["NAPARI_CONFIG"] = str(Path(settings_dir) / "napari-settings.yaml")
    import napari
    from qtpy.QtWidgets import QApplication

    from crl_napari._sample_data import sample_dataset_path

    data = sample_dataset_path()
    viewer = napari.Viewer(show=True, title="crl-napari ui latency")
    command = "python benchmarks/ui_latency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.native_only:
        torch.set_num_threads(threads[0])  # the runs it trains first (a thread count for the shared machine)
        try:
            native = run_native(viewer, args.native_sizes, prof["switches"], command,
                                tuple(args.native_modes))
        finally:
            viewer.close()
        result = json.loads((args.out / "ui_latency.json").read_text())
        result["native_review"] = native
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "ui_latency.json", result)
        atomic_write_text(args.out / "ui_latency.md", write_markdown(result))
        print(f"wrote {args.out / 'ui_latency.json'} and ui_latency.md (native-size review only)")
        return 0
    QApplication.instance().processEvents()
    try:
        win = viewer.window._qt_window  # private; only to record the window size
        mach["window_px"] = [win.width(), win.height()]
    except AttributeError:
        pass
    try:
        probe = TickProbe()
        probe.start()
        t_open = time.perf_counter()
        _, train = viewer.window.add_plugin_dock_widget("crl-napari", "Train")
        dock_ms = (time.perf_counter() - t_open) * 1e3
        # the main thread while a user fills in the form
        _run_loop(AFTER_DOCK_S)
        t_after = time.perf_counter()
        probe.stop()
        t_docked = t_open + dock_ms / 1e3
        # gaps that start once the widget is docked (the gap spanning the docking call is dock_ms itself)
        after = [(t, g) for t, g in probe.gaps(t_docked, t_after) if t - g / 1e3 >= t_docked]
        opening = {"dock_ms": round(dock_ms, 1), "after_dock_s": AFTER_DOCK_S, "after_dock": _gap_stats(after)}
        print(f"Train widget docked in {dock_ms:.0f} ms; max stall in the {AFTER_DOCK_S} s after "
              f"{opening['after_dock'].get('max_ms')} ms", flush=True)
        train.sample_btn.native.click()  # "Use the built-in sample set"
        if Path(str(train.data_dir.value)).resolve() != data.resolve():
            raise RuntimeError(f"the sample button set {train.data_dir.value}, expected {data}")
        _run_loop(1.0)
        trainings = []
        with tempfile.TemporaryDirectory(prefix="crl-ui-latency-") as tmp:
            for n in threads:
                print(f"training with {n} torch thread(s) ...", flush=True)
                r = train_trial(viewer, train, data, Path(tmp) / f"run-threads{n}", prof, n, args.device)
                trainings.append(r)
                me = r["measured"]
                print(f"  threads {r['torch_threads_in_worker']}: {r['training_seconds']} s; max stall "
                      f"{me['max_ms']} ms, p99 {me['p99_ms']} ms, {me[f'over_{GOAL_STALL_MS:g}ms']} of "
                      f"{me['ticks']} ticks > 50 ms "
                      f"(warm-up max {r['warmup'].get('max_ms')} ms, Start click {r['start_click_ms']} ms)",
                      flush=True)
            # review the run of the first setting (Open in review follows the run folder in the form)
            train.out_dir.value = Path(tmp) / f"run-threads{threads[0]}"
            print("review row switches ...", flush=True)
            review = review_trial(viewer, train, prof["switches"])
            print(f"  {review['switches']} switches: median {review['median_ms']} ms, p95 {review['p95_ms']} ms, "
                  f"max {review['max_ms']} ms (open {review['open_review_ms']} ms)", flush=True)
        viewer.window.remove_dock_widget("all")
        native = run_native(viewer, args.native_sizes, prof["switches"], command,
                                tuple(args.native_modes)) if args.native_sizes else None
    finally:
        viewer.close()
    mach["gl"] = _gl_renderer()
    st, rv = trainings[0]["measured"], review
    result = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "goals": {"stall_ms": GOAL_STALL_MS, "row_switch_ms": GOAL_SWITCH_MS},
        "verdict": {"stall": "pass" if st["max_ms"] <= GOAL_STALL_MS else "fail",
                    "row_switch": "pass" if rv["max_ms"] <= GOAL_SWITCH_MS else "fail",
                    "judged_on": f"max stall after the warm-up with {trainings[0]['torch_threads_in_worker']} "
                                 "torch threads; max row switch"},
        "settings": {"strategy": "crl", "data": "built-in sample set", "device": args.device, "tick_ms": TICK_MS,
                     **prof, "threads": threads},
        "machine": mach,
        "opening": opening,
        "training": trainings,
        "review": review,
        "native_review": native,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "ui_latency.json", result)
    atomic_write_text(args.out / "ui_latency.md", write_markdown(result))
    print(f"wrote {args.out / 'ui_latency.json'} and ui_latency.md: stall {result['verdict']['stall']}, "
          f"row switch {result['verdict']['row_switch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
