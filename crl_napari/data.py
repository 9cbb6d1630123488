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

A folder is scanned (:func:`scan_dataset`, no pixel decoded: the folder's rules, in data_folder.py), then each
pair decoded (:func:`decode_pair`): :func:`load_dataset` holds the result in memory, the run's on-disk cache
(cache.py) streams it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data_folder import SPLIT_VALUES, Listing, Pair, _Problem, scan_dataset  # noqa: F401  (re-exported)
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
    "Listing",
    "Pair",
    "conclude",
    "decode_pair",
    "load_dataset",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "scan_dataset",
    "zscore",
]



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
    always raise. Cases are ordered by id. Without split.csv every ``Case.split`` is None (all are trained
    on). Empty masks load, with a warning. A file whose
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
