"""Corrected labels at the radiograph's own resolution (issue 11): how much accuracy the training-size
round trip costs, and what smooth resampling (crl_napari.native) and clean-up (crl_napari.postprocess) win.

crl (Table 1's quick profile, "crl k=50%", 64 px) is trained on the Shenzhen training split with the paper's
simulated noise at 25/50/75 % (seeds 0 1 2). Its corrected labels of the training images are brought to the
ORIGINAL 256 px by each way below and compared with the clean 256 px masks: Dice on the corrupted and on the
clean training cases, and the symmetric mean boundary distance in original pixels; islands below 1 % of the
mask's area and masks with more than two pieces are counted in each. A small-set profile trains crl and
vanilla on 110 training images (drawn with the seed) at 75 % noise and reports their test Dice, beside vanilla on
the same 110 images' clean masks (the reference the small-set 75 % gap is stated against).

Options of ours, not the paper's (issue 11 item 4), with --options, at 75 then 50 % on seeds 0 1, then 25 % seed
0 (--noise, --methods and --option-seeds pick cells): from the same training as "crl", test-time flips
(TrainConfig.tta), the weights averaged over the last AVERAGE_LAST epochs (TrainConfig.average_last: the epochs'
checkpoints are kept and averaged with crl_napari.weight_average, the engine's own average) and both; and
"crl+balance", trained with the area-balanced selection (TrainConfig.balance_area). Each is measured as the
paper's variant is: corrected Dice at 64 and 256 px, test Dice; "Which option becomes a default" applies the
issue's rule (wins on every seed, at least 2 seeds at 75 and at 50 %) and lists the targets. The second pass
(TrainConfig.second_pass), only when named (--methods crl+second crl+second-all): fresh nets trained with crl's
settings on the labels crl_napari.second_pass makes from the finished "crl" cell's corrections (its checkpoint:
only the second pass trains), measured against the same given and clean masks. crl+keep (keep_ratio = 1 - the
noise rate) and crl+keep-est (keep_ratio = what the finished "crl" cell's scores suggest: scoring.suggested_keep_ratio),
also only when named.

About 800 lines, over the house's 400: a benchmark script keeps its cells, their measures and the tables that
quote them in one file, so a change to a measure and its column cannot drift apart.

Resumable cell by cell: the JSON (and markdown) is rewritten after each cell, finished cells are skipped, and a
cell interrupted mid-training resumes from its checkpoint in benchmarks/runs/native_res/.

    nice -n 5 python benchmarks/native_res.py                  # everything, in priority order
    python benchmarks/native_res.py --summary-only             # rewrite the markdown from the JSON
    nice -n 10 python benchmarks/native_res.py --threads 1 --options   # the options' cells (run it twice: 2 cores)
    nice -n 10 python benchmarks/native_res.py --threads 1 --options --methods crl+second --noise 0.75 0.5
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import platform
import re
import shlex
import shutil
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import table1  # noqa: E402

from crl_napari import cascade, native, noise, rounds, scoring, second_pass  # noqa: E402
from crl_napari.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from crl_napari.checkpoint import read_checkpoint  # noqa: E402
from crl_napari.data import load_dataset  # noqa: E402
from crl_napari.export import upsample_nearest  # noqa: E402
from crl_napari.postprocess import clean_mask, extra_pieces, small_islands  # noqa: E402
from crl_napari.weight_average import WeightAverage, pass_batches, update_batchnorm  # noqa: E402

PROFILE = dict(table1.PROFILES["quick"])  # --profile smoke swaps in table1's plumbing check (results elsewhere)
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "native_res"
NOISE = [0.75, 0.5, 0.25]
SMALL_N = 110
#: a probe: the default's second pass on every correction with its nets averaged over its last 5 epochs, BatchNorm
#: recomputed (average_last 5, average_bn 1 on the second pass only); not adopted (README, "Tried at 75 %")
SECOND_AVG = "crl+keep-auto+second-all-fit-avg"
#: a probe: the default's second pass on corrections made with the size calibration (TrainConfig.size_calibration on
#: both passes' scoring)
SECOND_CAL = "crl+keep-auto+second-all-fit-cal"
METHOD_OF = {"crl": "crl k=50%", "vanilla": "vanilla", "crl+balance": "crl k=50%", "crl+second": "crl k=50%",
             "crl+second-all": "crl k=50%", "crl+keep": "crl k=50%", "crl+second-fit": "crl k=50%",
             "crl+second-all-fit": "crl k=50%", "crl+second-all-fit-warm": "crl k=50%",
             "crl+second-all-fit-warm5": "crl k=50%", "crl+second-all-fit-k80": "crl k=50%",
             "crl+keep-est": "crl k=50%", "crl+fit-labels": "crl k=50%",
             "crl+fit-labels-only": "crl k=50% joint=all", "crl+keep-auto": "crl k=50%",
             "crl+keep-auto+second-all-fit": "crl k=50%", "crl+keep-auto-a35": "crl k=50%",
             SECOND_AVG: "crl k=50%", SECOND_CAL: "crl k=50%"}  # Table 1's methods
#: settings of ours (issue 11 item 4) a method trains with on top of Table 1's definition; every cell spells all
#: three out (PAPER_OPTIONS), so the paper's crl stays the paper's whatever TrainConfig's defaults are
PAPER_OPTIONS = {"tta": 0, "average_last": 0, "balance_area": 0, "second_pass": 0, "fit_labels": 0,
                 "keep_auto": 0, "size_calibration": 0}
#: the second pass (TrainConfig.second_pass): trained on the labels crl_napari.second_pass makes from the finished
#: "crl" cell of the same noise and seed (its checkpoint), so only the second pass trains here
SECOND = {"crl+second": second_pass.RECOMMENDED, "crl+second-all": second_pass.EVERY,
          "crl+second-fit": second_pass.RECOMMENDED, "crl+second-all-fit": second_pass.EVERY,
          "crl+second-all-fit-warm": second_pass.EVERY, "crl+second-all-fit-warm5": second_pass.EVERY,
          "crl+second-all-fit-k80": second_pass.EVERY, "crl+keep-auto+second-all-fit": second_pass.EVERY,
          SECOND_AVG: second_pass.EVERY, SECOND_CAL: second_pass.EVERY}
#: second passes whose labels are the first pass's corrections made with the border fit (TrainConfig.border_fit,
#: the default: what `--second-pass 1/2` trains on now); the others' are the paper's corrected labels
FIT_SECOND = {"crl+second-fit", "crl+second-all-fit", "crl+second-all-fit-warm", "crl+second-all-fit-warm5",
              "crl+second-all-fit-k80", "crl+keep-auto+second-all-fit", SECOND_AVG, SECOND_CAL}
#: second passes whose first pass is another cell than the paper's crl: "crl+keep-auto+second-all-fit" is what
#: `--second-pass 2` trains today (the first pass with the keep ratio estimated, TrainConfig.keep_auto; the second
#: pass with it too, from the setting's 0.5)
FIRST_PASS_OF = {"crl+keep-auto+second-all-fit": "crl+keep-auto", SECOND_AVG: "crl+keep-auto",
                 SECOND_CAL: "crl+keep-auto"}
#: second passes that warm-start from the first pass's nets (its checkpoint) as a review round does
#: (rounds.round_config: stage 2 from the start, the learning rate annealed from the first pass's last, the round's
#: epochs' weights averaged) for this many epochs (None: rounds.default_warm_epochs, a tenth of the first pass's),
#: instead of three fresh nets trained for the whole profile
WARM_SECOND = {"crl+second-all-fit-warm": None, "crl+second-all-fit-warm5": 5}
#: the second passes the small-set profile can measure (--small-second [METHOD ...]; the first when none is named)
SMALL_SECONDS = ("crl+second-all-fit", "crl+second-all-fit-warm", "crl+keep-auto+second-all-fit", SECOND_AVG,
                 SECOND_CAL)
OPTIONS_OF = {"crl+balance": {"balance_area": 1}, **{m: {"second_pass": mode} for m, mode in SECOND.items()}}
#: the second pass learns from the first pass's corrections, far fewer of them wrong than the given masks (label Dice
#: 0.95 at 75 % noise): "-k80" keeps 0.8 of each batch in its stage 1 instead of the paper's half (the fifth it
#: drops split as the paper splits its half: uncertain first, then large loss)
OPTIONS_OF["crl+second-all-fit-k80"] = {**OPTIONS_OF["crl+second-all-fit-k80"], "keep_ratio": 0.8,
                                     "drop_uncertain": 0.1}
#: "crl+keep": stage 1 keeps the clean fraction of each batch (keep_ratio = 1 - the noise rate; the paper's 0.5 is
#: that at 50 %), as co-teaching sets its forget rate to the noise rate. A user does not know the rate: the first
#: run's scores estimate it (the share of images at or above the recommended threshold; docs/paper.md).
KEEP_CLEAN = "crl+keep"
#: "crl+keep-est": the user's path to it: keep_ratio = scoring.suggested_keep_ratio of the finished paper's crl cell
#: of the same noise and seed (what `info` and train's metrics suggest after a first run), 0.5 when it suggests none
KEEP_EST = "crl+keep-est"
#: "crl+fit-labels": stage 2's corrected labels are the given borders moved as the peers agree
#: (TrainConfig.fit_labels), in the one training: what the second pass learns from, without a second pass
FIT_LABELS = "crl+fit-labels"
OPTIONS_OF[FIT_LABELS] = {"fit_labels": 1}
#: "crl+fit-labels-only": stage 2 learns from the fitted label alone (alpha 0) on every sample: as the second pass
#: learns from the fitted corrections alone, but within the one training. The paper's corrected label alone
#: collapses (Table 1's alpha=0 row); a fitted label keeps the given border's shape, moved by one distance
FIT_LABELS_ONLY = "crl+fit-labels-only"
OPTIONS_OF[FIT_LABELS_ONLY] = {"fit_labels": 1, "alpha": 0.0}
AVERAGE_LAST = 5  # epochs whose weights the "average" variant averages (a quarter of the quick profile's 20)
#: variant -> (weights, test-time flips, border fit), all measured from one training; weights: "last" (the
#: paper's), "average" (of the last epochs, BatchNorm statistics averaged too, as crl_napari.weight_average does) or
#: "average+bn" (the same weights, BatchNorm statistics recomputed by one pass over the training images:
#: TrainConfig.average_bn's pass); border fit: the corrections start from the given border moved as the nets agree
#: (TrainConfig.border_fit, crl_napari.border_fit), which leaves the nets and so test Dice as they are
VARIANTS = {"paper": ("last", 0, 0), "tta": ("last", 1, 0), "average": ("average", 0, 0),
            "average+tta": ("average", 1, 0), "average+bn": ("average+bn", 0, 0), "fit": ("last", 0, 1)}
#: variants that change only the corrections, not the nets: their test Dice equals the paper variant's
CORRECTION_ONLY = {"fit"}
OPTION_NOISE = [0.75, 0.5, 0.25]
OPTION_SEEDS = [0, 1]
OPTION_METHODS = ("crl", "crl+balance")
#: methods --methods may name besides OPTION_METHODS; not run unless named (each needs its "crl" cell finished)
#: "crl+keep-auto": crl+keep-est's keep ratio estimated during the one training (TrainConfig.keep_auto)
KEEP_AUTO = "crl+keep-auto"
OPTIONS_OF[KEEP_AUTO] = {"keep_auto": 1}
OPTIONS_OF["crl+keep-auto+second-all-fit"] = {**OPTIONS_OF["crl+keep-auto+second-all-fit"], "keep_auto": 1}
OPTIONS_OF[SECOND_AVG] = {**OPTIONS_OF[SECOND_AVG], "keep_auto": 1, "average_last": 5, "average_bn": 1}
OPTIONS_OF[SECOND_CAL] = {**OPTIONS_OF[SECOND_CAL], "keep_auto": 1, "size_calibration": 1}
#: "crl+keep-auto-a35": the default (keep ratio estimated) with stage 2's joint loss weighing the given mask 0.35
#: instead of the paper's alpha 0.5: about the estimate's keep ratio at 75 % noise (0.32-0.43), so the given masks
#: weigh less where most look wrong. A probe for a rule (alpha following the estimate), not a setting yet
KEEP_AUTO_A35 = "crl+keep-auto-a35"
OPTIONS_OF[KEEP_AUTO_A35] = {"keep_auto": 1, "alpha": 0.35}
EXTRA_METHODS = (*SECOND, KEEP_CLEAN, KEEP_EST, FIT_LABELS, FIT_LABELS_ONLY, KEEP_AUTO, KEEP_AUTO_A35)


def _bilinear_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The alternative native.py does not take: bilinear on the probability itself, then > 0.5."""
    t = torch.as_tensor(prob, dtype=torch.float32)[None, None]
    return (F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0] > 0.5).numpy().astype(np.uint8)


