"""torchrun with 1 and 2 processes on the same data and seed, selecting per shard and over the global batch: loss
curves, test Dice and throughput side by side, what the gather of global selection costs, and how per-shard
selection differs from the global one.

Each cell is a real ``python -m torch.distributed.run --standalone --nproc-per-node P -m crl_napari train ...``
(gloo on CPU, one thread per process; 2 processes once per ``--selections``, ``--global-selection`` or not),
evaluated on the held-out test split afterwards. The data are the project's phantoms (written once into
``--work``), whose test masks are clean. Target: the 2-process final test Dice within 0.005 of the 1-process
one. Cells are resumable: a finished cell is kept in the JSON and not run again; while cells are missing the
results say PARTIAL. The gather is timed by this script itself under torchrun (``--time-gather``). Writes
benchmarks/results/scale-ddp.json and .md.

    nice -n 10 python benchmarks/scale_ddp.py --epochs 16 --seeds 0,1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl_napari import cascade, distributed, selection  # noqa: E402
from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crl_napari.data import load_dataset  # noqa: E402
from crl_napari.distributed import shard  # noqa: E402
from crl_napari.evaluation import evaluation_data  # noqa: E402
from crl_napari.phantoms import write_sample_set  # noqa: E402
from crl_napari.pipeline import evaluate_run  # noqa: E402
from crl_napari.runs import RunFolder  # noqa: E402
from crl_napari.strategies import peers  # noqa: E402


def train_options(args) -> list[str]:
    return ["--size", str(args.size), "--width", str(args.width), "--depth", str(args.depth), "--epochs",
            str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--strategy", "crl",
            "--seed", str(args.seed), "--threads", "1", "--quiet"]


def run_cell(procs: int, sel: str, data: Path, args) -> dict:
    """Train with ``procs`` processes selecting per ``sel`` ("shard" or "global") into a fresh run folder; its
    losses, Dice and speed."""
    out = args.work / f"run-{procs}p-{sel}-seed{args.seed}"
    if out.exists():
        shutil.rmtree(out)  # an unfinished cell of an earlier call starts over
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
           "-m", "crl_napari", "train", str(data), "--out", str(out), *train_options(args),
           "--global-selection" if sel == "global" else "--shard-selection"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=args.timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{res.stderr[-3000:]}")
    history = RunFolder(out).history_rows()
    test, against = evaluation_data(out, data, "test")
    ev = evaluate_run(out, test, "test", masks=against)
    n_train = len(RunFolder(out).case_rows())
    train_s = sum(h.seconds for h in history)
    return {
        "procs": procs, "selection": sel, "seed": args.seed, "n_train": n_train, "n_test": ev["n"],
        "wall_s": round(wall, 1),
        "train_s": round(train_s, 2), "images_per_s": round(n_train * len(history) / train_s, 2),
        "loss": [round(sum(h.losses) / len(h.losses), 5) for h in history],
        "selected": [h.selected for h in history], "test_dice": round(ev["dice_mean"], 5),
        "load": round(os.getloadavg()[0], 1),
    }


def time_gather(out: Path, repeats: int = 300) -> None:
    """Under torchrun: the median time of global selection's communication per step (the gather of the shard
    sizes, then of ss's three loss rows: distributed.GlobalBatch) for several per-rank batches; rank 0 writes
    ``out``. A barrier before each timing keeps one rank's lateness out of the other's time."""
    torch.set_num_threads(1)
    distributed.init_from_env()
    rows = []
    for n_local in (4, 16, 32, 128):
        values = torch.rand(3, n_local)
        times = []
        for k in range(repeats + 20):
            torch.distributed.barrier()
            t0 = time.perf_counter()
            whole = distributed.GlobalBatch(n_local, values.device)
            whole.mine(torch.arange(whole.n)[whole.gather(values)[0] < 0.5])
            if k >= 20:
                times.append(time.perf_counter() - t0)
        rows.append({"per_rank": n_local, "median_us": round(float(np.median(times)) * 1e6, 1),
                     "p90_us": round(float(np.percentile(times, 90)) * 1e6, 1)})
    if distributed.is_writer():
        atomic_write_json(out, {"world": distributed.world_size(), "rows": rows, "load": os.getloadavg()[0]})
    distributed.close()


def gather_cost(args) -> dict:
    """:func:`time_gather` on 2 processes (gloo, CPU), launched by torchrun as the training cells are."""
    out = args.work / "gather.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           "--time-gather", str(out)]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=args.timeout)
    if res.returncode != 0:
        raise SystemExit(f"timing the gather failed:\n{res.stderr[-3000:]}")
    return json.loads(out.read_text())


@torch.no_grad()
def selection_agreement(run: Path, data: Path, batch_size: int, world: int = 2, seed: int = 0) -> dict:
    """Per-rank against global selection, with the trained nets of ``run`` on its training images in a seeded
    batch order: stage 1's full-strength selection of every net on each global batch (train-mode forwards,
    as training ranks) against the union of the selections each of ``world`` ranks makes on its shard, and
    against global selection under torchrun: the same call on the shards' losses gathered in batch order (each
    shard's forward normalised over that shard alone)."""
    models, cfg = cascade.load_models(run, "cpu")
    for m in models:
        m.train()
    ds = load_dataset(data, size=RunFolder(run).config["data"]["size"]).subset("train")
    noisy = {r["id"] for r in csv.DictReader(open(data / "noise.csv")) if r["corrupted"] == "1"}
    x_all, y_all = torch.as_tensor(ds.images()), torch.as_tensor(ds.masks().astype("int64"))
    is_noisy = torch.tensor([i in noisy for i in ds.ids])
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    same, same_gathered, total, noisy_global, noisy_rank, busiest = 0, 0, 0, 0, 0, []
    for s in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[s : s + batch_size]
        x, y = x_all[idx], y_all[idx]
        ce = [selection.per_sample_ce(m(x), y) for m in models]
        shards = [shard(torch.arange(batch_size), r, world) for r in range(world)]
        ce_r = [[selection.per_sample_ce(m(x[sh]), y[sh]) for m in models] for sh in shards]
        gathered = torch.empty(3, batch_size)
        for sh, c in zip(shards, ce_r, strict=True):
            gathered[:, sh] = torch.stack(c)
        for i in range(3):
            p, q = peers(i)
            glob = set(selection.select(ce[p], ce[q], cfg.keep_ratio, cfg.drop_uncertain).tolist())
            per_rank = set()
            for sh, c in zip(shards, ce_r, strict=True):
                per_rank |= set(sh[selection.select(c[p], c[q], cfg.keep_ratio, cfg.drop_uncertain)].tolist())
            counts = np.bincount(np.array(sorted(glob)) % world, minlength=world)  # global picks per rank
            busiest.append(counts.max() / counts.mean())
            same += len(glob & per_rank)
            same_gathered += len(glob & set(selection.select(gathered[p], gathered[q], cfg.keep_ratio,
                                                             cfg.drop_uncertain).tolist()))
            total += len(glob)
            noisy_global += int(is_noisy[idx[sorted(glob)]].sum())
            noisy_rank += int(is_noisy[idx[sorted(per_rank)]].sum())
    return {"world": world, "batch_size": batch_size, "agreement": round(same / total, 4),
            "agreement_gathered": round(same_gathered / total, 4),
            "noisy_selected_global": round(noisy_global / total, 4),
            "noisy_selected_per_rank": round(noisy_rank / total, 4),
            "noisy_in_data": round(float(is_noisy.float().mean()), 4),
            "busiest_rank": round(float(np.mean(busiest)), 3)}


