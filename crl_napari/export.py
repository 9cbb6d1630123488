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

The work is split in three: export_plan.py decides every image's files, export_files.py writes them (``workers``
threads; the same bytes however many), and this module checks the destination and puts the folder in place.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import runs
from .atomic import fsync_dir, pid_alive
from .export_files import MANIFEST_FIELDS, MAX_WORKERS, ExportError, ExportProgress, default_workers, upsample_nearest
from .export_files import build as _build
from .export_plan import open_run as _open_run
from .export_plan import plan as _plan
from .review import ReviewError, ReviewSession
from .scoring import UNREVIEWED, recommended_threshold

__all__ = ["MASK_SOURCES", "MANIFEST_FIELDS", "ExportError", "ExportProgress", "ExportReport", "export",
           "upsample_nearest"]

#: Values of the manifest's ``mask_source`` column.
MASK_SOURCES = ("original", "corrected", "edited", "corrected_by_policy")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the folder, the number of image/mask pairs, how many masks came from where."""

    dest: Path
    n_images: int
    counts: dict[str, int] = field(default_factory=dict)  # mask_source -> n (every source, zeros included)
    excluded: int = 0  # images the reviewer excluded: in the manifest only
    extra_pieces: int = 0  # exported corrections with more than two pieces (two lungs): worth a look
    threshold: float | None = None  # the suspicion above which unreviewed corrections were accepted

    @property
    def manifest(self) -> Path:
        return self.dest / "manifest.csv"

    def summary(self) -> str:
        """One line for the command line / a status bar."""
        parts = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        left_out = f"; {self.excluded} excluded" if self.excluded else ""
        pieces = f"; {self.extra_pieces} correction(s) with more than two pieces" if self.extra_pieces else ""
        t = self.threshold
        above = "" if t is None else f"; unreviewed corrections accepted at suspicion >= {t:.3f}"
        return f"exported {self.n_images} images to {self.dest} ({parts}{left_out}{pieces}{above})"


def _check_policy(unreviewed: str, threshold: float | None) -> float | None:
    """``threshold`` as a float (or None) for the policy ``unreviewed``; ExportError for a bad pair."""
    if unreviewed not in UNREVIEWED:
        raise ExportError(f"unreviewed must be one of {', '.join(UNREVIEWED)}, got {unreviewed!r}")
    if unreviewed == "accept_above":
        if threshold is not None and not math.isfinite(float(threshold)):
            raise ExportError("unreviewed='accept_above' needs a finite threshold on the suspicion score")
        return None if threshold is None else float(threshold)
    if threshold is not None:
        raise ExportError("threshold only applies with unreviewed='accept_above'")
    return None


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


# -------------------------------------------------------------------------------------------- export


def export(
    run_dir: str | Path,
    dest: str | Path,
    unreviewed: str | None = None,
    threshold: float | None = None,
    data_root: str | Path | None = None,
    cleanup: bool = True,
    workers: int | None = None,
    progress: Callable[[ExportProgress], object] | None = None,
) -> ExportReport:
    """Write the cleaned dataset of ``run_dir`` to the new folder ``dest``; see the module docstring.

    ``cleanup`` removes islands below 1 % of a correction's area and fills its holes (postprocess.clean_mask;
    on by default: it removed every such island at no cost in Dice in benchmarks/results/native_res.md).

    ``unreviewed`` decides pending images: "keep" (original mask) or "accept_above" (corrected mask when
    suspicion >= ``threshold``; None: the run's recommended one, scoring.recommended_threshold, as the Review
    widget's default); None: what the review chose, the choice its queue was ordered for
    (ReviewSession.unreviewed: review.default_unreviewed when it chose nothing). ``data_root`` is the data
    folder (``images/``, ``masks/``) when it is no longer where cases.csv says (the run moved machines); files are
    then found by name. Raises ExportError before writing anything when the export would be unsafe or the run is
    incomplete.

    ``workers`` threads write the images' files (None: export_files.default_workers, one per core up to 4 for
    a large export; 1: this process); the output is the same whatever the number. ``progress`` is called with an
    ExportProgress as images are written.
    """
    run_dir = Path(run_dir).expanduser()
    dest = Path(dest).expanduser()
    if unreviewed is not None:
        threshold = _check_policy(unreviewed, threshold)
    if workers is not None and (type(workers) is not int or not 1 <= workers <= MAX_WORKERS):
        raise ExportError(f"workers must be a whole number in [1, {MAX_WORKERS}], got {workers!r}")
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
    if unreviewed is None:  # the review's choice (its queue was made for it)
        unreviewed = session.unreviewed
        threshold = _check_policy(unreviewed, threshold)
    if unreviewed == "accept_above" and threshold is None:
        threshold = recommended_threshold([r["suspicion"] for r in session.rows])  # as the Review widget's
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
        n_files = sum(it.status != "excluded" for it in items)
        extra = _build(tmp, items, run, cleanup, default_workers(n_files) if workers is None else workers, progress)
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
                        extra_pieces=extra, threshold=threshold)


def _remove_stale_partials(dest: Path) -> None:
    """Remove the ``.<dest name>.partial-<pid>`` folders of exports that were killed (their process is gone):
    they hold copies of patient images nobody will finish. Exports still running are left alone."""
    prefix = f".{dest.name}.partial-"
    for p in dest.parent.iterdir():
        pid = p.name[len(prefix):]
        if (p.name.startswith(prefix) and pid.isdigit() and p.is_dir() and not p.is_symlink()
                and not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


