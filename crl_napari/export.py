"""Export the cleaned dataset of a reviewed run: original images, the chosen masks, and a manifest.

Layout of ``dest`` (loadable again with :func:`crl_napari.data.load_dataset`)::

    dest/images/<id><ext> byte copy of the original image file (its own extension)
    dest/masks/<id>.png   0/255 mask at the original image size
    dest/manifest.csv     id,split,mask_source,suspicion,status,reviewer,time,image_file,mask_file,comment
    dest/split.csv        id,split

Mask per image (``mask_source`` in the manifest):

* accepted            -> the correction at the original size ("corrected"): the run's probability resampled
  smoothly, thresholded and cleaned up (:func:`crl_napari.native.native_mask`);
* edited              -> ``RUN/edits/<id>.png`` ("edited"), drawn at the original size and written unchanged
  (an edit drawn at training size by an older version: nearest-neighbour up-sampled);
* kept                -> the original mask file named in ``RUN/cases.csv`` ("original"), binarised to 0/255
  at its own resolution;
* pending or flagged  -> ``unreviewed="keep"``: the original; ``unreviewed="accept_above"``: the corrected
  mask when suspicion >= ``threshold`` ("corrected_by_policy"), else the original;
* excluded            -> no image and no mask: listed in manifest.csv only (status "excluded", empty
  mask_source and files), with the reviewer's comment; left out of split.csv;
* not scored (the test split, listed in ``RUN/held_out.csv``, or any case missing from scores.csv) -> the
  original, with an empty status.

Safety, because this is the step that produces the data people train on next:

* ``dest`` may not be, lie inside, or contain the run folder or the source data (config.json ``data.root``,
  ``data_root``, and the folders of every image/mask listed in cases.csv);
* ``dest`` must not exist, or be an empty folder;
* every id must be a safe file name (see :func:`crl_napari.ids.check_id`), checked before anything is
  written, so a tampered cases.csv/scores.csv cannot make us write outside ``dest``;
* originals are read only from the data root (config.json's or ``data_root``), only image types that decode
  as images (:meth:`crl_napari.runs.RunFolder.original`), so a tampered cases.csv cannot export any file;
* everything is built in a hidden sibling ``.<dest name>.partial-<pid>`` and renamed to ``dest`` only when
  complete; on any error that folder is removed, so ``dest`` is either absent or whole; a process killed
  mid-export (SIGKILL, power cut) leaves that hidden folder behind, and the next export to the same ``dest``
  removes it (when no process with that id runs any more on this machine);
* originals are only ever opened for reading.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import runs
from .atomic import encode_png, fsync_dir, pid_alive, write_new
from .data import DataError, read_image, read_mask
from .ids import UnsafeIdError
from .native import native_mask
from .postprocess import extra_pieces
from .review import ReviewError, ReviewSession

__all__ = ["MASK_SOURCES", "MANIFEST_FIELDS", "ExportError", "ExportReport", "export", "upsample_nearest"]

#: Values of the manifest's ``mask_source`` column.
MASK_SOURCES = ("original", "corrected", "edited", "corrected_by_policy")
MANIFEST_FIELDS = [
    "id", "split", "mask_source", "suspicion", "status", "reviewer", "time", "image_file", "mask_file", "comment",
]
_POLICIES = ("keep", "accept_above")
_SAFE_EXT = re.compile(r"^[A-Za-z0-9._-]*$")


class ExportError(ValueError):
    """The export cannot be done safely or the run is incomplete; the message says which file or folder."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the folder, the number of image/mask pairs, how many masks came from where."""

    dest: Path
    n_images: int
    counts: dict[str, int] = field(default_factory=dict)  # mask_source -> n (every source, zeros included)
    excluded: int = 0  # images the reviewer excluded: in the manifest only
    extra_pieces: int = 0  # exported corrections with more than two pieces (two lungs): worth a look

    @property
    def manifest(self) -> Path:
        return self.dest / "manifest.csv"

    def summary(self) -> str:
        """One line for the command line / a status bar."""
        parts = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        left_out = f"; {self.excluded} excluded" if self.excluded else ""
        pieces = f"; {self.extra_pieces} correction(s) with more than two pieces" if self.extra_pieces else ""
        return f"exported {self.n_images} images to {self.dest} ({parts}{left_out}{pieces})"


