"""Which truth-free rule should set the "accept corrections above a score" threshold (issues 11 and 14)?

For every finished crl run of Table 1's quick profile (table1.py's run folders) at 50 and 75 % noise, the
training images are scored as the tool scores them, and each rule's threshold is applied with nobody
reviewing: corrections above it, given masks below. Reported: the exported set's mean Dice against the truth,
beside keeping every given mask, accepting every correction, and the best threshold in hindsight (the oracle,
which sees the truth; no rule can), and how often the correction beats the given mask on either side of the
cut. Writes benchmarks/results/threshold_rules.{json,md}.

    python benchmarks/threshold_rules.py [--runs benchmarks/runs] [--seeds 0 1] [--noise 0.5 0.75]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cleaning_curve as cc  # noqa: E402
import table1  # noqa: E402

from crl_napari import scoring  # noqa: E402
from crl_napari.data import load_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def plain_otsu(s: np.ndarray, floor: float = 0.05, bins: int = 256) -> float:
    """The rule before 2026-11-30: Otsu's cut on the plain scores (floor 0.05)."""
    counts, edges = np.histogram(s, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = s.size - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    return max(float(edges[1:-1][int(np.argmax(w0 * w1 * (m0 - m1) ** 2))]), floor)


RULES = {"plain-scale Otsu (before)": plain_otsu, "log-scale Otsu (the tool's)": scoring.recommended_threshold}


def measure(ctx: cc.Context) -> dict:
    s = np.asarray(ctx.scores.suspicion, np.float64)
    given, corrected = cc.dice(ctx.given, ctx.truth), cc.dice(ctx.scores.corrected, ctx.truth)

    def exported(t: float) -> float:
        return float(np.where(s >= t, corrected, given).mean())

    grid = np.linspace(0, 0.5, 501)
    best = float(grid[int(np.argmax([exported(t) for t in grid]))])
    row = {"keep_all": float(given.mean()), "accept_all": float(corrected.mean()),
           "oracle": {"threshold": best, "exported": exported(best)}, "rules": {}}
    better = corrected > given
    for name, rule in RULES.items():
        t = float(rule(s))
        below, above = s < t, s >= t
        row["rules"][name] = {
            "threshold": t, "exported": exported(t), "n_below": int(below.sum()),
            "correction_better_below": float(better[below].mean()) if below.any() else None,
            "correction_better_above": float(better[above].mean()) if above.any() else None}
    return row


def markdown(results: dict) -> str:
    lines = ["# Threshold rules for \"accept corrections above a score\"", "",
             "Command: " + "; ".join(f"`{c}`" for c in results["commands"]) + f". Machine: {results['machine']}.",
             "Profile `quick` (table1.py), crl k=50 %; 385 training images scored as the tool scores them; nobody "
             "reviewing. Exported-set mean Dice vs the truth at 64 px; in brackets the threshold, and how often the "
             "correction beats the given mask below / above it.", "",
             "| noise, seed | keep all | accept all | oracle (sees the truth) | " + " | ".join(RULES) + " |",
             "|---|---|---|---|" + "---|" * len(RULES)]
    for key, row in sorted(results["cells"].items()):
        cells = [f"{row['keep_all']:.4f}", f"{row['accept_all']:.4f}",
                 f"{row['oracle']['exported']:.4f} (t={row['oracle']['threshold']:.3f})"]
        for name in RULES:
            r = row["rules"][name]
            fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            cells.append(f"{r['exported']:.4f} (t={r['threshold']:.3f}; {fmt(r['correction_better_below'])} / "
                         f"{fmt(r['correction_better_above'])})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "Not measured: a set with no noise at all (one group of scores), where any cut falls inside the "
              "clean group; the floor (0.05) is the only guard there."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=table1.RUNS, help="table1.py's run folders")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--data", type=Path, default=table1.DATA)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"SKIPPED: the Shenzhen data set is not at {args.data.resolve()}; nothing was measured.")
        return 0
    torch.set_num_threads(1)
    table1.RUNS = args.runs
    prof = table1.PROFILES["quick"]
    ds = load_dataset(args.data, size=prof["size"])
    train, test = ds.subset("train"), ds.subset("test")
    out = args.results / "threshold_rules.json"
    results = json.loads(out.read_text()) if out.is_file() else {"cells": {}, "commands": []}
    command = "python benchmarks/threshold_rules.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results["commands"] = list(dict.fromkeys(results["commands"] + [command.strip()]))
    results["machine"] = f"{os.uname().machine}, 1 thread, torch {torch.__version__}"
    for ratio in args.noise:
        for seed in args.seeds:
            run_dir = table1.cell_dir("quick", table1.cell_key(cc.CRL, ratio, seed))
            if not cc._finished(run_dir, prof["epochs"]):
                print(f"not measured: no finished run at {run_dir}")
                continue
            ctx = cc.Context(train, test, "quick", prof, ratio, seed, 1, {})
            results["cells"][f"{round(ratio * 100)} %, seed {seed}"] = measure(ctx)
    args.results.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "threshold_rules.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
