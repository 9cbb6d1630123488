"""Seconds per training epoch of each strategy, measured back to back on the same data and threads, so
the ratio to vanilla is meaningful even on a shared machine (Table 1's per-cell timings run hours apart).

Each round trains one short epoch (``--images`` images, the quick profile's 128², width 16, batch 16) of
every variant in turn; rounds repeat ``--rounds`` times and the median is reported. Writes
benchmarks/results/speed.json and speed.md.

    python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl_napari import cascade  # noqa: E402
from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crl_napari.data import zscore  # noqa: E402
from crl_napari.phantoms import make_phantom  # noqa: E402

VARIANTS = {  # name: (strategy, k) — k=0 runs the whole epoch in stage 2
    "vanilla": ("vanilla", None),
    "coteaching": ("coteaching", None),
    "ss (= crl stage 1)": ("ss", None),
    "crl stage 2": ("crl", 0),
}


def one_epoch(strategy: str, k: int | None, x: np.ndarray, y: np.ndarray, args) -> float:
    cfg = cascade.TrainConfig(strategy=strategy, k=k, epochs=1, batch_size=args.batch_size, width=args.width,
                              depth=args.depth, lr=0.05, ramp=0.0, device=args.device,
                              threads=args.threads)
    for ev in cascade.train(x, y, cfg):
        if isinstance(ev, cascade.EpochEnd):
            return ev.seconds
    raise RuntimeError("no epoch")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="speed", help="file stem of the JSON and markdown written")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (no-op on CPU)
    pairs = [make_phantom(seed, args.size) for seed in range(args.images)]
    x = np.stack([zscore(p[0].astype(np.float32) / 255) for p in pairs])[:, None]
    y = np.stack([p[1] for p in pairs]).astype(np.uint8)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    one_epoch("vanilla", None, x[:2 * args.batch_size], y[:2 * args.batch_size], args)  # warm-up (allocator, kernels)
    for r in range(args.rounds):
        for name, (strategy, k) in VARIANTS.items():
            times[name].append(one_epoch(strategy, k, x, y, args))
            print(f"round {r + 1}: {name}: {times[name][-1]:.2f}s", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["vanilla"]
    s1, s2 = med["ss (= crl stage 1)"], med["crl stage 2"]
    result = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {cascade.pick_device(args.device)}",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": times, "median": med,
        "ratio_to_vanilla": {name: v / base for name, v in med.items()},
        "crl_epoch_ratio_k_half": (s1 + s2) / 2 / base,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{args.name}.json", result)
    title = f"# Training speed ({args.images} images of {args.size}², width {args.width}, batch {args.batch_size})"
    lines = [title, "",
             f"Command: `{result['command']}`; {result['machine']}; {result['when']}; median of {args.rounds} rounds.",
             "", "| variant | s/epoch | × vanilla |", "|---|---|---|"]
    lines += [f"| {n} | {v:.2f} | {v / base:.2f} |" for n, v in med.items()]
    lines += ["", f"crl with k = half the epochs: {result['crl_epoch_ratio_k_half']:.2f} × vanilla per epoch "
              "(target ≤ 2.5)."]
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
