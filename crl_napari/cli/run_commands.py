"""The commands on a run folder that are one engine call each: evaluate, score, export, info, and
import-chexmask beside them."""

from __future__ import annotations

import argparse
import json
import sys

from .options import _pixels


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluation_data
    from ..pipeline import evaluate_run

    data, against = evaluation_data(args.run, args.data, args.split, args.clean_masks, args.masks_are_clean)
    res = evaluate_run(args.run, data, args.split, masks=against)
    print(f"Dice on {res['split']} ({res['n']} images) against {against}: {res['dice_mean']:.4f} ± "
          f"{res['dice_std']:.4f}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..pipeline import score_run
    from .progress import ProgressLines

    lines = ProgressLines()
    metrics = score_run(args.run, lambda ev: lines.due(ev) and print(ev.text(), file=sys.stderr))
    print(json.dumps(metrics, indent=2))
    say_keep_advice(args.run)
    return 0


def say_keep_advice(run_dir) -> None:
    """After scoring: when many given masks look wrong, the second pass the default would train and the keep_ratio
    to train again with (scoring.advice_sentence), on stderr beside the metrics' suggested_keep_ratio."""
    from ..rounds import keep_advice
    from ..runs import RunFolder
    from ..scoring import advice_sentence
    from ..second_pass import advised

    run = RunFolder(run_dir)
    if not run.has_scores:
        return
    (share, keep), second = keep_advice(run), advised(run_dir)
    sentence = advice_sentence(share, run.keep_ratio, keep, second)
    if sentence:
        how = [f"crl-napari next-round {run_dir} --second-pass {second}"] if second else []
        how += [f"crl-napari train ... --keep-ratio {keep:g}"] if keep is not None else []
        print(f"advice: {sentence} ({', or '.join(how)})", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export

    report = export(args.run, args.to, unreviewed=args.unreviewed, threshold=args.threshold, data_root=args.data_root,
                    cleanup=not args.no_cleanup, workers=args.workers,
                    progress=lambda p: print(p.text(), end="\r", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print(report.summary())
    if args.unreviewed is None:  # say where the policy came from, and how to have the other one
        from ..review_file import read_unreviewed

        got = "accept_above" if report.threshold is not None else "keep"
        why = ("the review's choice" if read_unreviewed(args.run) else
               "the default where the nets can tell right masks from wrong ones" if got == "accept_above" else
               "the default where the nets cannot yet tell right masks from wrong ones")
        other = "keep" if got == "accept_above" else "accept_above"
        print(f"unreviewed images: {got} ({why}); --unreviewed {other} for the other", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..pipeline import summary
    from ..rounds import info

    print(json.dumps({**summary(args.run), **info(args.run)}, indent=2))
    return 0


def cmd_import_chexmask(args: argparse.Namespace) -> int:
    from ..chexmask import write_mask_folder

    n = write_mask_folder(args.table, args.masks, _pixels(args.max_megapixels))
    print(f"wrote {n} masks to {args.masks}")
    return 0
