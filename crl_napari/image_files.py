"""Decode one image or mask file, safely: the formats the data reader supports (PNG, JPEG, TIFF, BMP through
imageio / tifffile, DICOM through pydicom), a pixel budget checked from the header before any decoding (a
2.5 MB file may claim 50000 x 50000 pixels), grey values in [0, 1], masks in {0, 1}, and the resizing and
z-scoring training uses. Every problem is a :class:`DataError` naming the file. data.py builds data sets from
folders of such files; this module knows one file at a time. (About 430 lines, over the house's 400: the budget
check and the decoders it guards share the one Pillow opening of a file, so they stay side by side.)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: File extensions read as images or masks (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
_DICOM_EXTENSIONS = (".dcm", ".dicom")
_TIFF_EXTENSIONS = (".tif", ".tiff")
_PLAIN_MODES = ("L", "LA", "RGB", "RGBA")  # Pillow modes read as they are (see _read_raw)
_PLAIN_FORMATS = ("PNG", "JPEG", "BMP")
#: The pixel budget of one image (height x width x frames), checked from the file's header before any
#: pixel is decoded: a few kilobytes can claim 50000 x 50000 pixels and decode into gigabytes.
MAX_PIXELS = 100_000_000
_PILLOW_LIMIT = threading.Lock()  # held while Pillow's decompression-bomb limit is lifted (_pillow_header)


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


def is_dicom(path: Path) -> bool:
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


def _read_raw(path: Path, opened=None) -> np.ndarray:
    """The stored pixel array of a non-DICOM file (first page/frame), values untouched; ``opened``: the file as
    :func:`_pillow_header` opened it (its header read once, for the budget and the decode)."""
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        import tifffile

        arr = np.asarray(tifffile.imread(str(path), key=0))
        # planar RGB TIFFs come as (3, H, W)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
        return arr
    from PIL import Image

    # 8-bit grey or colour (nearly every PNG, JPEG and BMP) straight from Pillow: the pixels imageio's pillow
    # plugin returns for these modes (it transforms none of them), without its per-file overhead (a sixth of a
    # 256 px pair's decode)
    with opened if opened is not None else Image.open(path) as im:
        if im.mode in _PLAIN_MODES and im.format in _PLAIN_FORMATS:
            im.seek(0)
            return np.array(im)
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
        if is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            return int(ds.Rows) * int(ds.Columns) * max(frames, 1)
        if path.suffix.lower() in _TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                page = tif.pages[0]
                return int(page.imagelength) * int(page.imagewidth) * max(int(page.imagedepth), 1)
        im = _pillow_header(path)
        if im is None:
            return None
        with im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # noqa: BLE001 - a header no reader understands: the decoder names the problem
        return None


def _pillow_header(path: Path):
    """``path`` opened by Pillow, its header read and no pixel decoded, with Pillow's own pixel limit lifted (the
    budget speaks instead); None when Pillow cannot read the header (the decoder then names the problem). The
    lift is under a lock: the cache build decodes in threads, and two unguarded lifts could restore each other's
    None for good."""
    import warnings

    from PIL import Image

    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        except Exception:  # noqa: BLE001
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def check_pixel_budget(path: str | Path, max_pixels: int | None = None) -> None:
    """DataError naming ``path`` when its header claims more than ``max_pixels`` (default MAX_PIXELS)."""
    _check_claim(path, _header_pixels(Path(path)), max_pixels)


def _check_claim(path: str | Path, claimed: int | None, max_pixels: int | None) -> None:
    budget = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if claimed is not None and claimed > budget:
        raise DataError(f"{path}: claims {claimed / 1e6:.0f} megapixels, more than the budget of "
                        f"{budget / 1e6:.0f} (refused before decoding; a decoding bomb or a huge scan)")


def _wrap_read(path: Path, what: str, reader, max_pixels: int | None = None):
    """``reader(path, dicom, opened)`` after the pixel budget: a PNG, JPEG or BMP is opened once, its header
    checked and then decoded (``opened``), instead of opened for the header and again for the pixels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file does not exist" if not path.exists() else f"{path}: not a file")
    dicom, opened = is_dicom(path), None
    if dicom or path.suffix.lower() in _TIFF_EXTENSIONS:
        check_pixel_budget(path, max_pixels)
    else:
        opened = _pillow_header(path)
        if opened is not None:
            try:
                _check_claim(path, int(opened.size[0]) * int(opened.size[1]), max_pixels)
            except DataError:
                opened.close()
                raise
    try:
        return reader(path, dicom, opened)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: cannot read {what} (too large to decode in memory)") from None
    except Exception as exc:  # every reader has its own exception zoo (OSError, SyntaxError, InvalidDicom..)
        detail = str(exc).strip() or type(exc).__name__
        raise DataError(
            f"{path}: cannot read {what} (unreadable, truncated or corrupt file: {detail})"
        ) from exc
    finally:
        if opened is not None:
            opened.close()


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read one image as float32 HxW grey values in [0, 1].

    RGB(A) becomes luminance; integer data is scaled by its dtype range (so a 16-bit PNG/TIFF keeps its
    full precision), float data is min-max scaled. DICOM: RescaleSlope/Intercept, then the first VOI
    window (WindowCenter/WindowWidth, honouring VOILUTFunction) or a VOI LUT when present, otherwise
    min-max; MONOCHROME1 is inverted so that dense tissue is always bright.
    Raises DataError naming the file if it cannot be read, or if its header claims more pixels than
    ``max_pixels`` (default MAX_PIXELS), before anything is decoded.
    """

    def reader(p: Path, dicom: bool, opened) -> np.ndarray:
        if dicom:
            out = _read_dicom_image(p)
        else:
            arr = _check_plane(_read_raw(p, opened), p)
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
    if arr.dtype == np.uint8:
        lo, hi = arr.min(), arr.max()  # nearly every mask: two values, found in a few passes without a histogram
        if lo == hi:
            return np.full(arr.shape, hi > 0, bool)
        high = arr == hi
        if np.count_nonzero(high) + np.count_nonzero(arr == lo) == arr.size:
            return high
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

    def reader(p: Path, dicom: bool, opened) -> np.ndarray:
        if dicom:
            arr, _ = _dicom_pixels(p)
        else:
            arr = _read_raw(p, opened)
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
