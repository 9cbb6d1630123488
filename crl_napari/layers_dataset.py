"""Image and mask stacks (what a viewer holds in memory) -> a data folder the engine reads.

Training from the viewer's layers goes through a folder on disk like every other training: the run folder
records where its data came from, and a resumed or re-scored run reads the same files again. Qt-free: the
Train widget hands over the layers' arrays; a script can call it with any arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_png

__all__ = ["DataWritten", "layers_data_dir", "write_layers_dataset"]


@dataclass(frozen=True)
class DataWritten:
    """The layers were written as the data folder ``path`` (the first event of a training from layers)."""

    path: Path


def layers_data_dir(out: Path | str) -> Path:
    """Where a training from layers writes its data folder: beside the run folder, ``<run>-data``."""
    out = Path(out)
    return out.parent / f"{out.name}-data"


_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _usable_ids(ids: Any, n: int) -> bool:
    """Ids from a layer's metadata (anyone may have set it) name files only when they are plain, unique file
    stems, one per image."""
    return (isinstance(ids, (list, tuple)) and len(ids) == n
            and all(isinstance(i, str) and _ID.fullmatch(i) for i in ids) and len(set(ids)) == n)


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return s or "image"


def _to_stack(data: Any, rgb: bool = False) -> np.ndarray:
    arr = np.asarray(data)
    if rgb:
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim < 2:
        raise ValueError(f"expected 2-D images, got an array of shape {arr.shape}")
    return arr.reshape((-1, *arr.shape[-2:]))


def _image_png(img: np.ndarray) -> np.ndarray:
    """Integer images keep their values (8 or 16 bit); others are scaled to 16 bit per image."""
    if img.dtype in (np.uint8, np.uint16):
        return img
    img = img.astype(np.float64)
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    scaled = (np.nan_to_num(img, nan=lo) - lo) / max(hi - lo, 1e-12)
    return np.round(scaled * 65535).astype(np.uint16)


def write_layers_dataset(image: Any, mask: Any, dest: Path | str, name: str = "image",
                         ids: list[str] | None = None, rgb: bool = False) -> Path:
    """Write an image stack and its mask stack (napari layer data) as a data folder the engine reads:
    ``dest/images/<id>.png`` and ``dest/masks/<id>.png`` (0/255). Integer images keep their values (8 or
    16 bit), others are scaled to 16 bit per image. ``dest`` must be new or empty (nothing is written over).
    ``ids`` name the cases when they are plain unique file stems, one per image (else ``<name>_0000``, ...).
    Returns ``dest``."""
    images = _to_stack(image, rgb)
    masks = _to_stack(mask)
    if images.shape != masks.shape:
        raise ValueError(f"the image layer ({images.shape}) and the mask layer ({masks.shape}) differ in shape")
    if len(images) < 2:
        raise ValueError("training needs at least 2 images: the image layer holds one; open a stack of images "
                         "(e.g. a dataset folder) or train from a data folder")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest}: exists and is not empty; the layers' data folder is written there, "
                         "choose another run folder")
    if not _usable_ids(ids, len(images)):
        ids = [f"{_safe_name(name)}_{i:04d}" for i in range(len(images))]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(exist_ok=True)
    for id_, img, m in zip(ids, images, masks, strict=True):
        atomic_write_png(dest / "images" / f"{id_}.png", _image_png(img))
        atomic_write_png(dest / "masks" / f"{id_}.png", (m > 0).astype(np.uint8) * 255)
    return dest
