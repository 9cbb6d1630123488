"""`crl-napari demo`: train, score, evaluate and export on the built-in sample set, then report how well the
run flagged and fixed the masks it knows to be corrupted."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..runs import RunError, RunFolder
from ..settings import TrainConfig
from .training import _announce_second_pass, _consume


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on the built-in sample, score, export and draw the summary figure."""
    from ..evaluation import evaluation_data
    from ..export import export
    from ..phantoms import sample_root
    from ..pipeline import evaluate_run
    from ..report import summary_figure
    from ..second_pass import train_passes

    out = Path(args.out)
    marker = out / ".crl-napari-demo"
    if out.exists():
        if not marker.is_file():
            raise RunError(f"{out}: exists and was not made by `crl-napari demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.write_text("made by crl-napari demo; replaced by the next demo run\n")
    data = sample_root()
    config = TrainConfig(strategy="crl", epochs=args.epochs, batch_size=8, lr=0.05, lr_decay=0.95, width=16, depth=4,
                         seed=0)
    print(f"demo: sample data {data}: synthetic phantoms, not radiographs (noisy masks in masks/, the truth in "
          f"clean_masks/); a CPU-sized run: {args.size} px, width 16, {args.epochs} epochs (the paper: 256 px, "
          "width 64, 100 epochs)", file=sys.stderr)
    run_dir = out / "run"
    _consume(_announce_second_pass(train_passes(data, run_dir, config, size=args.size)), args.quiet)  # as `train`
    metrics, corrupted = _demo_flagging(run_dir, data)
    test, against = evaluation_data(run_dir, data, "test", clean_masks=data / "clean_masks")
    ev = evaluate_run(run_dir, test, "test", masks=against)
    rep = export(run_dir, out / "cleaned", unreviewed="accept_above", threshold=args.threshold)
    fig = summary_figure(run_dir, corrupted=corrupted, threshold=rep.threshold)
    print(f"\ntest Dice: {ev['dice_mean']:.4f} on the {ev['n']} held-out phantoms, against {against}")
    if metrics:
        print(f"flagging AUROC: {metrics['flag_auroc']:.3f} (suspicion ranking the {metrics['n_corrupted']} "
              f"corrupted training masks above the {metrics['n_clean']} others)")
        print(f"corrected masks vs truth, Dice: {metrics['corrected_dice_corrupted']:.3f} on the corrupted ones "
              f"(their given masks: {metrics['noisy_dice_corrupted']:.3f}), "
              f"{metrics['corrected_dice_clean']:.3f} on the others "
              f"(their given masks: {metrics['given_dice_clean']:.3f}), at the training size; at the original "
              f"size, as the export writes them: {metrics['original_dice_corrupted']:.3f} and "
              f"{metrics['original_dice_clean']:.3f}")
    print(f"run folder:     {run_dir}\nsummary figure: {fig}")
    print(f"cleaned export: {rep.dest}: with no review, corrections accepted where suspicion >= {rep.threshold:.3f}, "
          f"original masks elsewhere: {rep.counts}" + _accepted_breakdown(rep.dest, corrupted))
    print("a real data set is reviewed in napari before export (README: Using the plugin)")
    return 0


def _accepted_breakdown(dest: Path, corrupted: dict | None) -> str:
    """Of the corrections the demo's export accepted unreviewed: how many replaced a corrupted mask."""
    import csv

    if corrupted is None:
        return ""
    with open(dest / "manifest.csv", newline="") as fh:
        accepted = [r["id"] for r in csv.DictReader(fh) if r["mask_source"] == "corrected_by_policy"]
    bad = sum(bool(corrupted.get(i)) for i in accepted)
    return f"; of the {len(accepted)} accepted, {bad} replaced a corrupted mask and {len(accepted) - bad} a correct one"


def _demo_flagging(run_dir: Path, data: Path) -> tuple[dict, dict | None]:
    """On the sample set the truth is known (clean_masks/, noise.csv): how well did the run flag and fix?"""
    import csv

    import numpy as np

    from ..data import read_mask, resize_mask
    from ..inference import dice_score
    from ..native_correction import corrected_mask
    from ..scoring import auroc

    noise_csv = data / "noise.csv"
    if not noise_csv.is_file():
        return {}, None
    corrupted = {r["id"]: r["corrupted"] in ("1", "True", "true") for r in csv.DictReader(open(noise_csv))}
    run = RunFolder(run_dir)
    rows = run.scores()
    ids = [r["id"] for r in rows if r["id"] in corrupted]
    flags = np.array([corrupted[i] for i in ids])
    size = run.config["data"]["size"]

    def dice(a, b):  # the engine's Dice: two empty masks are a perfect match (1.0)
        return float(dice_score(np.asarray(a)[None], np.asarray(b)[None])[0])

    truth = {i: resize_mask(read_mask(data / "clean_masks" / f"{i}.png"), size) > 0 for i in ids}
    bad = [i for i, f in zip(ids, flags, strict=True) if f]
    good = [i for i, f in zip(ids, flags, strict=True) if not f]
    metrics = {
        "n_corrupted": len(bad), "n_clean": len(good),
        "corrected_dice_clean": float(np.mean([dice(run.corrected(i), truth[i]) for i in good])) if good else 1.0,
        "given_dice_clean": float(np.mean([dice(run.given(i), truth[i]) for i in good])) if good else 1.0,
        "flag_auroc": auroc(np.array([r["suspicion"] for r in rows if r["id"] in corrupted]), flags),
        "corrected_dice_corrupted": float(np.mean([dice(run.corrected(i), truth[i]) for i in bad])) if bad else 1.0,
        "noisy_dice_corrupted": float(np.mean([dice(run.given(i), truth[i]) for i in bad])) if bad else 1.0,
    }
    cases = {r.id: r for r in run.case_rows()}

    def at_original_size(i: str) -> float:  # the correction the export writes, against the truth at that size
        drawn = read_mask(cases[i].mask_path)
        return dice(corrected_mask(run, i, drawn.shape, drawn), read_mask(data / "clean_masks" / f"{i}.png"))

    for name, which in (("corrupted", bad), ("clean", good)):
        metrics[f"original_dice_{name}"] = float(np.mean([at_original_size(i) for i in which])) if which else 1.0
    return metrics, corrupted
