"""Corrections at the radiograph's own size when the noise is drawn there (issue 11): the paper's protocol.

native_res.py draws the noise on the training-size masks (n scaled by 64/256), so its given masks exist only at
64 px and a correction at 256 px can only be the training-size one resampled. A user's masks are drawn at the
radiograph's own size, and so is the paper's noise (n = 5..15 erosions or dilations at 256 px). Here each cell
corrupts Shenzhen's 256 px training masks at 256 px (noise.simulate), shrinks them to the profile's training size
as the data loader does (image_files.resize_mask), and trains the product's DEFAULT crl on them (TrainConfig's
defaults: the border fit, the keep ratio estimated while training; the quick profile's size, epochs, batch and
learning rate). Then, at 256 px against the true masks, on the corrupted and on the clean training cases:

    given      the noisy mask itself (a clean case's is the true mask: Dice 1)
    resampled  the training-size correction resampled smoothly and cleaned (native.native_mask: the export until
               2026-12-01)
    native     the original mask's border moved as the nets agree (native_correction.corrected_mask with the
               original mask, border_fit.native_logit: what review and export make now)

corrected Dice, mean boundary distance (px at 256) and islands; the nets' test Dice (64 px) and its gap to
vanilla trained on clean labels (table1-quick.json, same seed). The variants share one training, so "native"
wins a seed when it beats "resampled" on the corrupted AND the clean cases.

Each first-pass cell records its scores' noise share and whether the default (second_pass 4) goes on with a second
pass there (second_pass.auto_choice), and the exported set with nobody reviewing (the recommended policy); the md's
last section is the product's default: per seed the first pass, or the --second cell where the first pass's scores
asked for it.

--second measures the second pass at heavy noise instead (what the default trains by itself where most masks look
wrong since 1 Dec 2026, and `next-round RUN --second-pass 2` on a run without it): fresh nets (the same defaults)
trained at 64 px on every training-size correction of the finished default cell of the same noise and seed
(second_pass.training_labels, mode EVERY), scored against the given masks as the product scores a second pass,
the same three variants at 256 px.

--third probes a third pass: fresh nets on every correction of the finished --second cell (scored against the
given masks again), measured to decide whether the default should train three passes at heavy noise.

Resumable cell by cell (a killed training resumes from its checkpoint) into benchmarks/results/native_noise.json,
with native_noise.md rewritten after every cell; --remeasure measures the finished cells again from their
checkpoints (after a change to the corrections). --set NAME=VALUE (repeatable) probes the default with training
settings changed (e.g. --set alpha=0.35, --set k=16): cells of their own, beside the default's, measured to decide
whether a change becomes a default (it must win on every seed).

    python benchmarks/native_noise.py --threads 1 --noise 0.75 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import native_res  # noqa: E402
import table1  # noqa: E402  (puts the repository root on sys.path too)

from crl_napari import cascade, noise, scoring, second_pass  # noqa: E402
from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crl_napari.border_fit import native_logit  # noqa: E402
from crl_napari.checkpoint import read_checkpoint  # noqa: E402
from crl_napari.data import load_dataset  # noqa: E402
from crl_napari.image_files import resize_mask  # noqa: E402
from crl_napari.native import mask_from_logit, native_mask  # noqa: E402

PROFILE = table1.PROFILES["quick"]
RESULTS = table1.RESULTS
RUNS = table1.RUNS / "native_noise"
NOISE = (0.75, 0.5, 0.25)
#: below the issues' noise levels (no target there): what the default does on mostly clean and clean data (whether it
#: trains a second pass, what the recommended export does to right masks), measured on request with --noise
LOW = (0.1, 0.0)
VARIANTS = ("given", "resampled", "native")
TARGET = native_res.TARGET_256  # corrected Dice on the corrupted cases at 256 px, per noise level
GAP = 0.010  # issue 11: the default's test Dice within this of clean-label vanilla at 75 %
GOOD = 0.95  # an exported mask this close to the truth counts as good (cleaning_curve.py's bar)


def probe_name(probe: dict | None) -> str:
    """``alpha=0.35,k=16`` for a probe's settings (sorted), "" for the default."""
    items = sorted((probe or {}).items())
    return ",".join(f"{k}={format(v, 'g') if isinstance(v, int | float) else v}" for k, v in items)


