"""Why warm review rounds made the nets worse (issue 14), and which round settings do not: the diagnosis behind
rounds.round_config, measured with cleaning_curve.py's own machinery (its Context and run_rounds, order b).

Each cell is (noise, seed, schedule, decisions): starting from table1's finished crl run (quick profile), a few
warm rounds run under a candidate schedule (how the round sets lr, lr_decay and average_last), either with NO
decisions (every round trains on the same given masks: what the schedule alone does to the nets) or with the
simulated reviewer's 20 decisions per round in the tool's queue (order b of the cleaning curve). After every
round: test Dice of the nets and the exported set's mean Dice under the recommended policy.

    python benchmarks/round_schedules.py --cases 0.75:0 --threads 1     # resumable cell by cell and round by round

The crl runs are read from --runs (copy table1's into a scratch folder: nothing here writes in them); the rounds
train under --scratch. Results: benchmarks/results/round_schedules.{json,md}.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cleaning_curve as cc  # noqa: E402
import table1  # noqa: E402

from crl_napari import rounds  # noqa: E402
from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crl_napari.data import load_dataset  # noqa: E402
from crl_napari.settings import TrainConfig  # noqa: E402


def _before(previous: TrainConfig, warm: int) -> TrainConfig:
    """The round settings before this diagnosis: stage 2 from the start, full selection, the lr where the
    previous round's decay left it (constant-ish over the round), the last epoch's weights."""
    return replace(previous, epochs=warm, k=0 if previous.strategy == "crl" else None, ramp=0.0,
                   lr=previous.lr * previous.lr_decay**previous.epochs, average_last=0)


def _anneal(previous: TrainConfig, first: TrainConfig, warm: int, start: float) -> TrainConfig:
    """Every round from ``start`` x the first round's last lr down to a tenth of that over its epochs (not
    chained: a round's start does not depend on how many rounds came before), its epochs' weights averaged."""
    lr = first.lr * first.lr_decay**first.epochs * start
    return replace(_before(previous, warm), lr=lr, lr_decay=0.1 ** (1 / max(1, warm - 1)), average_last=warm)


SCHEDULES = {
    "before": lambda prev, first, warm: _before(prev, warm),
    "average": lambda prev, first, warm: replace(_before(prev, warm), average_last=warm),
    "anneal+average": lambda prev, first, warm: _anneal(prev, first, warm, 1.0),
    "low+average": lambda prev, first, warm: _anneal(prev, first, warm, 0.1),
    "tool": None,  # rounds.round_config as it is in the code now
}


def cell_key(ratio: float, seed: int, schedule: str, decisions: bool) -> str:
    return f"noise={int(round(ratio * 100))}% | seed={seed} | {schedule} | {'decisions' if decisions else 'none'}"


def summarise(results: dict) -> str:
    lines = ["# Warm review rounds: which settings (issue 14)", "",
             "Test Dice of the nets after each warm round (round 0: table1's crl run) / exported-set mean Dice under "
             "the recommended policy. `none`: rounds with no decisions (the same given masks every round); "
             "`decisions`: 20 simulated decisions per round in the tool's queue (cleaning_curve.py's order b).", "",
             f"Commands: {'; '.join(f'`{c}`' for c in results.get('commands', []))}. {results.get('machine', '')}",
             ""]
    lines += [f"Note: {n}" for n in results.get("notes", [])] + ([""] if results.get("notes") else [])
    width = max([len(c.get("points", [])) for c in results["cells"].values()] + [1])
    lines += ["| noise, seed | schedule | decisions | " + " | ".join(f"round {r}" for r in range(width)) + " |",
              "|---|---|---|" + "---|" * width]
    for key in sorted(results["cells"]):
        c = results["cells"][key]
        pts = c.get("points", [])
        row = [f"{p['test_dice']:.4f} / {p['recommended']['mean_dice']:.4f}" for p in pts]
        row += ["—"] * (width - len(row))
        noise_seed, seed, sched, dec = key.split(" | ")
        lines.append(f"| {noise_seed}, {seed} | {sched} | {dec} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def save(results: dict, out_dir: Path, touched: set[str]) -> None:
    """Merge with the JSON on disk (two processes on other cases share it), then rewrite JSON and markdown."""
    out_json = out_dir / "round_schedules.json"
    with open(out_json.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
        results["cells"] = {**disk["cells"], **{k: v for k, v in results["cells"].items() if k in touched}}
        results["commands"] = list(dict.fromkeys(disk.get("commands", []) + results.get("commands", [])))
        results["notes"] = disk.get("notes", results.get("notes", []))
        results["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(out_json, results)
        atomic_write_text(out_dir / "round_schedules.md", summarise(results))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["0.75:0", "0.5:1"], help="noise:seed")
    ap.add_argument("--schedules", nargs="+", choices=list(SCHEDULES), default=["before", "anneal+average"])
    ap.add_argument("--decisions", choices=["none", "decisions", "both"], default="none")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=Path, required=True, help="a copy of table1's run folders (read only)")
    ap.add_argument("--scratch", type=Path, required=True, help="where the rounds train")
    ap.add_argument("--data", type=Path, default=table1.DATA)
    ap.add_argument("--results", type=Path, default=table1.RESULTS)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"SKIPPED: the Shenzhen data set is not at {args.data.resolve()}; nothing was measured.")
        return 0
    table1.RUNS = args.runs
    torch.set_num_threads(args.threads)
    prof = table1.PROFILES["quick"]
    ds = load_dataset(args.data, size=prof["size"])
    train, test = ds.subset("train"), ds.subset("test")
    out_json = args.results / "round_schedules.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
    results["commands"] = [f"python benchmarks/round_schedules.py {' '.join(sys.argv[1:] if argv is None else argv)}"]
    results["machine"] = f"{args.threads} thread(s), torch {torch.__version__}, quick profile"
    touched: set[str] = set()
    modes = [False, True] if args.decisions == "both" else [args.decisions == "decisions"]
    tool_config = rounds.round_config
    for case in args.cases:
        ratio, seed = float(case.split(":")[0]), int(case.split(":")[1])
        ctx = cc.Context(train, test, "quick", prof, ratio, seed, args.threads, {})
        for with_decisions in modes:
            for name in args.schedules:
                key = cell_key(ratio, seed, name, with_decisions)
                cell = results["cells"].setdefault(key, {})
                if len(cell.get("points", [])) > args.rounds:
                    continue
                cell.pop("complete", None)
                touched.add(key)
                schedule = SCHEDULES[name]
                rounds.round_config = tool_config if schedule is None else (
                    lambda prev, first, warm, from_scratch, s=schedule: s(prev, first, warm))
                step = cc.BATCH if with_decisions else 0
                print(f"[{cc._now()}] {key}", flush=True)
                cc.run_rounds(ctx, [step * r for r in range(args.rounds + 1)],
                              args.scratch / key.replace(" | ", "_").replace("%", "pct"), cell,
                              lambda: save(results, args.results, touched))
                save(results, args.results, touched)
    rounds.round_config = tool_config
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
