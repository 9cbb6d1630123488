"""The run's tables as typed rows, read with a check per cell: every message names the file and line.

A run folder may come from anyone, so every id goes through :func:`crl_napari.ids.check_id`, every number is
finite and in range, and a file larger than any run could write is refused before it is read.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ids import check_id
from .errors import RunError

if TYPE_CHECKING:
    from ..events import EpochEnd

MAX_TABLE_BYTES = 64 << 20  # 64 MiB: a million cases; a bigger table is not one this package wrote
MAX_SIDE = 100_000  # pixels of one side of an original image
SPLITS = ("train", "val", "test", "")


@dataclass(frozen=True)
class CaseRow:
    """One line of cases.csv / held_out.csv: an image the run knows and where its originals were."""

    id: str
    split: str
    image_path: str
    mask_path: str
    orig_h: int
    orig_w: int
    corrupted: bool | None = None
    noise_op: str = ""
    noise_n: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The legacy dict shape (strings as in the file) the widgets and benchmarks read."""
        return {"id": self.id, "split": self.split, "image_path": self.image_path, "mask_path": self.mask_path,
                "orig_h": str(self.orig_h), "orig_w": str(self.orig_w),
                "corrupted": "" if self.corrupted is None else str(int(self.corrupted)), "noise_op": self.noise_op,
                "noise_n": "" if self.noise_n is None else str(self.noise_n)}


@dataclass(frozen=True)
class ScoreRow:
    """One line of scores.csv."""

    id: str
    rank: int
    suspicion: float
    uncertainty: float | None = None
    disagreement: float | None = None
    dice_given_corrected: float | None = None
    corrupted: bool | None = None
    extra_pieces: int = 0  # pieces of the cleaned correction beyond two lungs: worth a look before accepting


@dataclass(frozen=True)
class HistoryRow:
    """One line of history.csv: one finished epoch."""

    epoch: int
    stage: int
    losses: tuple[float, ...]
    selected: float
    lr: float
    seconds: float
    val_dice: float | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The legacy dict shape: the file's text, as the widgets and the report read it."""
        return dict(self.raw)


