"""The napari ``sample_data`` contribution: one case of the built-in phantom set (File > Open Sample).

Imports no napari or Qt: the functions return plain LayerData tuples, which npe2 turns into layers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .phantoms import sample_root

__all__ = ["make_sample_data", "sample_dataset_path", "sample_case_id"]


def sample_dataset_path() -> Path:
    """The folder of the built-in sample set (images/, masks/, clean_masks/, split.csv, noise.csv).

    Give it to the training widget or ``crl-napari train`` as the data folder."""
    return sample_root()


def sample_case_id(root: Path | None = None) -> str:
    """The case shown as the sample: the first training case (by id) whose given mask is corrupted."""
    root = sample_root() if root is None else Path(root)
    with open(root / "split.csv", newline="") as fh:
        split = {row["id"]: row["split"] for row in csv.DictReader(fh)}
    with open(root / "noise.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["id"])
    for row in rows:
        if int(row["corrupted"]) and split.get(row["id"]) == "train":
            return row["id"]
    return rows[0]["id"]


def _read(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    arr = np.asarray(iio.imread(path))
    return arr[..., 0] if arr.ndim == 3 else arr


def make_sample_data() -> list[tuple]:
    """LayerData tuples for napari: the radiograph, the given (noisy) mask and the true mask."""
    root = sample_root()
    cid = sample_case_id(root)
    image = _read(root / "images" / f"{cid}.png")
    given = (_read(root / "masks" / f"{cid}.png") > 0).astype(np.int32)
    true = (_read(root / "clean_masks" / f"{cid}.png") > 0).astype(np.int32)
    meta = {"case_id": cid, "dataset": str(root)}
    return [
        (image, {"name": "sample image", "metadata": meta}, "image"),
        (given, {"name": "given mask", "opacity": 0.5, "metadata": meta}, "labels"),
        (true, {"name": "true mask", "opacity": 0.5, "visible": False, "metadata": meta}, "labels"),
    ]