PASS_KINDS = {1: "", 2: "+second", 3: "+third"}  # a cell's pass: 1 the default's first, 2 --second, 3 --third


def pass_number(second: bool | int) -> int:
    """1, 2 or 3 from a cell's ``second`` (False / True: the first or the second pass; an int: that pass)."""
    return int(second) + 1 if isinstance(second, bool) else int(second)


def cell_key(ratio: float, seed: int, second: bool | int = False, probe: dict | None = None,
             mode: int = second_pass.EVERY) -> str:
    """``mode``: the second pass's labels (second_pass.EVERY, or RECOMMENDED: --second-mode 1)."""
    kind = PASS_KINDS[pass_number(second)] + (f"+{probe_name(probe)}" if probe else "")
    if pass_number(second) > 1 and mode == second_pass.RECOMMENDED:
        kind += "-recommended"
    return f"crl default{kind} | noise={int(round(ratio * 100))}% | seed={seed}"


def run_name(ratio: float, seed: int, second: bool | int = False, probe: dict | None = None,
             mode: int = second_pass.EVERY) -> str:
    """The cell's run folder under RUNS."""
    return cell_key(ratio, seed, second, probe, mode).replace(" | ", "_").replace(" ", "_").replace("%", "pct")


#: Settings that change how a trained run is scored, not the nets (a first-pass probe of them reuses the default's)
SCORING_ONLY = ("size_calibration",)


def config(seed: int, probe: dict | None = None) -> cascade.TrainConfig:
    """The product's defaults at the quick profile's size (what `crl-napari train --size 64` would train), with a
    probe's settings (--set) over them. One pass each (second_pass 0): the default's second pass, where its first
    pass's scores ask for one (second_pass 4), is the --second cell of the same noise and seed."""
    profile = {k: PROFILE[k] for k in ("epochs", "batch_size", "lr", "lr_decay", "width", "depth")}
    # the cells without a probe are the default before its size calibration (1 Dec 2026 14:00), as they were
    # measured; today's default is their `size_calibration=1` probe (CALIBRATED)
    return cascade.TrainConfig(**{**profile, "seed": seed, "second_pass": 0, "size_calibration": 0,
                                  **(probe or {})})  # a probe may set any


def parse_probe(items: list[str]) -> dict:
    """``["alpha=0.35", "k=16", "joint=all"]`` -> {"alpha": 0.35, "k": 16, "joint": "all"}, each value of its
    TrainConfig field's type."""
    kinds = {f.name: f.type for f in dataclasses.fields(cascade.TrainConfig)}
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in kinds or not value:
            raise SystemExit(f"--set {item}: expected NAME=VALUE with NAME a training setting ({', '.join(kinds)})")
        kind = str(kinds[name])
        out[name] = value if kind.startswith("str") else int(value) if "int" in kind and "float" not in kind \
            else float(value)
    return out


def finished(run_dir: Path, epochs: int) -> bool:
    path = run_dir / cascade.CHECKPOINT
    return path.is_file() and int(read_checkpoint(path)["epoch"]) + 1 >= epochs


def noisy(truth256: np.ndarray, ids: list[str], ratio: float, seed: int, size: int):
    """The masks as a user's folder would hold them (corrupted at 256 px) and as training sees them (shrunk)."""
    given256, records = noise.simulate(truth256, ids, ratio, seed=seed)
    return given256, np.stack([resize_mask(g, size) for g in given256]), np.array([r.corrupted for r in records])