def read_table(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row with stripped keys and values) of a CSV; RunError naming the file when it is
    missing, too big, unreadable or lacks a required column."""
    try:
        if path.is_symlink():
            raise RunError(f"{path}: is a symbolic link; a run folder's files must be plain files")
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise RunError(f"{path}: {size >> 20} MiB, more than any run writes ({MAX_TABLE_BYTES >> 20} MiB)")
        text = path.read_bytes().decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        names = [f.strip() for f in (reader.fieldnames or [])]
        rows = [(line, {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in r.items()})
                for line, r in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from exc
    missing = [c for c in required if c not in names]
    if missing:
        raise RunError(f"{path}: missing column(s) {', '.join(missing)} (found {','.join(names)!r})")
    return rows


def _int(text: str, where: str, name: str, lo: int, hi: int) -> int:
    try:
        value = float(text)
        if not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise RunError(f"{where}: {name} is not an integer ({text!r})") from None
    if not lo <= value <= hi:
        raise RunError(f"{where}: {name} {int(value)} is out of range [{lo}, {hi}]")
    return int(value)


def _float(text: str, where: str, name: str, optional: bool = True) -> float | None:
    if text == "" and optional:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RunError(f"{where}: {name} is not a number ({text!r})") from None
    if not math.isfinite(value):
        raise RunError(f"{where}: {name} is not finite ({text!r})")
    return value


def _flag(text: str) -> bool | None:
    return None if text == "" else text.lower() in ("1", "true", "yes", "1.0")


def case_rows(path: Path, seen: set[str], max_pixels: int) -> list[CaseRow]:
    """cases.csv or held_out.csv; ``seen`` collects the ids (a duplicate across both files is refused)."""
    out = []
    for line, r in read_table(path, ("id", "image_path", "mask_path", "orig_h", "orig_w")):
        where = f"{path}: line {line}"
        image_id = check_id(r["id"], where)
        if image_id in seen:
            raise RunError(f"{where}: id {image_id!r} listed twice (in this file or in the other case list)")
        seen.add(image_id)
        split = r.get("split", "")
        if split not in SPLITS:
            raise RunError(f"{where}: split {split!r} of {image_id!r} is not one of train, val, test")
        if not r["image_path"] or not r["mask_path"] or "\x00" in r["image_path"] + r["mask_path"]:
            raise RunError(f"{where}: empty image_path or mask_path for {image_id!r}")
        h = _int(r["orig_h"], where, "orig_h", 1, MAX_SIDE)
        w = _int(r["orig_w"], where, "orig_w", 1, MAX_SIDE)
        if h * w > max_pixels:
            raise RunError(f"{where}: {image_id!r} claims {h}x{w} pixels, more than the budget of "
                           f"{max_pixels / 1e6:.0f} megapixels")
        noise_n = _int(r["noise_n"], where, "noise_n", 0, 10_000) if r.get("noise_n") else None
        out.append(CaseRow(image_id, split, r["image_path"], r["mask_path"], h, w, _flag(r.get("corrupted", "")),
                           r.get("noise_op", "")[:32], noise_n))
    return out


def score_rows(path: Path) -> list[ScoreRow]:
    """scores.csv sorted by rank (ties keep the file's order)."""
    out, seen = [], set()
    rows = read_table(path, ("id", "rank", "suspicion"))
    for line, r in rows:
        where = f"{path}: line {line}"
        image_id = check_id(r["id"], where)
        if image_id in seen:
            raise RunError(f"{where}: id {image_id!r} listed twice")
        seen.add(image_id)
        try:
            rank = int(float(r["rank"]))
        except (TypeError, ValueError, OverflowError):
            raise RunError(f"{where}: rank is not a number ({r['rank']!r})") from None
        suspicion = _float(r["suspicion"], where, "suspicion", optional=False)
        floats = [_float(r.get(c, ""), where, c) for c in ("uncertainty", "disagreement", "dice_given_corrected")]
        extra = _int(r.get("extra_pieces") or "0", where, "extra_pieces", 0, 1_000_000)
        out.append(ScoreRow(image_id, rank, suspicion, *floats, corrupted=_flag(r.get("corrupted", "")),
                            extra_pieces=extra))
    return sorted(out, key=lambda s: s.rank)


def history_rows(path: Path, epochs: int) -> list[HistoryRow]:
    """history.csv; epochs in [0, ``epochs``) and strictly increasing."""
    out: list[HistoryRow] = []
    for line, r in read_table(path, ("epoch", "stage", "selected")):
        row = history_row(r, f"{path}: line {line}", epochs)
        if out and row.epoch <= out[-1].epoch:
            raise RunError(f"{path}: line {line}: epoch {row.epoch} does not follow epoch {out[-1].epoch}")
        out.append(row)
    return out


def history_row(r: dict[str, Any], where: str, epochs: int) -> HistoryRow:
    """One checked history line (``r``: the file's text, or an :func:`epoch_line` kept in a checkpoint)."""
    if not isinstance(r, dict) or not all(isinstance(k, str) for k in r):
        raise RunError(f"{where}: not a history row")
    r = {k: "" if v is None else v.strip() if isinstance(v, str) else str(v) for k, v in r.items()}
    for column in ("epoch", "stage", "selected"):
        if column not in r:
            raise RunError(f"{where}: no {column}")
    losses = tuple(v for c in ("loss_0", "loss_1", "loss_2") if (v := _float(r.get(c, ""), where, c)) is not None)
    return HistoryRow(_int(r["epoch"], where, "epoch", 0, max(epochs - 1, 0)),
                      _int(r["stage"], where, "stage", 1, 2), losses,
                      _float(r["selected"], where, "selected", optional=False),
                      _float(r.get("lr", ""), where, "lr") or 0.0,
                      _float(r.get("seconds", ""), where, "seconds") or 0.0,
                      _float(r.get("val_dice", ""), where, "val_dice"), raw=r)


def epoch_line(end: EpochEnd) -> dict[str, Any]:
    """The history.csv line of one finished epoch, rounded as the file keeps it: written by the pipeline after
    the epoch's checkpoint, and kept inside that checkpoint too, so a kill between the two files loses no line
    (runs.open_for_resume puts it back)."""
    line = {"epoch": end.epoch, "stage": end.stage, "selected": round(end.selected, 4), "lr": end.lr,
            "seconds": round(end.seconds, 3), "val_dice": end.val_dice}
    line.update({f"loss_{i}": round(v, 6) for i, v in enumerate(end.losses)})
    return line


def csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()
