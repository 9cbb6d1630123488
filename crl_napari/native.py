"""Corrections at the radiograph's own resolution, from the ensemble's probability at training size.

Training happens at the training size (64-256 px); a radiologist reviews and exports at the image's own
size (256-3000 px). Up-sampling the training-size BINARY mask by nearest neighbour makes each training
pixel a k x k block (12 x 12 at 256 -> 3000) and cuts rounded corners (the costophrenic angle). Instead
the run keeps the probability with enough precision (:func:`encode_prob` / :func:`decode_prob`, a 16-bit
PNG's worth) and :func:`native_mask` resamples it smoothly to the original (H, W), thresholds at 0.5 and
cleans it up (:mod:`crl_napari.postprocess`).

Resampling happens on the logit, not the probability: a sharpened probability is nearly a step, so a
bilinear blend of probabilities puts the edge half-way between two training pixels whatever the nets
said, while the logit varies roughly linearly across the edge and places it between them in proportion.
Sharpening (``selection.sharpen``) scales the logit by 1/T, so resampling the sharpened or the plain mean
probability gives the same mask. Pixel centres are aligned (``align_corners=False``), so any ratio works,
non-square and non-integer (64 -> 3000 x 2500) included; everything stays float32 (a 3000 x 3000 map is
36 MB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .postprocess import clean_mask

__all__ = [
    "PROB_LEVELS",
    "ENCODE_ERROR",
    "LOGIT_CLIP",
    "encode_prob",
    "decode_prob",
    "resample_logit",
    "resample_prob",
    "native_mask",
    "mask_from_logit",
    "boundary_distance",
]

#: uint16 levels of a stored probability (0 -> 0.0, PROB_LEVELS -> 1.0).
PROB_LEVELS = 65535
#: The most :func:`decode_prob` (:func:`encode_prob` (p)) differs from p (half a level, plus float32 rounding).
ENCODE_ERROR = 0.5 / PROB_LEVELS + 1e-7
_EPS = np.float32(0.5 / PROB_LEVELS)
#: |logit| is clipped here: the stored precision cannot tell larger values apart (logit(1 - half a level)).
LOGIT_CLIP = float(np.log((1 - _EPS) / _EPS))

_ORDERS = {1: "bilinear", 3: "bicubic"}


def _check_prob(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 2 or min(prob.shape) < 1:
        raise ValueError(f"a probability map must be 2-D (H, W), got shape {prob.shape}")
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"a probability map must be floating point, got {prob.dtype}")
    lo, hi = float(np.min(prob)), float(np.max(prob))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
        raise ValueError(f"a probability map must lie in [0, 1], got values in [{lo}, {hi}]")
    return prob


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"the target shape must be two positive integers (H, W), got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def encode_prob(prob: np.ndarray) -> np.ndarray:
    """A probability map as uint16 (round(p * 65535)), for a 16-bit PNG; :data:`ENCODE_ERROR` bounds the loss."""
    prob = _check_prob(prob)
    return np.rint(prob.astype(np.float32, copy=False) * PROB_LEVELS).astype(np.uint16)


def decode_prob(code: np.ndarray) -> np.ndarray:
    """The float32 probability map of an :func:`encode_prob` array (ValueError unless 2-D uint16)."""
    code = np.asarray(code)
    if code.dtype != np.uint16 or code.ndim != 2:
        raise ValueError(f"an encoded probability map is 2-D uint16, got {code.dtype} of shape {code.shape}")
    return code.astype(np.float32) / np.float32(PROB_LEVELS)


def resample_logit(prob: np.ndarray, shape: tuple[int, int], order: int = 1) -> torch.Tensor:
    """The logit of ``prob`` (clipped at ±:data:`LOGIT_CLIP`) resampled to ``shape``: float32 (H, W) tensor.

    ``order`` 1 = bilinear, 3 = bicubic; pixel centres aligned; anti-aliased along an axis that shrinks.
    """
    prob = _check_prob(prob)
    shape = _check_shape(shape)
    if order not in _ORDERS:
        raise ValueError(f"order must be 1 (bilinear) or 3 (bicubic), got {order}")
    p = torch.as_tensor(prob, dtype=torch.float32).clamp(float(_EPS), float(1 - _EPS))
    logit = torch.log(p) - torch.log1p(-p)
    if tuple(logit.shape) == shape:
        return logit
    shrinks = shape[0] < logit.shape[0] or shape[1] < logit.shape[1]
    out = F.interpolate(logit[None, None], size=shape, mode=_ORDERS[order], align_corners=False,
                        antialias=shrinks)[0, 0]
    return out.clamp_(-LOGIT_CLIP, LOGIT_CLIP)  # bicubic overshoots a little


def resample_prob(prob: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """``prob`` resampled to ``shape`` through its logit, float32 (H, W) in [0, 1] (for display)."""
    return torch.sigmoid_(resample_logit(prob, shape, order)).numpy()


def native_mask(prob: np.ndarray, shape: tuple[int, int], cleanup: bool | Mapping[str, Any] = True,
                order: int = 1) -> np.ndarray:
    """The corrected mask at the original ``shape`` (H, W), uint8 {0, 1}: ``prob`` (training size) resampled
    smoothly (:func:`resample_logit`), thresholded at 0.5, then cleaned.

    ``cleanup``: True = :func:`crl_napari.postprocess.clean_mask` with its defaults, a mapping = its keyword
    arguments (``{"keep_largest": 2}``), False = the thresholded mask as it is.
    """
    return mask_from_logit(resample_logit(prob, shape, order), cleanup)


def mask_from_logit(logit: torch.Tensor | np.ndarray, cleanup: bool | Mapping[str, Any] = True) -> np.ndarray:
    """A logit map at the original size thresholded at 0 (p = 0.5) and cleaned as :func:`native_mask` cleans,
    uint8 {0, 1}."""
    mask = np.asarray(logit) > 0
    if cleanup is False or cleanup is None:
        return mask.astype(np.uint8)
    return clean_mask(mask, **({} if cleanup is True else dict(cleanup)))


def _contour(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels: foreground with a 4-neighbour in the background (or off the image)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def boundary_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean distance in pixels between the contours of two masks of one shape (0 = same outline):
    the mean, over the boundary pixels of both, of the distance to the other's boundary. NaN if exactly one
    is empty, 0 if both are."""
    from scipy.ndimage import distance_transform_edt

    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {a.shape} and {b.shape}")
    ca, cb = _contour(a), _contour(b)
    if not ca.any() or not cb.any():
        return 0.0 if not ca.any() and not cb.any() else float("nan")
    to_b = distance_transform_edt(~cb)
    to_a = distance_transform_edt(~ca)
    return float((to_b[ca].sum() + to_a[cb].sum()) / (ca.sum() + cb.sum()))
