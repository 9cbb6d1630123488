"""Does scoring's heap setting (heap.map_large_blocks: glibc's mmap threshold fixed at 4 MiB, for the whole process)
slow the napari viewer down when the plugin scored in it? The Review widget at the radiograph's own size, in two
kinds of fresh viewer processes: ``default`` (glibc's own threshold, which follows the largest block freed) and
``mapped`` (the threshold fixed first, as it is in a viewer once a Train or a retrain scored there). Each trial is
benchmarks/ui_native.py's: open a run of 3000 x 3000 originals (phantoms scaled up with film grain, trained at
64 px) in the Review widget, wait for the read-ahead, switch rows; it records the row switches and the process's
memory (RSS now and at its peak). The trials alternate kinds, each in its own process, under Xvfb; the run is
made once, in a process of its own. Writes benchmarks/results/heap_viewer.json and .md.

    xvfb-run -a -s "-screen 0 1280x1024x24" nice -n 10 python benchmarks/heap_viewer.py --trials 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results"
SIZE = "3000x3000"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trial(kind: str, work: Path, switches: int, out: Path) -> None:
    """One Review trial in this (fresh) process; ``kind`` "mapped" fixes the threshold first."""
    os.environ["NAPARI_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="heap-viewer-settings-")) / "settings.yaml")
    from crl_napari import heap

    mapped = heap.map_large_blocks() if kind == "mapped" else False
    import napari
    from ui_native import native_trial

    viewer = napari.Viewer(show=True, title="heap viewer")
    try:
        row = native_trial(viewer, SIZE, work, switches)
    finally:
        viewer.close()
    row.update(kind=kind, mapped=mapped, rss_mb=round(rss_mb(), 1),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               load=round(os.getloadavg()[0], 1))
    out.write_text(json.dumps(row))


def prepare(work: Path) -> None:
    from ui_native import _native_run

    _native_run(SIZE, work, 12)


def markdown(r: dict) -> str:
    lines = ["# The viewer after a score in its process: glibc's heap setting", "",
             f"Command: `{r['command']}`; {r['machine']}; {r['when']}.", "",
             "Review widget, 12 phantoms of 3000 x 3000 px trained at 64 px, read ahead in the helper process "
             "(the plugin's way); each row a fresh viewer process. `mapped`: heap.map_large_blocks() called first "
             "(what scoring in the viewer's process leaves); `default`: glibc's own threshold.", "",
             "| kind | switches | median ms | p90 ms | max ms | first paint ms | original shown ms | RSS MB after | "
             "peak RSS MB | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["trials"]:
        lines.append(f"| {t['kind']} | {t['switches']} | {t['median_ms']} | {t['p90_ms']} | {t['max_ms']} | "
                     f"{t['first_paint_ms']} | {t['native_ms']} | {t['rss_mb']} | {t['peak_rss_mb']} | {t['load']} |")
    for kind in ("default", "mapped"):
        mine = [t for t in r["trials"] if t["kind"] == kind]
        if mine:
            lines.append("")
            med = {k: statistics.median(t[k] for t in mine) for k in ("median_ms", "rss_mb", "peak_rss_mb")}
            lines.append(f"{kind}: median of the trials' median switch {med['median_ms']} ms, RSS after "
                         f"{med['rss_mb']} MB, peak {med['peak_rss_mb']} MB.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2, help="trials of each kind (alternating)")
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None, help="where the run is made (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=RESULTS / "heap_viewer.json")
    ap.add_argument("--trial", default=None, help=argparse.SUPPRESS)  # internal: one trial of this kind
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="heap-viewer-"))
    if args.prepare:
        prepare(work)
        return 0
    if args.trial:
        trial(args.trial, work, args.switches, args.result)
        return 0
    me = [sys.executable, __file__, "--work", str(work), "--switches", str(args.switches)]
    subprocess.run([*me, "--prepare"], check=True)
    trials = []
    for i in range(args.trials):
        for kind in ("default", "mapped") if i % 2 == 0 else ("mapped", "default"):
            result = work / f"trial-{i}-{kind}.json"
            subprocess.run([*me, "--trial", kind, "--result", str(result)], check=True, timeout=900)
            trials.append(json.loads(result.read_text()))
            print(trials[-1]["kind"], trials[-1]["median_ms"], trials[-1]["rss_mb"], flush=True)
    import results_files

    results = {"command": results_files.command("heap_viewer.py", argv),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "trials": trials}
    return results_files.write(args.out, results, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