def run_cell(ratio: float, seed: int, train: dict, test: dict, second: bool | int = False,
             probe: dict | None = None, mode: int = second_pass.EVERY) -> dict:
    """Train (or resume, or reload) one cell and measure it; ``second``: the second pass (True or 2) on the
    corrections of the finished first cell of the same noise and seed, or the third (3) on the second's;
    ``probe``: the default with these settings changed."""
    t0 = time.time()
    given256, given, corrupted = noisy(train["truth"], train["ids"], ratio, seed, PROFILE["size"])
    cfg = config(seed, probe)
    labels = given
    number = pass_number(second)
    if number > 1:
        first = RUNS / run_name(ratio, seed, number - 1)
        if not finished(first, PROFILE["epochs"]):
            flag = {1: "", 2: " --second"}[number - 1]
            raise SystemExit(f"{first}: pass {number - 1} is not trained; run python benchmarks/native_noise.py "
                             f"--threads 1{flag} --noise {ratio} --seeds {seed} first")
        models, first_cfg = cascade.load_models(first, "cpu")
        sc = scoring.score_probs(cascade.peer_probs([m.eval() for m in models], train["images"]), given,
                                 first_cfg.T, border_fit=True, calibrate=bool(cfg.size_calibration))
        labels = second_pass.training_labels(given, sc.corrected, sc.suspicion, mode)
    # a first pass with scoring-only settings changed trains what the default trains: its nets are the default's
    trained = {k: v for k, v in (probe or {}).items() if number > 1 or k not in SCORING_ONLY}
    run_dir = RUNS / run_name(ratio, seed, second, trained, mode)
    models, sec_per_epoch = native_res.train_models(train["images"], labels, config(seed, trained), run_dir)
    line = read_checkpoint(run_dir / cascade.CHECKPOINT).get("history_line") or {}
    out = {"noise": ratio, "seed": seed, "probe": probe or None, "n_train": len(given),
           "n_corrupted": int(corrupted.sum()), "sec_per_epoch": sec_per_epoch, "keep_estimate": line.get("keep")}
    out.update(measure(models, cfg, given256, given, corrupted, train, test))
    out["wall_seconds"] = time.time() - t0
    out["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def measure(models, cfg, given256: np.ndarray, given: np.ndarray, corrupted: np.ndarray, train: dict,
            test: dict) -> dict:
    """The three variants at 256 px (native_res.measure) and the nets' test Dice."""
    models = [m.eval() for m in models]
    sc = scoring.score_probs(cascade.peer_probs(models, train["images"], tta=cfg.tta), given, cfg.T,
                             border_fit=bool(cfg.border_fit), calibrate=bool(cfg.size_calibration))
    shape = given256.shape[1:]
    masks = {"given": list(given256),
             "resampled": [native_mask(p, shape) for p in sc.prob],
             "native": [mask_from_logit(native_logit(n, g, g256)) for n, g, g256 in
                        zip(sc.nets_prob, given, given256, strict=True)]}
    out = {"variants": {v: native_res.measure(masks[v], train["truth"], corrupted) for v in VARIANTS}}
    out["exported"] = exported(masks["native"], given256, train["truth"], corrupted, sc.suspicion)
    share = scoring.noise_share(sc.suspicion)  # the first pass's share decides second_pass AUTO (the default)
    out["noise_share"] = share
    out["size_offset"] = sc.size_offset
    mode, _ = second_pass.auto_choice(sc.suspicion, cfg.keep_ratio)
    out["auto_second"], out["auto_mode"] = mode is not None, mode  # the default's second pass here, and its labels
    out["test_dice"] = float(cascade.dice_score(cascade.predict(models, test["images"]), test["clean"]).mean())
    return out


def exported(corrections: list[np.ndarray], given256: np.ndarray, truth: np.ndarray, corrupted: np.ndarray,
             suspicion: np.ndarray) -> dict:
    """The exported set with nobody reviewing, as the user sees it: the recommended policy (the correction where
    the suspicion reaches scoring.recommended_threshold, the given mask elsewhere) at 256 px against the truth."""
    take = np.asarray(suspicion) >= scoring.recommended_threshold(suspicion)
    d = np.array([native_res._dice(c if t else g, m) for c, g, m, t in
                  zip(corrections, given256, truth, take, strict=True)])
    return {"mean_dice": float(d.mean()), "frac_good": float((d >= GOOD).mean()),
            "accepted_corrupted": int((take & corrupted).sum()), "accepted_clean": int((take & ~corrupted).sum())}


