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
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .ids import is_safe_id

__all__ = [
    "DataError",
    "Case",
    "Dataset",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "SPLIT_VALUES",
    "load_dataset",
    "random_split",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "zscore",
]

#: File extensions read as images or masks (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
_DICOM_EXTENSIONS = (".dcm", ".dicom")
_TIFF_EXTENSIONS = (".tif", ".tiff")
#: The pixel budget of one image (height x width x frames), checked from the file's header before any
#: pixel is decoded: a few kilobytes can claim 50000 x 50000 pixels and decode into gigabytes.
MAX_PIXELS = 100_000_000
#: Values accepted in the ``split`` column of split.csv.
SPLIT_VALUES = ("train", "val", "test")

_MASK_SUFFIX = "_mask"

# Tolerance for masks that went through lossy (JPEG-like) compression; see read_mask.
_LOSSY_NEAR = 0.10  # a pixel is "at an extreme" if within 10 % of the value range of the min or max
_LOSSY_FRACTION = 0.98  # ... and at least 98 % of the pixels must be at an extreme


class DataError(ValueError):
    """A problem with the user's data; the message names the file(s) and what is wrong.

    ``problems`` holds the individual ``(path, reason)`` pairs when several were collected.
    """

    def __init__(self, message: str, problems: Sequence[tuple[Path, str]] = ()) -> None:
        super().__init__(message)
        self.problems: list[tuple[Path, str]] = list(problems)


# --------------------------------------------------------------------------------------------- reading


def _is_dicom(path: Path) -> bool:
    """DICOM by extension, or by the 'DICM' magic after the 128-byte preamble (files often lack a suffix)."""
    if path.suffix.lower() in _DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _first(value: object) -> float:
    """First element of a possibly multi-valued DICOM attribute (WindowCenter '40\\400' etc.)."""
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return float(text.split("\\")[0])
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2), giving [0, 1]; None if the window is unusable."""
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None
    if width == 1:  # the standard's degenerate linear window: a threshold
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.float64)
    return (values - lo) / (hi - lo)


def _dicom_pixels(path: Path) -> tuple[np.ndarray, object]:
    import pydicom

    ds = pydicom.dcmread(str(path), force=True)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    arr = np.asarray(ds.pixel_array)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1 and arr.ndim == (3 if samples == 1 else 4):
        arr = arr[0]  # multi-frame: the first frame
    return arr, ds


def _read_dicom_image(path: Path) -> np.ndarray:
    """DICOM -> [0, 1]: modality rescale, then the VOI window if any (else min-max), MONOCHROME1 inverted."""
    arr, ds = _dicom_pixels(path)
    values = arr.astype(np.float64)
    if values.ndim == 3:  # colour DICOM (pydicom gives RGB): luminance
        return _minmax(_to_gray(values))
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    out = None
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        out = _window(values, _first(center), _first(width), function)
    elif "VOILUTSequence" in ds:
        try:
            from pydicom.pixels import apply_voi_lut
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_voi_lut
        out = _minmax(np.asarray(apply_voi_lut(values, ds), np.float64))
    if out is None:
        out = _minmax(values)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1":
        out = 1.0 - out
    return out


def _read_raw(path: Path) -> np.ndarray:
    """The stored pixel array of a non-DICOM file (first page/frame), values untouched."""
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        import tifffile

        arr = np.asarray(tifffile.imread(str(path), key=0))
        # planar RGB TIFFs come as (3, H, W)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
        return arr
    import imageio.v3 as iio

    # pillow only: no fall-through to imageio's other (legacy) plugins for a corrupt file
    return np.asarray(iio.imread(path, index=0, plugin="pillow"))


def _to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): luminance (Rec. 709, as skimage.color.rgb2gray) of RGB; alpha dropped."""
    channels = arr.shape[-1]
    if channels == 1:
        return arr[..., 0]
    if channels == 2:  # grey + alpha
        return arr[..., 0]
    rgb = arr[..., :3].astype(np.float64)
    return rgb @ np.array([0.2125, 0.7154, 0.0721])


