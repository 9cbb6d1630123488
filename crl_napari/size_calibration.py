"""Size calibration: the nets' masks brought to the size the annotators draw, before corrections are made.

Why: at heavy noise the nets can come out of training drawing every lung a little too small. On Shenzhen at 75 %
noise (64 px quick profile) the first pass's corrections of the clean training masks were 2.6-4.1 % too small on two
seeds of three, the second pass's nets (trained on those corrections) 5-6 %; every correction inherits that. The
masks that look most right tell by how much: among the fifth of the images with the lowest suspicion (nearly all
clean even at 75 % noise) the given mask is what an annotator drew, so one logit offset ``b`` that gives the nets'
mask the given mask's area there (the median over those images) removes the bias without a true mask. The offset is
added to the nets' logit before the correction is made (border fit included); the suspicion, and with it the queue,
stays the nets' own.

Only a bias the images agree on, and only towards too small, is removed: where the nets' mask is smaller than the
given one in significantly more of those images than larger (a one-sided sign test, p < :data:`SIGNIFICANCE`);
elsewhere the offset is 0 and the corrections are exactly what they were without calibration. Offsets towards too
large were measured and did not help (benchmarks/results/native_noise.md; docs/paper.md), and at 25 % noise, and
on one seed of three at 75 %, the nets showed no such bias.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

__all__ = ["SHARE", "MAX_OFFSET", "SIGNIFICANCE", "MAX_CHANGE", "band", "lowest", "offset", "offset_from_bands",
           "shifted"]

#: The share of the images, lowest suspicion first, whose given masks set the size.
SHARE = 0.2
#: The largest offset either way, in logit units of the (sharpened) probability.
MAX_OFFSET = 6.0
#: The sign test's level: a bias is removed only when it would be this unlikely without one.
SIGNIFICANCE = 0.05
#: The largest bias removed, as the median relative area: the nets measured drew the masks that look right 1-6 %
#: too small. A larger difference says those masks are of another kind (nets that draw every lung a pixel too large
#: find the masks dilated by about a pixel the most right, and the offset would grow the nets further): left alone.
MAX_CHANGE = 0.10
_MIN_IMAGES = 5  # fewer images that look right than this: no calibration
_EPS = 1e-7


def _logit(prob: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def shifted(prob: np.ndarray, b: float) -> np.ndarray:
    """``prob`` with ``b`` added to its logit (float32); ``prob`` itself (as float32) when ``b`` is 0."""
    if b == 0:
        return np.asarray(prob, dtype=np.float32)
    return (1 / (1 + np.exp(-(_logit(prob) + b)))).astype(np.float32)


def band(prob: np.ndarray) -> tuple[int, np.ndarray]:
    """What an offset within :data:`MAX_OFFSET` can do to one image's mask (``prob`` (H, W)): the number of pixels
    always inside (logit above it) and the sorted logits of the pixels it can move (within it), so that an offset's
    area is exact without the whole map (:func:`offset_from_bands`; a scoring keeps a few thousand numbers an image)."""
    z = _logit(prob).ravel()
    return int((z > MAX_OFFSET).sum()), np.sort(z[(z > -MAX_OFFSET) & (z <= MAX_OFFSET)]).astype(np.float32)


def offset(prob: np.ndarray, given: np.ndarray, suspicion: np.ndarray, share: float = SHARE) -> float:
    """The logit offset that gives the nets' masks (``prob`` (N, H, W) > 0.5) the given masks' area, the median
    relative difference over the ``share`` of the images with the lowest ``suspicion`` (NaN last; empty given
    masks left out); 0 with fewer than a handful of such images, where the nets' masks are not smaller than the
    given ones in significantly more of them (the sign test, :data:`SIGNIFICANCE`), or smaller by more than
    :data:`MAX_CHANGE`. Within :data:`MAX_OFFSET`, to 1/1000."""
    chosen = lowest(suspicion, share)
    given = np.asarray(given)[chosen]
    return offset_from_bands([band(p) for p in np.asarray(prob)[chosen]],
                             given.reshape(len(chosen), -1).astype(bool).sum(1))


def lowest(suspicion: np.ndarray, share: float = SHARE) -> np.ndarray:
    """Indices of the ``share`` of the images with the lowest suspicion (NaN last), lowest first."""
    s = np.nan_to_num(np.asarray(suspicion, dtype=np.float64), nan=np.inf)
    return np.argsort(s, kind="stable")[:int(round(share * len(s)))]


def offset_from_bands(bands: list[tuple[int, np.ndarray]], given_areas: np.ndarray) -> float:
    """:func:`offset` from the chosen images' :func:`band` and their given masks' areas (pixels)."""
    areas = np.asarray(given_areas, dtype=np.float64)
    keep = areas > 0
    bands = [b for b, k in zip(bands, keep, strict=True) if k]
    areas = areas[keep]
    if len(bands) < _MIN_IMAGES:
        return 0.0

    def inside(b: float) -> np.ndarray:  # each image's mask with the offset: its logit above -b
        return np.array([n + len(z) - np.searchsorted(z, -b, side="right") for n, z in bands], dtype=np.float64)

    nets_area = inside(0.0)
    smaller, larger = int((nets_area < areas).sum()), int((nets_area > areas).sum())
    if smaller + larger == 0 or binomtest(smaller, smaller + larger, alternative="greater").pvalue >= SIGNIFICANCE:
        return 0.0
    if np.median(nets_area / areas - 1) < -MAX_CHANGE:  # not a bias of the nets: masks of another kind look right
        return 0.0

    def excess(b: float) -> float:  # median relative area of the nets' mask over the given one, minus 1
        return float(np.median(inside(b) / areas - 1))

    if excess(0.0) >= 0:  # the median mask is not smaller: nothing to grow
        return 0.0
    lo, hi = -MAX_OFFSET, MAX_OFFSET
    if excess(hi) <= 0:  # no offset within reach makes them agree: the largest
        return hi
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    b = round((lo + hi) / 2, 3)
    if excess(b) < 0:  # the area is a step function of the offset: one on a step's edge leaves its pixels out
        b = math.ceil(hi * 1000) / 1000
    return 0.0 if b == 0 else b