def busiest_rank_model(trials: int = 2000) -> list[dict]:
    """The busiest rank's share of global selection's picks over the mean share, when the picks (half the global
    batch) fall on random images: the load imbalance to expect on 8 and 32 GPUs, where this machine cannot
    measure it (the measured rows above check the model at 2 and 4 ranks)."""
    rng = np.random.default_rng(0)
    rows = []
    for world in (2, 4, 8, 32):
        for per_rank in (8, 32):
            n = world * per_rank
            counts = [np.bincount(rng.permutation(n)[: n // 2] % world, minlength=world) for _ in range(trials)]
            rows.append({"world": world, "per_rank": per_rank,
                         "busiest": round(float(np.mean([c.max() / c.mean() for c in counts])), 3)})
    return rows


def _label(c: dict) -> str:
    return "1p" if c["procs"] == 1 else f"{c['procs']}p {c.get('selection', 'shard')}"


def markdown(results: dict) -> str:
    cells = results["cells"]
    s = results["settings"]
    lines = [f"# torchrun: 1 vs 2 processes, selection per shard vs global{' (PARTIAL)' if results['partial'] else ''}",
             "", f"Command: `{results['command']}`; {results['machine']}; {results['date']}.", "",
             f"Phantoms ({s['n']} written, {s['size']}² px, {cells[0]['n_train'] if cells else '?'} train / "
             f"{cells[0]['n_test'] if cells else '?'} clean test masks, {s['noise_ratio']:.0%} of the training masks "
             f"corrupted), crl (k = epochs // 2), width {s['width']}, depth {s['depth']}, global batch "
             f"{s['batch_size']}, {s['epochs']} epochs, one CPU thread per process, gloo. Selection: `shard` = each "
             "process selects within its shard (the default), `global` = `--global-selection` (the losses of the "
             "whole global batch gathered; one process's selection). Load: the 1-minute load average when the cell "
             "ended (2 cores).", "",
             "| processes | selection | seed | test Dice | train s | images/s | wall s (incl. start, scoring) | load |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        sel = "-" if c["procs"] == 1 else c.get("selection", "shard")
        lines.append(f"| {c['procs']} | {sel} | {c['seed']} | {c['test_dice']:.4f} | {c['train_s']:.1f} | "
                     f"{c['images_per_s']:.1f} | {c['wall_s']:.1f} | {c.get('load', '')} |")
    by_seed: dict[int, dict[str, dict]] = {}
    for c in cells:
        by_seed.setdefault(c["seed"], {})[_label(c)] = c
    for seed, group in sorted(by_seed.items()):
        if "1p" not in group:
            continue
        for label in sorted((k for k in group if k != "1p"), key=lambda k: (k.split()[0], "global" in k)):
            d = group[label]["test_dice"] - group["1p"]["test_dice"]
            verdict = "within" if abs(d) <= 0.005 else "MISSES"
            lines += ["", f"Seed {seed}, {label}: test Dice - 1 process = {d:+.4f} ({verdict} the 0.005 target); "
                      f"throughput x{group[label]['images_per_s'] / group['1p']['images_per_s']:.2f}."]
    lines += ["", "Mean loss of the three nets per epoch (history.csv; under torchrun the mean over the ranks):", "",
              "| epoch | " + " | ".join(f"{_label(c)} seed {c['seed']}" for c in cells) + " |",
              "|---|" + "---|" * len(cells)]
    for e in range(max((len(c["loss"]) for c in cells), default=0)):
        row = [f"{c['loss'][e]:.4f}" if e < len(c["loss"]) else "" for c in cells]
        lines.append(f"| {e + 1} | " + " | ".join(row) + " |")
    gather = results.get("gather")
    if gather:
        lines += ["", f"What global selection's communication costs per step ({gather['world']} processes, gloo on "
                  "CPU, load {:.1f}): the gather of the shard sizes, then of the three nets' losses, and the "
                  "rank's share of the picks (distributed.GlobalBatch), timed after a barrier.".format(gather["load"]),
                  "", "| images per rank | median µs | 90th percentile µs |", "|---|---|---|"]
        for r in gather["rows"]:
            lines.append(f"| {r['per_rank']} | {r['median_us']:.0f} | {r['p90_us']:.0f} |")
    sel = results.get("selection")
    if sel:
        lines += ["", "Selection per rank against selection over the global batch: the 1-process run's final nets "
                  "on its training images in a seeded order, stage 1's selection at full strength, every net; "
                  f"{sel[0]['noisy_in_data']:.0%} of the training masks are noisy. Busiest rank: under global "
                  "selection the ranks hold different numbers of the picks, and a step waits for the rank with the "
                  "most (its count over the mean count, averaged over the batches).", "",
                  "| global batch | ranks | images per rank | per-rank picks shared with one process's | "
                  "global-selection picks (shard forwards) shared with one process's | "
                  "noisy among the picks, per rank | noisy among the picks, one process | busiest rank, global |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in sel:
            lines.append(f"| {c['batch_size']} | {c['world']} | {c['batch_size'] // c['world']} | "
                         f"{c['agreement']:.1%} | {c.get('agreement_gathered', float('nan')):.1%} | "
                         f"{c['noisy_selected_per_rank']:.1%} | "
                         f"{c['noisy_selected_global']:.1%} | x{c.get('busiest_rank', float('nan')):.2f} |")
    model = results.get("busiest_model")
    if model:
        lines += ["", "Busiest rank under global selection when the picks (half the batch) fall on random images "
                  "(a simulation, benchmarks/scale_ddp.py busiest_rank_model): the rank holding the most picks "
                  "trains on this many times the mean, and every rank's step waits for it.", "",
                  "| ranks | " + " | ".join(f"{r['per_rank']} per rank" for r in model if r["world"] == 2) + " |",
                  "|---|" + "---|" * sum(r["world"] == 2 for r in model)]
        for world in sorted({r["world"] for r in model}):
            lines.append(f"| {world} | " + " | ".join(f"x{r['busiest']:.2f}" for r in model if r["world"] == world)
                         + " |")
    lines += ["", results["note"], ""]
    return "\n".join(lines)


NOTE = ("Why the curves differ at all: with 2 processes each rank takes half of every global batch, so BatchNorm "
        "normalises over half the images, and with shard selection each rank also ranks within its half "
        "(docs/scaling.md); global selection ranks the whole batch as one process does, but each rank's losses "
        "still come from forwards normalised over its own half. The nets, the order of the images and the "
        "gradients' mean are the same. On this shared 2-core machine the two processes compete with other work "
        "for the cores, so the throughput says little about a GPU node.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="phantoms written (3/4 train, 1/4 test)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--noise-ratio", type=float, default=0.5)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--selections", default="shard,global", help="selections of the cells of more than 1 process")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--work", type=Path, default=Path("/tmp/crl-scale-ddp"))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="scale-ddp")
    ap.add_argument("--time-gather", type=Path, default=None, help=argparse.SUPPRESS)  # under torchrun, internal
    args = ap.parse_args(argv)
    if args.time_gather is not None:
        time_gather(args.time_gather)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    data = args.work / f"phantoms-{args.n}-{args.size}"
    if not (data / "split.csv").is_file():
        write_sample_set(data, n=args.n, size=args.size, noise_ratio=args.noise_ratio, seed=0)
    settings = {k: getattr(args, k) for k in ("n", "size", "width", "depth", "epochs", "batch_size", "lr",
                                              "noise_ratio")}
    json_path = args.results / f"{args.name}.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if results.get("settings") != settings:
        results = {"settings": settings, "cells": []}
    selections = args.selections.split(",")
    wanted = [(p, sel, s) for s in map(int, args.seeds.split(",")) for p in map(int, args.procs.split(","))
              for sel in (["shard"] if p == 1 else selections)]
    results.update(command="python benchmarks/scale_ddp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   machine=f"{platform.machine()}, {os.cpu_count()} cores (shared), torch "
                           f"{__import__('torch').__version__}, CPU",
                   note=NOTE)

    def done(procs: int, sel: str, seed: int) -> bool:
        return any(c["procs"] == procs and c.get("selection", "shard") == sel and c["seed"] == seed
                   for c in results["cells"])

    def save() -> None:
        results["partial"] = not all(done(*w) for w in wanted)
        results["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        atomic_write_json(json_path, results)
        atomic_write_text(args.results / f"{args.name}.md", markdown(results))

    if "global" in selections and "gather" not in results:
        print("timing the gather ...", file=sys.stderr, flush=True)
        results["gather"] = gather_cost(args)
        save()
    for procs, sel, seed in wanted:
        if done(procs, sel, seed):
            continue
        args.seed = seed
        print(f"training with {procs} process(es), {sel} selection, seed {seed} ...", file=sys.stderr, flush=True)
        results["cells"].append(run_cell(procs, sel, data, args))
        results["cells"].sort(key=lambda c: (c["seed"], c["procs"], c.get("selection", "shard") != "shard"))
        save()
    one = [c for c in results["cells"] if c["procs"] == 1]
    if one:
        run = args.work / f"run-1p-shard-seed{one[0]['seed']}"
        if run.is_dir():
            results["selection"] = [selection_agreement(run, data, batch, world, one[0]["seed"])
                                    for batch, world in ((args.batch_size, 2), (2 * args.batch_size, 2),
                                                         (4 * args.batch_size, 2), (4 * args.batch_size, 4))
                                    if batch <= one[0]["n_train"]]
    results["busiest_model"] = busiest_rank_model()
    save()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