def _check_plane(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D image, got an array of shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise DataError(f"{path}: the image is empty (shape {tuple(arr.shape)})")
    return arr


def _scale_to_unit(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integers by their dtype range (uint8 /255, uint16 /65535); floats min-max; bool as 0/1."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return (arr.astype(np.float64) - info.min) / (float(info.max) - float(info.min))
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            raise DataError(f"{path}: the image has no finite values (all NaN or infinite)")
        if not finite.all():
            values = np.where(finite, values, values[finite].min())
        return _minmax(values)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def _header_pixels(path: Path) -> int | None:
    """Pixels the file claims (height x width x frames), read from its header only; None when the header
    cannot be read (the decoder then reports the file as unreadable)."""
    try:
        if _is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            return int(ds.Rows) * int(ds.Columns) * max(frames, 1)
        if path.suffix.lower() in _TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                page = tif.pages[0]
                return int(page.imagelength) * int(page.imagewidth) * max(int(page.imagedepth), 1)
        import warnings

        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the budget below speaks instead
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as im:
                    return int(im.size[0]) * int(im.size[1])
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - a header no reader understands: the decoder names the problem
        return None


def check_pixel_budget(path: str | Path, max_pixels: int | None = None) -> None:
    """DataError naming ``path`` when its header claims more than ``max_pixels`` (default MAX_PIXELS)."""
    budget = MAX_PIXELS if max_pixels is None else int(max_pixels)
    claimed = _header_pixels(Path(path))
    if claimed is not None and claimed > budget:
        raise DataError(f"{path}: claims {claimed / 1e6:.0f} megapixels, more than the budget of "
                        f"{budget / 1e6:.0f} (refused before decoding; a decoding bomb or a huge scan)")


def _wrap_read(path: Path, what: str, reader, max_pixels: int | None = None):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file does not exist" if not path.exists() else f"{path}: not a file")
    check_pixel_budget(path, max_pixels)
    try:
        return reader(path)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: cannot read {what} (too large to decode in memory)") from None
    except Exception as exc:  # every reader has its own exception zoo (OSError, SyntaxError, InvalidDicom..)
        detail = str(exc).strip() or type(exc).__name__
        raise DataError(
            f"{path}: cannot read {what} (unreadable, truncated or corrupt file: {detail})"
        ) from exc


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read one image as float32 HxW grey values in [0, 1].

    RGB(A) becomes luminance; integer data is scaled by its dtype range (so a 16-bit PNG/TIFF keeps its
    full precision), float data is min-max scaled. DICOM: RescaleSlope/Intercept, then the first VOI
    window (WindowCenter/WindowWidth, honouring VOILUTFunction) or a VOI LUT when present, otherwise
    min-max; MONOCHROME1 is inverted so that dense tissue is always bright.
    Raises DataError naming the file if it cannot be read, or if its header claims more pixels than
    ``max_pixels`` (default MAX_PIXELS), before anything is decoded.
    """

    def reader(p: Path) -> np.ndarray:
        if _is_dicom(p):
            out = _read_dicom_image(p)
        else:
            arr = _check_plane(_read_raw(p), p)
            if arr.ndim == 3:
                gray = _to_gray(arr)
                # luminance of integer data keeps the integer scale; scale by the source dtype's range
                if np.issubdtype(arr.dtype, np.integer):
                    info = np.iinfo(arr.dtype)
                    out = (gray - info.min) / (float(info.max) - float(info.min))
                else:
                    out = _scale_to_unit(gray, p)
            else:
                out = _scale_to_unit(arr, p)
        out = _check_plane(np.asarray(out), p)
        if out.ndim != 2:
            raise DataError(f"{p}: expected a 2-D image, got shape {tuple(out.shape)}")
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    return _wrap_read(Path(path), "image", reader, max_pixels)


def _mask_plane(arr: np.ndarray) -> np.ndarray:
    """Colour masks: alpha dropped; identical channels -> one channel, else the max (any colour = drawn)."""
    if arr.ndim == 3:
        if arr.shape[-1] in (2, 4):
            arr = arr[..., :-1]
        if arr.shape[-1] == 1 or np.all(arr == arr[..., :1]):
            return arr[..., 0]
        return arr.max(axis=-1)
    return arr


def _binarise(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == bool:
        return arr.copy()
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 1:
        counts = np.bincount(arr.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise DataError(f"{path}: mask has NaN or infinite values")
        values = np.unique(arr)
    if len(values) == 1:
        return np.full(arr.shape, values[0] > 0, bool)
    if len(values) == 2:
        return arr == values[1]
    lo, hi = values[0], values[-1]
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        span = float(hi) - float(lo)
        if span >= (float(info.max) - float(info.min)) / 2:
            a = arr.astype(np.float64)
            near = (a <= float(lo) + _LOSSY_NEAR * span) | (a >= float(hi) - _LOSSY_NEAR * span)
            if near.mean() >= _LOSSY_FRACTION:
                return a >= float(lo) + span / 2
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataError(
        f"{path}: mask has {len(values)} distinct values ({shown}); expected a binary mask with two values "
        f"(e.g. 0/1 or 0/255). Label maps with several classes must be converted to one foreground class."
    )


def read_mask(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read one mask as bool HxW (True = lung).

    Accepted: two values of any kind (0/1, 0/255, 17/200 ...; the larger is foreground), or a single value
    (0 -> empty mask, anything else -> full mask). More than two distinct values is a DataError that says how
    many, with one exception for lossy compression: an integer mask whose values span at least half of its
    dtype range (e.g. 0..255 for 8-bit) and whose pixels lie, for at least 98 %, within 10 % of that span of
    the minimum or the maximum (the ringing a JPEG leaves around a 0/255 mask) is thresholded at mid-range.
    Label maps such as {0, 1, 2} therefore still fail loudly instead of being silently merged.
    Colour masks: identical channels are read as grey, otherwise the channel maximum; alpha is dropped.
    """

    def reader(p: Path) -> np.ndarray:
        if _is_dicom(p):
            arr, _ = _dicom_pixels(p)
        else:
            arr = _read_raw(p)
        arr = _mask_plane(_check_plane(np.asarray(arr), p))
        if arr.ndim != 2:
            raise DataError(f"{p}: expected a 2-D mask, got shape {tuple(arr.shape)}")
        return _binarise(arr, p)

    return _wrap_read(Path(path), "mask", reader, max_pixels)


# ------------------------------------------------------------------------------------ transforms


def zscore(img: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image (the network sees contrast, not the scanner's offset/gain).

    A constant image has no contrast and becomes all zeros (never NaN).
    """
    values = np.asarray(img, np.float64)
    std = float(values.std())
    if not np.isfinite(std) or std < 1e-8:
        return np.zeros(values.shape, np.float32)
    return ((values - values.mean()) / std).astype(np.float32)


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` with bilinear interpolation, anti-aliased when shrinking; float32."""
    from skimage.transform import resize

    img = np.asarray(img)
    if img.shape == (size, size):
        return img.astype(np.float32, copy=True)
    out = resize(img.astype(np.float64), (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a binary mask to ``size`` x ``size`` as uint8 {0, 1}: bilinear (anti-aliased) then >= 0.5."""
    from skimage.transform import resize

    mask = np.asarray(mask)
    binary = mask > 0 if mask.dtype != bool else mask
    if mask.shape == (size, size):
        return binary.astype(np.uint8)
    out = resize(binary.astype(np.float64), (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return (out >= 0.5).astype(np.uint8)


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


def random_split(ids: Sequence[str], test_fraction: float = 0.3, seed: int = 0) -> dict[str, str]:
    """Deterministic train/test assignment when the folder has no split.csv.

    The ids are sorted first, so the result depends only on the set of ids and the seed. The test set has
    round(test_fraction * N) cases, but at least one case on each side when 0 < test_fraction < 1 and N >= 2.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    ordered = sorted(ids)
    if len(set(ordered)) != len(ordered):
        raise ValueError("random_split: ids contain duplicates")
    n = len(ordered)
    n_test = int(round(test_fraction * n))
    if n >= 2 and 0.0 < test_fraction < 1.0:
        n_test = min(max(n_test, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test = {ordered[i] for i in perm[:n_test]}
    return {i: ("test" if i in test else "train") for i in ordered}


@dataclass
class Dataset:
    """The loaded pairs plus what was skipped (skip mode) and what looked odd but loaded (warnings)."""

    root: Path
    size: int
    cases: list[Case]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    random_split = staticmethod(random_split)

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

    def with_splits(self, splits: dict[str, str]) -> Dataset:
        """A copy with ``Case.split`` set from ``splits`` (e.g. from :func:`random_split`); others None."""
        cases = [replace(c, split=splits.get(c.id)) for c in self.cases]
        return replace(self, cases=cases, skipped=list(self.skipped), warnings=list(self.warnings))

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
    if _is_dicom(path):  # DICOM without (or with an odd) extension: the whole name is the id
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


def load_dataset(root: str | Path, size: int = 256, on_error: str = "raise", max_pixels: int | None = None) -> Dataset:
    """Load ``root/images`` + ``root/masks`` (+ optional ``root/split.csv``) at ``size`` x ``size``.

    on_error="raise": every problem in the folder is collected and one DataError lists them all, one per
    line, so a user fixes the folder in one pass instead of one error per run. on_error="skip": bad pairs
    are left out and listed in ``Dataset.skipped`` as (path, reason); a DataError only if nothing loads.
    Structural problems (no folder, no images/ or masks/, no images at all, an unusable split.csv header)
    always raise. Cases are ordered by id. Without split.csv every ``Case.split`` is None (see
    :func:`random_split` and :meth:`Dataset.with_splits`). Empty masks load, with a warning. A file whose
    header claims more than ``max_pixels`` (default MAX_PIXELS) is a problem like any unreadable file.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
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

    # problems: (path, reason, id or None); a problem with an id makes that pair unusable
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
    cases: list[Case] = []
    for fid in sorted(images):
        if fid in bad_ids:
            continue
        img_path, mask_path = images[fid][0], masks[fid][0]
        image = mask = None
        try:
            image = read_image(img_path, max_pixels)
        except DataError as exc:
            problems.append((img_path, _reason(exc, img_path), fid))
        try:
            mask = read_mask(mask_path, max_pixels)
        except DataError as exc:
            problems.append((mask_path, _reason(exc, mask_path), fid))
        if image is None or mask is None:
            continue
        if image.shape != mask.shape:
            problems.append(
                (
                    mask_path,
                    f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
                    f"{img_path} ({image.shape[1]}x{image.shape[0]})",
                    fid,
                )
            )
            continue
        if not mask.any():
            warnings.append(f"{mask_path}: mask is empty (no foreground pixels); loaded as an empty mask")
        elif mask.all():
            warnings.append(f"{mask_path}: mask covers the whole image")
        small = resize_mask(mask, size)
        if mask.any() and not small.any():
            warnings.append(f"{mask_path}: mask becomes empty when resized to {size}x{size}")
        cases.append(
            Case(
                id=fid,
                image=zscore(resize_image(image, size)),
                mask=small,
                image_path=img_path,
                mask_path=mask_path,
                split=splits.get(fid) if splits is not None else None,
                original_shape=(int(image.shape[0]), int(image.shape[1])),
            )
        )

    listed = [(p, r) for p, r, _ in problems]
    if problems and on_error == "raise":
        raise DataError(_report(root, listed), listed)
    if not cases:
        raise DataError(_report(root, listed, prefix="no usable image/mask pair"), listed)
    return Dataset(root=root, size=size, cases=cases, skipped=listed, warnings=warnings)


def _reason(exc: DataError, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _report(root: Path, problems: list[tuple[Path, str]], prefix: str | None = None) -> str:
    head = prefix or f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = [f"{head} in {root}:"] + [f"  {p}: {r}" for p, r in problems]
    return "\n".join(lines)