ISLANDS = {"min_island_fraction": 0.01, "fill_holes": True}  # clean_mask's defaults, spelled out
TWO = {**ISLANDS, "keep_largest": 2}
NEAREST = "nearest from binary (the export today)"
SMOOTH = "bilinear logit + clean-up"  # islands below 1 % dropped, holes filled
# name -> f(corrected binary at training size, sharpened probability at training size, original shape)
WAYS = {
    NEAREST: lambda b, p, s: upsample_nearest(b.astype(np.uint8), s),
    "nearest + clean-up": lambda b, p, s: clean_mask(upsample_nearest(b.astype(np.uint8), s)),
    "bilinear probability": lambda b, p, s: _bilinear_prob(p, s),
    "bilinear logit": lambda b, p, s: native.native_mask(p, s, cleanup=False, order=1),
    SMOOTH: lambda b, p, s: native.native_mask(p, s, cleanup=ISLANDS, order=1),
    "bilinear logit + clean-up, 2 largest": lambda b, p, s: native.native_mask(p, s, cleanup=TWO, order=1),
    "bicubic logit": lambda b, p, s: native.native_mask(p, s, cleanup=False, order=3),
    "bicubic logit + clean-up": lambda b, p, s: native.native_mask(p, s, cleanup=ISLANDS, order=3),
}


def cell_key(profile: str, method: str, ratio: float, seed: int) -> str:
    return f"{profile} | {method} | noise={int(round(ratio * 100))}% | seed={seed}"


def plan(seeds: list[int], small_seeds: list[int], small_keep: bool = False, small_second: list[str] | None = None,
         small_auto: bool = False) -> list[tuple[str, str, float, int]]:
    """Priority order: seed 0 at 75, 50, 25 %, then the other seeds, then the small-set profile (with
    ``small_keep``, also crl+keep-est at 75 %, after its first pass: the small set's crl cell; with
    ``small_second``, those second passes of SMALL_SECONDS at 75 %, the same way; with ``small_auto``,
    crl+keep-auto at 75 %)."""
    cells = [("full", "crl", r, s) for s in seeds for r in NOISE]
    cells += [("small110", m, r, s) for s in small_seeds for m, r in (("crl", 0.75), ("vanilla", 0.75),
                                                                       ("vanilla", 0.0))]
    cells += [("small110", KEEP_EST, 0.75, s) for s in small_seeds if small_keep]
    cells += [("small110", KEEP_AUTO, 0.75, s) for s in small_seeds if small_auto]
    cells += [("small110", m, 0.75, s) for m in small_second or () for s in small_seeds]
    return cells


def option_plan(noise_levels: list[float] | None = None, methods: list[str] | None = None,
                seeds: list[int] | None = None) -> list[tuple[str, str, float, int]]:
    """--options, in the order of what a decision needs: the clean small-set reference first (cheap), then at
    75 % crl (for its variants) and crl+balance on each seed; at 50 % crl on each seed before crl+balance (the
    variants of one training measure three options); 25 % seed 0 last. ``noise_levels``, ``methods`` and
    ``seeds`` keep only those cells (--noise, --methods, --option-seeds)."""
    named = [m for m in methods or () if m not in OPTION_METHODS]
    base = sorted(set(OPTION_SEEDS) | set(seeds or ()))
    cells = [("small110", "vanilla", 0.0, 0)]
    cells += [("full", m, 0.75, s) for s in base for m in OPTION_METHODS + tuple(named)]
    cells += [("full", m, 0.5, s) for m in OPTION_METHODS + tuple(named) for s in base]
    cells += [("full", m, 0.25, s) for m in OPTION_METHODS + tuple(named) for s in sorted({0} | set(seeds or ()))]
    return [c for c in cells if c[0] == "small110" or (
        (noise_levels is None or c[2] in noise_levels) and (methods is None or c[1] in methods)
        and (seeds is None or c[3] in seeds))]


def done(cell: tuple, got: dict | None, options: bool) -> bool:
    """Whether a cell is finished; with --options a crl cell also needs its variants."""
    return got is not None and (not options or cell[0] != "full" or bool(got.get("variants")))


def config(method: str, seed: int, ratio: float | None = None) -> cascade.TrainConfig:
    _, strategy, kfrac, joint = next(m for m in table1.METHODS if m[0] == METHOD_OF[method])
    epochs = PROFILE["epochs"]
    keep = {"keep_ratio": round(1 - ratio, 4)} if method == KEEP_CLEAN and ratio is not None else {}
    return cascade.TrainConfig(
        strategy=strategy, epochs=epochs, batch_size=PROFILE["batch_size"], lr=PROFILE["lr"],
        lr_decay=PROFILE["lr_decay"], width=PROFILE["width"], depth=PROFILE["depth"],
        k=None if kfrac is None else round(kfrac * epochs), joint=joint, seed=seed,
        **{**PAPER_OPTIONS, **OPTIONS_OF.get(method, {}), **keep},
    )


