"""``crl-napari``: the command line over the same functions the plugin uses (train on a server, review
anywhere). User mistakes end with one line on stderr and exit status 2, never a traceback.

Over 400 lines, for now: the parser and one short ``cmd_*`` per subcommand, each only parsing and printing
around one engine call. Its options are being added by several developers in this round, so it is not split
under them; the seam when it is: the demo (``cmd_demo`` and its flagging report) in a module of its own."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import fields
from pathlib import Path

from . import __version__, distributed
from .cache import CacheProgress
from .data import MAX_PIXELS, DataError
from .eta import Eta, format_seconds
from .events import CheckpointSaved, EpochEnd, Finished, Started, Step
from .noise import FOOTPRINTS
from .runs import CONFIG, RunError, RunFolder, open_for_resume
from .settings import JOINT_MODES, SETTING_HELP, STRATEGIES, TrainConfig, TrainingError
from .user_errors import USER_ERRORS


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # every default is None ("not given"), so that `--resume` can tell what the user asked for explicitly
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: the paper's where it gives one, else ours: docs/paper.md)")
    for f in fields(TrainConfig):
        if f.name in ("amp", "augment", "flip", "sync_batchnorm"):
            continue
        typ = {"k": int, "threads": int}.get(f.name, type(getattr(d, f.name)))
        default = {"k": "epochs // 2", "threads": "automatic"}.get(f.name, getattr(d, f.name))
        g.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=None, dest=f.name,
                       choices={"strategy": STRATEGIES, "joint": JOINT_MODES}.get(f.name),
                       help=f"{SETTING_HELP[f.name]}; default {default}".replace("%", "%%"))  # argparse
    g.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on cuda")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no random rotation or flip")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no random horizontal flip")
    g.add_argument("--sync-batchnorm", dest="sync_batchnorm", action="store_true", default=None,
                   help=SETTING_HELP["sync_batchnorm"])


def _given(args: argparse.Namespace) -> dict:
    """The training options given on the command line (the rest keep TrainConfig's defaults)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**_given(args))


_DATA_OPTIONS = {"size": 256, "simulate_noise": 0.0, "noise_seed": 0, "noise_footprint": "cross"}


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
    eta, announced = Eta(), False
    for ev in events:
        eta.update(ev)
        if isinstance(ev, Step) and not announced and eta.done >= ETA_STEPS and eta.total() is not None:
            announced = True
            _announce_eta(eta, tqdm.write)
        if isinstance(ev, CacheProgress):  # the data folder decoded into the run's cache: its own line
            if not quiet and (ev.left == 0 or ev.done % 5120 < 256):
                print(ev.text(), file=sys.stderr)
        elif isinstance(ev, Started):
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


ETA_STEPS = 5  # steps timed before the whole run's time is estimated


def _announce_eta(eta: Eta, write) -> None:
    """Say once, after a few measured steps, how long the whole run will take; warn when it is hours."""
    write(f"measured {eta.text()}: the whole run takes about {format_seconds(eta.total())}", file=sys.stderr)
    warning = eta.long_run_warning()
    if warning:
        write(warning, file=sys.stderr)


def _pixels(megapixels: float) -> int:
    if not megapixels > 0:
        raise DataError(f"--max-megapixels must be above 0, got {megapixels}")
    return int(megapixels * 1e6)


def _add_pixel_budget(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-megapixels, read back with _pixels: the decoding budget of data.MAX_PIXELS as an option."""
    parser.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6, metavar="MP",
                        help=f"{what} (default %(default)g)")


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import train_run

    config = _resume_settings(args) if args.resume else _config(args)
    data = {k: default if getattr(args, k) is None else getattr(args, k) for k, default in _DATA_OPTIONS.items()}
    events = train_run(args.data, args.out, config, **data, resume=args.resume, skip_bad=args.skip_bad,
                       max_pixels=_pixels(args.max_megapixels))
    metrics = _consume(_with_data_report(events, args.out), args.quiet)
    print(json.dumps(metrics, indent=2))
    print(f"run folder: {args.out}")
    return 0


def cmd_next_round(args: argparse.Namespace) -> int:
    from .pipeline import next_round
    from .rounds import RoundStarted

    def announce(events):
        for ev in events:
            if isinstance(ev, RoundStarted):
                how = "from scratch" if ev.from_scratch else f"warm start, {ev.warm_epochs} epoch(s)"
                print(f"{'resuming' if ev.resumed else 'starting'} review round {ev.round} ({how}): {ev.trusted} "
                      f"mask(s) trusted, {ev.excluded} excluded image(s) left out", file=sys.stderr)
            yield ev

    events = next_round(args.run, warm_epochs=args.warm_epochs, from_scratch=args.from_scratch)
    metrics = _consume(announce(events), args.quiet)
    print(json.dumps(metrics, indent=2))
    if "round" in metrics:
        print(f"round {metrics['round']} scored: the review queue of {args.run} is re-ranked")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluation_data
    from .pipeline import evaluate_run

    data, against = evaluation_data(args.run, args.data, args.split, args.clean_masks, args.masks_are_clean)
    res = evaluate_run(args.run, data, args.split, masks=against)
    print(f"Dice on {res['split']} ({res['n']} images) against {against}: {res['dice_mean']:.4f} ± "
          f"{res['dice_std']:.4f}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .pipeline import score_run

    metrics = score_run(args.run)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    report = export(args.run, args.to, unreviewed=args.unreviewed, threshold=args.threshold, data_root=args.data_root,
                    cleanup=not args.no_cleanup)
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on the built-in sample, score, export and draw the summary figure."""
    from .evaluation import evaluation_data
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
    print(f"demo: sample data {data}: synthetic phantoms, not radiographs (noisy masks in masks/, the truth in "
          f"clean_masks/); a CPU-sized run: {args.size} px, width 16, {args.epochs} epochs (the paper: 256 px, "
          "width 64, 100 epochs)", file=sys.stderr)
    run_dir = out / "run"
    _consume(train_run(data, run_dir, config, size=args.size), args.quiet)
    metrics, corrupted = _demo_flagging(run_dir, data)
    test, against = evaluation_data(run_dir, data, "test", clean_masks=data / "clean_masks")
    ev = evaluate_run(run_dir, test, "test", masks=against)
    fig = summary_figure(run_dir, corrupted=corrupted, threshold=args.threshold)
    rep = export(run_dir, out / "cleaned", unreviewed="accept_above", threshold=args.threshold)
    print(f"\ntest Dice: {ev['dice_mean']:.4f} on the {ev['n']} held-out phantoms, against {against}")
    if metrics:
        print(f"flagging AUROC: {metrics['flag_auroc']:.3f} (suspicion ranking the {metrics['n_corrupted']} "
              f"corrupted training masks above the {metrics['n_clean']} others)")
        print(f"corrected masks vs truth, Dice: {metrics['corrected_dice_corrupted']:.3f} on the corrupted ones "
              f"(their given masks: {metrics['noisy_dice_corrupted']:.3f}), "
              f"{metrics['corrected_dice_clean']:.3f} on the others "
              f"(their given masks: {metrics['given_dice_clean']:.3f})")
    print(f"run folder:     {run_dir}\nsummary figure: {fig}")
    print(f"cleaned export: {rep.dest}: with no review, corrections accepted where suspicion >= {args.threshold}, "
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

    from .data import read_mask, resize_mask
    from .inference import dice_score
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
    return metrics, corrupted


def cmd_info(args: argparse.Namespace) -> int:
    from .pipeline import summary
    from .rounds import info

    print(json.dumps({**summary(args.run), **info(args.run)}, indent=2))
    return 0


def cmd_import_chexmask(args: argparse.Namespace) -> int:
    from .chexmask import write_mask_folder

    n = write_mask_folder(args.table, args.masks, _pixels(args.max_megapixels))
    print(f"wrote {n} masks to {args.masks}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: a misspelt option (--epoch) is refused, never taken as another (--epochs)
    p = argparse.ArgumentParser(prog="crl-napari", description=__doc__, allow_abbrev=False)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False, help="train on a folder of image/mask pairs into a run folder")
    t.add_argument("data", type=Path, help="folder with images/ and masks/ (optional split.csv)")
    t.add_argument("--out", type=Path, required=True, help="the run folder to create")
    t.add_argument("--size", type=int, default=None, help="training size in pixels (square); default 256")
    t.add_argument("--simulate-noise", type=float, default=None, metavar="RATIO",
                   help="corrupt this ratio of training masks (the paper's protocol) to measure flagging")
    t.add_argument("--noise-seed", type=int, default=None, help="seed of --simulate-noise; default 0")
    t.add_argument("--noise-footprint", choices=sorted(FOOTPRINTS), default=None,
                   help="structuring element of --simulate-noise's erosions and dilations (the paper names none): "
                   "a 3x3 cross, or a 3x3 square that damages more per iteration; default cross")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--skip-bad", action="store_true", help="skip unreadable pairs (listed) instead of stopping")
    _add_pixel_budget(t, "refuse (or with --skip-bad skip) an image or mask whose header claims more pixels, "
                      "before decoding it")
    t.add_argument("--quiet", action="store_true")
    _add_train_options(t)
    t.set_defaults(func=cmd_train)

    n = sub.add_parser("next-round", allow_abbrev=False, help="train a reviewed run's next round with the review's "
                       "decisions, then rescore it (a stopped round resumes)",
                       description="Accepted corrections, edits and kept masks become trusted labels (always "
                       "selected, never corrected); pending and flagged masks train as before; excluded images are "
                       "left out. Round n's files stay in RUN/rounds/<n>/; every decision carries over.")
    n.add_argument("run", type=Path)
    how = n.add_mutually_exclusive_group()
    how.add_argument("--warm-epochs", type=int, default=None, metavar="N",
                     help="warm-start from the current nets for N epochs (default: a tenth of the first round's)")
    how.add_argument("--from-scratch", action="store_true", help="train anew with the first round's settings")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=cmd_next_round)

    e = sub.add_parser("evaluate", allow_abbrev=False, help="Dice of a trained run against clean masks",
                       description="Dice of the run's prediction against clean masks: by default the data folder's "
                       "masks of a held-out split (--split, the cases the run did not train on); where the run "
                       "trained on the cases evaluated, their masks are the imperfect ones it was given, and "
                       "evaluate refuses unless told where clean masks are (--clean-masks) or that these are "
                       "clean (--masks-are-clean).")
    e.add_argument("run", type=Path)
    e.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    e.add_argument("--split", default="test", help="the cases of this split in split.csv (default test); all "
                   "cases when the data has none")
    clean = e.add_mutually_exclusive_group()
    clean.add_argument("--clean-masks", type=Path, default=None, metavar="DIR",
                       help="compare against the masks in DIR (<id>.png or <id>_mask.png, any size)")
    clean.add_argument("--masks-are-clean", action="store_true",
                       help="the data folder's masks/ are clean, also for the cases the run trained on")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("score", allow_abbrev=False, help="(re)compute scores and corrected masks of a trained run")
    s.add_argument("run", type=Path)
    s.set_defaults(func=cmd_score)

    x = sub.add_parser("export", allow_abbrev=False, help="write the cleaned data set")
    x.add_argument("run", type=Path)
    x.add_argument("--to", type=Path, required=True, help="a new folder outside the data and the run folder")
    x.add_argument("--unreviewed", choices=("keep", "accept_above"), default="keep",
                   help="masks nobody reviewed: keep the original, or accept the correction above --threshold")
    x.add_argument("--threshold", type=float, default=None)
    x.add_argument("--data-root", type=Path, default=None, help="where the original data is now, if it moved")
    x.add_argument("--no-cleanup", action="store_true",
                   help="export corrections as resampled, without removing islands below 1 %% of the mask or "
                   "filling holes")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", allow_abbrev=False, help="describe a run folder")
    i.add_argument("run", type=Path)
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", allow_abbrev=False,
                       help="train, score and export on the built-in sample (a few CPU minutes)")
    d.add_argument("--out", type=Path, default=Path("demo-run"))
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--size", type=int, default=128)
    d.add_argument("--threshold", type=float, default=0.1, help="accept corrections at or above this suspicion")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("import-chexmask", allow_abbrev=False,
                       help="turn a CheXmask-style table (run-length encoded lungs) into a masks/ folder")
    c.add_argument("table", type=Path, help="CSV: an image id column, 'Left Lung', 'Right Lung', Height, Width")
    c.add_argument("--masks", type=Path, required=True, help="the new masks/ folder (beside the data's images/)")
    _add_pixel_budget(c, "refuse a row claiming more pixels")
    c.set_defaults(func=cmd_import_chexmask)
    return p


DISTRIBUTED_COMMANDS = ("train", "score")  # what runs under torchrun (docs/scaling.md)


@contextmanager
def _under_torchrun(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun: join the process group for the command; ranks other than 0 print nothing but their
    errors (rank 0 reports for all). Without torchrun: nothing."""
    if not distributed.launched():
        yield
        return
    if args.command not in DISTRIBUTED_COMMANDS and distributed.launched_world_size() > 1:
        raise TrainingError(f"only {' and '.join(DISTRIBUTED_COMMANDS)} run under torchrun; run {args.command} "
                            "as one process")
    distributed.init_from_env()
    try:
        if distributed.is_writer():
            yield
        else:
            args.quiet = True
            with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
                yield
    finally:
        distributed.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _under_torchrun(args):
            return args.func(args)
    except USER_ERRORS as exc:
        rank = os.environ.get("RANK", "0") if distributed.launched() else "0"
        who = "" if rank == "0" else f" (rank {rank})"
        print(f"crl-napari {args.command}{who}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run continues with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
