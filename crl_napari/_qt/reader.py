"""napari reader for crl-napari folders (File > Open Folder, or drag and drop).

* a **run folder** (``config.json`` + ``cases.csv``): the training-size images, the masks training saw and,
  when scored, the corrected masks, as stacks in the order of cases.csv;
* a **dataset folder** (``images/`` + ``masks/``): the images and masks as stacks. When every image has the
  same shape they are shown at full resolution; otherwise (or when the stack would not fit comfortably in
  memory) at the training layout of 256 x 256.

Both return plain LayerData; the image layer's metadata carries the case ids (``crl_ids``), so the Train
widget keeps them when it trains from these layers. Anything else: None, so napari asks other readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import DataError, load_dataset, read_image, read_mask
from ..runs import CASES, CONFIG, RunError, RunFolder

__all__ = ["get_reader", "read_run_folder", "read_dataset_folder", "MAX_NATIVE_BYTES", "FALLBACK_SIZE"]

#: A dataset folder whose images would take more memory than this (float32) is shown resized.
MAX_NATIVE_BYTES = 2 * 1024**3
FALLBACK_SIZE = 256

_OUTLINE = {"opacity": 0.7}


def _is_run(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / CASES).is_file()


def _is_dataset(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "masks").is_dir()


def get_reader(path: str | list[str]):
    """The npe2 reader hook: a function reading ``path`` when it is a run or dataset folder, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.is_dir():
        return None
    if _is_run(p):
        return read_run_folder
    if _is_dataset(p):
        return read_dataset_folder
    return None


def read_run_folder(path: str | list[str]) -> list[tuple]:
    """Layers of a run folder: images, the given (original) masks and, when scored, the corrected masks."""
    path = Path(path[0] if isinstance(path, list) else path)
    run = RunFolder(path)
    ids = [r["id"] for r in run.cases()]
    if not ids:
        raise RunError(f"{path / CASES}: lists no images")
    meta = {"crl_ids": ids, "crl_run": str(path)}
    images = np.stack([run.image(i) for i in ids])
    given = np.stack([run.given(i) for i in ids]).astype(np.uint8)
    layers = [
        (images, {"name": f"{path.name} images", "metadata": meta, "colormap": "gray"}, "image"),
        (given, {"name": f"{path.name} original masks", "metadata": meta, **_OUTLINE}, "labels"),
    ]
    if run.has_scores:
        corrected = np.stack([run.corrected(i) for i in ids]).astype(np.uint8) * 2
        layers.append((corrected, {"name": f"{path.name} corrected masks", "metadata": meta, **_OUTLINE}, "labels"))
    return layers


def read_dataset_folder(path: str | list[str]) -> list[tuple]:
    """Layers of a dataset folder: the images and their masks as stacks (see the module docstring)."""
    path = Path(path[0] if isinstance(path, list) else path)
    ds = load_dataset(path, size=FALLBACK_SIZE, on_error="skip")
    if not ds.cases:
        raise DataError(f"{path}: no readable image/mask pairs")
    shapes = {c.original_shape for c in ds.cases}
    ids = ds.ids
    native = len(shapes) == 1
    if native:
        h, w = next(iter(shapes))
        native = len(ids) * h * w * 4 <= MAX_NATIVE_BYTES
    if native:
        images = np.stack([read_image(c.image_path) for c in ds.cases]).astype(np.float32)
        masks = np.stack([read_mask(c.mask_path) for c in ds.cases]).astype(np.uint8)
        scale = "native"
    else:
        images = ds.images()[:, 0]
        masks = ds.masks()
        scale = f"resized to {FALLBACK_SIZE} x {FALLBACK_SIZE}"
    meta = {"crl_ids": ids, "crl_dataset": str(path), "crl_scale": scale,
            "crl_skipped": [f"{p}: {why}" for p, why in ds.skipped]}
    return [
        (images, {"name": f"{path.name} images", "metadata": meta, "colormap": "gray"}, "image"),
        (masks, {"name": f"{path.name} masks", "metadata": meta, "opacity": 0.5}, "labels"),
    ]