# ----------------------------------------------------------------------------------------- report

def summarise(results: dict) -> str:
    cells = sorted(results["cells"].values(), key=lambda c: (_order(c), -c["noise"], c["seed"]))
    ref = native_res._clean_vanilla()
    lines = ["# Corrections at 256 px with the noise drawn at 256 px (issue 11: the paper's protocol)", "",
             "The product's default crl's first pass (border fit, keep ratio estimated) trained at 64 px on Shenzhen's "
             "training "
             "masks corrupted at 256 px (n = 5..15, noise.simulate) and shrunk as the data loader shrinks them. "
             "Corrected Dice / mean boundary distance (px at 256) against the true 256 px masks. `resampled`: the "
             "training-size correction resampled smoothly (the export until 2026-12-01); `native`: the original "
             "mask's border moved as the nets agree (border_fit.native_logit: review and export now). A clean "
             "case's given mask is its true mask (Dice 1).", "",
             f"Commands: {'; '.join(f'`{c}`' for c in results.get('commands', []))}. "
             f"Machine: {results.get('machine', '?')}.", "",
             "`second pass`: fresh nets trained on every correction of the first pass (--second; what the default "
             "trains by itself where the first pass's scores say most masks look wrong, `next-round RUN --second-pass "
             "2` on a run without it). `third pass`: fresh nets on every correction of the second pass (--third, "
             "a probe of a default that trains three passes at heavy noise). `probe NAME=VALUE`: the default with a "
             "training setting changed (--set NAME=VALUE; `second pass, probe ...`: the second pass's setting, with "
             "--second), measured to decide whether it becomes a default.", "",
             "| path | noise | seed | keep est. | given corrupted | resampled corrupted / clean | native corrupted / "
             "clean | boundary px corrupted: resampled / native | test Dice 64 (gap to clean vanilla) | native won |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        v = c["variants"]
        won = _won(c)
        gap = f" ({ref[c['seed']] - c['test_dice']:+.4f})" if c["seed"] in ref else ""
        keep = "—" if c.get("keep_estimate") is None else f"{c['keep_estimate']:g}"
        lines.append(f"| {_path(c)} | {int(c['noise'] * 100)} % | {c['seed']} | {keep} | "
                     f"{_num(v['given'], 'dice_corrupted')} | "
                     f"{_num(v['resampled'], 'dice_corrupted')} / {_num(v['resampled'], 'dice_clean')} | "
                     f"{_num(v['native'], 'dice_corrupted')} / {_num(v['native'], 'dice_clean')} | "
                     f"{_num(v['resampled'], 'boundary_px_corrupted', 2)} / "
                     f"{_num(v['native'], 'boundary_px_corrupted', 2)} | "
                     f"{c['test_dice']:.4f}{gap} | {'yes' if won else 'no'} |")
    lines += ["", "## Per noise level, mean over the seeds measured", "",
              "| path | noise | seeds | resampled corrupted / clean | native corrupted (target) / clean | native won | "
              "islands < 1 % (native) | test gap to clean vanilla |", "|---|---|---|---|---|---|---|---|"]
    for path, ratio in [(p, r) for p in dict.fromkeys(_path(c) for c in cells) for r in NOISE + LOW]:
        mine = [c for c in cells if c["noise"] == ratio and _path(c) == path]
        if not mine:
            continue
        m = {v: {k: _mean([c["variants"][v].get(k) for c in mine]) for k in ("dice_corrupted", "dice_clean")}
             for v in ("resampled", "native")}
        gaps = [ref[c["seed"]] - c["test_dice"] for c in mine if c["seed"] in ref]
        target = ("no target" if ratio not in TARGET or "dice_corrupted" not in m["native"] else
                  f"≥ {TARGET[ratio]}: {'met' if m['native']['dice_corrupted'] >= TARGET[ratio] else 'MISSED'}")
        lines.append(f"| {_path(mine[0])} | {int(ratio * 100)} % | {', '.join(str(c['seed']) for c in mine)} | "
                     f"{_num(m['resampled'], 'dice_corrupted')} / {_num(m['resampled'], 'dice_clean')} | "
                     f"{_num(m['native'], 'dice_corrupted')} ({target}) / "
                     f"{_num(m['native'], 'dice_clean')} | {sum(_won(c) for c in mine)} of {len(mine)} | "
                     f"{sum(c['variants']['native']['islands_below_1pct'] for c in mine)} | "
                     + (f"{np.mean(gaps):+.4f}" if gaps else "—") + " |")
    return "\n".join(lines + default_section(cells, ref, CALIBRATED) + default_section(cells, ref)) + "\n"


#: The probe that is the product's default since 1 Dec 2026 14:00: the default with its size calibration
CALIBRATED = {"size_calibration": 1}


def default_section(cells: list[dict], ref: dict, probe: dict | None = None) -> list[str]:
    """What `crl-napari train` makes by default (second_pass AUTO): per seed the first pass, or the second pass its
    scores choose (second_pass.auto_choice: on every correction, or on the recommended ones); the issue's targets on
    it. ``probe``: the cells of that probe (CALIBRATED: today's default), else the cells without one (the default
    before the size calibration)."""
    seconds = {(c["noise"], c["seed"], _mode(c)): c for c in cells
               if _pass(c) == 2 and (c.get("probe") or None) == probe}
    title = ("## The product's default: a second pass where many masks look wrong (second_pass 4), corrections "
             "calibrated to the given masks' size (size_calibration 1)" if probe == CALIBRATED else
             "## The default before its size calibration (until 1 Dec 2026 14:00)")
    lines = ["", title, "",
             "Each seed's first pass decides (second_pass.auto_choice): where its scores say most given masks look "
             "wrong (`noise share` above 0.55 at keep ratio 0.5, where the advice offers a second pass) the default "
             "trains the second pass on every correction; where more than "
             f"{second_pass.AUTO_SHARE:.0%} do, on the recommended policy's corrections (`--second-mode 1`); the "
             "run's nets are then the second pass's, elsewhere the first pass's. Cells decided before 1 Dec 2026 "
             "06:50 (`auto_mode` absent) read as the rule then: every correction, above 0.55. `exported`: the "
             "exported set with nobody reviewing under the recommended policy (each correction whose suspicion "
             "reaches the recommended threshold, the given mask elsewhere), mean Dice at 256 px over the training "
             "cases [share with Dice ≥ 0.95], and how many corrections of corrupted / clean masks it took.", "",
             "| noise | seed | noise share | path | native corrupted / clean | exported [≥ 0.95] | accepted corrupted "
             "/ clean | test gap to clean vanilla |", "|---|---|---|---|---|---|---|---|"]
    chosen: dict[float, list[dict]] = {}
    for c in [c for c in cells if _pass(c) == 1 and (c.get("probe") or None) == probe]:
        if "auto_second" not in c:
            lines.append(f"| {int(c['noise'] * 100)} % | {c['seed']} | — | not decided (measured before the share "
                         "was kept: --remeasure) | | | | |")
            continue
        mode = default_mode(c)
        use = seconds.get((c["noise"], c["seed"], mode)) if mode else c
        path = ({None: "first pass", second_pass.EVERY: "second pass", second_pass.RECOMMENDED:
                 "second pass (recommended corrections)"}[mode]
                + ("" if use else f" (NOT MEASURED: --second --second-mode {mode})"))
        if use is None:
            lines.append(f"| {int(c['noise'] * 100)} % | {c['seed']} | {c['noise_share']:.2f} | {path} | | | | |")
            continue
        chosen.setdefault(c["noise"], []).append(use)
        v, e = use["variants"]["native"], use.get("exported")
        exp = "—" if e is None else (f"{e['mean_dice']:.4f} [{e['frac_good']:.2f}] | {e['accepted_corrupted']} / "
                                     f"{e['accepted_clean']}")
        gap = f"{ref[c['seed']] - use['test_dice']:+.4f}" if c["seed"] in ref else "—"
        lines.append(f"| {int(c['noise'] * 100)} % | {c['seed']} | {c['noise_share']:.2f} | {path} | "
                     f"{_num(v, 'dice_corrupted')} / {_num(v, 'dice_clean')} | {exp}{' | —' if e is None else ''} | "
                     f"{gap} |")
    lines += ["", "Targets (issue 11) on the default, mean over the seeds decided and measured:", ""]
    for ratio in NOISE:
        mine = chosen.get(ratio, [])
        if not mine:
            continue
        corr = float(np.mean([c["variants"]["native"]["dice_corrupted"] for c in mine]))
        clean = float(np.mean([c["variants"]["native"]["dice_clean"] for c in mine]))
        line = (f"- {int(ratio * 100)} % (seeds {', '.join(str(c['seed']) for c in mine)}): corrections of the "
                f"corrupted masks {corr:.4f} (≥ {TARGET[ratio]}: {'met' if corr >= TARGET[ratio] else 'MISSED'}), "
                f"of the clean ones {clean:.4f} against their own 1.0")
        gaps = [ref[c["seed"]] - c["test_dice"] for c in mine if c["seed"] in ref]
        if ratio == 0.75 and gaps:
            line += f"; test gap to clean-label vanilla {np.mean(gaps):+.4f} (≤ {GAP}: " \
                    f"{'met' if np.mean(gaps) <= GAP else 'MISSED'})"
        exp = [c["exported"]["mean_dice"] for c in mine if c.get("exported")]
        if exp:
            line += f"; exported set with nobody reviewing {np.mean(exp):.4f}"
        lines.append(line)
    for ratio in LOW:
        mine = chosen.get(ratio, [])
        if not mine:
            continue
        clean = _mean([c["variants"]["native"]["dice_clean"] for c in mine])
        line = (f"- {int(ratio * 100)} % (no target; seeds {', '.join(str(c['seed']) for c in mine)}): corrections "
                f"of the clean masks {clean:.4f}")
        exp = [c["exported"] for c in mine if c.get("exported")]
        if exp:
            line += (f"; exported set with nobody reviewing {np.mean([e['mean_dice'] for e in exp]):.4f} against the "
                     f"given masks' {np.mean([_given_mean(c) for c in mine]):.4f}, "
                     f"{np.mean([e['accepted_clean'] for e in exp]):.1f} right masks replaced by a correction")
        lines.append(line)
    return lines


def default_mode(first: dict) -> int | None:
    """The second pass the product's default trains after a decided first-pass cell: its labels' mode, None for none
    (cells decided before the mode was recorded: every correction)."""
    return (first.get("auto_mode") or second_pass.EVERY) if first["auto_second"] else None


def _path(c: dict) -> str:
    if _pass(c) > 1:
        return {2: "second pass", 3: "third pass"}[_pass(c)] + (
            " (recommended corrections)" if _mode(c) == second_pass.RECOMMENDED else "") + (
            f", probe {probe_name(c['probe'])}" if c.get("probe") else "")
    return f"probe {probe_name(c['probe'])}" if c.get("probe") else "default"


def _order(c: dict) -> tuple:
    return (_pass(c), _mode(c), probe_name(c.get("probe")))


def _mode(c: dict) -> int:
    return int(c.get("second_mode") or second_pass.EVERY)


def _pass(c: dict) -> int:
    return int(c.get("pass") or (2 if c.get("second") else 1))


def _won(c: dict) -> bool:
    v = c["variants"]
    return all(v["native"][k] > v["resampled"][k] for k in ("dice_corrupted", "dice_clean") if k in v["native"])


def _given_mean(c: dict) -> float:
    """The given masks' mean Dice over a cell's training cases (corrupted and clean together)."""
    g, k = c["variants"]["given"], c["n_corrupted"] / c["n_train"]
    return (1 - k) * g["dice_clean"] + k * (g.get("dice_corrupted") or 0.0)


def _num(d: dict, key: str, digits: int = 4) -> str:
    """``d[key]`` to ``digits`` places, "—" where the cell has none (no corrupted case at 0 % noise)."""
    return "—" if d.get(key) is None else f"{d[key]:.{digits}f}"


def _mean(values: list) -> float | None:
    """The mean of the values a cell has (None where none has one)."""
    have = [v for v in values if v is not None]
    return float(np.mean(have)) if have else None


def save(results: dict, out_json: Path, mine: set[str]) -> dict:
    """Merge into the JSON on disk under a lock (two invocations on other seeds share it), rewrite JSON and md."""
    with open(out_json.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
        results = {**disk, **results, "cells": {**disk["cells"], **{k: results["cells"][k] for k in mine}},
                   "commands": list(dict.fromkeys(disk.get("commands", []) + results.get("commands", []))),
                   "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(out_json, results)
        atomic_write_text(out_json.with_suffix(".md"), summarise(results))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, nargs="+", default=list(NOISE), choices=NOISE + LOW)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=table1.DATA)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--second", action="store_true",
                    help="the advised path: the second pass on every correction of the finished default cell")
    ap.add_argument("--second-mode", type=int, choices=(second_pass.RECOMMENDED, second_pass.EVERY),
                    default=second_pass.EVERY, help="with --second: the second pass's labels, every correction (2, "
                    "what the default trains) or only those the recommended threshold takes (1); cells of their own")
    ap.add_argument("--third", action="store_true",
                    help="a third pass on every correction of the finished --second cell (a probe)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a probe: the default with this training setting changed (repeatable); with --second, the "
                    "second pass's setting, on the default first pass's corrections")
    ap.add_argument("--remeasure", action="store_true", help="measure the finished cells again (checkpoints)")
    ap.add_argument("--summary-only", action="store_true", help="rewrite the markdown from the JSON")
    args = ap.parse_args(argv)
    probe = parse_probe(args.set)
    number = 3 if args.third else 2 if args.second else 1
    if number > 2 and probe:
        ap.error("--set probes the first pass, or with --second the second (on the default first pass's "
                 "corrections); it does not go with --third")
    out_json = args.results / "native_noise.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
    if args.summary_only:
        atomic_write_text(out_json.with_suffix(".md"), summarise(results))
        return 0
    if not args.data.is_dir():
        print(f"SKIPPED: the Shenzhen data set is not at {args.data.resolve()}; nothing was measured.")
        return 0
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/native_noise.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results["commands"] = list(dict.fromkeys(results.get("commands", []) + [command]))
    results["machine"] = (f"{platform.processor() or platform.machine()}, {args.threads} threads, "
                          f"torch {torch.__version__}")
    ds64, ds256 = load_dataset(args.data, size=PROFILE["size"]), load_dataset(args.data, size=256)
    train = native_res._arrays(ds64.subset("train"), ds256.subset("train"))
    test = native_res._arrays(ds64.subset("test"), ds256.subset("test"))
    for ratio in args.noise:
        for seed in args.seeds:
            key = cell_key(ratio, seed, number, probe, args.second_mode)
            if key in results["cells"] and not args.remeasure:
                continue
            print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {key}", flush=True)
            cell = {**run_cell(ratio, seed, train, test, number, probe, args.second_mode), "second": number == 2,
                    "pass": number, **({"second_mode": args.second_mode} if number > 1 else {})}
            old = results["cells"].get(key)
            if old and cell["sec_per_epoch"] is None:  # measured again from its checkpoint: the training's times stay
                cell.update({k: old[k] for k in ("sec_per_epoch", "wall_seconds", "finished") if k in old},
                            remeasured=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            results["cells"][key] = cell
            results = save(results, out_json, {key})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
