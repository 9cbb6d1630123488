"""The rules of a data folder, checked without decoding a pixel: which files pair up as image and mask, which
ids are safe, and what split.csv says. :func:`crl_napari.data.load_dataset` and the run's on-disk cache
(cache.py) both start from this :func:`scan_dataset`.

Layout::

    ROOT/images/<id>.<ext>
    ROOT/masks/<id>.<ext>   or   ROOT/masks/<id>_mask.<ext>
    ROOT/split.csv          optional: header ``id,split[,...]`` (extra columns ignored)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .ids import is_safe_id
from .image_files import IMAGE_EXTENSIONS, DataError, is_dicom

__all__ = ["SPLIT_VALUES", "Listing", "Pair", "scan_dataset"]

#: Values accepted in the ``split`` column of split.csv.
SPLIT_VALUES = ("train", "val", "test")
_MASK_SUFFIX = "_mask"


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
