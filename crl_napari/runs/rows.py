"""The run's tables as typed rows, read with a check per cell: every message names the file and line.

A run folder may come from anyone, so every id goes through :func:`crl_napari.ids.check_id`, every number is
finite and in range, and a file larger than any run could write is refused before it is read.
"""

from __future__ import annotations

import csv
import gc
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..ids import all_safe, check_id
from .errors import RunError

if TYPE_CHECKING:
    from ..events import EpochEnd

MAX_TABLE_BYTES = 64 << 20  # 64 MiB: a million cases; a bigger table is not one this package wrote
MAX_SIDE = 100_000  # pixels of one side of an original image
SPLITS = ("train", "val", "test", "")


class CaseRow(NamedTuple):
    """One line of cases.csv / held_out.csv: an image the run knows and where its originals were. (A named tuple,
    as :class:`ScoreRow`: a frozen dataclass took a tenth of a second per 25,000 rows just to be made.)"""

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


class ScoreRow(NamedTuple):
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


class _Table(NamedTuple):
    """A CSV as the csv module splits it: the header's names (stripped) and the rows that are not empty."""

    path: Path
    raw_names: list[str]
    rows: list[list[str]]

    @property
    def names(self) -> list[str]:
        return [f.strip() for f in self.raw_names]

    def records(self) -> list[tuple[int, dict[str, str]]]:
        """(line number, row with stripped keys and values), as csv.DictReader gives them (a short row's missing
        cells and a long row's extra ones read as "")."""
        out, names = [], self.raw_names
        for line, row in enumerate(self.rows, start=2):
            r: dict = dict(zip(names, row, strict=False))
            if len(names) < len(row):
                r[None] = row[len(names):]
            for k in names[len(row):]:
                r[k] = None
            out.append((line, {(k or "").strip(): v.strip() if isinstance(v, str) else "" for k, v in r.items()}))
        return out

    def columns(self) -> dict[str, list[str]] | None:
        """Every column's stripped cells when each row has one cell per (distinct) name, else None: the fast
        path of the row readers (a large table, read in a few C loops)."""
        names = self.names
        if len(set(names)) != len(names) or not set(map(len, self.rows)) <= {len(names)}:
            return None
        cells = zip(*self.rows, strict=True) if self.rows else ([] for _ in names)
        return {name: list(map(str.strip, column)) for name, column in zip(names, cells, strict=True)}


def _read(path: Path, required: tuple[str, ...]) -> _Table:
    """The table of a CSV; RunError naming the file when it is missing, too big, unreadable or lacks a required
    column."""
    try:
        if path.is_symlink():
            raise RunError(f"{path}: is a symbolic link; a run folder's files must be plain files")
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise RunError(f"{path}: {size >> 20} MiB, more than any run writes ({MAX_TABLE_BYTES >> 20} MiB)")
        text = path.read_bytes().decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""))
        raw_names = next(reader, [])
        rows = list(filter(None, reader))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from exc
    table = _Table(path, raw_names, rows)
    names = table.names
    missing = [c for c in required if c not in names]
    if missing:
        raise RunError(f"{path}: missing column(s) {', '.join(missing)} (found {','.join(names)!r})")
    return table