def epoch_file(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch{epoch:03d}.pt"


def train_models(images: np.ndarray, given: np.ndarray, cfg: cascade.TrainConfig, run_dir: Path,
                 init_from: Path | None = None):
    """Train (or resume, or just reload a finished checkpoint) and return (models, seconds per epoch). The
    checkpoints of the last AVERAGE_LAST epochs are kept (epochNNN.pt) for the "average" variant. ``init_from``:
    a checkpoint the nets warm-start from (WARM_SECOND)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run_dir / cascade.CHECKPOINT).is_file()
    seconds, models, keeps = [], None, []
    for ev in cascade.train(images, given, cfg, run_dir=run_dir, resume=resume, init_from=init_from):
        if isinstance(ev, cascade.CheckpointSaved) and ev.epoch >= cfg.epochs - min(AVERAGE_LAST, cfg.epochs):
            tmp = epoch_file(run_dir, ev.epoch).with_suffix(".tmp")
            shutil.copyfile(ev.path, tmp)
            tmp.replace(epoch_file(run_dir, ev.epoch))
        elif isinstance(ev, cascade.EpochEnd):
            seconds.append(ev.seconds)
            keeps.append(ev.keep)
            print(f"  epoch {ev.epoch + 1}/{cfg.epochs} stage {ev.stage} loss {np.mean(ev.losses):.4f} "
                  f"selected {ev.selected:.2f} {ev.seconds:.1f}s" + ("" if ev.keep is None else f" keep {ev.keep}"),
                  flush=True)
        elif isinstance(ev, cascade.Finished):
            models = ev.models
    return models, (float(np.mean(seconds)) if seconds else None)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean, or None for no values (no corrupted case at 0 % noise; JSON has no NaN)."""
    return float(values.mean()) if len(values) else None


def measure(masks: list[np.ndarray], truth: np.ndarray, corrupted: np.ndarray) -> dict:
    """Dice and boundary distance against the clean original masks (on corrupted / clean cases), islands."""
    dice = np.array([_dice(m, t) for m, t in zip(masks, truth, strict=True)])
    dist = np.array([native.boundary_distance(m, t) for m, t in zip(masks, truth, strict=True)])
    islands = np.array([small_islands(m) for m in masks])
    out = {"islands_below_1pct": int(islands.sum()), "cases_with_islands": int((islands > 0).sum()),
           "cases_with_extra_pieces": int(sum(extra_pieces(m) > 0 for m in masks)), "n_cases": len(masks)}
    for name, sel in (("corrupted", corrupted), ("clean", ~corrupted)):
        if sel.any():
            out[f"dice_{name}"] = float(dice[sel].mean())
            out[f"boundary_px_{name}"] = _mean_or_none(dist[sel][~np.isnan(dist[sel])])  # nan: an empty mask
    return out


def averaged_models(models, cfg: cascade.TrainConfig, run_dir: Path):
    """Copies of ``models`` with each net's weights averaged over the kept last epochs (None if any is missing:
    a cell trained before the epochs were kept)."""
    files = [epoch_file(run_dir, e) for e in range(cfg.epochs - min(AVERAGE_LAST, cfg.epochs), cfg.epochs)]
    if not all(f.is_file() for f in files):
        return None
    avg = WeightAverage()
    for f in files:
        avg.add(read_checkpoint(f)["models"])
    out = [copy.deepcopy(m) for m in models]
    avg.load_into(out)
    return [m.eval() for m in out]


def variants(models, cfg, run_dir: Path | None, train: dict, corrupted: np.ndarray, test: dict,
             only: list[str] | None = None) -> dict:
    """Each VARIANT's corrected Dice (64 px, and 256 px bilinear logit + clean-up) and test Dice; without a
    ``run_dir`` (a finished run's checkpoint alone: --rescore) only those that need no averaged weights."""
    averaged = averaged_models(models, cfg, run_dir) if run_dir is not None else None
    if averaged is None and run_dir is not None:
        return {}
    shape = train["truth"].shape[1:]
    out = {}
    weights = {"last": models, "average": averaged}
    for name, (kind, tta, fit) in VARIANTS.items():
        if (kind != "last" and averaged is None) or (only is not None and name not in only):
            continue
        if kind == "average+bn" and kind not in weights:  # TrainConfig.average_bn's pass, on copies
            weights[kind] = [copy.deepcopy(m) for m in averaged]
            images = train["images"]
            batches = pass_batches(len(images), cfg.batch_size, one_pixel_bottom=images.shape[-1] == 2**cfg.depth)
            update_batchnorm(weights[kind], (torch.as_tensor(images[b.start : b.stop]) for b in batches))
        nets = weights[kind]
        sc = scoring.score_probs(cascade.peer_probs(nets, train["images"], tta=tta), train["given"], cfg.T,
                                 border_fit=bool(fit))
        d64 = cascade.dice_score(sc.corrected.astype(np.float32), train["clean"])
        d256 = np.array([_dice(native.native_mask(p, shape, cleanup=ISLANDS, order=1), t)
                         for p, t in zip(sc.prob, train["truth"], strict=True)])
        prob = cascade.predict(nets, test["images"], tta=tta)
        out[name] = {
            "corrected_dice_corrupted_train_size": float(d64[corrupted].mean()),
            "corrected_dice_clean_train_size": float(d64[~corrupted].mean()),
            "dice_corrupted": float(d256[corrupted].mean()), "dice_clean": float(d256[~corrupted].mean()),
            "test_dice": float(cascade.dice_score(prob, test["clean"]).mean()),
            "test_dice_native_smooth": float(np.mean([
                _dice(native.native_mask(p, shape, cleanup=ISLANDS, order=1), t)
                for p, t in zip(prob, test["truth"], strict=True)])),
        }
    return out


def evaluate(models, cfg, train: dict, corrupted: np.ndarray, test: dict) -> dict:
    """Every way of bringing the corrected labels to the original size, measured; plus test Dice at training
    size (as Table 1) and at the original size (nearest from binary / smooth + clean-up)."""
    truth = train["truth"]
    shape = truth.shape[1:]
    sc = scoring.score_probs(cascade.peer_probs(models, train["images"]), train["given"], cfg.T)
    d64 = cascade.dice_score(sc.corrected.astype(np.float32), train["clean"])
    out = {"corrected_dice_corrupted_train_size": _mean_or_none(d64[corrupted]),
           "corrected_dice_clean_train_size": _mean_or_none(d64[~corrupted]), "ways": {}}
    t0 = time.time()
    for name, way in WAYS.items():
        masks = [way(b, p, shape) for b, p in zip(sc.corrected, sc.prob, strict=True)]
        out["ways"][name] = measure(masks, truth, corrupted)
    # references: the given (noisy) mask and the clean mask at training size, each brought back by nearest
    out["given_nearest"] = measure([upsample_nearest(g, shape) for g in train["given"]], truth, corrupted)
    out["clean_train_size_nearest"] = measure([upsample_nearest(c, shape) for c in train["clean"]], truth, corrupted)
    out["evaluate_seconds"] = time.time() - t0
    prob = cascade.predict(models, test["images"])
    out["test_dice"] = float(cascade.dice_score(prob, test["clean"]).mean())
    pairs = list(zip(prob, test["truth"], strict=True))
    out["test_dice_native_nearest"] = float(np.mean([
        _dice(upsample_nearest((p > 0.5).astype(np.uint8), shape), t) for p, t in pairs]))
    out["test_dice_native_smooth"] = float(np.mean([
        _dice(native.native_mask(p, shape, cleanup=ISLANDS, order=1), t) for p, t in pairs]))
    return out


def rescore(run_dir: Path, train: dict, test: dict) -> dict:
    """The variants without averaging (paper, tta) of a finished table1.py quick crl run, re-scored from its
    checkpoint: its noise ratio and seed are read from the folder's name (table1.cell_dir)."""
    m = re.search(r"noise=(\d+)pct_seed=(\d+)$", run_dir.name)
    if m is None:
        raise SystemExit(f"{run_dir}: not a table1.py cell folder (…noise=NNpct_seed=N)")
    ratio, seed = int(m.group(1)) / 100, int(m.group(2))
    epoch = read_checkpoint(run_dir / cascade.CHECKPOINT)["epoch"]
    models, cfg = cascade.load_models(run_dir, "cpu")
    if epoch != cfg.epochs - 1:
        raise SystemExit(f"{run_dir}: trained {epoch + 1} of {cfg.epochs} epochs so far; re-score it when finished")
    given, records = noise.simulate(train["clean"], train["ids"], ratio, seed=seed)
    corrupted = np.array([r.corrupted for r in records])
    out = {"noise": ratio, "seed": seed, "strategy": cfg.strategy, "k": cfg.k, "epochs": cfg.epochs}
    out["variants"] = variants(models, cfg, None, {**train, "given": given}, corrupted, test)
    return out


def cell_dir(key: str) -> Path:
    return RUNS / key.replace(" | ", "_").replace(" ", "_").replace("%", "pct")


class FirstPassMissing(Exception):
    """A second-pass cell whose "crl" cell has not finished training."""


def first_pass_scores(profile: str, ratio: float, seed: int, train: dict, border_fit: bool = False,
                      method: str = "crl", calibrate: bool = False) -> tuple[Path, scoring.ImageScores, object]:
    """The finished ``method`` cell (the paper's crl unless named) of the same profile, noise and seed: its folder,
    its scores of the training images against ``train["given"]`` (as the engine scores them), its settings."""
    first = cell_dir(cell_key(profile, method, ratio, seed))
    if not (first / cascade.CHECKPOINT).is_file():
        raise FirstPassMissing(f"{first}: no checkpoint")
    epoch = read_checkpoint(first / cascade.CHECKPOINT)["epoch"]
    models, cfg = cascade.load_models(first, "cpu")
    if epoch != cfg.epochs - 1:
        raise FirstPassMissing(f"{first}: trained {epoch + 1} of {cfg.epochs} epochs so far")
    return first, scoring.score_probs(cascade.peer_probs(models, train["images"], tta=cfg.tta), train["given"],
                                      cfg.T, border_fit=border_fit, calibrate=calibrate), cfg


def first_pass_labels(profile: str, ratio: float, seed: int, train: dict, mode: int, border_fit: bool = False,
                      method: str = "crl", calibrate: bool = False) -> tuple[np.ndarray, dict]:
    """The second pass's labels, made as the engine makes them (second_pass.training_labels of scoring's
    corrections) from the finished ``method`` cell (the paper's crl unless named) of the same profile, noise and
    seed, and what they hold."""
    first, sc, _cfg = first_pass_scores(profile, ratio, seed, train, border_fit, method, calibrate)
    take = second_pass.takes_correction(sc.suspicion, mode)
    labels = second_pass.training_labels(train["given"], sc.corrected, sc.suspicion, mode)
    corrupted = np.array(train["corrupted"])
    d_label = cascade.dice_score(labels.astype(np.float32), train["clean"])
    info = {"first_pass": first.name, "threshold": float(scoring.recommended_threshold(sc.suspicion)),
            "size_offset": sc.size_offset,
            "corrections_taken": int(take.sum()), "corrections_taken_corrupted": int(take[corrupted].sum()),
            "label_dice_corrupted": float(d_label[corrupted].mean()),
            "label_dice_clean": float(d_label[~corrupted].mean()), "label_dice_all": float(d_label.mean())}
    return labels, info


def profile_set(train: dict, profile: str, seed: int) -> dict:
    """The training arrays of ``profile``: all of them, or SMALL_N drawn with the seed (small110)."""
    if profile != "small110":
        return train
    idx = np.sort(np.random.default_rng(seed).choice(len(train["ids"]), SMALL_N, replace=False))
    return {k: (np.asarray(v)[idx] if k != "ids" else [v[i] for i in idx]) for k, v in train.items()}


def small_default(seed: int, train: dict, test: dict) -> dict:
    """What the product's default (second_pass 4) decides on the small set at 75 %: crl+keep-auto's first pass (its
    cell's nets; trained again into its folder when that is gone) scored with the border fit, as the engine scores
    it, and whether its noise share sends it on to the second pass (second_pass.auto_choice): then the default's
    nets are crl+keep-auto+second-all-fit's, else crl+keep-auto's."""
    key = cell_key("small110", KEEP_AUTO, 0.75, seed)
    train = profile_set(train, "small110", seed)
    given, _ = noise.simulate(train["clean"], train["ids"], 0.75, seed=seed)
    retrained = not (cell_dir(key) / cascade.CHECKPOINT).is_file()
    cfg = config(KEEP_AUTO, seed, 0.75)
    models, _ = train_models(train["images"], given, cfg, cell_dir(key))
    models = [m.eval() for m in models]
    sc = scoring.score_probs(cascade.peer_probs(models, train["images"]), given, cfg.T, border_fit=True)
    test_dice = float(cascade.dice_score(cascade.predict(models, test["images"]), test["clean"]).mean())
    return {"noise_share": scoring.noise_share(sc.suspicion),
            "auto_second": second_pass.auto_choice(sc.suspicion, cfg.keep_ratio)[0] is not None,
            "retrained": retrained, "test_dice_first_pass": test_dice,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _small_default_lines(results: dict, small: list[dict]) -> list[str]:
    """The small set's 75 % gap of the product's default: per seed its decision and the cell that stands for it
    (the second pass on the calibrated corrections, SECOND_CAL, since the size calibration became the default;
    before it crl+keep-auto+second-all-fit, reported beside)."""
    got = results.get("small_default", {})
    ref = {c["seed"]: c["test_dice"] for c in small if c["method"] == "vanilla" and c["noise"] == 0.0}
    by = {(c["method"], c["seed"]): c for c in small if c["noise"] == 0.75}
    rows, gaps, before = [], [], []
    for seed in sorted(int(s) for s in got):
        d = got[str(seed)]
        method = SECOND_CAL if d["auto_second"] else KEEP_AUTO
        cell = by.get((method, seed))
        gap = None if cell is None or seed not in ref else ref[seed] - cell["test_dice"]
        if gap is not None:
            gaps.append(gap)
        old = by.get(("crl+keep-auto+second-all-fit" if d["auto_second"] else KEEP_AUTO, seed))
        if old is not None and seed in ref:
            before.append(ref[seed] - old["test_dice"])
        rows.append(f"seed {seed}: noise share {d['noise_share']:.2f} -> {method}"
                    + ("" if gap is None else f", gap {gap:+.4f}")
                    + (" (its first pass trained again for the decision: test Dice "
                       f"{d['test_dice_first_pass']:.4f}, the committed cell {by[(KEEP_AUTO, seed)]['test_dice']:.4f})"
                       if d.get("retrained") and (KEEP_AUTO, seed) in by else ""))
    if not rows:
        return []
    verdict = "" if not gaps else (f"; mean gap {np.mean(gaps):+.4f} over {len(gaps)} seed(s) (target within 0.020: "
                                   f"{'met' if np.mean(gaps) <= 0.020 else 'MISSED'})")
    if before and len(before) == len(gaps):
        verdict += f"; before the size calibration (crl+keep-auto+second-all-fit) {np.mean(before):+.4f}"
    return ["", "The product's default (second_pass 4: the second pass where the first pass's scores say most masks "
            "look wrong, `--small-decide`; its corrections calibrated to the given masks' size, size_calibration 1): "
            + "; ".join(rows) + verdict + "."]


def run_cell(key: str, profile: str, method: str, ratio: float, seed: int, train: dict, test: dict) -> dict:
    """Train one cell (or resume it, or reload it when finished) and measure it."""
    t0 = time.time()
    train = profile_set(train, profile, seed)
    given, records = noise.simulate(train["clean"], train["ids"], ratio, seed=seed)
    corrupted = np.array([r.corrupted for r in records])
    train = {**train, "given": given}
    cfg = config(method, seed, ratio)
    labels, first = given, None
    if method in SECOND:  # the second pass trains on the first pass's corrections; measured against ``given``
        labels, first = first_pass_labels(profile, ratio, seed, {**train, "corrupted": corrupted}, SECOND[method],
                                          border_fit=method in FIT_SECOND, method=FIRST_PASS_OF.get(method, "crl"),
                                          calibrate=bool(cfg.size_calibration))
        print(f"  first pass {first}", flush=True)
    init = None
    if method in WARM_SECOND:  # a warm round from the first pass's nets, as rounds.next_round makes it
        init = cell_dir(cell_key(profile, "crl", ratio, seed)) / cascade.CHECKPOINT
        warm = WARM_SECOND[method] or rounds.default_warm_epochs(cfg)
        cfg = rounds.round_config(cfg, cfg, warm, False)
    estimated = None
    if method == KEEP_EST:  # the keep_ratio a first run's scores suggest (scoring.suggested_keep_ratio)
        folder, sc, _ = first_pass_scores(profile, ratio, seed, {**train, "corrupted": corrupted})
        keep = scoring.suggested_keep_ratio(sc.suspicion, cfg.keep_ratio)
        estimated = {"first_pass": folder.name, "noise_share": scoring.noise_share(sc.suspicion), "suggested": keep}
        cfg = replace(cfg, keep_ratio=keep if keep is not None else cfg.keep_ratio)
        print(f"  keep_ratio from the first pass's scores: {estimated}", flush=True)
    models, sec_per_epoch = train_models(train["images"], labels, cfg, cell_dir(key), init_from=init)
    out = {"profile": profile, "method": method, "noise": ratio, "seed": seed, "n_train": len(train["ids"]),
           "n_corrupted": int(corrupted.sum()), "sec_per_epoch": sec_per_epoch}
    if first is not None:
        out["second_pass_labels"] = first
    if estimated is not None:
        out["keep_ratio_estimated"] = {**estimated, "keep_ratio": cfg.keep_ratio}
    out.update(evaluate(models, cfg, train, corrupted, test))
    if profile == "full":
        out["variants"] = variants(models, cfg, cell_dir(key), train, corrupted, test,
                                   only=["paper", "fit"] if method in (*SECOND, FIT_LABELS, FIT_LABELS_ONLY) else None)
    out["wall_seconds"] = time.time() - t0
    out["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def add_variants(key: str, cell: dict, train: dict, test: dict, names: list[str] | None = None) -> dict:
    """The VARIANTS ``cell`` lacks (of ``names``, all when None), measured from its run folder (its checkpoint and
    kept epochs); {} if none."""
    missing = [v for v in VARIANTS if v not in cell["variants"] and (names is None or v in names)]
    run_dir = cell_dir(key)
    if not missing or not (run_dir / cascade.CHECKPOINT).is_file():
        return {}
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {key}: adding {', '.join(missing)}", flush=True)
    models, cfg = cascade.load_models(run_dir, "cpu")
    given, records = noise.simulate(train["clean"], train["ids"], cell["noise"], seed=cell["seed"])
    corrupted = np.array([r.corrupted for r in records])
    return variants([m.eval() for m in models], cfg, run_dir, {**train, "given": given}, corrupted, test, missing)


def time_native(repeats: int = 3) -> dict:
    """Seconds to bring a 64 px probability to 3000 x 3000 and 3000 x 2500 (best of ``repeats``)."""
    from crl_napari.data import resize_image
    from crl_napari.phantoms import make_phantom

    prob = np.clip(resize_image(make_phantom(0, 256)[1].astype(np.float32), 64), 0, 1)
    cases = {
        "nearest from binary": lambda s: upsample_nearest((prob > 0.5).astype(np.uint8), s),
        "bilinear logit": lambda s: native.native_mask(prob, s, cleanup=False, order=1),
        "bilinear logit + clean-up": lambda s: native.native_mask(prob, s, cleanup=ISLANDS, order=1),
        "bicubic logit + clean-up": lambda s: native.native_mask(prob, s, cleanup=ISLANDS, order=3),
    }
    out = {}
    for shape in ((3000, 3000), (3000, 2500)):
        for name, f in cases.items():
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                f(shape)
                best = min(best, time.perf_counter() - t)
            out[f"{name} -> {shape[0]}x{shape[1]}"] = best
    return out


def _mean(cells: list[dict], get) -> str:
    """Mean ± std over the cells that have the value (counts without decimals), — where none has it."""
    vals = [v for c in cells if (v := get(c)) is not None]
    if not vals:
        return "—"
    f = ".1f" if all(isinstance(v, int) for v in vals) else ".4f"
    return f"{np.mean(vals):{f}}" + ("" if len(vals) == 1 else f" ± {np.std(vals):{f}}")


def summarise(results: dict, seeds: list[int], small_seeds: list[int]) -> str:
    cells = results["cells"]
    missing = [cell_key(*c) for c in plan(seeds, small_seeds) if cell_key(*c) not in cells]
    status = "complete" if not missing else f"PARTIAL: {len(cells)} cells finished, missing: " + "; ".join(missing)
    lines = ["# Corrected labels at the original resolution (issue 11)", "",
             f"Status: **{status}**.", "",
             f"Commands: {'; '.join(f'`{c}`' for c in results.get('commands', []))}. "
             f"Machine: {results.get('machine', '?')}. Training: Table 1's quick profile ({PROFILE}), "
             "crl k=50 %, simulated noise on the 64 px training masks (noise.simulate, as table1.py).", "",
             "Measured at the ORIGINAL 256 px against the clean 256 px masks of the training split (385 images): "
             "Dice on the corrupted / clean cases, symmetric mean boundary distance in original pixels, and in "
             "each way's masks the islands below 1 % of the mask's area (total per cell) and the cases with more "
             "than two pieces. Mean ± std over seeds (n seeds in the header). The full-set cells of 29 Nov 2026 "
             "ran with the first clean_mask (islands dropped before holes were filled, commit 8302720); filling "
             "first (9e23ea4) weighs the pieces against the filled area, which differs only for a piece right at "
             "the 1 % bar.", ""]
    full = [c for c in cells.values() if c["profile"] == "full" and c["method"] == "crl"]
    for r in NOISE:
        got = [c for c in full if c["noise"] == r]
        if not got:
            lines += [f"## {int(r * 100)} % noise: not run yet", ""]
            continue
        lines += [f"## {int(r * 100)} % noise (n={len(got)}: seeds {', '.join(str(c['seed']) for c in got)})", "",
                  "| way to the original size | Dice corrupted | Dice clean | boundary px corrupted | "
                  "boundary px clean | islands < 1 % | cases with islands | cases > 2 pieces |",
                  "|---|---|---|---|---|---|---|---|"]
        rows = [(w, lambda c, w=w: c["ways"][w]) for w in WAYS]
        rows += [("reference: given (noisy) mask, nearest from 64 px", lambda c: c["given_nearest"]),
                 ("reference: clean mask at 64 px, nearest (resolution floor)",
                  lambda c: c["clean_train_size_nearest"])]
        for name, part in rows:
            vals = [_mean(got, lambda c, k=k, part=part: part(c).get(k)) for k in (
                "dice_corrupted", "dice_clean", "boundary_px_corrupted", "boundary_px_clean", "islands_below_1pct",
                "cases_with_islands", "cases_with_extra_pieces")]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        lines += ["", f"At training size (64 px vs the clean 64 px masks, as table1.py reports it): corrected Dice "
                  f"{_mean(got, lambda c: c['corrected_dice_corrupted_train_size'])} on the corrupted cases, "
                  f"{_mean(got, lambda c: c['corrected_dice_clean_train_size'])} on the clean ones. Test Dice (165 "
                  f"test images): {_mean(got, lambda c: c['test_dice'])} at 64 px, at 256 px "
                  f"{_mean(got, lambda c: c['test_dice_native_nearest'])} nearest from binary, "
                  f"{_mean(got, lambda c: c['test_dice_native_smooth'])} bilinear logit + clean-up.", ""]
    small = [c for c in cells.values() if c["profile"] == "small110"]
    lines += [f"## Small set: {SMALL_N} training images (drawn with the seed), same test split", ""]
    if small:
        lines += ["| method | noise | seeds | test Dice 64 px | test Dice 256 px (smooth + clean-up) | corrected Dice "
                  "corrupted 256 px (nearest / bilinear logit + clean-up) |", "|---|---|---|---|---|---|"]
        for m, r in (("vanilla", 0.0), ("vanilla", 0.75), ("crl", 0.75), (KEEP_EST, 0.75), (KEEP_AUTO, 0.75),
                     *((m, 0.75) for m in SMALL_SECONDS)):
            got = [c for c in small if c["method"] == m and c["noise"] == r]
            if got:
                nn = _mean(got, lambda c: c["ways"][NEAREST].get("dice_corrupted"))
                sm = _mean(got, lambda c: c["ways"][SMOOTH].get("dice_corrupted"))
                seeds_got = ", ".join(str(c["seed"]) for c in got)
                lines.append(f"| {m} | {int(r * 100)} % | {seeds_got} | {_mean(got, lambda c: c['test_dice'])}"
                             f" | {_mean(got, lambda c: c['test_dice_native_smooth'])} | {nn} / {sm} |")
        gap = " ".join(g for g in (_small_gap(small), _small_gap(small, KEEP_EST), _small_gap(small, KEEP_AUTO),
                                   *(_small_gap(small, m) for m in SMALL_SECONDS)) if g)
        if gap:
            lines += ["", gap]
        lines += _small_default_lines(results, small)
    else:
        lines.append("Not run yet.")
    lines += option_summary(cells, results.get("rescored", {}))
    lines += decision_summary(cells, results.get("rescored", {}))
    if t := results.get("timing"):
        lines += ["", f"## Time to the original size (64 px probability, best of 3, {results.get('timing_threads')} "
                  "torch threads, on the machine above while other work shared it)", "", "| what | seconds |",
                  "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def _small_gap(small: list[dict], method: str = "crl") -> str:
    """The small-set 75 % gap of ``method``'s test Dice to clean-label vanilla, on the seeds both have."""
    ref = {c["seed"]: c["test_dice"] for c in small if c["method"] == "vanilla" and c["noise"] == 0.0}
    got = {c["seed"]: ref[c["seed"]] - c["test_dice"] for c in small if c["method"] == method and c["noise"] == 0.75
           and c["seed"] in ref}
    if not got:
        return ""
    seeds = ", ".join(str(s) for s in sorted(got))
    return (f"Small-set gap at 75 % noise, clean-label vanilla minus {method}, test Dice at 64 px: "
            f"{np.mean(list(got.values())):+.4f} (seeds {seeds}; target within 0.020).")


def option_summary(cells: dict, rescored: dict) -> list[str]:
    """The options' table: every variant and crl+balance beside the paper's crl of the same training/seed."""
    lines = ["", "## Options of ours, not the paper's (issue 11 item 4)", "",
             f"From one crl training each: `tta` = test-time flips (TrainConfig.tta = 1), `average` = each net's "
             f"weights averaged over the last {AVERAGE_LAST} epochs (TrainConfig.average_last = {AVERAGE_LAST}), "
             "both; `average+bn` = the same average with BatchNorm's statistics recomputed by one pass over the "
             "training images (TrainConfig.average_bn = 1 with that average); `crl+balance` = trained with the "
             "area-balanced selection (TrainConfig.balance_area = 1), with the same variants. Corrected Dice at "
             "256 px is bilinear logit + clean-up (the export's way). Mean ± std over the seeds; 'wins' counts the "
             "seeds on which the row beats the paper's crl of the same seed on corrected Dice corrupted AND clean AND "
             "test Dice. `crl+keep` = stage 1 keeps the clean fraction of each batch (TrainConfig.keep_ratio = 1 - "
             "the noise rate, which the benchmark knows); `crl+keep-est` = the keep_ratio a first run's scores "
             "suggest (scoring.suggested_keep_ratio of the paper's crl cell; at 50 and 25 % none is suggested). "
             "`fit` = the same nets' corrections made with the border fit (TrainConfig.border_fit = 1, the default "
             "since 30 Nov 2026: the export's way; crl_napari.border_fit); its test Dice is its row's paper variant's. "
             "`crl+second-fit` / `crl+second-all-fit` = the second pass trained on the first pass's corrections made "
             "with the border fit (what `--second-pass 1` / `2` train on now); `crl+second-all-fit-warm` = the same "
             "labels as crl+second-all-fit, but the first pass's nets go on for a tenth of its epochs as a warm "
             "review round does (rounds.round_config; `-warm5`: 5 epochs) instead of three fresh nets.", ""]
    missing = [cell_key(*c) for c in option_plan() if c[0] == "full" and not done(c, cells.get(cell_key(*c)), True)]
    if missing:
        lines += [f"Options cells not finished: {'; '.join(missing)} (`--options` resumes them).", ""]
    rows = []
    for r in OPTION_NOISE:
        base = {c["seed"]: c["variants"]["paper"] for c in cells.values() if c["profile"] == "full"
                and c["method"] == "crl" and c["noise"] == r and c.get("variants")}
        cands = [(m, v, {s: c["variants"][v] for s, c in _by_seed(cells, m, r).items() if v in c["variants"]})
                 for m in OPTION_METHODS + EXTRA_METHODS for v in VARIANTS]
        for method, variant, got in cands:
            name = f"{method} {variant}"
            if not got:
                continue
            keys = ("dice_corrupted", "dice_clean", "corrected_dice_corrupted_train_size", "test_dice",
                    "test_dice_native_smooth")
            vals = [_mean(list(got.values()), lambda c, k=k: c[k]) for k in keys]
            wins = sum(all(got[s][k] > base[s][k] for k in _win_keys(method, variant))
                       for s in got if s in base)
            won = "—" if name == "crl paper" else f"{wins} of {sum(s in base for s in got)}"
            rows.append(f"| {int(r * 100)} % | {name} | {', '.join(str(s) for s in sorted(got))} | "
                        + " | ".join(vals) + f" | {won} |")
    for name, got in rescored.items():
        v = got["variants"]
        for variant in v:
            vals = [f"{v[variant][k]:.4f}" for k in (
                "dice_corrupted", "dice_clean", "corrected_dice_corrupted_train_size", "test_dice",
                "test_dice_native_smooth")]
            win = all(v[variant][k] > v["paper"][k] for k in ("dice_corrupted", "dice_clean", "test_dice"))
            rows.append(f"| {int(got['noise'] * 100)} % | {variant}, re-scored {name} | {got['seed']} | "
                        + " | ".join(vals) + f" | {'—' if variant == 'paper' else f'{int(win)} of 1'} |")
    if not rows:
        return lines + ["Not run yet."]
    return lines + ["| noise | variant | seeds | Dice corrupted 256 | Dice clean 256 | Dice corrupted 64 | "
                    "test Dice 64 | test Dice 256 | wins |", "|---|---|---|---|---|---|---|---|---|"] + rows \
        + second_pass_summary(cells)


def second_pass_summary(cells: dict) -> list[str]:
    """Per second-pass cell: the labels it trained on (from its first pass) and what its corrections became."""
    got = sorted((c for c in cells.values() if c["method"] in SECOND and c.get("second_pass_labels")
                  and c["profile"] == "full"),
                 key=lambda c: (c["method"], -c["noise"], c["seed"]))
    if not got:
        return []
    lines = ["", "### The second pass's labels (crl+second: the recommended policy's; crl+second-all: every "
             "correction)", "", "Made from the finished crl cell of the same noise and seed (second_pass."
             "training_labels of its corrections). Dice at 64 px against the clean 64 px masks; the corrections "
             "the second pass's nets make, beside the first pass's (the crl cell's paper variant).", "",
             "| method | noise | seed | threshold | corrections taken (corrupted) | label Dice corrupted / clean / "
             "all | first pass corrected Dice corrupted 64 | second pass corrected Dice corrupted 64 |",
             "|---|---|---|---|---|---|---|---|"]
    for c in got:
        lab = c["second_pass_labels"]
        first = _by_seed(cells, "crl", c["noise"]).get(c["seed"])
        before = f"{first['variants']['paper']['corrected_dice_corrupted_train_size']:.4f}" if first else "—"
        lines.append(f"| {c['method']} | {int(c['noise'] * 100)} % | {c['seed']} | {lab['threshold']:.3f} | "
                     f"{lab['corrections_taken']} ({lab['corrections_taken_corrupted']}) of {c['n_train']} | "
                     f"{lab['label_dice_corrupted']:.4f} / {lab['label_dice_clean']:.4f} / {lab['label_dice_all']:.4f}"
                     f" | {before} | {c['variants']['paper']['corrected_dice_corrupted_train_size']:.4f} |")
    return lines


#: option -> (method trained, variant measured): every option and combination the decision weighs
OPTIONS = {"tta": ("crl", "tta"), "average": ("crl", "average"), "average+tta": ("crl", "average+tta"),
           "average+bn": ("crl", "average+bn"), "balance": ("crl+balance", "paper"),
           "balance+tta": ("crl+balance", "tta"),
           "balance+average": ("crl+balance", "average"), "balance+average+tta": ("crl+balance", "average+tta"),
           "balance+average+bn": ("crl+balance", "average+bn"), "second": ("crl+second", "paper"),
           "second (every correction)": ("crl+second-all", "paper"), "keep clean fraction": (KEEP_CLEAN, "paper"),
           "keep clean fraction+tta": (KEEP_CLEAN, "tta"), "keep clean fraction+average+bn": (KEEP_CLEAN, "average+bn"),
           "keep from scores": (KEEP_EST, "paper"), "keep from scores+average+bn": (KEEP_EST, "average+bn"),
           "border fit": ("crl", "fit"), "keep clean fraction+border fit": (KEEP_CLEAN, "fit"),
           "keep from scores+border fit": (KEEP_EST, "fit"),
           "second, labels fitted": ("crl+second-fit", "paper"), "second, labels fitted+border fit":
           ("crl+second-fit", "fit"), "second (every correction), labels fitted": ("crl+second-all-fit", "paper"),
           "second (every correction), labels fitted+border fit": ("crl+second-all-fit", "fit"),
           "warm second (every correction), labels fitted": ("crl+second-all-fit-warm", "paper"),
           "warm second (every correction), labels fitted+border fit": ("crl+second-all-fit-warm", "fit"),
           "warm second 5 epochs, labels fitted+border fit": ("crl+second-all-fit-warm5", "fit"),
           "second keeping 0.8 (every correction), labels fitted+border fit": ("crl+second-all-fit-k80", "fit"),
           "fitted labels in stage 2": (FIT_LABELS, "paper"),
           "fitted labels in stage 2+border fit": (FIT_LABELS, "fit"),
           "fitted labels alone in stage 2 (alpha 0, every sample)": (FIT_LABELS_ONLY, "paper"),
           "keep estimated while training": (KEEP_AUTO, "paper"),
           "keep estimated while training+border fit": (KEEP_AUTO, "fit"),
           "keep estimated, then second (every correction), labels fitted+border fit":
           ("crl+keep-auto+second-all-fit", "fit"),
           "keep estimated, alpha 0.35+border fit": (KEEP_AUTO_A35, "fit")}
WIN_KEYS = ("dice_corrupted", "dice_clean", "test_dice")


def _win_keys(method: str, variant: str) -> tuple[str, ...]:
    """What an option must beat the paper's crl on: WIN_KEYS, but test Dice where only the corrections differ
    (the same nets: their test Dice is the paper's by construction)."""
    return WIN_KEYS[:2] if method == "crl" and variant in CORRECTION_ONLY else WIN_KEYS
TARGET_256 = {0.75: 0.95, 0.5: 0.965, 0.25: 0.965}  # issue 11: corrected Dice at the original size, corrupted
CLEAN_VANILLA = RESULTS / "table1-quick.json"  # clean-label vanilla per seed, the test Dice target's reference


def _measured(cells: dict, rescored: dict, method: str, variant: str, ratio: float, seed: int) -> dict | None:
    """One variant of one training: a native_res cell, else (crl only) a re-scored table1.py run of the same
    noise and seed, which is the same training (its paper variant reproduces the native_res cell's exactly)."""
    c = _by_seed(cells, method, ratio).get(seed)
    if c is not None:
        return c["variants"].get(variant)
    if method != "crl":
        return None
    got = [g for g in rescored.values() if g["noise"] == ratio and g["seed"] == seed]
    return got[0]["variants"].get(variant) if got else None


def decisions(cells: dict, rescored: dict) -> dict:
    """option -> {(noise, seed): (won, {key: option minus paper})} over every noise and seed where both the
    option and the paper's crl of the same seed were measured; won = better on all of WIN_KEYS."""
    out = {}
    for option, (method, variant) in OPTIONS.items():
        out[option] = {}
        for r in OPTION_NOISE:
            for s in OPTION_SEEDS + [2]:
                # the keep estimate with the border fit against crl with it: the two differ by the estimate alone
                against = "fit" if (method, variant) == (KEEP_AUTO, "fit") else "paper"
                got, base = (_measured(cells, rescored, method, variant, r, s),
                             _measured(cells, rescored, "crl", against, r, s))
                if got is not None and base is not None:
                    delta = {k: got[k] - base[k] for k in WIN_KEYS}
                    same = all(delta[k] == 0 for k in WIN_KEYS)  # the same nets and corrections, bit for bit
                    out[option][(r, s)] = (None if same else all(delta[k] > 0 for k in _win_keys(method, variant)),
                                           delta)
    return out


def qualifies(measured: dict) -> bool:
    """The issue's rule: a default only for what wins on every seed measured, with at least 2 seeds at 75 % and
    2 at 50 %."""
    n = {r: sum(1 for (ratio, _s) in measured if ratio == r) for r in (0.75, 0.5)}
    return bool(measured) and all(won for won, _d in measured.values()) and n[0.75] >= 2 and n[0.5] >= 2


def wins_where_it_changes(measured: dict) -> bool:
    """The rule for an option that changes the training only under some conditions (keep_auto: most masks looking
    wrong): it wins on every seed where it changed anything, with at least 2 such seeds at 75 %, and elsewhere it
    is the paper's crl bit for bit (measured on at least 2 seeds at 50 %)."""
    n = {r: sum(1 for (ratio, _s) in measured if ratio == r) for r in (0.75, 0.5)}
    changed = [won for won, _d in measured.values() if won is not None]
    won75 = sum(1 for (ratio, _s), (won, _d) in measured.items() if ratio == 0.75 and won)
    return bool(changed) and all(changed) and won75 >= 2 and n[0.5] >= 2


def _said(won: bool | None) -> str:
    return "same nets" if won is None else "won" if won else "lost"


def decision_summary(cells: dict, rescored: dict) -> list[str]:
    """Per option: where it was measured, where it beat the paper's crl of the same seed, and the verdict."""
    lines = ["", "## Which option becomes a default (issue 11 item 4)", "",
             "An option wins on a seed when it beats the paper's crl of the same noise and seed on corrected Dice "
             "corrupted AND clean (256 px, bilinear logit + clean-up) AND test Dice (64 px; not for the border fit "
             "alone, which leaves the nets and so test Dice unchanged); it becomes a default "
             "only if it wins on every seed measured, with at least 2 seeds at 75 % and 2 at 50 %; an option that "
             "changes the training only where most masks look wrong (the keep ratio estimated while training) when "
             "it wins on every seed where it changed anything and is the paper's crl bit for bit elsewhere (\"same "
             "nets\"). Δ: the mean difference to the paper's crl over the seeds measured (for the keep estimate "
             "with the border fit: to crl with the border fit).", "",
             "| option | won / measured (noise: seeds) | Δ corrupted | Δ clean | Δ test | default? |",
             "|---|---|---|---|---|---|"]
    for option, measured in decisions(cells, rescored).items():
        if not measured:
            continue
        where = "; ".join(
            f"{int(r * 100)} %: " + ", ".join(f"s{s} {_said(measured[(r, s)][0])}"
                                             for (ratio, s) in measured if ratio == r)
            for r in OPTION_NOISE if any(ratio == r for ratio, _s in measured))
        deltas = [f"{np.mean([d[k] for _w, d in measured.values()]):+.4f}" for k in WIN_KEYS]
        wins = sum(bool(w) for w, _d in measured.values())
        verdict = ("**yes** (`--keep-auto`, 1 by default since 30 Nov 2026): won wherever it changed the training, "
                   "the paper's nets bit for bit elsewhere" if option.startswith("keep estimated while training")
                   and wins_where_it_changes(measured) else
                   "not a fixed default: keep_ratio follows the noise rate (at 50 % the paper's 0.5)"
                   if option.startswith("keep clean fraction") else
                   "advice after a first run (info, train's metrics, Review) or `--second-pass 3`; not a default "
                   "(the small set's clean cases lost on every seed)"
                   if option.startswith("keep from scores") else
                   "no: too few seeds" if wins == len(measured) and not qualifies(measured) else
                   "qualifies against the paper's crl, not against today's default (the clean cases' corrections "
                   "lose to crl with the border fit: table below); offered by the advice when most masks look wrong "
                   "(Second pass, `next-round --second-pass 2`)"
                   if option.startswith("second (every correction), labels fitted") and qualifies(measured) else
                   "qualifies; not the default (`--second-pass`): twice the training time"
                   if option.startswith("second") and qualifies(measured) else
                   "no" if not qualifies(measured) else "**yes**")  # "+bn": TrainConfig.average_bn, a setting too
        lines.append(f"| {option} | {wins} / {len(measured)} ({where}) | " + " | ".join(deltas) + f" | {verdict} |")
    return lines + against_default(cells) + target_summary(cells, rescored)


def against_default(cells: dict) -> list[str]:
    """The options measured with the border fit against TODAY's default (the paper's crl with the border fit, the
    "crl fit" variant), seed by seed: what adopting one on top of the default would change."""
    lines = ["", "### Against today's default (crl with the border fit)", "",
             "The options that also make their corrections with the border fit, against the paper's crl with the fit "
             "(the default since 30 Nov 2026) of the same noise and seed: corrected Dice corrupted / clean (256 px) "
             "/ test Dice (64 px), the difference; won = all three better.", "",
             "| option | noise | seed | Δ corrupted | Δ clean | Δ test | won |", "|---|---|---|---|---|---|---|"]
    rows = 0
    for option, (method, variant) in OPTIONS.items():
        if variant != "fit" or method == "crl":
            continue
        for r in OPTION_NOISE:
            base = _by_seed(cells, "crl", r)
            for s, c in sorted(_by_seed(cells, method, r).items()):
                if s not in base or "fit" not in base[s]["variants"] or variant not in c["variants"]:
                    continue
                got, ref = c["variants"][variant], base[s]["variants"]["fit"]
                delta = [got[k] - ref[k] for k in WIN_KEYS]
                same = all(d == 0 for d in delta)
                lines.append(f"| {option} | {int(r * 100)} % | {s} | " + " | ".join(f"{d:+.4f}" for d in delta)
                             + f" | {'same nets' if same else 'won' if all(d > 0 for d in delta) else 'lost'} |")
                rows += 1
    return lines if rows else []


def _clean_vanilla() -> dict:
    """seed -> test Dice of vanilla trained on the clean labels (table1.py quick), {} where not measured."""
    if not CLEAN_VANILLA.is_file():
        return {}
    got = json.loads(CLEAN_VANILLA.read_text()).get("cells", {})
    return {c["seed"]: c["test_dice"] for c in got.values() if c.get("method") == "vanilla" and c.get("noise") == 0}


def target_summary(cells: dict, rescored: dict) -> list[str]:
    """Issue 11's targets for the paper's crl and each option, as measured (mean over the seeds that have it)."""
    ref = _clean_vanilla()
    lines = ["", "### Targets (issue 11), per noise level: the paper's crl and the options, mean over seeds", "",
             "Corrected Dice at 256 px on the corrupted training cases against the target, on the clean cases "
             "beside the given (clean) mask's own Dice, and the test Dice gap to vanilla trained on clean labels "
             "(table1-quick.json, same seeds; target within 0.010 at 75 %).", "",
             "| noise | variant | seeds | corrected Dice corrupted (target) | corrected Dice clean (given mask) | "
             "test Dice 64 | gap to clean vanilla |", "|---|---|---|---|---|---|---|"]
    rows = 0
    for r in OPTION_NOISE:
        given = [c["given_nearest"]["dice_clean"] for c in cells.values()
                 if c["profile"] == "full" and c["method"] == "crl" and c["noise"] == r]
        given_txt = f"{np.mean(given):.4f}" if given else "—"
        for name, (method, variant) in {"paper": ("crl", "paper"), **OPTIONS}.items():
            got = {s: m for s in OPTION_SEEDS + [2]
                   if (m := _measured(cells, rescored, method, variant, r, s)) is not None}
            if not got:
                continue
            gaps = [ref[s] - m["test_dice"] for s, m in got.items() if s in ref]
            gap = f"{np.mean(gaps):+.4f}" if gaps else "—"
            lines.append(f"| {int(r * 100)} % | {name} | {', '.join(map(str, got))} | "
                         f"{np.mean([m['dice_corrupted'] for m in got.values()]):.4f} (≥ {TARGET_256[r]}) | "
                         f"{np.mean([m['dice_clean'] for m in got.values()]):.4f} ({given_txt}) | "
                         f"{np.mean([m['test_dice'] for m in got.values()]):.4f} | {gap} |")
            rows += 1
    return lines if rows else []


def _by_seed(cells: dict, method: str, ratio: float) -> dict:
    return {c["seed"]: c for c in cells.values() if c["profile"] == "full" and c["method"] == method
            and c["noise"] == ratio and c.get("variants")}


def _newer_cells(disk: dict, mine: dict) -> dict:
    """Per cell, the newer of the two versions: one with the options' variants over one without, then the later
    finish (another invocation may have re-run a cell this one still holds in its first version)."""
    def rank(c: dict) -> tuple:
        return bool(c.get("variants")), c.get("finished", ""), len(c.get("variants") or {})
    return {k: (mine[k] if k in mine and (k not in disk or rank(mine[k]) >= rank(disk[k])) else disk[k])
            for k in {**disk, **mine}}


def save(results: dict, out_json: Path, seeds: list[int], small_seeds: list[int]) -> dict:
    """Merge ``results`` into the JSON on disk under a lock (two invocations may share the grid, each
    claiming its cells as table1.py does) and rewrite JSON and markdown; returns the merged results."""
    with open(out_json.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
        merged = {**disk, **results, "cells": _newer_cells(disk["cells"], results["cells"]),
                  "rescored": {**disk.get("rescored", {}), **results.get("rescored", {})},
                  "small_default": {**disk.get("small_default", {}), **results.get("small_default", {})}}
        merged["commands"] = list(dict.fromkeys(disk.get("commands", []) + results.get("commands", [])))
        merged["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(out_json, merged)
        atomic_write_text(out_json.with_suffix(".md"), summarise(merged, seeds, small_seeds))
    return merged


def _arrays(ds64, ds256) -> dict:
    assert ds64.ids == ds256.ids, "the 64 px and 256 px data sets list different cases"
    return {"ids": ds64.ids, "images": ds64.images(), "clean": ds64.masks(), "truth": ds256.masks()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--small-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--small-only", action="store_true", help="run only the small-set profile's cells")
    ap.add_argument("--small-keep", action="store_true",
                    help="the small-set profile also trains crl+keep-est at 75 %% (the keep_ratio its crl cell's "
                         "scores suggest)")
    ap.add_argument("--small-auto", action="store_true",
                    help="the small-set profile also trains crl+keep-auto at 75 %% (the keep ratio estimated while "
                         "training)")
    ap.add_argument("--small-second", nargs="*", default=None, choices=SMALL_SECONDS, metavar="METHOD",
                    help="the small-set profile also trains these second passes at 75 %% (crl+second-all-fit when "
                         "none is named: a second pass on every correction of its crl cell, made with the border "
                         "fit; crl+second-all-fit-warm: the same labels, warm-started from its nets)")
    ap.add_argument("--small-decide", action="store_true",
                    help="what the product's default (second_pass 4) decides on the small set at 75 %% (the noise "
                    "share of crl+keep-auto, its folder trained again when gone) and the gap of the cell that stands "
                    "for it")
    ap.add_argument("--options", action="store_true",
                    help="run the cells of our options (issue 11 item 4): crl with its variants, crl+balance")
    ap.add_argument("--noise", type=float, nargs="+", default=None, choices=OPTION_NOISE,
                    help="with --options: only the cells at these noise levels")
    ap.add_argument("--methods", nargs="+", default=None, choices=OPTION_METHODS + EXTRA_METHODS,
                    help="with --options: only the cells of these methods (crl+second, crl+second-all: the second "
                    "pass, from the finished crl cell of the same noise and seed; only when named)")
    ap.add_argument("--option-seeds", type=int, nargs="+", default=None,
                    help="with --options: only the cells of these seeds")
    ap.add_argument("--add-variants", action="store_true",
                    help="measure the VARIANTS a finished options cell lacks (a variant added since), from its run "
                    "folder's kept epochs")
    ap.add_argument("--variant-names", nargs="+", default=None, choices=list(VARIANTS),
                    help="with --add-variants: only these variants")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-cells", type=int, default=None)
    ap.add_argument("--data", type=Path, default=table1.DATA)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--summary-only", action="store_true", help="rewrite the markdown from the JSON")
    ap.add_argument("--merge-from", type=Path, nargs="+", default=None, metavar="JSON",
                    help="fold the cells of other native_res.json files (another checkout's) into this one, the "
                    "newer of each cell kept, as two invocations sharing one file merge; then rewrite the markdown")
    ap.add_argument("--reevaluate", action="store_true",
                    help="measure finished cells again from their checkpoints (after a change to the measures)")
    ap.add_argument("--rescore", type=Path, nargs="+", default=None, metavar="RUN",
                    help="re-score finished table1.py quick crl runs (their checkpoints) with and without tta")
    ap.add_argument("--profile", choices=["quick", "smoke"], default="quick",
                    help="smoke: table1's 2-epoch plumbing check; give it its own --results folder")
    args = ap.parse_args(argv)
    global RUNS
    if args.profile != "quick":
        PROFILE.update(table1.PROFILES[args.profile])
        RUNS = RUNS.with_name(f"native_res-{args.profile}")
    out_json = args.results / "native_res.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {"cells": {}}
    if args.summary_only:
        atomic_write_text(out_json.with_suffix(".md"), summarise(results, args.seeds, args.small_seeds))
        return 0
    if args.merge_from:
        for other in args.merge_from:
            got = json.loads(other.read_text())
            results = save({**results, "cells": got.get("cells", {}), "rescored": got.get("rescored", {}),
                            "commands": got.get("commands", [])}, out_json, args.seeds, args.small_seeds)
        return 0
    if not args.data.is_dir():
        print(f"SKIPPED: the Shenzhen data set is not at {args.data.resolve()}; nothing was measured.")
        return 0
    torch.set_num_threads(args.threads)
    command = "python benchmarks/native_res.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results["commands"] = list(dict.fromkeys(results.get("commands", []) + [command.strip()]))
    results.update(settings=PROFILE, machine=f"{platform.processor() or platform.machine()}, {args.threads} "
                   f"threads, torch {torch.__version__}, device {cascade.pick_device()}")
    if "timing" not in results:
        results["timing"], results["timing_threads"] = time_native(), args.threads
    args.results.mkdir(parents=True, exist_ok=True)
    results = save(results, out_json, args.seeds, args.small_seeds)
    ds64, ds256 = load_dataset(args.data, size=PROFILE["size"]), load_dataset(args.data, size=256)
    train = _arrays(ds64.subset("train"), ds256.subset("train"))
    test = _arrays(ds64.subset("test"), ds256.subset("test"))
    print(f"data: {len(train['ids'])} train / {len(test['ids'])} test", flush=True)
    for run_dir in args.rescore or []:
        print(f"[{datetime.now(timezone.utc):%H:%M:%S}] rescore {run_dir}", flush=True)
        got = rescore(run_dir, train, test)
        results["rescored"] = {**results.get("rescored", {}), f"table1 quick {run_dir.name}": got}
        results = save(results, out_json, args.seeds, args.small_seeds)
    if args.rescore:
        return 0
    if args.small_decide:
        for seed in args.small_seeds:
            print(f"[{datetime.now(timezone.utc):%H:%M:%S}] small-set default, seed {seed}", flush=True)
            results["small_default"] = {**results.get("small_default", {}), str(seed): small_default(seed, train, test)}
            results = save(results, out_json, args.seeds, args.small_seeds)
        return 0
    if args.add_variants:
        for key in [k for k, c in results["cells"].items() if c["profile"] == "full" and c.get("variants")]:
            added = add_variants(key, results["cells"][key], train, test, args.variant_names)
            if added:
                results["cells"][key]["variants"].update(added)
                results = save(results, out_json, args.seeds, args.small_seeds)
        return 0
    new = 0
    if args.options:
        cells = option_plan(args.noise, args.methods, args.option_seeds)
    else:
        small_second = None if args.small_second is None else (args.small_second or [SMALL_SECONDS[0]])
        cells = plan([] if args.small_only else args.seeds, args.small_seeds, args.small_keep, small_second,
                     args.small_auto)
    for cell in cells:
        key = cell_key(*cell)
        on_disk = json.loads(out_json.read_text())["cells"]  # another invocation may have finished it
        finished = done(cell, results["cells"].get(key), args.options) or done(cell, on_disk.get(key), args.options)
        if finished and not args.reevaluate:
            continue
        if args.reevaluate and key not in results["cells"]:
            continue
        if args.max_cells is not None and new >= args.max_cells:
            break
        claim = table1._claim(cell_dir(key))  # an exclusive lock on the cell's run folder, or None
        if claim is None:
            print(f"{key}: another invocation is running it, skipped", flush=True)
            continue
        print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {key}", flush=True)
        with claim:
            try:
                c = run_cell(key, *cell, train, test)
            except FirstPassMissing as exc:
                print(f"{key}: skipped, its first pass is not finished ({exc})", flush=True)
                continue
        if key in results["cells"] and c["sec_per_epoch"] is None:  # a re-measure keeps the training time
            c["sec_per_epoch"] = results["cells"][key].get("sec_per_epoch")
        results["cells"][key] = c
        results = save(results, out_json, args.seeds, args.small_seeds)
        w = c["ways"]
        print(f"  -> Dice corrupted nearest {w[NEAREST].get('dice_corrupted', 0):.4f}, smooth + clean-up "
              f"{w[SMOOTH].get('dice_corrupted', 0):.4f}; test {c['test_dice']:.4f}", flush=True)
        new += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
