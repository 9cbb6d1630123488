"""``crl-napari``: the command line over the same functions the plugin uses (train on a server, review
anywhere). User mistakes end with one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .atomic import DiskFullError
from .cascade import (
    JOINT_MODES,
    SETTING_HELP,
    STRATEGIES,
    CheckpointSaved,
    EpochEnd,
    Finished,
    Started,
    Step,
    TrainConfig,
    TrainingError,
)
from .data import DataError
from .ids import UnsafeIdError
from .runs import CONFIG, RunError, RunFolder, open_for_resume

# RunLocked (a second writer on a run) is a RunError; a full disk is the one OSError a user fixes
USER_ERRORS: tuple[type[Exception], ...] = (DataError, TrainingError, RunError, UnsafeIdError, DiskFullError,
                                            FileNotFoundError)


def _user_errors() -> tuple[type[Exception], ...]:
    errors = list(USER_ERRORS)
    for mod, name in (("export", "ExportError"), ("review", "ReviewError")):
        try:
            errors.append(getattr(__import__(f"crl_napari.{mod}", fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # every default is None ("not given"), so that `--resume` can tell what the user asked for explicitly
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: the paper's recipe)")
    for f in fields(TrainConfig):
        if f.name in ("amp", "augment", "flip"):
            continue
        typ = {"k": int}.get(f.name, type(getattr(d, f.name)))
        default = "epochs // 2" if f.name == "k" else getattr(d, f.name)
        g.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=None, dest=f.name,
                       choices={"strategy": STRATEGIES, "joint": JOINT_MODES}.get(f.name),
                       help=f"{SETTING_HELP[f.name]}; default {default}".replace("%", "%%"))  # argparse
    g.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on cuda")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no random rotation or flip")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no random horizontal flip")


def _given(args: argparse.Namespace) -> dict:
    """The training options given on the command line (the rest keep TrainConfig's defaults)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**_given(args))


_DATA_OPTIONS = {"size": 256, "simulate_noise": 0.0, "noise_seed": 0}


def _resume_settings(args: argparse.Namespace) -> TrainConfig | None:
    """With --resume the run keeps the settings in its config.json. Options given explicitly are checked
    against them (runs.open_for_resume), so that `--resume --lr 0.1` is refused with a message instead of
    silently ignored."""
    given = _given(args)
    data_given = {k: getattr(args, k) for k in _DATA_OPTIONS if getattr(args, k) is not None}
    if not RunFolder.is_run(args.out) or not (given or data_given):
        return None  # nothing asked, or nothing to resume (train_run says so)
    return open_for_resume(args.out, given, data_given).config


def _with_data_report(events, out: Path):
    """Print what loading skipped (--skip-bad) or warned about, from the run's config.json, once training
    starts; the list stays in config.json for provenance."""
    for ev in events:
        if isinstance(ev, Started):
            try:
                data = RunFolder(out).config["data"]
            except RunError:
                data = {}
            skipped, warnings = data.get("skipped") or [], data.get("warnings") or []
            if skipped:
                print(f"skipped {len(skipped)} file(s) that could not be used (listed in {Path(out) / CONFIG}):",
                      file=sys.stderr)
                for item in skipped[:50]:
                    text = f"{item.get('path')}: {item.get('reason')}" if isinstance(item, dict) else str(item)
                    print(f"  {text}", file=sys.stderr)
            for w in warnings[:50]:
                print(f"warning: {w}", file=sys.stderr)
            if len(skipped) > 50 or len(warnings) > 50:
                print(f"  ... (the full lists are in {Path(out) / CONFIG})", file=sys.stderr)
        yield ev


def _consume(events, quiet: bool = False) -> dict:
    """Drive a training event stream with a progress bar; return the final metrics."""
    from tqdm import tqdm

    bar = None
    metrics: dict = {}
    for ev in events:
        if isinstance(ev, Started):
            total = (ev.config.epochs - ev.start_epoch) * ev.steps_per_epoch
            print(f"training {ev.config.strategy} on {ev.n_train} images, device {ev.device}"
                  + (f", resuming at epoch {ev.start_epoch + 1}" if ev.start_epoch else ""), file=sys.stderr)
            bar = tqdm(total=total, unit="step", disable=quiet, dynamic_ncols=True)
        elif isinstance(ev, Step) and bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=ev.epoch + 1, loss=f"{ev.loss:.4f}")
        elif isinstance(ev, EpochEnd) and bar is not None:
            val = f", val Dice {ev.val_dice:.4f}" if ev.val_dice is not None else ""
            tqdm.write(f"epoch {ev.epoch + 1}/{ev.epochs} stage {ev.stage} loss {sum(ev.losses) / len(ev.losses):.4f}"
                       f" selected {ev.selected:.2f} ({ev.seconds:.1f}s){val}", file=sys.stderr)
        elif isinstance(ev, CheckpointSaved):
            pass
        elif isinstance(ev, Finished):
            if bar is not None:
                bar.close()
            if ev.stopped:
                print("stopped; continue with --resume", file=sys.stderr)
        elif hasattr(ev, "metrics"):
            metrics = ev.metrics
    return metrics


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import train_run

    config = _resume_settings(args) if args.resume else _config(args)
    data = {k: default if getattr(args, k) is None else getattr(args, k) for k, default in _DATA_OPTIONS.items()}
    events = train_run(args.data, args.out, config, **data, resume=args.resume, skip_bad=args.skip_bad)
    metrics = _consume(_with_data_report(events, args.out), args.quiet)
    print(json.dumps(metrics, indent=2))
    print(f"run folder: {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline import evaluate_run

    res = evaluate_run(args.run, args.data, args.split)
    print(f"Dice on {res['split']} ({res['n']} images, clean masks): {res['dice_mean']:.4f} ± {res['dice_std']:.4f}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .pipeline import score_run

    metrics = score_run(args.run)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    report = export(args.run, args.to, unreviewed=args.unreviewed, threshold=args.threshold, data_root=args.data_root)
    print(f"exported {report.n_images} images to {report.dest}: {report.counts}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on the built-in sample, score, export and draw the summary figure."""
    from .export import export
    from .phantoms import sample_root
    from .pipeline import evaluate_run, train_run
    from .report import summary_figure

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
    print(f"demo: sample data {data} (noisy masks in masks/, the truth in clean_masks/)", file=sys.stderr)
    run_dir = out / "run"
    _consume(train_run(data, run_dir, config, size=args.size), args.quiet)
    metrics, corrupted = _demo_flagging(run_dir, data)
    ev = evaluate_run(run_dir, data, "test")
    fig = summary_figure(run_dir, corrupted=corrupted)
    rep = export(run_dir, out / "cleaned", unreviewed="accept_above", threshold=args.threshold)
    print(f"\ntest Dice (clean masks): {ev['dice_mean']:.4f}")
    if metrics:
        print(f"flagging AUROC: {metrics['flag_auroc']:.3f}; corrected masks vs truth on the corrupted ones: Dice "
              f"{metrics['corrected_dice_corrupted']:.3f} "
              f"(the given noisy masks: {metrics['noisy_dice_corrupted']:.3f})")
    print(f"run folder:     {run_dir}\nsummary figure: {fig}\ncleaned export: {rep.dest} "
          f"(corrections accepted where suspicion >= {args.threshold}: {rep.counts})")
    return 0


def _demo_flagging(run_dir: Path, data: Path) -> tuple[dict, dict | None]:
    """On the sample set the truth is known (clean_masks/, noise.csv): how well did the run flag and fix?"""
    import csv

    import numpy as np

    from .data import read_mask, resize_mask
    from .runs import RunFolder
    from .scoring import auroc

    noise_csv = data / "noise.csv"
    if not noise_csv.is_file():
        return {}, None
    corrupted = {r["id"]: r["corrupted"] in ("1", "True", "true") for r in csv.DictReader(open(noise_csv))}
    run = RunFolder(run_dir)
    rows = run.scores()
    ids = [r["id"] for r in rows if r["id"] in corrupted]
    flags = np.array([corrupted[i] for i in ids])
    size = run.config["data"]["size"]

    def dice(a, b):
        return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)

    truth = {i: resize_mask(read_mask(data / "clean_masks" / f"{i}.png"), size) > 0 for i in ids}
    bad = [i for i, f in zip(ids, flags, strict=True) if f]
    metrics = {
        "flag_auroc": auroc(np.array([r["suspicion"] for r in rows if r["id"] in corrupted]), flags),
        "corrected_dice_corrupted": float(np.mean([dice(run.corrected(i), truth[i]) for i in bad])) if bad else 1.0,
        "noisy_dice_corrupted": float(np.mean([dice(run.given(i), truth[i]) for i in bad])) if bad else 1.0,
    }
    return metrics, corrupted


def cmd_info(args: argparse.Namespace) -> int:
    from .pipeline import summary

    print(json.dumps(summary(args.run), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crl-napari", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on a folder of image/mask pairs into a run folder")
    t.add_argument("data", type=Path, help="folder with images/ and masks/ (optional split.csv)")
    t.add_argument("--out", type=Path, required=True, help="the run folder to create")
    t.add_argument("--size", type=int, default=None, help="training size in pixels (square); default 256")
    t.add_argument("--simulate-noise", type=float, default=None, metavar="RATIO",
                   help="corrupt this ratio of training masks (the paper's protocol) to measure flagging")
    t.add_argument("--noise-seed", type=int, default=None)
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--skip-bad", action="store_true", help="skip unreadable pairs (listed) instead of stopping")
    t.add_argument("--quiet", action="store_true")
    _add_train_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="Dice of a trained run on clean masks")
    e.add_argument("run", type=Path)
    e.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    e.add_argument("--split", default="test")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("score", help="(re)compute scores and corrected masks of a trained run")
    s.add_argument("run", type=Path)
    s.set_defaults(func=cmd_score)

    x = sub.add_parser("export", help="write the cleaned data set")
    x.add_argument("run", type=Path)
    x.add_argument("--to", type=Path, required=True, help="a new folder outside the data and the run folder")
    x.add_argument("--unreviewed", choices=("keep", "accept_above"), default="keep",
                   help="masks nobody reviewed: keep the original, or accept the correction above --threshold")
    x.add_argument("--threshold", type=float, default=None)
    x.add_argument("--data-root", type=Path, default=None, help="where the original data is now, if it moved")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="describe a run folder")
    i.add_argument("run", type=Path)
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="train, score and export on the built-in sample (a few CPU minutes)")
    d.add_argument("--out", type=Path, default=Path("demo-run"))
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--size", type=int, default=128)
    d.add_argument("--threshold", type=float, default=0.1, help="accept corrections at or above this suspicion")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"crl-napari {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run continues with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
