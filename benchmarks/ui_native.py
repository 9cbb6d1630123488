"""The review at the radiograph's own size (issue 11), for benchmarks/ui_latency.py: runs whose originals are
256 px, 3000 x 3000 or 3000 x 2400 (phantoms scaled up with film grain, trained at 64 px) opened in the Review
widget: first paint, the original on screen, the stalls while it and the read-ahead read, row switches.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ui_probe import GOAL_STALL_MS, TickProbe, gap_stats, pct, run_loop, wait_until

GOAL_NATIVE_SWITCH_MS = 150.0  # median row switch at 3000 x 3000 (issue 11)
NATIVE_SIZES = ["256", "3000x3000", "3000x2400"]


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
        run_loop(0.5)
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
        swap_at: list[float] = []  # when the image layer took the original in place of its stand-in
        review.layer("image").events.data.connect(
            lambda _e: swap_at.append(time.perf_counter()) if review.layer("image").data.shape == shape else None)
        gl = viewer.window._qt_viewer.canvas.native  # private: how large the canvas drew (width, height)
        canvas_px = [gl.width(), gl.height()]
        # the hidden maps' layers are made just after the first paint (review_layers.MAPS_DELAY_MS): a stall of
        # its own, once per opening, reported apart from the reading's
        wait_until(lambda: all(review.layers._existing(r) is not None for r in ("probability", "uncertainty")), 60)
        t_maps = time.perf_counter()

        def native_drawn() -> bool:  # a draw since the stand-in was last seen, with the original in the layer
            layer = review.layer("image")
            if review.layers.standin is not None or layer.data.shape != shape:
                native_drawn.seen = draws[0]
                return False
            return draws[0] > native_drawn.seen or first_shown == shape

        native_drawn.seen = draws[0]
        wait_until(native_drawn, 120)
        t_native = t_paint if first_shown == shape else time.perf_counter()  # the first paint was the original
        cache = review.layers._cases  # the read-ahead (private): wait until it holds what it reads first
        wait_until(lambda: cache.wait(0), 120)
        t_ahead = time.perf_counter()
        run_loop(0.2)
        probe.stop()

        def stalls(t_from: float, t_to: float) -> dict:  # gaps that start inside (t_from, t_to]
            return gap_stats([(t, g) for t, g in probe.gaps(t_from, t_to) if t - g / 1e3 >= t_from])

        maps = stalls(t_paint, t_maps)
        # the stand-in's swap for the original: every gap from the one the image's swap fell in to the original drawn
        swap = gap_stats([(t, g) for t, g in probe.gaps(swap_at[0], t_native + 0.05)]) if swap_at else {"ticks": 0}
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
            run_loop(0.05)
        viewer.window.remove_dock_widget("all")
    finally:
        case_cache.LARGE_PX = large_px
    return {"originals": list(shape), "mode": mode, "first_image_px": list(first_shown), "images": len(ids),
            "cached": cache.cached, "prepare_s": round(prepare_s, 1), "first_paint_ms": round((t_paint - t0) * 1e3, 1),
            "native_ms": round((t_native - t0) * 1e3, 1), "read_ahead_s": round(t_ahead - t_native, 2),
            "maps_made_ms": round((t_maps - t0) * 1e3, 1), "stall_making_maps": maps, "canvas_px": canvas_px,
            "stall_swapping_in_original": swap,
            "stall_while_reading_original": while_native, "stall_during_read_ahead": while_ahead,
            "switches": len(total), "median_ms": round(statistics.median(total), 1),
            "p90_ms": round(pct(total, 90), 1), "max_ms": round(max(total), 1), "all_ms": [round(x, 1) for x in total]}


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
                      f"{r['native_ms']} ms (max stall {r['stall_while_reading_original'].get('max_ms')} ms, swapping "
                      f"it in {r['stall_swapping_in_original'].get('max_ms')} ms); "
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
             "Swapping in the original: the longest gap from the one the image layer took the original in until the "
             "original is drawn (its three layers, one per turn of the event loop).",
             "", "| originals | mode | first paint ms (px shown) | original shown ms | stall making maps ms "
             "| max stall reading the original ms | max stall swapping in the original ms | read-ahead s "
             "| max stall reading ahead ms | switch median ms | p90 ms | max ms | goal (median at 3000 x 3000) "
             "| load after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = ""
        if r["originals"] == [3000, 3000]:
            goal = f"≤ {GOAL_NATIVE_SWITCH_MS:g} ms: {'pass' if r['median_ms'] <= GOAL_NATIVE_SWITCH_MS else 'FAIL'}"
        first = r.get("first_image_px", r.get("image_px"))
        lines.append(f"| {r['originals'][0]} x {r['originals'][1]} | {r.get('mode', 'thread')} "
                     f"| {r['first_paint_ms']} ({first[0]} x {first[1]}) | {r.get('native_ms', r['first_paint_ms'])} "
                     f"| {r.get('stall_making_maps', {}).get('max_ms')} "
                     f"| {r.get('stall_while_reading_original', {}).get('max_ms')} "
                     f"| {r.get('stall_swapping_in_original', {}).get('max_ms', '—')} | {r['read_ahead_s']} "
                     f"| {r['stall_during_read_ahead'].get('max_ms')} | {r['median_ms']} | {r['p90_ms']} "
                     f"| {r['max_ms']} | {goal} | {', '.join(map(str, r.get('load_average', [])))} |")
    return lines
