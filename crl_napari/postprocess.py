"""Anatomical clean-up of a lung mask: no stray islands, no holes, at most the expected number of pieces.

A corrected mask is the ensemble's opinion thresholded at 0.5; where the nets hesitate it carries specks
(outside the body, in the stomach bubble) and pin holes that no radiologist would draw. Exported as they
are, they enter the cleaned data set and the next round trains on them. Two lungs are the expected
anatomy; anything beyond that is either removed here or counted by :func:`extra_pieces` so the review can
mark the case and the export report can say how many masks still have extra pieces.

Foreground pieces are 8-connected (two pixels touching at a corner are one piece, as a person drawing
would see them); a hole is background not 4-connected to the border, the matching complement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["EXPECTED_PIECES", "clean_mask", "extra_pieces", "piece_areas", "small_islands"]

#: Two lungs.
EXPECTED_PIECES = 2

_EIGHT = np.ones((3, 3), dtype=bool)


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    return mask if mask.dtype == bool else mask > 0


def _label(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int32, 0 = background) and the area of each piece (index i -> label i + 1)."""
    labels, n = ndimage.label(binary, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, areas


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` (background 4-connected) by one labelling pass instead of its iterated
    dilation: several times faster at 3000 x 3000 (1.3 s against 4.8 s on a busy 2-core machine)."""
    background, n = ndimage.label(~binary)
    if n == 0:
        return binary
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(n + 1, dtype=bool)
    outside[edges] = True
    outside[0] = False  # label 0 is the foreground
    return ~outside[background]


def piece_areas(mask: np.ndarray) -> np.ndarray:
    """Areas in pixels of the mask's 8-connected pieces, largest first."""
    _, areas = _label(_binary(mask))
    return np.sort(areas)[::-1]


def small_islands(mask: np.ndarray, min_island_fraction: float = 0.01) -> int:
    """How many pieces are smaller than ``min_island_fraction`` of the mask's area (what clean-up drops)."""
    areas = piece_areas(mask)
    return int((areas < min_island_fraction * areas.sum()).sum()) if len(areas) else 0


def clean_mask(mask: np.ndarray, min_island_fraction: float = 0.01, fill_holes: bool = True,
               keep_largest: int | None = None) -> np.ndarray:
    """The mask as uint8 {0, 1} without pieces below ``min_island_fraction`` of its area, with its holes
    filled, and (``keep_largest=2``) only its two largest pieces.

    The largest piece is always kept, so a non-empty mask never comes back empty; an empty mask stays
    empty. Works at any size (about 2 s at 3000 x 3000 on a busy 2-core machine, mostly labelling).
    """
    if keep_largest is not None and keep_largest < 1:
        raise ValueError(f"keep_largest must be None or >= 1, got {keep_largest}")
    if not 0 <= min_island_fraction < 1:
        raise ValueError(f"min_island_fraction must be in [0, 1), got {min_island_fraction}")
    binary = _binary(mask)
    if fill_holes:  # first, so the areas weighed below are final and what is kept is never re-judged
        binary = _fill_holes(binary)
    labels, areas = _label(binary)
    if len(areas):
        keep = areas >= min_island_fraction * areas.sum()
        keep[np.argmax(areas)] = True
        if keep_largest is not None:
            keep[np.argsort(areas)[::-1][keep_largest:]] = False
        if not keep.all():
            binary = np.concatenate([[False], keep])[labels]
    return binary.astype(np.uint8)


def extra_pieces(mask: np.ndarray, expected: int = EXPECTED_PIECES) -> int:
    """The number of 8-connected pieces beyond ``expected`` (two lungs): 0 for an anatomically plausible
    mask, the count the review marks and the export report sums otherwise."""
    return max(0, len(piece_areas(mask)) - expected)