def read_table(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row with stripped keys and values) of a CSV; RunError naming the file when it is
    missing, too big, unreadable or lacks a required column."""
    return _read(path, required).records()


# The fast paths: a table of 100,000 cases read row by row, a check per cell, took seconds. These take every column
# in a few C loops and accept exactly what the row-by-row readers below accept, with the same values; anything they
# do not accept (a bad cell, a ragged row) goes to the row-by-row reader, whose message names the file and line.


def _numbers(texts: list[str]) -> np.ndarray | None:
    """float() of every text when all are finite numbers, else None."""
    try:
        values = np.fromiter(map(float, texts), np.float64, len(texts))
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def _integers(texts: list[str], lo: int, hi: int) -> list[int] | None:
    """:func:`_int` of every text when all pass, else None."""
    values = _numbers(texts)
    if values is None or len(values) and ((values != np.trunc(values)).any() or values.min() < lo or values.max() > hi):
        return None
    return values.astype(np.int64).tolist()


def _optional_numbers(texts: list[str]) -> list[float | None] | None:
    """:func:`_float` of every text ("" is None) when all pass, else None."""
    try:
        values = [float(t) if t else None for t in texts]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values if v is not None) else None


def _safe_unique(ids: list[str], seen: set[str]) -> bool:
    return all_safe(ids) and len(set(ids)) == len(ids) and seen.isdisjoint(ids)


def _fast_case_rows(table: _Table, seen: set[str], max_pixels: int) -> list[CaseRow] | None:
    cols = table.columns()
    if cols is None:
        return None
    n, blank = len(table.rows), [""] * len(table.rows)
    ids, split = cols["id"], cols.get("split", blank)
    paths = cols["image_path"] + cols["mask_path"]
    if not _safe_unique(ids, seen) or not set(split) <= set(SPLITS) or not all(paths) or "\x00" in "".join(paths):
        return None
    h, w = _integers(cols["orig_h"], 1, MAX_SIDE), _integers(cols["orig_w"], 1, MAX_SIDE)
    if h is None or w is None or (n and int((np.array(h) * np.array(w)).max()) > max_pixels):
        return None
    noise = cols.get("noise_n", blank)
    given = [t for t in noise if t]
    noise_n = _integers(given, 0, 10_000)
    if noise_n is None:
        return None
    it = iter(noise_n)
    noise_n = [next(it) if t else None for t in noise]
    seen.update(ids)
    return list(map(CaseRow._make, zip(ids, split, cols["image_path"], cols["mask_path"], h, w,
                                     map(_flag, cols.get("corrupted", blank)),
                                         [t[:32] for t in cols.get("noise_op", blank)], noise_n, strict=True)))


def _fast_score_rows(table: _Table) -> list[ScoreRow] | None:
    cols = table.columns()
    if cols is None:
        return None
    n, blank = len(table.rows), [""] * len(table.rows)
    ids = cols["id"]
    if not _safe_unique(ids, set()):
        return None
    rank, suspicion = _numbers(cols["rank"]), _numbers(cols["suspicion"])
    if rank is None or suspicion is None or (n and np.abs(rank).max() >= 2 ** 62):
        return None
    floats = [_optional_numbers(cols.get(c, blank)) for c in ("uncertainty", "disagreement", "dice_given_corrected")]
    extra = _integers([t or "0" for t in cols.get("extra_pieces", blank)], 0, 1_000_000)
    if extra is None or any(f is None for f in floats):
        return None
    rows = list(map(ScoreRow._make, zip(ids, rank.astype(np.int64).tolist(), suspicion.tolist(), *floats,
                                        map(_flag, cols.get("corrupted", blank)), extra, strict=True)))
    return sorted(rows, key=attrgetter("rank"))


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


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector paused while a large table becomes rows: the rows hold no cycles, yet each
    collection the new objects set off walks every object of the process (napari's too), which took more than half
    of reading 100,000 rows."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def case_rows(path: Path, seen: set[str], max_pixels: int) -> list[CaseRow]:
    """cases.csv or held_out.csv; ``seen`` collects the ids (a duplicate across both files is refused)."""
    with paused_gc():
        table = _read(path, ("id", "image_path", "mask_path", "orig_h", "orig_w"))
        fast = _fast_case_rows(table, seen, max_pixels)
        return fast if fast is not None else _case_rows(table, seen, max_pixels)


def _case_rows(table: _Table, seen: set[str], max_pixels: int) -> list[CaseRow]:
    path, out = table.path, []
    for line, r in table.records():
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
    with paused_gc():
        table = _read(path, ("id", "rank", "suspicion"))
        fast = _fast_score_rows(table)
        return fast if fast is not None else _score_rows(table)


def _score_rows(table: _Table) -> list[ScoreRow]:
    path, out, seen = table.path, [], set()
    for line, r in table.records():
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
    line["keep"] = end.keep  # TrainConfig.keep_auto's estimate (None: none, or the setting off): a resume goes on
    return line


def csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()
