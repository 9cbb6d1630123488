"""The training options of `train` (one per TrainConfig setting, every default None: "not given", so that
`--resume` can tell what was asked) and the pixel budget, with their reading back."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..data import MAX_PIXELS, DataError
from ..settings import JOINT_MODES, SETTING_HELP, STRATEGIES, TrainConfig


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # every default is None ("not given"), so that `--resume` can tell what the user asked for explicitly
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: the paper's where it gives one, else ours: docs/paper.md)")
    for f in fields(TrainConfig):
        if f.name in ("amp", "augment", "flip", "sync_batchnorm", "global_selection"):
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
    g.add_argument("--global-selection", dest="global_selection", action="store_true", default=None,
                   help=SETTING_HELP["global_selection"])
    g.add_argument("--shard-selection", dest="global_selection", action="store_false", default=None,
                   help="under torchrun: every process selects within its own shard of the global batch (default)")


def _given(args: argparse.Namespace) -> dict:
    """The training options given on the command line (the rest keep TrainConfig's defaults)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**_given(args))


_DATA_OPTIONS = {"size": 256, "simulate_noise": 0.0, "noise_seed": 0, "noise_footprint": "cross"}


def _pixels(megapixels: float) -> int:
    if not megapixels > 0:
        raise DataError(f"--max-megapixels must be above 0, got {megapixels}")
    return int(megapixels * 1e6)


def _add_pixel_budget(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-megapixels, read back with _pixels: the decoding budget of data.MAX_PIXELS as an option."""
    parser.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6, metavar="MP",
                        help=f"{what} (default %(default)g)")
