"""Read a folder of chest X-ray image/mask pairs into memory, with clear errors.

Layout::

    ROOT/images/<id>.<ext>
    ROOT/masks/<id>.<ext>   or   ROOT/masks/<id>_mask.<ext>
    ROOT/split.csv          optional: header ``id,split[,...]`` (extra columns ignored)

Supported: PNG, JPEG, TIFF, BMP (through imageio / tifffile) and DICOM (``.dcm``/``.dicom``, or any file
that carries the DICOM magic, through pydicom). Every problem is reported as a :class:`DataError` whose
message names the file and says what is wrong, because the person fixing it is looking at a folder, not
at a traceback.

Images become float32 grey values in [0, 1] (:func:`read_image`), are resized to ``size`` x ``size``
(bilinear, anti-aliased; the aspect ratio is not kept, image and mask get the same transform) and
z-scored per image. Masks become {0, 1} (:func:`read_mask`) and are resized by bilinear interpolation
thresholded at 0.5 (the nearest-neighbour result for up-sampling, a majority vote for down-sampling).

A folder is scanned (:func:`scan_dataset`, no pixel decoded), then each pair decoded (:func:`decode_pair`):
:func:`load_dataset` holds the result in memory, the run's on-disk cache (cache.py) streams it. Just over 400
lines: the folder's rules (pairing, split.csv, the verdict) read best in one place.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .ids import is_safe_id
from .image_files import (  # noqa: F401  (re-exported: data.read_image etc. are the public names)
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    DataError,
    check_pixel_budget,
    is_dicom,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    zscore,
)

__all__ = [
    "DataError",
    "Case",
    "Dataset",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "SPLIT_VALUES",
    "load_dataset",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "zscore",
]

#: Values accepted in the ``split`` column of split.csv.
SPLIT_VALUES = ("train", "val", "test")
_MASK_SUFFIX = "_mask"


# ------------------------------------------------------------------------------------- dataset


@dataclass
class Case:
    """One image/mask pair at training size, with where it came from (for provenance and export)."""

    id: str
    image: np.ndarray  # float32 (size, size), z-scored
    mask: np.ndarray  # uint8 (size, size), {0, 1}
    image_path: Path
    mask_path: Path
    split: str | None
    original_shape: tuple[int, int]


@dataclass
class Dataset:
    """The loaded pairs plus what was skipped (skip mode) and what looked odd but loaded (warnings)."""

    root: Path
    size: int
    cases: list[Case]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Case:
        return self.cases[i]

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def subset(self, split: str) -> Dataset:
        """The cases whose split is ``split`` (e.g. "train"); empty if none."""
        return replace(
            self,
            cases=[c for c in self.cases if c.split == split],
            skipped=list(self.skipped),
            warnings=list(self.warnings),
        )

    def images(self) -> np.ndarray:
        """float32 (N, 1, size, size), the network's input layout."""
        if not self.cases:
            return np.zeros((0, 1, self.size, self.size), np.float32)
        return np.stack([c.image for c in self.cases]).astype(np.float32, copy=False)[:, None]

    def masks(self) -> np.ndarray:
        """uint8 (N, size, size) in {0, 1}."""
        if not self.cases:
            return np.zeros((0, self.size, self.size), np.uint8)
        return np.stack([c.mask for c in self.cases]).astype(np.uint8, copy=False)


def _file_id(path: Path) -> str | None:
    """The id a file contributes, or None if it is not an image we read."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return path.name[: -len(path.suffix)]
    if is_dicom(path):  # DICOM without (or with an odd) extension: the whole name is the id
        return path.name
    return None


def _scan(folder: Path, warnings: list[str]) -> list[tuple[str, Path]]:
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue  # hidden files (.DS_Store, ._x.png from macOS) and sub-folders
        fid = _file_id(p)
        if fid is None:
            warnings.append(f"{p}: ignored, not a supported image type ({', '.join(IMAGE_EXTENSIONS)})")
            continue
        found.append((fid, p))
    return found


_Problem = tuple[Path, str, str | None]


def _read_split_csv(path: Path, image_ids: set[str]) -> tuple[dict[str, str], list[_Problem]]:
    """Parse split.csv -> ({id: split}, problems as (path, reason, id or None)); structural errors raise."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read split.csv ({exc})") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{path}: split.csv is empty; expected a header 'id,split'")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("id", "split") if c not in header]
    if missing:
        raise DataError(
            f"{path}: split.csv lacks column(s) {', '.join(missing)}; expected a header 'id,split[,...]', "
            f"found {','.join(rows[0])!r}"
        )
    i_id, i_split = header.index("id"), header.index("split")
    splits: dict[str, str] = {}
    problems: list[_Problem] = []
    for line_no, row in enumerate(rows[1:], start=2):
        cell_id = row[i_id].strip() if i_id < len(row) else ""
        cell_split = row[i_split].strip().lower() if i_split < len(row) else ""
        if not cell_id:
            problems.append((path, f"row {line_no}: empty id", None))
            continue
        if cell_id not in image_ids:
            problems.append((path, f"row {line_no}: unknown id {cell_id!r} (no such image in images/)", None))
            continue
        if cell_split not in SPLIT_VALUES:
            problems.append(
                (
                    path,
                    f"row {line_no}: bad split value {cell_split!r} for id {cell_id!r}; "
                    f"expected one of {', '.join(SPLIT_VALUES)}",
                    cell_id,
                )
            )
            continue
        if cell_id in splits and splits[cell_id] != cell_split:
            problems.append(
                (path, f"row {line_no}: id {cell_id!r} listed twice with different splits", cell_id)
            )
            continue
        splits[cell_id] = cell_split
    return splits, problems


