"""How crl-napari scales with the number of images: synthetic phantoms (benchmarks/scale_data.py writes them once
into a scratch folder) at N = 1,000 / 10,000 / 50,000, measured cell by cell, each in its own process so that
its peak memory (resource.getrusage of the child: ru_maxrss) is its own:

- build:  the run's on-disk cache from the PNG folder (seconds, pairs decoded per second)
- train:  train_run on that run folder (cache reused), stopped after --steps steps: peak RSS, seconds per
          training image per step (median step time / batch, the first 3 steps left out); with --repeats R each
          N runs R times, in turn over N, and the median run counts (one run's step time swings by a quarter
          between processes on this shared machine: 0.32-0.51 s at N = 50,000 within an hour)
- score:  score_run over every training image, from the cache (images/s, peak RSS)
- review: what opening a run in the Review widget costs without Qt (run folder, session, review model, case reader,
          recommended threshold, counts, listed rows: seconds, peak RSS) and one row switch; on a run of N synthetic
          scored rows where no scored run exists (N = 100,000 without training on 100,000 images)
- export: the cleaned data set of N cases (seconds, peak RSS)

Results go cell by cell into benchmarks/results/scale.json and scale.md (marked PARTIAL until every cell asked
for is there); running the same command again skips what is done, so a stopped run resumes.

    python benchmarks/scale.py --scratch /tmp/crl-scale --sizes 64 --n 1000 10000 50000
    python benchmarks/scale.py --sizes 256 --n 1000 --only build     # one cell, measured again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

KINDS = ("build", "train", "score", "review", "export")
TRAIN = dict(strategy="crl", batch_size=16, width=8, depth=4, epochs=2, device="cpu", workers=0)


RERUN = """Timing-sensitive (re-run them on a quiet machine; each cell records the 1-minute load when it ended): cache
build s and pairs/s, ms / image / step, score images/s, review open s and row switch ms, export s. Peak RSS is not
(it does not depend on the load). Each command measures its cells again and keeps the others:

    python benchmarks/scale.py --scratch /tmp/crl-scale --sizes 256 --n 1000 --only build  # twice: then warm
    python benchmarks/scale.py --sizes 64 --n 1000 10000 50000 --only train --repeats 3 --threads 1
    python benchmarks/scale.py --scratch /tmp/crl-scale --sizes 64 --n 1000 10000 50000 --only score
    python benchmarks/scale.py --scratch /tmp/crl-scale --sizes 64 --n 1000 10000 50000 100000 --only review
    python benchmarks/scale.py --scratch /tmp/crl-scale --sizes 64 --n 1000 10000 50000 --only export

