"""What it costs that every torchrun rank agrees, at every training step, whether to go on (distributed.agree).

A training step under torchrun holds two votes: before the stepper (every rank read its batch; or one asks to
stop) and after it (every rank's losses were finite). Each is one all-reduce of world + 1 integers on CPU (gloo,
beside nccl on GPUs). This script, launched on 2 processes by torchrun (gloo, one thread each), times the vote
alone (after a barrier, ``--repeats`` times) and a real training epoch of the engine's loop on phantoms
(cascade.train_from; the same sizes as benchmarks/scale_ddp.py's cells: 64 px, width 8, depth 3, global batch 8,
crl in stage 1 and stage 2), then reports the votes' share of a step. Writes benchmarks/results/ddp-votes.json
and .md.

    nice -n 10 python benchmarks/ddp_votes.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import results_files  # noqa: E402

from crl_napari import cascade, distributed  # noqa: E402
from crl_napari.image_files import zscore  # noqa: E402
from crl_napari.phantoms import make_phantom  # noqa: E402
from crl_napari.settings import TrainConfig  # noqa: E402
from crl_napari.sources import ArraySource  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def measure(out: Path, repeats: int, n_images: int) -> None:
    """Under torchrun: the vote's time, then the time of each training step (stage 1 and stage 2 epochs)."""
    torch.set_num_threads(1)
    distributed.init_from_env()
    votes = []
    for _ in range(repeats):
        distributed.agree()  # a barrier: every rank starts the timed vote together
        t0 = time.perf_counter()
        distributed.agree()
        votes.append(time.perf_counter() - t0)
    pairs = [make_phantom(seed, 64) for seed in range(n_images)]
    images = np.stack([zscore(img / 255) for img, _ in pairs])[:, None].astype(np.float32)
    masks = np.stack([m for _, m in pairs])
    config = TrainConfig(strategy="crl", epochs=2, k=1, batch_size=8, lr=0.05, width=8, depth=3, threads=1,
                         seed=0, device="cpu")
    steps: dict[int, list[float]] = {0: [], 1: []}
    t0 = time.perf_counter()
    for ev in cascade.train_from(ArraySource(images, masks), config):
        now = time.perf_counter()
        if isinstance(ev, cascade.Step):
            if ev.step > 0:  # the first step of an epoch also waits for the epoch's set-up
                steps[ev.epoch].append(now - t0)
            t0 = now
        elif isinstance(ev, cascade.EpochEnd | cascade.Started):
            t0 = now
    if distributed.is_writer():
        out.write_text(json.dumps({"votes": votes, "steps": steps}))
    distributed.close()


def load() -> float:
    return os.getloadavg()[0]


def markdown(r: dict) -> str:
    v = r["vote_us"]
    lines = [
        "# torchrun: the per-step vote (distributed.agree)", "",
        f"Command: `{r['command']}`; {r['machine']}; {r['when']}; load {r['load_before']:.1f} before, "
        f"{r['load_after']:.1f} after (2 cores, shared).", "",
        f"2 processes, gloo on CPU, one thread each. The vote alone, {r['repeats']} times after a barrier: median "
        f"{v['median']:.0f} µs, 90th percentile {v['p90']:.0f} µs. A step holds two votes (its batch read, its "
        "losses finite).", "",
        "| crl stage | steps timed | median step ms | two votes, share of the median step |",
        "|---|---|---|---|",
    ]
    for stage, s in r["steps"].items():
        lines.append(f"| {stage} | {s['n']} | {s['median_ms']:.1f} | {s['vote_share']:.2%} |")
    lines += ["", f"Training: {r['n_images']} phantoms at 64 px, crl with k = 1 (epoch 1 stage 1, epoch 2 stage 2), "
              "width 8, depth 3, global batch 8 (4 per rank): the sizes of benchmarks/scale_ddp.py's cells.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--out", type=Path, default=RESULTS / "ddp-votes.json")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # under torchrun, internal
    args = ap.parse_args(argv)
    if args.measure is not None:
        measure(args.measure, args.repeats, args.images)
        return 0
    raw = Path(tempfile.mkdtemp(prefix="ddp-votes-")) / "raw.json"
    before = load()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           "--repeats", str(args.repeats), "--images", str(args.images), "--measure", str(raw)]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=1800)
    if res.returncode != 0:
        raise SystemExit(f"the measurement failed:\n{res.stderr[-3000:]}")
    got = json.loads(raw.read_text())
    raw.unlink()
    raw.parent.rmdir()
    votes_us = np.array(got["votes"]) * 1e6
    vote = {"median": float(np.median(votes_us)), "p90": float(np.percentile(votes_us, 90))}
    steps = {}
    for epoch, times in got["steps"].items():
        median = float(np.median(times))
        steps[str(int(epoch) + 1)] = {"n": len(times), "median_ms": median * 1e3,
                                      "vote_share": 2 * vote["median"] / 1e6 / median}
    results = {"command": results_files.command("ddp_votes.py", argv),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
               "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_before": before,
               "load_after": load(), "repeats": args.repeats, "n_images": args.images, "vote_us": vote,
               "steps": steps}
    return results_files.write(args.out, results, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