@dataclass(frozen=True)
class Pair:
    """One image/mask pair found in a data folder, not decoded yet."""

    id: str
    image_path: Path
    mask_path: Path
    split: str | None


@dataclass
class Listing:
    """What :func:`scan_dataset` found: the pairs (by id) and the problems and warnings seen without decoding.

    ``problems`` holds (path, reason, id or None); a problem with an id makes that pair unusable."""

    root: Path
    pairs: list[Pair]
    problems: list[_Problem]
    warnings: list[str]


@dataclass
class Decoded:
    """One pair decoded and resized: image float32 in [0, 1] (not z-scored yet), mask uint8 {0, 1}."""

    image: np.ndarray
    mask: np.ndarray
    original_shape: tuple[int, int]


def _check_args(root: str | Path, size: int, on_error: str) -> tuple[Path, int]:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return Path(root).expanduser(), int(size)


def scan_dataset(root: str | Path) -> Listing:
    """The pairs of ``root`` (images/, masks/, optional split.csv) without decoding a pixel: the structural
    checks of :func:`load_dataset` (they raise) and its per-file problems (listed), ordered by id."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder with images/ and masks/)")
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir():
        raise DataError(
            f"{img_dir}: no images/ folder in {root} (expected images/<id>.png and masks/<id>.png)"
        )
    warnings: list[str] = []
    image_files = _scan(img_dir, warnings)
    if not image_files:
        raise DataError(f"{img_dir}: no images found (supported: {', '.join(IMAGE_EXTENSIONS)})")
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: no masks/ folder in {root} (expected masks/<id>.png or <id>_mask.png)")
    mask_files = _scan(mask_dir, warnings)

    problems: list[_Problem] = []

    images: dict[str, list[Path]] = {}
    for fid, p in image_files:
        images.setdefault(fid, []).append(p)
    masks: dict[str, list[Path]] = {}
    for stem, p in mask_files:
        if stem in images:
            target = stem
        elif stem.endswith(_MASK_SUFFIX) and stem[: -len(_MASK_SUFFIX)] in images:
            target = stem[: -len(_MASK_SUFFIX)]
        else:
            problems.append((p, f"mask without image (no images/{stem}.* for it)", None))
            continue
        masks.setdefault(target, []).append(p)

    for fid, paths in images.items():
        if not is_safe_id(fid):
            problems.append(
                (
                    paths[0],
                    f"unsafe id {fid!r}: ids may only use letters, digits, '.', '_' and '-' and may "
                    "not start with '.' or contain '..' (they become file names); rename the file",
                    fid,
                )
            )
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            problems.append((paths[0], f"duplicate id {fid!r}: several images share it ({names})", fid))
        if fid not in masks:
            problems.append(
                (paths[0], f"image without mask (expected masks/{fid}.<ext> or masks/{fid}_mask.<ext>)", fid)
            )
        elif len(masks[fid]) > 1:
            names = ", ".join(str(p) for p in masks[fid])
            problems.append((masks[fid][0], f"duplicate id {fid!r}: several masks match it ({names})", fid))

    split_path = root / "split.csv"
    splits: dict[str, str] | None = None
    if split_path.exists():
        splits, split_problems = _read_split_csv(split_path, set(images))
        problems.extend(split_problems)
        for fid in images:
            if fid not in splits and not any(pid == fid for _, _, pid in split_problems):
                problems.append((split_path, f"no row for id {fid!r} (every image needs a split)", fid))

    bad_ids = {pid for _, _, pid in problems if pid is not None}
    pairs = [Pair(fid, images[fid][0], masks[fid][0], splits.get(fid) if splits is not None else None)
             for fid in sorted(images) if fid not in bad_ids]
    return Listing(root, pairs, problems, warnings)


def decode_pair(pair: Pair, size: int, max_pixels: int | None = None) -> tuple[Decoded | None, list[_Problem],
                                                                              list[str]]:
    """Read and resize one pair: (decoded or None, its problems, its warnings): the one decode of a pair that
    :func:`load_dataset` and the run's on-disk cache (cache.py) share."""
    problems: list[_Problem] = []
    warnings: list[str] = []
    image = mask = None
    try:
        image = read_image(pair.image_path, max_pixels)
    except DataError as exc:
        problems.append((pair.image_path, _reason(exc, pair.image_path), pair.id))
    try:
        mask = read_mask(pair.mask_path, max_pixels)
    except DataError as exc:
        problems.append((pair.mask_path, _reason(exc, pair.mask_path), pair.id))
    if image is None or mask is None:
        return None, problems, warnings
    if image.shape != mask.shape:
        problems.append(
            (
                pair.mask_path,
                f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
                f"{pair.image_path} ({image.shape[1]}x{image.shape[0]})",
                pair.id,
            )
        )
        return None, problems, warnings
    if not mask.any():
        warnings.append(f"{pair.mask_path}: mask is empty (no foreground pixels); loaded as an empty mask")
    elif mask.all():
        warnings.append(f"{pair.mask_path}: mask covers the whole image")
    small = resize_mask(mask, size)
    if mask.any() and not small.any():
        warnings.append(f"{pair.mask_path}: mask becomes empty when resized to {size}x{size}")
    return Decoded(resize_image(image, size), small, (int(image.shape[0]), int(image.shape[1]))), problems, warnings