@dataclass
class _Item:
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


# ---------------------------------------------------------------------------------------- the run's files


def _open_run(run_dir: Path) -> tuple[runs.RunFolder, list[dict[str, Any]]]:
    """The run and its cases (cases.csv, then held_out.csv) through the gateway, which checks config.json and
    every case line; its errors become ExportError."""
    try:
        run = runs.RunFolder(run_dir)
        return run, [_case_dict(c) for c in run.case_rows(held_out=True)]
    except (runs.RunError, UnsafeIdError) as exc:
        raise ExportError(str(exc)) from None


def _case_dict(c: runs.CaseRow) -> dict[str, Any]:
    return {"id": c.id, "split": c.split, "image_path": c.image_path, "mask_path": c.mask_path,
            "orig_shape": (c.orig_h, c.orig_w)}


def _image_name(image_id: str, src: Path) -> str:
    """``<id><ext>`` keeping the original extension (also multi-dot ones, and none for bare DICOM names)."""
    name = src.name
    ext = name[len(image_id):] if name.startswith(image_id) else src.suffix
    if not _SAFE_EXT.match(ext):
        ext = src.suffix if _SAFE_EXT.match(src.suffix) else ""
    return f"{image_id}{ext}"


# ------------------------------------------------------------------------------------------ the safety


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_dest(dest: Path, protected: list[tuple[Path, str]]) -> None:
    resolved = dest.resolve()
    for p, what in protected:
        p = p.resolve()
        if _within(resolved, p):
            raise ExportError(f"{dest}: refusing to export into {what} ({p}); choose a folder outside it")
        if _within(p, resolved):
            raise ExportError(f"{dest}: refusing to export to a folder that contains {what} ({p})")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ExportError(f"{dest}: exists and is not a folder; choose a new folder name")
    if dest.is_dir() and any(dest.iterdir()):
        raise ExportError(f"{dest}: exists and is not empty; choose a new or an empty folder")


# ------------------------------------------------------------------------------------------- writing


def _write_file(path: Path, data: bytes) -> None:
    """Create a new file (never overwrite) and make it durable; a full disk is one line (DiskFullError)."""
    write_new(path, data)


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:  # originals: read-only, always
        return fh.read()


def _csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in fields})
    return buf.getvalue()


def _mask(item: _Item, run: runs.RunFolder, cleanup: bool) -> np.ndarray:
    """The exported mask at the radiograph's own size: a correction is the run's training-size probability
    resampled smoothly and thresholded, then cleaned up (crl_napari.native), never a binary mask blown up in
    blocks; an edit drawn at the original size is written unchanged (one drawn at training size by an older
    version is upsampled by nearest neighbour; any other size is refused); an original is as it is."""
    try:
        if item.mask_source in ("corrected", "corrected_by_policy"):
            try:
                return native_mask(run.prob(item.id), item.orig_shape, cleanup=cleanup)
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


# -------------------------------------------------------------------------------------------- export


