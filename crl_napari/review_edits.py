"""The reviewer's drawings in ``RUN/edits/``: where each lives, which sizes a drawing may have, and its write,
which keeps the drawing it replaces for undo (``edits/.undo/<id>.<token>.png``) and can be rolled back when
review.json could not record it. The decisions themselves are crl_napari.review's."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from . import ids, runs
from .atomic import atomic_write_bytes, atomic_write_png, fsync_dir
from .review_file import EDITS_DIR, UNDO_DIR, ReviewError

__all__ = ["EditFiles"]


def _mkdir_durable(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


class EditFiles:
    """The edit files of one run folder (ids are checked by the session before they get here)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._native_shapes: dict[str, tuple[int, int]] | None = None  # read from cases.csv at the first edit

    def path(self, image_id: str) -> Path:
        """Where the edited mask of ``image_id`` lives (whether or not it exists)."""
        return self._inside(f"{EDITS_DIR}/{image_id}.png")

    def binary(self, image_id: str, mask: np.ndarray) -> np.ndarray:
        """``mask`` as a bool drawing (anything > 0 is lung), refused unless it is at the original image's size
        (``orig_h`` x ``orig_w`` in cases.csv) or at the training size of the given mask."""
        arr = np.asarray(mask)
        if arr.dtype == bool:
            binary = arr
        elif np.issubdtype(arr.dtype, np.number):
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise ValueError(f"edited mask for {image_id!r} contains NaN or infinite values")
            binary = arr > 0
        else:
            raise TypeError(f"edited mask for {image_id!r}: expected bool or numbers, not {arr.dtype}")
        native, training = self._native_shape(image_id), self._mask_shape(image_id)
        if binary.shape not in (native, training):
            expected = f"{native} (the original image's size)" if native else f"{training} (the given mask's)"
            also = f", or {training} (the training size)" if native and native != training else ""
            raise ValueError(f"edited mask for {image_id!r} has shape {binary.shape}, expected {expected}{also}")
        return binary

    def write(self, image_id: str, binary: np.ndarray) -> str | None:
        """Store the drawing as ``edits/<id>.png`` (0/255); returns where the drawing it replaced was kept
        (relative to the run), or None when there was none."""
        target = self.path(image_id)
        _mkdir_durable(target.parent)
        backup = None
        if target.exists():
            _mkdir_durable(target.parent / UNDO_DIR)
            backup = f"{EDITS_DIR}/{UNDO_DIR}/{image_id}.{secrets.token_hex(6)}.png"
            atomic_write_bytes(self._inside(backup), target.read_bytes())
        atomic_write_png(target, binary.astype(np.uint8) * 255)
        return backup

    def roll_back(self, image_id: str, backup: str | None) -> None:
        """Undo :meth:`write`: the previous drawing back (or none, as before)."""
        target = self.path(image_id)
        if backup is not None:
            atomic_write_bytes(target, (self.run_dir / backup).read_bytes())
            os.unlink(self.run_dir / backup)
        else:
            os.unlink(target)

    def _inside(self, relative: str) -> Path:
        """A path inside the run for writing, refusing links out of it (see crl_napari.runs.inside)."""
        try:
            return runs.inside(self.run_dir, *relative.split("/"))
        except runs.RunError as exc:
            raise ReviewError(str(exc)) from None

    def _native_shape(self, image_id: str) -> tuple[int, int] | None:
        """The original image's (H, W) from cases.csv, or None where the run has none (a folder of scores)."""
        if self._native_shapes is None:
            try:
                has = all((self.run_dir / f).is_file() for f in (runs.CONFIG, runs.CASES))
                rows = runs.RunFolder(self.run_dir).case_rows() if has else []
            except (runs.RunError, ids.UnsafeIdError) as exc:
                raise ReviewError(str(exc)) from None
            self._native_shapes = {r.id: (r.orig_h, r.orig_w) for r in rows}
        return self._native_shapes.get(image_id)

    def _mask_shape(self, image_id: str) -> tuple[int, ...]:
        import imageio.v3 as iio

        for sub in (runs.GIVEN, runs.CORRECTED):
            p = self.run_dir / sub / f"{image_id}.png"
            if p.is_file():
                try:
                    arr = np.asarray(iio.imread(p))
                except Exception as exc:
                    raise ReviewError(f"{p}: unreadable mask ({exc})") from exc
                return tuple(arr.shape[:2])
        given = self.run_dir / runs.GIVEN / f"{image_id}.png"
        raise ReviewError(f"{given}: missing (needed to check the size of the edited mask)")
