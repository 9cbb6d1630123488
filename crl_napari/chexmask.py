"""CheXmask-style masks: one CSV row per image, the left and right lung run-length encoded, the image's Height and
Width. This is how large automatic mask sets are published (the CheXmask database: 650,000+ chest X-ray masks),
the kind of set this tool exists to clean.

The encoding is CheXmask's: space-separated ``start length`` pairs over the row-major pixels, starts counted
from 1. :func:`write_mask_folder` turns such a CSV into the project's ``masks/<id>.png`` layout (both lungs in one
mask), so a data folder is ``images/`` plus the converted ``masks/``. A CSV may come from anyone: every size,
run and id is checked before anything is allocated or written, and each problem is one DataError naming the
file and line.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_write_png
from .ids import UnsafeIdError, check_id
from .image_files import MAX_PIXELS, DataError

__all__ = ["ID_COLUMNS", "LUNG_COLUMNS", "rle_encode", "rle_decode", "read_masks", "write_mask_folder"]

#: The image id column: the first of these present (CheXmask names it after each source data set), else the
#: first column of the file.
ID_COLUMNS = ("id", "Image ID", "ImageID", "image_id", "dicom_id", "Path", "Image")
LUNG_COLUMNS = ("Left Lung", "Right Lung")
SIZE_COLUMNS = ("Height", "Width")


def rle_encode(mask: np.ndarray) -> str:
    """``start length`` pairs (starts from 1) of the foreground runs of a 2-D mask, row-major."""
    flat = np.concatenate([[0], np.asarray(mask, bool).ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def rle_decode(text: str, height: int, width: int, where: str = "") -> np.ndarray:
    """The bool (height, width) mask of an encoding; DataError (naming ``where``) for anything malformed."""
    prefix = f"{where}: " if where else ""
    out = np.zeros(height * width, bool)
    parts = text.split()
    if len(parts) % 2:
        raise DataError(f"{prefix}run-length encoding has an odd number of values")
    try:
        runs = np.asarray(parts, dtype=np.int64).reshape(-1, 2)
    except (ValueError, OverflowError):
        raise DataError(f"{prefix}run-length encoding holds a value that is not a whole number") from None
    if len(runs) and ((runs[:, 0] < 1).any() or (runs[:, 1] < 1).any()
                      or (runs[:, 0] - 1 + runs[:, 1] > height * width).any()):
        raise DataError(f"{prefix}a run lies outside the {width}x{height} image (starts count from 1)")
    for start, length in runs:
        out[start - 1:start - 1 + length] = True
    return out.reshape(height, width)


def _size(row: dict, where: str, max_pixels: int) -> tuple[int, int]:
    try:
        h, w = (int(float(row[c])) for c in SIZE_COLUMNS)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: Height and Width must be whole numbers") from None
    if h < 1 or w < 1 or h * w > max_pixels:
        raise DataError(f"{where}: a {w}x{h} mask is outside the pixel budget (1 to {max_pixels} pixels)")
    return h, w


def _image_id(raw: str, where: str) -> str:
    """The id a mask file is named by: the file name's stem when the column holds a path or a file name."""
    name = Path(raw.strip().replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    try:
        return check_id(stem, where)
    except UnsafeIdError as exc:
        raise DataError(str(exc)) from None


def read_masks(path: str | Path, max_pixels: int = MAX_PIXELS) -> Iterator[tuple[str, np.ndarray]]:
    """(image id, bool mask of both lungs) per row of a CheXmask-style CSV, one row at a time (a CheXmask file
    has hundreds of thousands of rows: never all in memory)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the mask table ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in (*LUNG_COLUMNS, *SIZE_COLUMNS) if c not in columns]
    if missing:
        raise DataError(f"{path}: not a CheXmask-style table: no column(s) {', '.join(missing)}")
    id_column = next((c for c in ID_COLUMNS if c in columns), columns[0])
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        where = f"{path}: line {line}"
        image_id = _image_id(row.get(id_column) or "", where)
        if image_id in seen:
            raise DataError(f"{where}: image id {image_id!r} appears twice")
        seen.add(image_id)
        h, w = _size(row, where, max_pixels)
        mask = np.zeros((h, w), bool)
        for column in LUNG_COLUMNS:
            mask |= rle_decode(row.get(column) or "", h, w, f"{where}: {column}")
        yield image_id, mask


def write_mask_folder(path: str | Path, dest: str | Path, max_pixels: int = MAX_PIXELS) -> int:
    """Write every mask of the table ``path`` as ``dest/<id>.png`` (0/255); returns how many. ``dest`` must not
    exist yet (masks a user made are never written over); it appears whole or not at all: the masks are written
    into a temporary folder beside it, renamed at the end, and removed if any row is bad."""
    dest = Path(dest)
    if dest.exists():
        raise DataError(f"{dest}: already exists; choose a new folder for the masks")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    n = 0
    try:
        for image_id, mask in read_masks(path, max_pixels):
            atomic_write_png(tmp / f"{image_id}.png", mask)
            n += 1
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
