"""Every training setting of a run, its validation and its help text: what a command line, the Train widget
and a run folder's config.json share. Plain values only (no torch), so anything may import it.

A setting is checked once, here, before anything is written or allocated: a config.json or a checkpoint may come
from anyone, and a bad value found late (a width of 10**6, a NaN learning rate) costs a traceback or the memory
of the machine. Every problem of a configuration is named in one message.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import asdict, dataclass, fields

STRATEGIES = ("vanilla", "coteaching", "ss", "crl")
N_NETS = {"vanilla": 1, "coteaching": 2, "ss": 3, "crl": 3}
JOINT_MODES = ("unselected", "all")
CHECKPOINT_FORMAT = 1
MAX_WIDTH = 256
MAX_DEPTH = 6
MAX_SIZE = 1024  # largest training image size (px); the paper trains at 256
MAX_THREADS = 1024
MAX_SEED = 2**31 - 1
#: settings that change how fast a run goes, not what it learns: a resume may change them
RUNTIME_SETTINGS = ("threads", "workers")
MAX_WORKERS = 64
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


class TrainingError(RuntimeError):
    """Training cannot go on (bad configuration, NaN loss, out of memory); the message says what to do."""


def default_threads() -> int:
    """CPU threads for training when none are asked: half the cores, at most 4.

    One torch thread per core was 3-10x slower on a machine busy with other work (threads waiting for each
    other's cores); half of them, capped, loses little on an idle one.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


#: What a settings dict written before a setting existed meant by its absence, where that is not the setting's
#: default now: a run scored before the border fit keeps the paper's correction, so that scoring it again (or
#: going on with a scoring it was in) does not mix two kinds of corrections in one run; a run trained before the
#: keep ratio was estimated while training resumes (and trains its rounds) with the ratio it was set to.
BEFORE_SETTING = {"border_fit": 0, "keep_auto": 0, "size_calibration": 0}


@dataclass
class TrainConfig:
    """Every hyperparameter of a run. Defaults follow the paper where it gives one (section 3); the rest are ours,
    marked as such in docs/paper.md (lr decay, rotation, the selection ramp and split, the joint-loss samples)."""

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
    threads: int | None = None  # CPU threads of torch; None -> default_threads()
    workers: int = 0  # DataLoader worker processes reading the batches; 0: in the training process
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over every rank's shard (CUDA only)
    global_selection: bool = False  # under torchrun: select over the whole global batch, not each rank's shard
    # ours, not the paper's (issue 11 item 4; docs/paper.md): each off by default, the paper's method unchanged,
    # but border_fit, the one that won on every seed measured, and keep_auto, which won on every seed where it
    # changed anything (75 % noise) and left the paper's nets bit for bit where it did not
    # (benchmarks/results/native_res.md, "Which option becomes a default").
    # Integers, not bools, so that the command line (--tta 1) and the Train widget (a spin box) take them as they are
    tta: int = 0  # 1: every net's probability is the mean over the image and its horizontal flip
    average_last: int = 0  # N > 0: the nets after training are each net's weights averaged over the last N epochs
    average_bn: int = 0  # 1: the averaged nets' BatchNorm statistics recomputed by one pass over the training images
    balance_area: int = 0  # 1: selection keeps given masks larger and smaller than the peers' prediction evenly
    second_pass: int = 4  # 1/2: three fresh nets train again on the first pass's corrections, 3: on the given
    # masks with the keep_ratio the first pass's scores suggest, 4: 2 when most masks look wrong, 1 when more than
    # 40 % do (second_pass.py)
    border_fit: int = 1  # 1: a correction starts from the given mask's border moved by the distance the nets agree
    # with (border_fit.py); 0: the paper's corrected label (the sharpened mean of the nets). Scoring only: the nets
    # train the same either way
    keep_auto: int = 1  # 1: stage 1's keep ratio from the share of masks that look wrong, while training
    # (keep_estimate.py); at about half or fewer looking wrong it stays keep_ratio and the nets are the paper's
    fit_labels: int = 0  # 1: stage 2's corrected label is the given border moved as the peers agree (border_fit.py)
    size_calibration: int = 1  # 1: corrections are made from the nets' probability brought to the size of the given
    # masks that look right where the nets draw them significantly smaller (size_calibration.py). Scoring only: the
    # nets train the same; a second pass learns from the calibrated corrections

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy scalars (a spin box, a computed k) become plain values, as JSON needs
            value = getattr(self, f.name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
                setattr(self, f.name, int(value))
            elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral | float):
                setattr(self, f.name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise one TrainingError naming every setting that is of the wrong type or out of range."""
        problems = _type_problems(self)
        if not problems:  # ranges only make sense on values of the right type
            problems = _range_problems(self)
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

    @property
    def ramp_epochs(self) -> float:
        """The epochs over which stage 1's selection ramps up from keeping everything (strategies.drop_fraction)."""
        return max(1.0, self.ramp * self.epochs)

    @property
    def full_selection_epoch(self) -> int:
        """The first (0-based) epoch whose selection drops its full share, ``(epoch + 1) >= ramp_epochs``: where
        the keep ratio's estimate (keep_estimate.py) starts, so both read the ramp the same way."""
        return math.ceil(self.ramp_epochs) - 1

    @property
    def n_threads(self) -> int:
        """The CPU threads training uses."""
        return default_threads() if self.threads is None else self.threads

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from its dict (config.json, a checkpoint); settings added since (threads) keep their default."""
        if not isinstance(d, dict):
            raise TrainingError(f"training settings must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - names)
        if unknown:
            raise TrainingError(f"unknown training settings {unknown} (written by another version?)")
        return cls(**{**BEFORE_SETTING, **d})


_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _type_problems(c: TrainConfig) -> list[str]:
    problems = []
    for f in fields(c):
        value = getattr(c, f.name)
        kind = str(f.type).split(" | ")[0]
        if value is None and "None" in str(f.type):
            continue
        ok = isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
        if ok and kind == "float" and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number, got {value!r}")
        elif not ok:
            problems.append(f"{f.name} must be {_TYPE_NAMES[kind]}, got {value!r}")
    return problems


def _range_problems(c: TrainConfig) -> list[str]:
    problems = []
    if c.strategy not in STRATEGIES:
        problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {c.strategy!r}")
    if c.joint not in JOINT_MODES:
        problems.append(f"joint must be one of {', '.join(JOINT_MODES)}, got {c.joint!r}")
    if not _DEVICE.fullmatch(c.device):
        problems.append(f"device must be auto, cpu, cuda, cuda:N or mps, got {c.device!r}")
    ranges = {  # name: (low, high, text)
        "epochs": (1, 1_000_000, ">= 1"), "batch_size": (2, 65_536, ">= 2"), "width": (1, MAX_WIDTH, None),
        "depth": (1, MAX_DEPTH, None), "seed": (0, MAX_SEED, None), "lr_decay": (0, 1, None),
        "momentum": (0, 1, None), "weight_decay": (0, 1, None), "ramp": (0, 1, None), "alpha": (0, 1, None),
        "rotation": (0, 180, None), "tta": (0, 1, None), "balance_area": (0, 1, None),
        "second_pass": (0, 4, None), "average_bn": (0, 1, None), "border_fit": (0, 1, None),
        "fit_labels": (0, 1, None), "keep_auto": (0, 1, None), "size_calibration": (0, 1, None),
    }
    for name, (lo, hi, text) in ranges.items():
        value = getattr(c, name)
        if not lo <= value <= hi:
            problems.append(f"{name} must be {text or f'in [{lo}, {hi}]'}, got {value!r}")
    if not 0 < c.keep_ratio <= 1 or not 0 <= c.drop_uncertain < 1:
        problems.append("keep_ratio must be in (0, 1] and drop_uncertain in [0, 1)")
    elif c.keep_ratio + c.drop_uncertain > 1 + 1e-9:
        problems.append("keep_ratio + drop_uncertain must not exceed 1")
    for name in ("lr", "T"):
        if getattr(c, name) <= 0:
            problems.append(f"{name} must be > 0, got {getattr(c, name)!r}")
    if c.threads is not None and not 1 <= c.threads <= MAX_THREADS:
        problems.append(f"threads must be in [1, {MAX_THREADS}] or None (automatic), got {c.threads!r}")
    if not 0 <= c.workers <= MAX_WORKERS:
        problems.append(f"workers must be in [0, {MAX_WORKERS}], got {c.workers!r}")
    if not 0 <= c.average_last <= c.epochs:
        problems.append(f"average_last must be in [0, epochs = {c.epochs}], got {c.average_last!r}")
    elif c.average_bn == 1 and c.average_last == 0:
        problems.append("average_bn = 1 recomputes the BatchNorm statistics of averaged weights: it needs "
                        "average_last > 0 (e.g. --average-last 5), or average_bn = 0")
    if c.k is not None and not 0 <= c.k <= c.epochs:
        problems.append(f"k must be in [0, epochs = {c.epochs}], got {c.k!r}")
    elif c.strategy == "crl" and c.k is not None and c.k >= c.epochs:
        problems.append(f"k = {c.k} with {c.epochs} epochs: crl would never reach stage 2: that is ss "
                        f"(use --strategy ss, or a k below {c.epochs})")
    return problems


def settings_diff(saved: TrainConfig, asked: TrainConfig | dict) -> dict:
    """{setting: (saved, asked)} for every setting that differs, leaving out RUNTIME_SETTINGS (a resume may
    change them); a dict ``asked`` holds only the settings a person gave explicitly (the rest are not compared)."""
    given = asdict(asked) if isinstance(asked, TrainConfig) else dict(asked)
    return {k: (getattr(saved, k), v) for k, v in given.items()
            if k not in RUNTIME_SETTINGS and getattr(saved, k) != v}


def check_size(config: TrainConfig, size: int) -> None:
    """Refuse a training image size the config's U-Net cannot take, before any run folder is made.

    The U-Net halves the image ``depth`` times and concatenates each level with its skip, so the size must be
    a multiple of 2**depth (and at least that: one pixel at the bottom).
    """
    step = 2**config.depth
    if isinstance(size, bool) or not isinstance(size, int):
        raise TrainingError(f"image size must be an integer, got {size!r}")
    if size < step or size > MAX_SIZE:
        raise TrainingError(f"image size {size} is out of range for depth {config.depth}: it must be in "
                            f"[{step}, {MAX_SIZE}] and a multiple of 2**depth = {step}")
    if size % step:
        lower, upper = size - size % step, size - size % step + step
        near = f"{lower} or {upper}" if upper <= MAX_SIZE else str(lower)
        raise TrainingError(f"image size {size} is not a multiple of 2**depth = {step} (depth {config.depth}): "
                            f"use e.g. {near}, or a smaller depth")


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
    "width": f"U-Net channels of the first level (paper: 64; at most {MAX_WIDTH})",
    "depth": f"U-Net levels (paper: 4; at most {MAX_DEPTH}); the image size must be divisible by 2**depth",
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
    "amp": "mixed precision (cuda only; elsewhere the run trains in float32)",
    "augment": "random rotation and horizontal flip",
    "rotation": "largest random rotation, in degrees (0-180)",
    "flip": "random horizontal flip",
    "sync_batchnorm": "under torchrun (CUDA): BatchNorm statistics over the whole global batch instead of each "
    "process's shard (docs/scaling.md)",
    "global_selection": "under torchrun: every process selects its samples from the whole global batch (the "
    "per-sample losses gathered from every process: what one process would pick) instead of from its own shard; "
    "no effect in one process (docs/scaling.md)",
    "threads": "CPU threads of torch; automatic: half the cores, at most 4 (one per core was 3-10x slower on a "
    "busy machine)",
    "tta": "ours, not the paper's: 1 = every net's probability (corrected labels, scores, prediction) is the mean "
    "over the image and its horizontal flip; 0 = the image only (the paper). Off by default: in the benchmark it "
    "lost at 75 % noise on both seeds (benchmarks/results/native_res.md)",
    "average_last": "ours, not the paper's: N > 0 = after training each net's weights are averaged over the end of "
    "its last N epochs (SWA; BatchNorm statistics averaged too) and the averaged nets correct, score and predict; "
    "training itself is unchanged; 0 = the last epoch's weights (the paper). Off by default: in the benchmark it won "
    "at 75 % noise on one seed and lost on the other (benchmarks/results/native_res.md)",
    "average_bn": "ours, not the paper's, with average_last > 0 only: 1 = after the weights are averaged, each net's "
    "BatchNorm statistics are recomputed by one pass over the training images (train mode, no gradient, no "
    "augmentation, as torch.optim.swa_utils.update_bn): the statistics of the averaged weights themselves rather "
    "than the average of each epoch's; 0 = the averaged statistics. Off by default: in the benchmark (average of the "
    "last 5 epochs) it won 3 of 4 seeds and lost at 75 % noise seed 1 (benchmarks/results/native_res.md)",
    "balance_area": "ours, not the paper's: 1 = sample selection keeps the small-loss samples from the masks larger "
    "and those smaller than the peers' prediction in proportion to how many each batch holds, so neither dilated "
    "nor eroded errors dominate what the nets learn; 0 = small loss alone (the paper). Off by default: in the "
    "benchmark it lost on its own at 75 % noise (benchmarks/results/native_res.md)",
    "second_pass": "ours, not the paper's: after training and scoring, three fresh nets train the cascade again from "
    "scratch with the same settings and become the run's nets (the first pass's files stay in rounds/1/); 1 = on "
    "the first pass's correction where its suspicion reaches the recommended threshold, the given mask below it "
    "(what the recommended policy would export), 2 = on every correction; 3 = on the given masks with the keep_ratio "
    "the first pass's scores suggest (1 minus the share that looks wrong, as `info` lists it), and no second pass "
    "when they suggest none; 4 = 2 when most given masks look wrong (where the scores' advice offers a second pass: "
    "more than 55 % at keep_ratio 0.5), 1 when more than 40 % do, either only when the nets can already tell right "
    "masks from wrong ones, else one pass; 0 = one pass (the paper). A second pass doubles the training "
    "time. 4 by default: at 75 % noise drawn as the paper draws it, 2 won on every seed where the user sees it (the "
    "exported set with nobody reviewing 0.961 / 0.960 / 0.963 against 0.951 / 0.952 / 0.958, corrections of the "
    "corrupted masks and test Dice higher); at 50 % 1 won on every seed (0.982 / 0.981 / 0.982 against 0.980 / "
    "0.979 / 0.981) and on the built-in sample set, where 2 lost; at 25 % the scores read 29-31 % wrong and 1 lost 2 "
    "of 3 seeds (benchmarks/results/native_noise.md); on Shenzhen's own simulated noise at 64 px (native_res.md) 1 won "
    "on 3 of 4 seeds and lost at 75 % noise seed 0 by 0.0001; 3 won at "
    "75 % noise on all 3 seeds and was mixed on the 110-image set (benchmarks/results/native_res.md); runs made "
    "before it keep 0",
    "border_fit": "ours, not the paper's: 1 = a correction starts from the given mask's border moved in or out by the "
    "one distance the nets agree with most, and the nets' opinion moves it further only where they are sure; it "
    "keeps the detail the annotator drew and returns a clean mask nearly as it was; 0 = the paper's corrected label "
    "(the sharpened mean of the nets). Scoring only: training is the same. On by default: it raised the corrected "
    "Dice at the original size on the corrupted and the clean cases on every seed at 25, 50 and 75 % noise "
    "(benchmarks/results/native_res.md); runs made before it keep 0",
    "keep_auto": "ours, not the paper's (ss and crl): 1 = from the end of the selection's ramp on, each stage-1 epoch "
    "estimates the share of given masks that look wrong (as `info` and the advice do after training) and the "
    "epochs after it keep 1 minus that share of each batch instead of keep_ratio, where that is lower by more than "
    "0.05 (at most about half the masks looking wrong leaves keep_ratio as it is); 0 = keep_ratio throughout (the "
    "paper). On by default: at 75 % simulated noise it won against crl with the border fit on every seed measured "
    "(corrected Dice of the corrupted and the clean masks and test Dice), and at 50 and 25 % it never lowered the "
    "ratio, so the nets are the paper's (benchmarks/results/native_res.md, crl+keep-auto); runs made before it keep 0",
    "size_calibration": "ours, not the paper's: 1 = where the nets draw the lungs of the fifth of the images that "
    "look most right (lowest suspicion) smaller than their given masks in significantly more images than not (a "
    "one-sided sign test, p < 0.05), one logit offset brings the nets' masks to the given masks' area there (the "
    "median) before the corrections are made, so nets that came out of training drawing every lung too small do not "
    "pass that on to every correction; elsewhere, and with 0, the nets' probability as it is. Scoring only: "
    "training is the same (a second pass learns from the calibrated corrections). On by default: at 75 % noise "
    "(64 px quick profile) it acted on 2 of 3 seeds and there raised the corrections of the corrupted masks by "
    "+0.008 / +0.011, of the clean ones by +0.007 / +0.012 and the nets' test Dice by +0.004 / +0.006 (gap to "
    "clean-label vanilla 0.010 against 0.013); at 50 % it acted on 1 of 3 (+0.002, test +0.001), on the 110-image "
    "set on 1 of 3 (test +0.010); everywhere else, 25, 10 and 0 % included, it left every correction bit for bit "
    "(benchmarks/results/native_noise.md); runs made before it keep 0",
    "fit_labels": "ours, not the paper's: 1 = in stage 2 each net's corrected label is the given mask's border moved "
    "in or out by the one distance its peers' sharpened mean agrees with (as the border fit makes a correction), "
    "not that sharpened mean itself; 0 = the paper's corrected label. Off by default until measured "
    "(benchmarks/results/native_res.md, crl+fit-labels)",
    "workers": "processes that read the training batches from the run's on-disk cache; 0 reads them in the "
    "training process (right for small data sets and for the plugin)",
}
