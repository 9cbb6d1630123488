"""Every training setting of a run, its validation and its help text: what a command line, the Train widget
and a run folder's config.json share. Plain values only (no torch), so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

STRATEGIES = ("vanilla", "coteaching", "ss", "crl")
N_NETS = {"vanilla": 1, "coteaching": 2, "ss": 3, "crl": 3}
JOINT_MODES = ("unselected", "all")
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot go on (bad configuration, NaN loss, out of memory); the message says what to do."""


@dataclass
class TrainConfig:
    """Every hyperparameter of a run. Defaults are the paper's recipe (section 3, implementation details)."""

    strategy: str = "crl"
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.99  # exponential decay: lr * lr_decay**epoch
    momentum: float = 0.9
    weight_decay: float = 1e-3
    width: int = 64
    depth: int = 4
    k: int | None = None  # crl: first epoch of stage 2; None -> epochs // 2
    keep_ratio: float = 0.5  # fraction of the batch a net learns from in stage 1
    drop_uncertain: float = 0.25  # fraction of the batch dropped first for high peer uncertainty
    ramp: float = 0.1  # fraction of the epochs over which selection ramps up from keeping everything
    alpha: float = 0.5
    T: float = 0.5
    joint: str = "unselected"  # stage 2: joint loss on the "unselected" samples only, or on "all"
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, used on cuda only
    augment: bool = True
    rotation: float = 10.0  # degrees, random rotation in [-rotation, rotation]
    flip: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.joint not in JOINT_MODES:
            problems.append(f"joint must be one of {', '.join(JOINT_MODES)}, got {self.joint!r}")
        if self.epochs < 1 or self.batch_size < 2:
            problems.append("epochs must be >= 1 and batch_size >= 2")
        if not 0 < self.keep_ratio <= 1 or not 0 <= self.drop_uncertain < 1:
            problems.append("keep_ratio must be in (0, 1] and drop_uncertain in [0, 1)")
        if self.keep_ratio + self.drop_uncertain > 1 + 1e-9:
            problems.append("keep_ratio + drop_uncertain must not exceed 1")
        if not 0 <= self.alpha <= 1 or self.T <= 0 or self.lr <= 0:
            problems.append("alpha must be in [0, 1], T > 0 and lr > 0")
        if problems:
            raise TrainingError("invalid training configuration: " + "; ".join(problems))

    @property
    def n_nets(self) -> int:
        return N_NETS[self.strategy]

    @property
    def stage2_epoch(self) -> int | None:
        """First (0-based) epoch of stage 2, or None when the strategy has none."""
        if self.strategy != "crl":
            return None
        return self.epochs // 2 if self.k is None else self.k

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(f"unknown training settings {unknown} (written by another version?)")
        return cls(**d)


# what each setting does, for the command line's --help and the plugin's tooltips
SETTING_HELP = {
    "strategy": "crl: the cascaded framework (stage 1 sample selection, stage 2 label correction); "
    "vanilla, coteaching, ss: the paper's baselines",
    "epochs": "training epochs (paper: 100)",
    "batch_size": "images per step (paper: 32)",
    "lr": "SGD learning rate (paper: 1e-3)",
    "lr_decay": "learning rate x lr_decay per epoch",
    "momentum": "SGD momentum (paper: 0.9)",
    "weight_decay": "SGD weight decay (paper: 1e-3)",
    "width": "U-Net channels of the first level (paper: 64)",
    "depth": "U-Net levels (paper: 4); the image size must be divisible by 2**depth",
    "k": "crl: first epoch of stage 2",
    "keep_ratio": "stage 1: fraction of each batch a net learns from",
    "drop_uncertain": "stage 1: fraction dropped first for high peer uncertainty",
    "ramp": "fraction of the epochs over which sample selection ramps up",
    "alpha": "stage 2: weight of the given label in the joint loss (0.25 with joint=all did best in the benchmark "
    "when 75 % of the masks were off, level with 0.5 at 25-50 %)",
    "T": "stage 2: sharpening temperature of the corrected label",
    "joint": "stage 2: joint loss on the unselected samples only, or on all (all did better in the benchmark "
    "when 75 % of the masks were off, unselected at 25-50 %)",
    "seed": "seed of the nets' initialisation, shuffling and augmentation",
    "device": "auto: cuda, then mps, then cpu",
    "amp": "mixed precision (cuda only)",
    "augment": "random rotation and horizontal flip",
    "rotation": "largest random rotation, in degrees",
    "flip": "random horizontal flip",
}
