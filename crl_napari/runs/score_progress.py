"""Scoring that was stopped or killed goes on where it was: each scored chunk's numbers wait in the run folder.

Scoring 50,000 images at 256 px takes hours on a CPU (benchmarks/results/scale.md): a kill at 90 % should not
cost the 90 %. A chunk's maps (corrected/) are written before its numbers land here, so a chunk found here has
its maps on disk. A chunk counts only for the same nets, cases and settings (its fingerprint); anything else in
the folder (another training's chunks, a torn or tampered file) is scored again, never trusted. Rank 0 removes
the folder once scores.csv is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .errors import RunError
from .folder import inside
from .names import SCORE_PROGRESS

#: the per-image numbers a chunk keeps, with the dtype scoring gives them
COLUMNS = {"suspicion": np.float32, "uncertainty": np.float32, "disagreement": np.float32,
           "dice_given_corrected": np.float32, "extra_pieces": np.int64, "correction_dice": np.float64}
_CHUNK = re.compile(r"\d{9}\.npz")  # a chunk's file: its first case, 9 digits
_OURS = re.compile(r"(\d{9}\.npz|\.\d{9}\.npz\.\d+\.[0-9a-f]+\.tmp)")  # a chunk file, or one being written


def fingerprint(models, ids: list[str], settings: dict) -> str:
    """What a chunk's numbers depend on: every net's weights and buffers, the cases in order, and the scoring
    ``settings`` (size, tta, T, the maps kept, whether clean masks are known)."""
    import torch

    h = hashlib.sha256()
    for model in models:
        for name, value in model.state_dict().items():
            h.update(name.encode())
            h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([ids, settings], sort_keys=True, default=str).encode())
    return h.hexdigest()


class ScoreProgress:
    """The scored chunks of one scoring (``fingerprint``) in ``run_dir``'s SCORE_PROGRESS folder, one file per
    chunk, named by its first case."""

    def __init__(self, run_dir: Path | str, fingerprint: str):
        self.run_dir = Path(run_dir)
        self.fingerprint = fingerprint

    def _path(self, start: int) -> Path:
        return self.run_dir / SCORE_PROGRESS / f"{start:09d}.npz"

    def load(self, start: int, n: int) -> dict[str, np.ndarray] | None:
        """The numbers of the chunk of ``n`` cases from ``start`` when an earlier scoring of the same nets, cases
        and settings finished it; None otherwise (missing, unreadable, tampered, another fingerprint)."""
        path = self._path(start)
        if path.parent.is_symlink() or path.is_symlink() or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as part:
                if str(part["fingerprint"]) != self.fingerprint or int(part["start"]) != start:
                    return None
                out = {k: np.asarray(part[k]) for k in COLUMNS}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None
        if any(v.shape != (n,) or v.dtype.kind not in "fiu" for v in out.values()):
            return None
        return {k: v.astype(COLUMNS[k]) for k, v in out.items()}

    def prepare(self) -> None:
        """Make the folder, before anything is scored: a link or a file in its place is refused in one line."""
        folder = inside(self.run_dir, SCORE_PROGRESS)
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{folder}: is not a folder; scoring keeps its progress there: move it away")
        folder.mkdir(exist_ok=True)

    def save(self, start: int, columns: dict[str, np.ndarray]) -> None:
        """Keep a scored chunk's numbers (after its maps are written), atomically."""
        path = inside(self.run_dir, SCORE_PROGRESS, self._path(start).name)
        atomic_write(path, lambda fh: np.savez(fh, fingerprint=np.array(self.fingerprint), start=np.array(start),
                                               **{k: np.asarray(columns[k]) for k in COLUMNS}))

    def clear(self) -> None:
        """Remove the chunk files (and the temporary files of a killed write) and then the folder when nothing
        else is in it; a link or a file in its place is left alone (scoring refused to write through it)."""
        folder = self.run_dir / SCORE_PROGRESS
        if folder.is_symlink() or not folder.is_dir():
            return
        for p in folder.iterdir():
            if _OURS.fullmatch(p.name) and (p.is_file() or p.is_symlink()):
                p.unlink()
        try:
            folder.rmdir()
        except OSError:  # something else was put in it: left alone
            pass


def kept(run_dir: Path | str) -> int:
    """How many images the chunks in ``run_dir``'s SCORE_PROGRESS folder hold (whatever nets scored them), for
    `info`: a scoring that stopped partway. 0 when there is none; unreadable files count nothing."""
    folder = Path(run_dir) / SCORE_PROGRESS
    if folder.is_symlink() or not folder.is_dir():
        return 0
    n = 0
    for p in folder.iterdir():
        if not _CHUNK.fullmatch(p.name) or p.is_symlink():
            continue
        try:
            with np.load(p, allow_pickle=False) as part:
                n += int(part["suspicion"].shape[0])
        except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, zipfile.BadZipFile):
            continue
    return n
