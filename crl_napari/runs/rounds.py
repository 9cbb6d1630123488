"""The files of review rounds: rounds.json and rounds/<n>/ (crl_napari.rounds trains the rounds).

A run folder written before rounds existed has neither: it is round 1. When round n+1 starts, round n's own
files (ROUND_FILES) are kept in rounds/<n>/; round n+1 trains in rounds/<n+1>/ (a small run folder of its own:
config, history, checkpoint) and, once scored, its files become the top level, so every reader of the top level
keeps working. Files are kept by hard link where the file system allows (every run file is replaced atomically,
never written in place, so a link is as safe as a copy and costs no disk), else copied.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_json, fsync_dir, remove_stale_temps
from ..ids import UnsafeIdError, check_id
from ..settings import TrainConfig
from .checks import check_train
from .errors import RunError
from .folder import RunFolder, inside
from .json_file import read_json
from .names import CHECKPOINT, CONFIG, EVALUATION, HISTORY, ROUND_DECISIONS, ROUND_FILES, ROUNDS, ROUNDS_DIR

ROUNDS_VERSION = 1
MAX_ROUNDS = 10_000
_MAX_BYTES = 4 << 20
#: a round's label of an image besides the review's statuses: "corrected", the previous round's correction as an
#: untrusted label (a second pass, crl_napari.second_pass)
CORRECTED = "corrected"
_STATUSES = ("accepted", "kept", "edited", "flagged", "excluded", CORRECTED)


@dataclass(frozen=True)
class Round:
    """One line of rounds.json: when round ``number`` started and finished (None while it trains), how it
    trained, and how many decisions of each status it trained with."""

    number: int
    started: str
    finished: str | None = None
    warm_epochs: int | None = None  # None: round 1, or trained from scratch
    from_scratch: bool = False
    decisions: dict[str, int] = field(default_factory=dict)
    second_pass: bool = False  # trained after the first pass by itself (crl_napari.second_pass), not a review
    keep_ratio: float | None = None  # the keep_ratio the round trained with (None: recorded before it was)

    def as_dict(self) -> dict:
        return asdict(self)


def _check(raw: object, path: Path, i: int) -> Round:
    where = f"{path}: round entry {i + 1}"
    if not isinstance(raw, dict):
        raise RunError(f"{where}: expected an object")
    number, started, finished = raw.get("number"), raw.get("started"), raw.get("finished")
    warm, scratch, decisions = raw.get("warm_epochs"), raw.get("from_scratch", False), raw.get("decisions", {})
    second, keep = raw.get("second_pass", False), raw.get("keep_ratio")
    if isinstance(number, bool) or not isinstance(number, int) or number != i + 1:
        raise RunError(f"{where}: number must be {i + 1}, got {number!r}")
    if not isinstance(started, str) or len(started) > 64 or (finished is not None and
                                                               (not isinstance(finished, str) or len(finished) > 64)):
        raise RunError(f"{where}: started/finished must be times")
    if warm is not None and (isinstance(warm, bool) or not isinstance(warm, int) or not 1 <= warm <= 1_000_000):
        raise RunError(f"{where}: warm_epochs must be a positive integer or null, got {warm!r}")
    if not isinstance(scratch, bool) or not isinstance(second, bool):
        raise RunError(f"{where}: from_scratch and second_pass must be true or false, got {scratch!r}, {second!r}")
    if not isinstance(decisions, dict) or any(k not in _STATUSES or isinstance(v, bool) or not isinstance(v, int)
                                              or v < 0 for k, v in decisions.items()):
        raise RunError(f"{where}: decisions must map statuses ({', '.join(_STATUSES)}) to counts")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int | float) or not 0 < keep <= 1):
        raise RunError(f"{where}: keep_ratio must be a number in (0, 1] or null, got {keep!r}")
    return Round(number, started, finished, warm, scratch, dict(decisions), second,
                 None if keep is None else float(keep))


def read_rounds(run_dir: Path | str) -> list[Round]:
    """rounds.json checked ([] when absent: a run that never started a second round is round 1 alone)."""
    path = Path(run_dir) / ROUNDS
    if not path.is_file():
        return []
    data = read_json(path, _MAX_BYTES, "not a readable rounds file")
    if not isinstance(data, dict) or data.get("version") != ROUNDS_VERSION or not isinstance(data.get("rounds"), list):
        raise RunError(f"{path}: not a rounds file of this version (expected version {ROUNDS_VERSION} and a list "
                       "of rounds)")
    if not 1 <= len(data["rounds"]) <= MAX_ROUNDS:
        raise RunError(f"{path}: holds {len(data['rounds'])} rounds")
    out = [_check(r, path, i) for i, r in enumerate(data["rounds"])]
    if any(r.finished is None for r in out[:-1]) or out[0].finished is None:
        raise RunError(f"{path}: only the last round may be unfinished, and round 1 is always finished")
    if out[0].warm_epochs is not None:  # warm rounds start from a round that trained in full (rounds.warm_base)
        raise RunError(f"{path}: round 1 trained in full; it has no warm_epochs")
    return out


def write_rounds(run_dir: Path | str, rounds: list[Round]) -> None:
    atomic_write_json(inside(Path(run_dir), ROUNDS),
                      {"version": ROUNDS_VERSION, "rounds": [r.as_dict() for r in rounds]})


def current_round(run_dir: Path | str) -> int:
    """The round whose nets scored the top level (the last finished one; 1 for a run without rounds)."""
    done = [r.number for r in read_rounds(run_dir) if r.finished is not None]
    return done[-1] if done else 1


def round_dir(run_dir: Path | str, number: int, create: bool = False) -> Path:
    """rounds/<number>/ inside the run (created with ``create``); links in the way are refused."""
    path = inside(Path(run_dir), ROUNDS_DIR, str(int(number)))
    if create:
        path.parent.mkdir(exist_ok=True)
        path.mkdir(exist_ok=True)
    return path


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a whole copy of ``src`` in one step (a hard link where possible)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def keep_round_files(run_dir: Path | str, number: int) -> Path:
    """Keep the top level's ROUND_FILES (round ``number``'s) in rounds/<number>/; the top level is unchanged."""
    run_dir = Path(run_dir)
    folder = round_dir(run_dir, number, create=True)
    remove_stale_temps(folder)
    for name in ROUND_FILES:
        if (run_dir / name).is_file():
            _link_or_copy(run_dir / name, inside(folder, name))
    return folder


def promote(run_dir: Path | str, number: int) -> None:
    """Round ``number``'s checkpoint, config and history (in rounds/<number>/) become the top level's; the
    previous round's evaluation.json moves to its own rounds/ folder, as it no longer describes the top level.
    The checkpoint goes first: a reader sees new weights with old scores (stale), never the reverse."""
    run_dir = Path(run_dir)
    folder = round_dir(run_dir, number)
    if (run_dir / EVALUATION).is_file():
        _link_or_copy(run_dir / EVALUATION, inside(round_dir(run_dir, number - 1), EVALUATION))
        inside(run_dir, EVALUATION).unlink()
    for name in (CHECKPOINT, CONFIG, HISTORY):
        if (folder / name).is_file():
            _link_or_copy(folder / name, inside(run_dir, name))


def write_round_start(run: RunFolder, number: int, train: TrainConfig, decisions: dict[str, str]) -> Path:
    """rounds/<number>/ made ready to train: the decisions it trains with ({id: status}, so a killed round
    resumes with the same ones), then its config.json (the run's, with the round's training settings)."""
    folder = round_dir(run.path, number, create=True)
    remove_stale_temps(folder)
    atomic_write_json(inside(folder, ROUND_DECISIONS), decisions)
    check_train(asdict(train), folder / CONFIG)
    atomic_write_json(inside(folder, CONFIG), {**run.config, "train": asdict(train), "round": number,
                                               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return folder


def round_test_dice(folder: Path) -> float | None:
    """The mean test Dice evaluation.json records in ``folder`` (None when absent or unreadable)."""
    try:
        result = json.loads((folder / EVALUATION).read_text(encoding="utf-8"))
        value = result["dice_mean"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_round_decisions(folder: Path) -> dict[str, str]:
    path = folder / ROUND_DECISIONS
    data = read_json(path, 64 << 20, "not a readable decisions file")
    if not isinstance(data, dict) or any(v not in _STATUSES for v in data.values()):
        raise RunError(f"{path}: expected an object mapping image ids to statuses ({', '.join(_STATUSES)})")
    try:
        for k in data:
            check_id(k, path)
    except UnsafeIdError as exc:
        raise RunError(str(exc)) from None
    return data