def conclude(root: Path, problems: list[_Problem], n_usable: int, on_error: str) -> list[tuple[Path, str]]:
    """The verdict on a scanned and decoded folder: raise mode refuses any problem (all listed, one per
    line), skip mode only a folder with nothing usable; returns the (path, reason) pairs skipped."""
    listed = [(p, r) for p, r, _ in problems]
    if problems and on_error == "raise":
        raise DataError(_report(root, listed), listed)
    if not n_usable:
        raise DataError(_report(root, listed, prefix="no usable image/mask pair"), listed)
    return listed


def load_dataset(root: str | Path, size: int = 256, on_error: str = "raise", max_pixels: int | None = None) -> Dataset:
    """Load ``root/images`` + ``root/masks`` (+ optional ``root/split.csv``) at ``size`` x ``size``.

    on_error="raise": every problem in the folder is collected and one DataError lists them all, one per
    line, so a user fixes the folder in one pass instead of one error per run. on_error="skip": bad pairs
    are left out and listed in ``Dataset.skipped`` as (path, reason); a DataError only if nothing loads.
    Structural problems (no folder, no images/ or masks/, no images at all, an unusable split.csv header)
    always raise. Cases are ordered by id. Without split.csv every ``Case.split`` is None (see
    :func:`random_split` and :meth:`Dataset.with_splits`). Empty masks load, with a warning. A file whose
    header claims more than ``max_pixels`` (default MAX_PIXELS) is a problem like any unreadable file.
    Holds every image in memory; the run's on-disk cache (cache.py) streams the same decode instead.
    """
    root, size = _check_args(root, size, on_error)
    listing = scan_dataset(root)
    problems, warnings = list(listing.problems), list(listing.warnings)
    cases: list[Case] = []
    for pair in listing.pairs:
        decoded, bad, warned = decode_pair(pair, size, max_pixels)
        problems += bad
        warnings += warned
        if decoded is None:
            continue
        cases.append(
            Case(
                id=pair.id,
                image=zscore(decoded.image),
                mask=decoded.mask,
                image_path=pair.image_path,
                mask_path=pair.mask_path,
                split=pair.split,
                original_shape=decoded.original_shape,
            )
        )
    listed = conclude(root, problems, len(cases), on_error)
    return Dataset(root=root, size=size, cases=cases, skipped=listed, warnings=warnings)


def _reason(exc: DataError, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _report(root: Path, problems: list[tuple[Path, str]], prefix: str | None = None) -> str:
    head = prefix or f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = [f"{head} in {root}:"] + [f"  {p}: {r}" for p, r in problems]
    return "\n".join(lines)
