"""The plugin while it trains, for benchmarks/ui_latency.py: Start pressed on the Train widget, the main
thread's stalls recorded until the worker ends (:func:`train_trial`); then "Open in review" and row switches timed
until the canvas has drawn the new image (:func:`review_trial`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from ui_probe import GOAL_STALL_MS, StallSampler, TickProbe, gap_stats, pct, run_loop


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
        run_loop(1.0)  # the idle loop, for reference
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
        run_loop(0.3)  # what the worker's end brings to the main thread (notification, buttons)
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
        "idle": gap_stats(probe.gaps(probe.ticks[0] + 0.1, t_idle_end)),
        "warmup": {"seconds": prof["warmup"], **gap_stats(probe.gaps(t_start, warm_end))},
        "measured": gap_stats(measured),
        "all_after_start": gap_stats(probe.gaps(t_start, t_after)),
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
    run_loop(0.5)
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
        run_loop(0.05)
    return {
        "switches": len(total), "images": n, "image_px": list(review.layers.case(ids[0]).image.shape),
        "open_review_ms": round(open_ms, 1), "waits_for_canvas_draw": drawn, "timed_out": undrawn,
        "median_ms": round(statistics.median(total), 1), "p95_ms": round(pct(total, 95), 1),
        "max_ms": round(max(total), 1), "select_only_median_ms": round(statistics.median(select_only), 1),
        "all_ms": [round(x, 1) for x in total],
    }
