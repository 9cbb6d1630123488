"""The parser of `crl-napari`: every subcommand and its options (allow_abbrev=False everywhere: a misspelt
option is refused, never taken as another)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..noise import FOOTPRINTS
from ..scoring import DEFAULT_UNREVIEWED, UNREVIEWED
from .demo import cmd_demo
from .options import _add_pixel_budget, _add_train_options
from .run_commands import cmd_evaluate, cmd_export, cmd_import_chexmask, cmd_info, cmd_score
from .training import cmd_next_round, cmd_train


def _description() -> str:
    """The --help text: the first paragraph of the package's docstring."""
    from . import __doc__ as doc

    return (doc or "").split("\n\n")[0]


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: a misspelt option (--epoch) is refused, never taken as another (--epochs)
    p = argparse.ArgumentParser(prog="crl-napari", description=_description(), allow_abbrev=False)
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
    how.add_argument("--second-pass", type=int, choices=(1, 2, 3), default=None, metavar="MODE",
                     help="instead of a review round, the second pass a first training can be followed by (as "
                     "train --second-pass MODE: 1 on the corrections the recommended threshold takes, 2 on every "
                     "image's correction; the scores' advice names the one the default would train); only before "
                     "any round")
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
    x.add_argument("--unreviewed", choices=UNREVIEWED, default=None,
                   help="masks nobody reviewed: keep the original, or accept the correction above --threshold "
                   "(default: what the review chose, the choice its queue was ordered for; until it chooses, "
                   f"{DEFAULT_UNREVIEWED} where the nets can tell right masks from wrong ones, else keep)")
    x.add_argument("--threshold", type=float, default=None,
                   help="with --unreviewed accept_above (default: the run's recommended threshold, as in Review)")
    x.add_argument("--data-root", type=Path, default=None, help="where the original data is now, if it moved")
    x.add_argument("--no-cleanup", action="store_true",
                   help="export corrections as resampled, without removing islands below 1 %% of the mask or "
                   "filling holes")
    x.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads writing the files (default: one per core, at most 4; 1: one thread)")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", allow_abbrev=False, help="describe a run folder")
    i.add_argument("run", type=Path)
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", allow_abbrev=False,
                       help="train, score and export on the built-in sample (a few CPU minutes)")
    d.add_argument("--out", type=Path, default=Path("demo-run"))
    d.add_argument("--epochs", type=int, default=15)
    d.add_argument("--size", type=int, default=128)
    d.add_argument("--threshold", type=float, default=None,
                   help="accept corrections at or above this suspicion (default: the run's recommended threshold)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("import-chexmask", allow_abbrev=False,
                       help="turn a CheXmask-style table (run-length encoded lungs) into a masks/ folder")
    c.add_argument("table", type=Path, help="CSV: an image id column, 'Left Lung', 'Right Lung', Height, Width")
    c.add_argument("--masks", type=Path, required=True, help="the new masks/ folder (beside the data's images/)")
    _add_pixel_budget(c, "refuse a row claiming more pixels")
    c.set_defaults(func=cmd_import_chexmask)
    return p
