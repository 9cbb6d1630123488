"""``crl-napari``: the command line over the same functions the plugin uses (train on a server, review
anywhere). User mistakes end with one line on stderr and exit status 2, never a traceback.

A package, one module per group of subcommands: parser.py (every option), training.py (train,
next-round), run_commands.py (evaluate, score, export, info, import-chexmask), demo.py; options.py holds
the training options both the parser and the commands read. This module is the entry point (`main`, the
console script `crl_napari.cli:main`; `python -m crl_napari.cli` and `python -m crl_napari` run it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

from .. import distributed
from ..settings import TrainingError
from ..user_errors import USER_ERRORS
from .parser import build_parser

__all__ = ["DISTRIBUTED_COMMANDS", "USER_ERRORS", "build_parser", "main"]


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
    distributed.init_from_env()  # main leaves the group, once this rank's error (if any) is said
    if distributed.is_writer():
        yield
    else:
        args.quiet = True
        with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
            yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _under_torchrun(args):
            return args.func(args)
    except USER_ERRORS as exc:
        rank = os.environ.get("RANK", "0") if distributed.launched() else "0"
        who = "" if rank == "0" else f" (rank {rank})"
        # one write, newline included: under torchrun every rank says its line on the same stderr at the same
        # moment, and print's two writes (text, then newline) let them run into each other unbuffered (python -u)
        sys.stderr.write(f"crl-napari {args.command}{who}: error: {exc}\n")
        sys.stderr.flush()
        distributed.settle(exc)  # under torchrun: an error every rank stopped with is said by every rank
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run continues with --resume, and a scoring goes on where it was when run "
              "again", file=sys.stderr)
        return 130
    finally:
        if distributed.launched():
            distributed.close()