def export(
    run_dir: str | Path,
    dest: str | Path,
    unreviewed: str = "keep",
    threshold: float | None = None,
    data_root: str | Path | None = None,
    cleanup: bool = True,
) -> ExportReport:
    """Write the cleaned dataset of ``run_dir`` to the new folder ``dest``; see the module docstring.

    ``cleanup`` removes islands below 1 % of a correction's area and fills its holes (postprocess.clean_mask;
    on by default: it removed every such island at no cost in Dice in benchmarks/results/native_res.md).

    ``unreviewed`` decides pending images: "keep" (original mask) or "accept_above" (corrected mask when
    suspicion >= ``threshold``). ``data_root`` is the data folder (``images/``, ``masks/``) when it is no
    longer where cases.csv says (the run moved machines); files are then found by name. Raises ExportError
    before writing anything when the export would be unsafe or the run is incomplete.
    """
    run_dir = Path(run_dir).expanduser()
    dest = Path(dest).expanduser()
    if unreviewed not in _POLICIES:
        raise ExportError(f"unreviewed must be one of {', '.join(_POLICIES)}, got {unreviewed!r}")
    if unreviewed == "accept_above":
        if threshold is None or not math.isfinite(float(threshold)):
            raise ExportError("unreviewed='accept_above' needs a finite threshold on the suspicion score")
        threshold = float(threshold)
    elif threshold is not None:
        raise ExportError("threshold only applies with unreviewed='accept_above'")
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: run folder does not exist")
    data_root = Path(data_root).expanduser() if data_root is not None else None
    if data_root is not None and not data_root.is_dir():
        raise ExportError(f"{data_root}: data folder does not exist")

    run, cases = _open_run(run_dir)
    config_root = run.data_root
    try:
        session = ReviewSession.open(run_dir, reviewer="export")
    except ReviewError as exc:
        raise ExportError(str(exc)) from exc
    by_id = {c["id"]: c for c in cases}
    unknown = [i for i in session.ids if i not in by_id]
    if unknown:
        raise ExportError(
            f"{run_dir / runs.SCORES}: id(s) not in {runs.CASES}: {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else "")
        )

    items, problems = _plan(run, session, cases, unreviewed, threshold, data_root)
    if problems:
        hint = "" if data_root is not None else " (if the data moved, pass data_root=<folder with images/>)"
        shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise ExportError(f"{len(problems)} file(s) missing for the export{hint}:\n  {shown}")

    protected: list[tuple[Path, str]] = [(run_dir, "the run folder")]
    if config_root is not None:
        protected.append((config_root, "the source data folder"))
    if data_root is not None:
        protected.append((data_root, "the source data folder"))
    folders = {p.parent for it in items if it.status != "excluded" for p in (it.image_src, it.orig_mask)}
    for folder in sorted(folders):
        protected.append((folder, "a source image/mask folder"))
        protected.append((folder.parent, "a source data folder"))
    _check_dest(dest, protected)

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    if tmp.exists():  # left by an earlier crash of this very process id
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        extra = _build(tmp, items, run, cleanup)
        try:
            if dest.is_dir():
                dest.rmdir()  # an empty folder the user made for us (non-empty was refused above)
            os.rename(tmp, dest)
        except OSError as exc:  # another export got there first (ENOTEMPTY / EEXIST): theirs stays whole
            if dest.exists():
                raise ExportError(f"{dest}: another export finished there first; this one left nothing behind "
                                  "(choose a new folder to export again)") from exc
            raise
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {s: 0 for s in MASK_SOURCES}
    for it in items:
        if it.status != "excluded":
            counts[it.mask_source] += 1
    excluded = sum(it.status == "excluded" for it in items)
    return ExportReport(dest=dest, n_images=len(items) - excluded, counts=counts, excluded=excluded,
                        extra_pieces=extra)


