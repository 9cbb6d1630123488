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

The parts: benchmarks/ui_train.py (the training and the 128 px review), benchmarks/ui_native.py (the review at
the radiograph's own size) and benchmarks/ui_probe.py (the tick probe, the stall sampler, the machine); here
only the command line and the report.

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
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ui_native import NATIVE_SIZES, native_markdown, run_native  # noqa: E402
from ui_probe import (  # noqa: E402
    GOAL_STALL_MS,
    TICK_MS,
    TickProbe,
    gap_stats,
    gl_renderer,
    machine,
    run_loop,
)
from ui_round import ROUND_SIZE, round_markdown, round_trial  # noqa: E402
from ui_train import review_trial, train_trial  # noqa: E402

from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOAL_SWITCH_MS = 100.0
AFTER_DOCK_S = 3.0  # how long the main thread is watched after the Train widget docks

PROFILES = {
    # ~60-120 s of training on 2 CPU cores: 36 sample images at 128 px, three width-16 U-Nets, both stages
    "full": dict(size=128, width=16, depth=4, batch_size=8, epochs=8, lr=0.05, switches=30, warmup=2.0),
    # plumbing check: a few seconds of training
    "quick": dict(size=64, width=4, depth=3, batch_size=8, epochs=2, lr=0.05, switches=10, warmup=1.0),
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
    rr = result.get("round_review")
    if rr:
        lines += round_markdown(rr, rr["command"], rr["date"])
    return "\n".join(lines) + "\n"


def _round(viewer, size: str, command: str, seconds: float = 40.0) -> dict:
    """ui_round.round_trial in a temporary folder, with the command, date and load it ran under."""
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"review at {size} while a round trains ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="crl-ui-latency-round-") as tmp:
        r = round_trial(viewer, Path(tmp), size, seconds=seconds)
    st = r["stall_outside_switches"]
    print(f"  round {r['round_seconds']} s ({r['outcome']}): max stall {st.get('max_ms')} ms outside "
          f"{r['switches']} switches (median {r['median_ms']} ms); re-ranking {r['stall_reranking'].get('max_ms')} ms; "
          f"full garbage collections while training {r['gc_while_training']}", flush=True)
    return {**r, "command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_at_start": load, "load_average_after": [round(x, 2) for x in os.getloadavg()]}


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
    ap.add_argument("--round-size", default=ROUND_SIZE,
                    help="originals' size (H or HxW) of the review while a round trains (ui_round.py); 'none': skip")
    ap.add_argument("--round-only", action="store_true",
                    help="only the review while a round trains; the other numbers of the JSON in --out are kept")
    ap.add_argument("--no-frozen-heap", action="store_true",
                    help="a control: train without crl_napari._qt.frozen_heap (full garbage collections walk the "
                         "whole viewer while training, as before 1 Dec 2026 20:30)")
    args = ap.parse_args(argv)
    if args.no_frozen_heap:
        from crl_napari._qt import frozen_heap

        frozen_heap.hold = frozen_heap.release = lambda: None
    prof = dict(PROFILES["quick" if args.quick else "full"])
    round_s = 8.0 if args.quick else 40.0  # about how long the round of ui_round.py trains
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
    if args.round_only:
        torch.set_num_threads(threads[0])
        try:
            rr = _round(viewer, args.round_size, command, round_s)
        finally:
            viewer.close()
        result = json.loads((args.out / "ui_latency.json").read_text())
        result["round_review"] = rr
        atomic_write_json(args.out / "ui_latency.json", result)
        atomic_write_text(args.out / "ui_latency.md", write_markdown(result))
        print(f"wrote {args.out / 'ui_latency.json'} and ui_latency.md (the review while a round trains only)")
        return 0
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
        run_loop(AFTER_DOCK_S)
        t_after = time.perf_counter()
        probe.stop()
        t_docked = t_open + dock_ms / 1e3
        # gaps that start once the widget is docked (the gap spanning the docking call is dock_ms itself)
        after = [(t, g) for t, g in probe.gaps(t_docked, t_after) if t - g / 1e3 >= t_docked]
        opening = {"dock_ms": round(dock_ms, 1), "after_dock_s": AFTER_DOCK_S, "after_dock": gap_stats(after)}
        print(f"Train widget docked in {dock_ms:.0f} ms; max stall in the {AFTER_DOCK_S} s after "
              f"{opening['after_dock'].get('max_ms')} ms", flush=True)
        train.sample_btn.native.click()  # "Use the built-in sample set"
        if Path(str(train.data_dir.value)).resolve() != data.resolve():
            raise RuntimeError(f"the sample button set {train.data_dir.value}, expected {data}")
        run_loop(1.0)
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
        rr = (_round(viewer, args.round_size, command, round_s)
              if args.round_size.lower() != "none" else None)
    finally:
        viewer.close()
    mach["gl"] = gl_renderer()
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
        "round_review": rr,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "ui_latency.json", result)
    atomic_write_text(args.out / "ui_latency.md", write_markdown(result))
    print(f"wrote {args.out / 'ui_latency.json'} and ui_latency.md: stall {result['verdict']['stall']}, "
          f"row switch {result['verdict']['row_switch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