N = 100,000 review opens a run of synthetic scored rows (benchmarks/scale_data.py scored_rows: config.json, cases.csv
and scores.csv by the run folder's writers), as no 100,000-image run was trained here."""


def cell_key(size: int, n: int, kind: str) -> str:
    return f"{size} px | N={n} | {kind}"


# ------------------------------------------------------------------------------------------ one cell (child)


#: --distinct: how many phantoms are drawn per data set (scale_data.data_set); None: every case its own
DISTINCT: int | None = None


def _run_dir(scratch: Path, size: int, n: int) -> Path:
    from scale_data import data_name

    return scratch / "runs" / data_name(size, n, DISTINCT)


def run_cell(scratch: Path, size: int, n: int, kind: str, steps: int, build_workers: int | None = None,
             threads: int | None = None) -> dict:
    """Measure one cell in this process; the parent adds the peak RSS."""
    from scale_data import data_set

    from crl_napari.cache import build_cache, decode_threads
    from crl_napari.data import scan_dataset

    run = _run_dir(scratch, size, n)
    if kind == "review":  # no data folder needed: the scored run, or synthetic rows
        return _review(scratch, run, size, n)
    data = data_set(scratch, size, n, distinct=DISTINCT)
    t0 = time.perf_counter()
    if kind == "build":
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        last = []
        build_cache(run, scan_dataset(data), size, progress=last.append, workers=build_workers)
        seconds = time.perf_counter() - t0
        threads = decode_threads(n) if build_workers is None else build_workers
        return {"seconds": round(seconds, 2), "pairs_per_s": round(n / seconds, 1), "workers": threads,
                "decode": "threads", "cpu_s": round(time.process_time(), 2)}
    if kind == "train":
        return _train(data, run, size, steps, threads)
    if kind == "score":
        return _score(run, n)
    if kind == "export":
        from crl_napari.export import export
        from crl_napari.export_files import default_workers

        dest = scratch / "exports" / f"n{n}-{size}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        export(run, dest)  # its default workers
        seconds = time.perf_counter() - t0
        return {"seconds": round(seconds, 2), "cases_per_s": round(n / seconds, 1), "workers": default_workers(n)}
    raise ValueError(kind)


def _review(scratch: Path, run: Path, size: int, n: int) -> dict:
    """What opening a run in the Review widget costs without Qt: the run folder, the session (scores.csv, review.json),
    the review model, the case reader (cases.csv), the recommended threshold, the counts and the listed rows; then
    one row switch. On the scored run of the score cell when there is one, else on a run of ``n`` synthetic scored
    rows (scale_data.scored_rows: no image is decoded, trained or scored)."""
    from scale_data import scored_rows

    from crl_napari.case_cache import CaseCache, NativeCases
    from crl_napari.review import ReviewSession
    from crl_napari.review_model import ReviewModel
    from crl_napari.runs import RunFolder
    from crl_napari.scoring import recommended_threshold

    synthetic = not (run / "scores.csv").is_file()
    if synthetic:
        run = scored_rows(scratch, size, n, TRAIN)
    (run / "review.json").unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    folder = RunFolder(run)
    session = ReviewSession.open(run, reviewer="bench")
    model = ReviewModel(session)
    cases = CaseCache(folder, session.ids, reader=NativeCases(folder), read_ahead=False)  # the read-ahead: a thread
    recommended_threshold([r["suspicion"] for r in session.rows])
    model.counts()
    listed = model.visible_ids()
    opened, cpu = time.perf_counter() - t0, time.process_time() - c0  # CPU: what a busy machine does not inflate
    t1 = time.perf_counter()
    model.select(model.ids[n // 2])
    model.next()
    switch = time.perf_counter() - t1
    cases.close()
    return {"open_s": round(opened, 3), "open_cpu_s": round(cpu, 3), "rows": len(listed),
            "row_switch_ms": round(switch * 1000, 2), "synthetic": synthetic}


def _train(data: Path, run: Path, size: int, steps: int, threads: int | None = None) -> dict:
    import statistics

    import torch

    if threads:
        torch.set_num_threads(threads)
    from crl_napari.cache import CacheProgress
    from crl_napari.pipeline import train_run
    from crl_napari.settings import TrainConfig

    reused = (run / "cache" / "index.json").is_file()
    for p in run.iterdir() if run.exists() else []:
        if p.name != "cache":  # a train cell starts over, on the cache the build cell made
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    cfg = TrainConfig(**TRAIN)
    t0 = time.perf_counter()
    stamps: list[float] = []
    phases: dict[str, float] = {}
    for ev in train_run(data, run, cfg, size=size, simulate_noise=0.25, should_stop=lambda: len(stamps) >= steps):
        name = type(ev).__name__
        if isinstance(ev, CacheProgress) and ev.done == ev.total:  # the cache, then the run folder's case files
            phases["cache_s" if ev.what == "caching" else "run_folder_s"] = round(time.perf_counter() - t0, 2)
        elif name == "Started":
            phases["until_training_s"] = round(time.perf_counter() - t0, 2)
        elif name == "Step":
            stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    step = statistics.median(gaps[min(3, len(gaps) - 1):])  # the first steps pay for warming up
    return {**phases, "steps": len(stamps), "s_per_step": round(step, 4),
            "ms_per_image_step": round(step / cfg.batch_size * 1000, 3), "cache_reused": reused,
            "torch_threads": torch.get_num_threads()}


def _score(run: Path, n: int) -> dict:
    import torch

    from crl_napari import cascade
    from crl_napari.pipeline import score_run
    from crl_napari.runs import RunFolder
    from crl_napari.sgd import SGD

    cfg = RunFolder(run).train_config
    models = cascade.build_models(cfg, torch.device("cpu"))  # the nets' weights do not change the cost (the same
    optims = [SGD(m.parameters(), lr=cfg.lr) for m in models]  # seed: the same nets, so a stopped cell goes on)
    cascade.save_checkpoint(run, models, optims, cfg, 0)
    seen = []
    t0 = time.perf_counter()
    score_run(run, seen.append)
    seconds = time.perf_counter() - t0
    before, scored = seen[0].done, seen[-1].decoded  # a cell stopped earlier (hours at 256 px) went on from its chunks
    out = {"seconds": round(seconds, 2), "images_per_s": round(scored / seconds, 1)}
    return out | ({"went_on_from": before, "scored_here": scored} if before else {})


# ------------------------------------------------------------------------------------------ the table (parent)


def measure(scratch: Path, size: int, n: int, kind: str, steps: int, build_workers: int | None = None,
            threads: int | None = None) -> dict:
    """Run one cell in a child process (niced); its result plus its own peak RSS."""
    cmd = [sys.executable, __file__, "--cell", kind, "--size", str(size), "--n", str(n), "--scratch", str(scratch),
           "--steps", str(steps)] + ([] if build_workers is None else ["--build-workers", str(build_workers)])
    cmd += [] if threads is None else ["--threads", str(threads)]
    cmd += [] if DISTINCT is None else ["--distinct", str(DISTINCT)]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=lambda: os.nice(10))
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (getrusage(CHILDREN) sums them all)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"cell {cell_key(size, n, kind)} failed:\n{err.read()[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    if DISTINCT is not None and DISTINCT < n and kind != "review":
        result["distinct"] = DISTINCT
    return result


def repeated(results: list[dict]) -> dict:
    """One train cell from several runs: the median run by ms / image / step, every run's number and load beside
    it, and the largest peak RSS."""
    ranked = sorted(results, key=lambda r: r["ms_per_image_step"])
    out = dict(ranked[(len(ranked) - 1) // 2])
    out["repeats_ms_per_image_step"] = [r["ms_per_image_step"] for r in results]
    out["repeats_load_1min"] = [r.get("load_1min") for r in results]
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return out


def _machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores (shared with other work), torch {torch.__version__}, "
            f"python {platform.python_version()}")


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def markdown(doc: dict) -> str:
    cells = doc["cells"]
    missing = len(doc.get("missing") or [])
    lines = [f"# Scale ({f'PARTIAL: {missing} cells missing' if missing else 'complete'})",
             "", f"Command: `{doc.get('command', '')}`  ", f"Machine: {doc.get('machine', '')}  ",
             f"Updated: {doc.get('updated', '')}; training: {json.dumps(TRAIN)}, {doc.get('steps')} steps; "
             "peak RSS is each cell's own process (ru_maxrss).", ""]
    if doc.get("missing"):
        lines += [f"PARTIAL: resume with `{doc.get('command', '')}`", ""]
    lines += ["| size | N | cache build s | pairs/s | train peak RSS MB | ms / image / step | score peak RSS MB "
              "| score images/s | review open s | review RSS MB | row switch ms | export s | export RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(int(k.split(" px")[0]), int(k.split("N=")[1].split(" ")[0])) for k in cells})
    for size, n in keys:
        c = {kind: cells.get(cell_key(size, n, kind), {}) for kind in KINDS}

        def v(kind, field, c=c):
            x = c[kind].get(field)
            return "—" if x is None else f"{x}"
        workers = c["build"].get("workers")
        how = "threads" if c["build"].get("decode") == "threads" else "processes"
        built = v("build", "pairs_per_s") + (f" ({workers} {how})" if workers and workers > 1 else "")
        rate = v("score", "images_per_s") + (f" (the last {c['score']['scored_here']:,}: went on after a stop)"
                                             if c["score"].get("went_on_from") else "")
        opened = v("review", "open_s") + (" (synthetic rows)" if c["review"].get("synthetic") else "")
        drawn = {c[k].get("distinct") for k in KINDS} - {None}
        n_text = f"{n:,}" + (f" ({min(drawn):,} drawn)" if drawn else "")
        lines.append(f"| {size} | {n_text} | {v('build', 'seconds')} | {built} | "
                     f"{v('train', 'peak_rss_mb')} | {per_step(c['train'])} | {v('score', 'peak_rss_mb')} | "
                     f"{rate} | {opened} | {v('review', 'peak_rss_mb')} | "
                     f"{v('review', 'row_switch_ms')} | {v('export', 'seconds')} | {v('export', 'peak_rss_mb')} |")
    lines += ["", "## Targets (measured, never loosened)", ""] + targets(cells)
    lines += ["", "## Re-running the timing cells", "", RERUN]
    return "\n".join(lines) + "\n"


def per_step(train: dict) -> str:
    """ms / image / step, the median of repeated runs with each run's number after it."""
    if "ms_per_image_step" not in train:
        return "—"
    runs = train.get("repeats_ms_per_image_step")
    how = [f"{train['torch_threads']} torch thread{'s' if train['torch_threads'] > 1 else ''}"] \
        if "torch_threads" in train else []
    how += [f"runs {' / '.join(map(str, runs))}"] if runs else []
    return f"{train['ms_per_image_step']}" + (f" ({'; '.join(how)})" if how else "")


def targets(cells: dict) -> list[str]:
    out = []
    for size in sorted({int(k.split(" px")[0]) for k in cells}):
        ns = sorted({int(k.split("N=")[1].split(" ")[0]) for k in cells if k.startswith(f"{size} px")})
        train = {n: cells.get(cell_key(size, n, "train")) for n in ns}
        train = {n: t for n, t in train.items() if t}
        if len(train) >= 2:
            lo, hi = min(train), max(train)
            r = train[hi]["peak_rss_mb"] / train[lo]["peak_rss_mb"]
            out.append(f"- {size} px: peak training memory at N={hi:,} is {r:.2f}x that at N={lo:,} (target <= 1.5): "
                       f"{'met' if r <= 1.5 else 'MISSED'}")
            per = [t["ms_per_image_step"] for t in train.values()]
            spread = max(per) / min(per) - 1
            how = sorted({f"{t['torch_threads']} torch thread{'s' if t['torch_threads'] > 1 else ''}"
                          for t in train.values() if "torch_threads" in t})
            runs = sorted({len(t.get("repeats_ms_per_image_step") or [1]) for t in train.values()})
            how += [f"median of {runs[0]} runs per N"] if runs != [1] else []
            out.append(f"- {size} px: time per image per step from N={lo:,} to {hi:,} varies by {spread:.0%}"
                       f"{' (' + ', '.join(how) + ')' if how else ''} (target <= 20 %): "
                       f"{'met' if spread <= 0.2 else 'MISSED'}")
        opened = {n: cells[cell_key(size, n, "review")] for n in ns if cell_key(size, n, "review") in cells}
        if opened:
            n = max(opened)
            load = f", load {opened[n]['load_1min']}" if "load_1min" in opened[n] else ""
            load += f", {opened[n]['open_cpu_s']} s CPU" if "open_cpu_s" in opened[n] else ""
            out.append(f"- {size} px: review open at N={n:,} rows {opened[n]['open_s']} s{load} "
                       "(target <= 2 s at 100,000): "
                       + ("met" if opened[n]["open_s"] <= 2 and n >= 100_000 else
                          "MISSED" if opened[n]["open_s"] > 2 else "not measured at 100,000 yet"))
        for n in ns:
            b = cells.get(cell_key(size, n, "build"))
            if b and size == 256:
                kind = "threads" if b.get("decode") == "threads" else "processes"
                how = f" with {b['workers']} decoding {kind}" if (b.get("workers") or 0) > 1 else ""
                how += f", load {b['load_1min']}" if "load_1min" in b else ""
                out.append(f"- 256 px, N={n:,}: cache build {b['pairs_per_s']} pairs/s{how} (target >= 200): "
                           f"{'met' if b['pairs_per_s'] >= 200 else 'MISSED'}")
    return out or ["- not enough cells yet"]


def save(doc: dict, results: Path, name: str) -> None:
    from crl_napari.atomic import atomic_write_json, atomic_write_text

    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / f"{name}.json", doc)
    atomic_write_text(results / f"{name}.md", markdown(doc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/crl-scale"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--steps", type=int, default=30, help="training steps measured per train cell")
    ap.add_argument("--threads", type=int, default=None,
                    help="train cells: torch threads (default: torch's, one per core). With 1, a step does not wait "
                         "for a core that other work holds: on a shared machine the spread over N is N's own")
    ap.add_argument("--distinct", type=int, default=None, metavar="K",
                    help="draw only K phantoms per size; case i is phantom i mod K under its own id "
                         "(scale_data.data_set: drawing 50,000 at 256 px takes hours)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="train cells: run each this many times (fresh processes, one N after another in turn) and "
                         "report the median ms / image / step, with every run's number beside it")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="scale", help="file stem of the JSON and markdown written")
    ap.add_argument("--redo", action="store_true", help="measure cells again that are already in the results")
    ap.add_argument("--only", nargs="+", choices=KINDS,
                    help="measure just these kinds at the sizes and N given, again even when done, and leave the "
                         "table's command and missing cells as they are: one cell cheaply (--only build --sizes 256 "
                         "--n 1000), or review open at N rows without training (--only review --n 100000)")
    ap.add_argument("--build-workers", type=int, default=None,
                    help="threads decoding the cache in build cells (default: cache.decode_threads; 0: one)")
    ap.add_argument("--summary-only", action="store_true", help="rewrite the markdown from the JSON; measure nothing")
    ap.add_argument("--cell", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global DISTINCT
    DISTINCT = args.distinct
    if args.cell:  # the child: one cell, its result as the last line of stdout
        result = run_cell(args.scratch, args.size, args.n[0], args.cell, args.steps, args.build_workers, args.threads)
        result["load_1min"] = round(os.getloadavg()[0], 1)  # the machine is shared: what else ran, at the end
        print(json.dumps(result), flush=True)
        return 0
    path = args.results / f"{args.name}.json"
    doc = load(path)
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/scale.py " + shlex.join(a for a in given if a != "--summary-only")  # to resume
    kinds = args.only or args.kinds
    wanted = [(s, n, k) for s in args.sizes for n in sorted(args.n) for k in KINDS if k in kinds]

    def note_status(doc: dict) -> None:
        """What is missing, and the command that resumes it (a --only run keeps the table's own)."""
        if args.only:
            doc["missing"] = [k for k in doc.get("missing") or [] if k not in doc["cells"]]
        else:
            doc["missing"] = [cell_key(*w) for w in wanted if cell_key(*w) not in doc["cells"]]
            doc["command"] = command
        doc.update(machine=_machine(), steps=args.steps)

    note_status(doc)
    save(doc, args.results, args.name)  # PARTIAL, with this command to resume, until its last cell is in
    todo = [w for w in ([] if args.summary_only else wanted)
            if cell_key(*w) not in doc["cells"] or args.redo or args.only]
    runs = {w: [measure(args.scratch, *w, args.steps, args.build_workers, args.threads)]
            for w in todo if w[2] == "train" and args.repeats > 1}
    for _ in range(args.repeats - 1):  # in turn over N, so a slow spell of the machine falls on every N alike
        for w, got in runs.items():
            print(f"repeating {cell_key(*w)} ...", flush=True)
            got.append(measure(args.scratch, *w, args.steps, args.build_workers, args.threads))
    for size, n, kind in todo:
        key = cell_key(size, n, kind)
        print(f"measuring {key} ...", flush=True)
        if (size, n, kind) in runs:
            result = repeated(runs[(size, n, kind)])
        else:
            result = measure(args.scratch, size, n, kind, args.steps, args.build_workers, args.threads)
        doc = load(path)  # another invocation may have added cells meanwhile
        doc["cells"][key] = result | {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        note_status(doc)
        doc["updated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        save(doc, args.results, args.name)
        print(f"  {json.dumps(result)}", flush=True)
    note_status(doc)
    doc.setdefault("command", command)
    save(doc, args.results, args.name)
    print((args.results / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