def _remove_stale_partials(dest: Path) -> None:
    """Remove the ``.<dest name>.partial-<pid>`` folders of exports that were killed (their process is gone):
    they hold copies of patient images nobody will finish. Exports still running are left alone."""
    prefix = f".{dest.name}.partial-"
    for p in dest.parent.iterdir():
        pid = p.name[len(prefix):]
        if (p.name.startswith(prefix) and pid.isdigit() and p.is_dir() and not p.is_symlink()
                and not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


def _plan(
    run: runs.RunFolder,
    session: ReviewSession,
    cases: list[dict[str, Any]],
    unreviewed: str,
    threshold: float | None,
    data_root: Path | None,
) -> tuple[list[_Item], list[str]]:
    """Decide every image's files before writing anything; collects every missing file at once."""
    problems: list[str] = []
    scored = set(session.ids)
    order = session.ids + [c["id"] for c in cases if c["id"] not in scored]
    by_id = {c["id"]: c for c in cases}
    items: list[_Item] = []
    names: dict[str, str] = {}
    for image_id in order:
        case = by_id[image_id]
        image_src, why_image = run.original(case["image_path"], runs.IMAGES, data_root)
        orig_mask, why_mask = run.original(case["mask_path"], "masks", data_root)
        if image_src is None:
            problems.append(f"{why_image} (original image of {image_id!r})")
        if orig_mask is None:
            problems.append(f"{why_mask} (original mask of {image_id!r})")
        split = case["split"] or ("train" if image_id in scored else "test")
        if image_id in scored and session.status(image_id) == "excluded":  # listed in the manifest, no files
            d = session.decision(image_id)
            items.append(_Item(id=image_id, split=split, image_src=Path(), image_name="", mask_source="",
                               mask_src=Path(), orig_mask=Path(), orig_shape=case["orig_shape"], status="excluded",
                               suspicion=session.row(image_id)["suspicion"], reviewer=d["reviewer"],
                               time=d["time"], comment=session.comment(image_id)))
            continue
        status, suspicion, reviewer, time = "", None, "", ""
        source, mask_src = "original", orig_mask
        if image_id in scored:
            status = session.status(image_id)
            suspicion = session.row(image_id)["suspicion"]
            decision = session.decision(image_id) or {}
            reviewer, time = decision.get("reviewer", ""), decision.get("time", "")
            if status == "accepted":
                source, mask_src = "corrected", run.corrected_path(image_id)
            elif status == "edited":
                source, mask_src = "edited", session.edit_path(image_id)
            elif status in ("pending", "flagged") and unreviewed == "accept_above" and suspicion >= threshold:
                source, mask_src = "corrected_by_policy", run.corrected_path(image_id)
            if source != "original" and not mask_src.is_file():
                problems.append(f"{mask_src}: {source} mask of {image_id!r} missing")
        if image_src is None or orig_mask is None or mask_src is None:
            continue
        image_name = _image_name(image_id, image_src)
        if image_name in names:
            problems.append(f"{image_src}: exported name {image_name!r} clashes with {names[image_name]!r}")
            continue
        names[image_name] = image_id
        items.append(_Item(id=image_id, split=split, image_src=image_src, image_name=image_name,
                           mask_source=source, mask_src=mask_src, orig_mask=orig_mask,
                           orig_shape=case["orig_shape"], status=status, suspicion=suspicion,
                           reviewer=reviewer, time=time,
                           comment=session.comment(image_id) if image_id in scored else ""))
    return items, problems


def _build(tmp: Path, items: list[_Item], run: runs.RunFolder, cleanup: bool) -> int:
    """Write every file into the temporary folder ``tmp`` and make it durable; return how many exported
    corrections have more than two pieces."""
    extra = 0
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    manifest, splits = [], []
    for it in items:
        if it.status == "excluded":
            manifest.append({"id": it.id, "split": it.split, "mask_source": "", "status": it.status,
                             "suspicion": "" if it.suspicion is None else repr(float(it.suspicion)),
                             "reviewer": it.reviewer, "time": it.time, "image_file": "", "mask_file": "",
                             "comment": it.comment})
            continue
        try:  # an original must be an image (a tampered cases.csv may name any readable file)
            read_image(it.image_src)
        except DataError as exc:
            raise ExportError(f"cannot export the image of {it.id!r}: {exc}") from exc
        _write_file(tmp / "images" / it.image_name, _read_bytes(it.image_src))
        mask = _mask(it, run, cleanup)
        extra += it.mask_source.startswith("corrected") and extra_pieces(mask) > 0
        _write_file(tmp / "masks" / f"{it.id}.png", encode_png(mask.astype(np.uint8) * 255))
        manifest.append({
            "id": it.id, "split": it.split, "mask_source": it.mask_source,
            "suspicion": "" if it.suspicion is None else repr(float(it.suspicion)), "status": it.status,
            "reviewer": it.reviewer, "time": it.time, "image_file": f"images/{it.image_name}",
            "mask_file": f"masks/{it.id}.png", "comment": it.comment,
        })
        splits.append({"id": it.id, "split": it.split})
    _write_file(tmp / "manifest.csv", _csv_text(manifest, MANIFEST_FIELDS).encode("utf-8"))
    _write_file(tmp / "split.csv", _csv_text(splits, ["id", "split"]).encode("utf-8"))
    for folder in (tmp / "images", tmp / "masks", tmp):
        fsync_dir(folder)
    return extra
