"""Writing an export's files: each planned image's copy and mask, by this thread or a pool of worker threads.

Every file is written under the export's hidden temporary folder without an fsync of its own; once all are
written, one concurrent fsync pass (atomic.sync_files) makes them durable before the manifest is written and the
folder is renamed to its destination (export.py). The files do not depend on who wrote them: a pool gives the
same bytes as one process, in the same manifest order.

The workers are threads: the heavy parts (PNG decode and encode, zlib, numpy, file I/O) release the GIL.
Processes were tried and dropped: forking the exporting process, which holds other threads (napari's, a test
runner's), left workers waiting forever on a lock one of them held at the fork (seen in the test suite), and a
fork server or spawn re-imports the caller's main module (a user's script without a main guard then fails).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import runs
from .atomic import encode_png, fsync_dir, sync_files, write_new
from .data import DataError, read_image, read_mask
from .eta import format_seconds
from .native_correction import corrected_mask, uses_original
from .postprocess import extra_pieces

MANIFEST_FIELDS = [
    "id", "split", "mask_source", "suspicion", "status", "reviewer", "time", "image_file", "mask_file", "comment",
]
MAX_WORKERS = 64
_PER_WORKER = 32  # images each worker should have at least: below that a pool costs more than it saves


class ExportError(ValueError):
    """The export cannot be done safely or the run is incomplete; the message says which file or folder."""


@dataclass(frozen=True)
class ExportProgress:
    """``done`` of ``total`` images written (excluded ones are not counted), ``seconds`` since the first."""

    done: int
    total: int
    seconds: float

    def text(self) -> str:
        """"exporting 1200/50000 images · 310/s · about 2 min 37 s left" for a status line."""
        rate = self.done / self.seconds if self.done and self.seconds > 0 else None
        tail = f" · {rate:.0f}/s" if rate else ""
        if rate and self.done < self.total:
            tail += f" · about {format_seconds((self.total - self.done) / rate)} left"
        return f"exporting {self.done}/{self.total} images{tail}"


@dataclass
class Item:
    """One planned image of the export (export_plan.py): where its files come from and its manifest row."""

    id: str
    split: str
    image_src: Path
    image_name: str
    mask_source: str
    mask_src: Path  # the original mask file, or the run's training-size mask
    orig_mask: Path
    orig_shape: tuple[int, int]
    status: str = ""
    suspicion: float | None = None
    reviewer: str = ""
    time: str = ""
    comment: str = ""


def default_workers(n_images: int) -> int:
    """Worker threads for an export of ``n_images``: one per core (at most 4), fewer for a small export, 1
    (this process) below two workers' worth."""
    return max(1, min(os.cpu_count() or 1, 4, n_images // _PER_WORKER))


def upsample_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D mask to ``shape`` by nearest neighbour (pixel centres), keeping it strictly binary.

    Equivalent to ``skimage.transform.resize(order=0)`` without anti-aliasing; exact integer factors give a
    block copy (each training pixel becomes a k x k block).
    """
    h, w = mask.shape
    out_h, out_w = shape
    if (h, w) == (out_h, out_w):
        return mask.copy()
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def _write_file(path: Path, data: bytes) -> None:
    """Create a new file (never overwrite); made durable later, with the others (sync_files). A full disk is
    one line (DiskFullError)."""
    write_new(path, data, sync=False)


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:  # originals: read-only, always
        return fh.read()


def csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in fields})
    return buf.getvalue()


def _mask(item: Item, run: runs.RunFolder, cleanup: bool) -> np.ndarray:
    """The exported mask at the radiograph's own size: a correction is made at that size as the Review widget
    shows it (crl_napari.native_correction: the original mask's border moved as the nets agree, or the
    training-size probability resampled smoothly), then cleaned up, never a binary mask blown up in blocks; an
    edit drawn at the original size is written unchanged (one drawn at training size by an older
    version is upsampled by nearest neighbour; any other size is refused); an original is as it is."""
    try:
        if item.mask_source in ("corrected", "corrected_by_policy"):
            try:
                drawn = read_mask(item.orig_mask) if uses_original(run, item.id, item.orig_shape) else None
                return corrected_mask(run, item.id, item.orig_shape, drawn, cleanup=cleanup)
            except runs.RunError as exc:
                raise ExportError(f"cannot export the correction of {item.id!r}: {exc}") from exc
        mask = read_mask(item.mask_src)
    except DataError as exc:
        raise ExportError(f"cannot export the mask of {item.id!r}: {exc}") from exc
    if item.mask_source == "original" or mask.shape == tuple(item.orig_shape):
        return mask
    size = run.config["data"]["size"]
    if mask.shape != (size, size):
        raise ExportError(f"{item.mask_src}: the edit of {item.id!r} is {mask.shape[0]} x {mask.shape[1]} px; "
                          f"expected the original size {item.orig_shape[0]} x {item.orig_shape[1]} "
                          f"(or the training size {size} x {size})")
    return upsample_nearest(mask, item.orig_shape)


def _files(tmp: Path, item: Item) -> tuple[Path, Path]:
    return tmp / "images" / item.image_name, tmp / "masks" / f"{item.id}.png"


def _write_item(tmp: Path, item: Item, run: runs.RunFolder, cleanup: bool) -> int:
    """Write one image's copy and mask; 1 when it is a correction with more than two pieces (worth a look)."""
    image_file, mask_file = _files(tmp, item)
    try:  # an original must be an image (a tampered cases.csv may name any readable file)
        read_image(item.image_src)
    except DataError as exc:
        raise ExportError(f"cannot export the image of {item.id!r}: {exc}") from exc
    _write_file(image_file, _read_bytes(item.image_src))
    mask = _mask(item, run, cleanup)
    _write_file(mask_file, encode_png(mask.astype(np.uint8) * 255))
    return int(item.mask_source.startswith("corrected") and extra_pieces(mask) > 0)


def _written(tmp: Path, items: list[Item], run: runs.RunFolder, cleanup: bool, workers: int) -> Iterator[int]:
    """Each item's extra-pieces flag, in order, as its files are written (here or by ``workers`` threads, at
    most a few items ahead of the one handed back, so memory stays bounded)."""
    if workers <= 1:
        for it in items:
            yield _write_item(tmp, it, run, cleanup)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(workers) as pool:
        try:
            for it in items:
                pending.append(pool.submit(_write_item, tmp, it, run, cleanup))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # no worker writes into the folder once this returns (export removes it on an error)
            for f in pending:
                f.cancel()


def build(tmp: Path, items: list[Item], run: runs.RunFolder, cleanup: bool, workers: int = 1,
          progress: Callable[[ExportProgress], object] | None = None, every: float = 0.5) -> int:
    """Write every file into the temporary folder ``tmp`` and make it durable; return how many exported
    corrections have more than two pieces. ``progress`` gets an ExportProgress at most every ``every`` seconds
    and at the end."""
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    todo = [it for it in items if it.status != "excluded"]
    extra = done = 0
    t0 = last = time.monotonic()
    for flag in _written(tmp, todo, run, cleanup, workers):
        extra += flag
        done += 1
        if progress is not None and (time.monotonic() - last >= every or done == len(todo)):
            last = time.monotonic()
            progress(ExportProgress(done, len(todo), last - t0))
    sync_files([(f, f) for it in todo for f in _files(tmp, it)])
    manifest, splits = [], []
    for it in items:
        row = {"id": it.id, "split": it.split, "mask_source": it.mask_source, "status": it.status,
               "suspicion": "" if it.suspicion is None else repr(float(it.suspicion)), "reviewer": it.reviewer,
               "time": it.time, "image_file": "", "mask_file": "", "comment": it.comment}
        if it.status != "excluded":
            row.update(image_file=f"images/{it.image_name}", mask_file=f"masks/{it.id}.png")
            splits.append({"id": it.id, "split": it.split})
        manifest.append(row)
    write_new(tmp / "manifest.csv", csv_text(manifest, MANIFEST_FIELDS).encode("utf-8"))
    write_new(tmp / "split.csv", csv_text(splits, ["id", "split"]).encode("utf-8"))
    for folder in (tmp / "images", tmp / "masks", tmp):
        fsync_dir(folder)
    return extra
