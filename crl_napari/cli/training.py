"""`crl-napari train` and `next-round`: the resume check, the data report and the progress bar over the
engine's event stream."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cache import CacheProgress
from ..eta import Eta, format_seconds
from ..events import CheckpointSaved, EpochEnd, Finished, Started, Step
from ..runs import CONFIG, RunError, RunFolder, open_for_resume
from ..settings import TrainConfig
from .options import _DATA_OPTIONS, _config, _given, _pixels
from .progress import ProgressLines
from .run_commands import say_keep_advice


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
    eta, announced, lines = Eta(), False, ProgressLines()
    for ev in events:
        eta.update(ev)
        if isinstance(ev, Step) and not announced and eta.done >= ETA_STEPS and eta.total() is not None:
            announced = True
            _announce_eta(eta, tqdm.write)
        if isinstance(ev, CacheProgress):  # caching, writing the run folder, average_bn's pass, scoring
            if not quiet and lines.due(ev):
                (print if bar is None else tqdm.write)(ev.text(), file=sys.stderr)
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
            keep = f", keep ratio {ev.keep:g} from now on (most masks look wrong)" if ev.keep is not None else ""
            tqdm.write(f"epoch {ev.epoch + 1}/{ev.epochs} stage {ev.stage} loss {sum(ev.losses) / len(ev.losses):.4f}"
                       f" selected {ev.selected:.2f} ({ev.seconds:.1f}s){val}{keep}", file=sys.stderr)
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


def _announce_second_pass(events):
    """Say on stderr when a second pass starts (what it trains on) or why there is none."""
    from ..rounds import RoundStarted
    from ..second_pass import NoSecondPass, labels_text

    for ev in events:
        if isinstance(ev, RoundStarted) and ev.second_pass:
            print(f"{'resuming' if ev.resumed else 'starting'} the second pass (round {ev.round}, fresh nets): "
                  f"trained {labels_text(ev)} (rounds/1/ keeps the first pass)", file=sys.stderr)
        elif isinstance(ev, NoSecondPass):
            print(ev.reason, file=sys.stderr)
        yield ev


def cmd_train(args: argparse.Namespace) -> int:
    from ..second_pass import train_passes

    config = _resume_settings(args) if args.resume else _config(args)
    data = {k: default if getattr(args, k) is None else getattr(args, k) for k, default in _DATA_OPTIONS.items()}
    events = train_passes(args.data, args.out, config, **data, resume=args.resume, skip_bad=args.skip_bad,
                          max_pixels=_pixels(args.max_megapixels))  # pipeline.train_run, then a second pass if asked
    metrics = _consume(_announce_second_pass(_with_data_report(events, args.out)), args.quiet)
    print(json.dumps(metrics, indent=2))
    print(f"run folder: {args.out}")
    say_keep_advice(args.out)  # when most masks look wrong: a second pass, a lower keep ratio
    return 0


def cmd_next_round(args: argparse.Namespace) -> int:
    from ..rounds import RoundStarted, next_round
    from ..second_pass import run_second_pass, started_and_stopped

    if args.second_pass is not None:  # the scores' advice taken on a trained run: its second pass, then rescored
        goes_on = started_and_stopped(args.run)  # this second pass, stopped: it resumes
        events = next_round(args.run) if goes_on else run_second_pass(args.run, mode=args.second_pass)
        metrics = _consume(_announce_second_pass(events), args.quiet)
        print(json.dumps(metrics, indent=2))
        if "round" in metrics:
            print(f"second pass scored (round {metrics['round']}): the review queue of {args.run} is re-ranked")
        return 0

    def announce(events):
        for ev in events:
            if isinstance(ev, RoundStarted):
                print(f"{'resuming' if ev.resumed else 'starting'} review round {ev.round} ({ev.text()})",
                      file=sys.stderr)
            yield ev

    events = next_round(args.run, warm_epochs=args.warm_epochs, from_scratch=args.from_scratch)
    metrics = _consume(announce(events), args.quiet)
    print(json.dumps(metrics, indent=2))
    if "round" in metrics:
        print(f"round {metrics['round']} scored: the review queue of {args.run} is re-ranked")
    return 0
