"""Border fit: the correction starts from the given mask moved in or out by the one distance the nets agree
with, and the nets' own opinion only then moves it further where they are sure.

Why: a mask drawn too tight or too loose is wrong by roughly the same distance all around its border (the
paper's noise model, erosion or dilation n times, is exactly that), while the nets' own mask is a pixel or
two off everywhere in a way of its own (blurred borders, rounded costophrenic angles). Moving the GIVEN
border by the shift the nets agree with keeps the detail the annotator drew and takes only the size from
the nets, and a clean mask comes back nearly as it was, where the nets' own mask would replace it by a
worse one. On Shenzhen (benchmarks/results/native_res.md, "border fit") it raised the corrected Dice at the
original size on every seed and noise level, on the corrupted and on the clean cases. A shift cannot
undo what is not an offset (two lungs merged by a large dilation, a missing lobe): there the nets' term
(:data:`WEIGHT`) is what pulls the correction back towards them.

The shift is fitted at training size on the given mask's signed distance ``d`` (pixels, negative inside,
+-0.5 on the pixels next to the border): the moved mask is ``d < t``. ``t`` maximises the agreement
``sum((2 p - 1) * clip(t - d + 0.5, 0, 1))`` with the ensemble's sharpened probability ``p`` (a pixel
counts by the fraction of it inside, so ``t`` is not stuck on the discrete distances). The correction's
logit is ``WEIGHT * (t - d) + logit(p)``: linear across the moved border, so crl_napari.native's smooth
resampling of the logit puts the border where it belongs at any original size.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from .native import LOGIT_CLIP

__all__ = ["MAX_SHIFT", "WEIGHT", "signed_distance", "fit_shift", "corrected_prob", "fitted_labels"]

#: The largest shift tried, in training pixels (either way): the paper's noise moves a border by 1-4 pixels
#: at 64 px, 5-15 at 256 px.
MAX_SHIFT = 16.0
_STEP = 0.125  # the finest shift tried, in training pixels
#: Logit units per training pixel of the moved border's term. Chosen on seed 0 of the 64 px quick profile at
#: 25/50/75 % noise among 4, 7, 10 and 16 (the corrupted cases' Dice at 75 % first, then the clean cases');
#: seeds 1 and 2 confirmed it. Not measured at other training sizes.
WEIGHT = 7.0
_CLIP = 30.0  # |logit| cap before the sigmoid (float32 saturates far before)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the border of the binary ``mask`` in pixels (float32): negative inside, positive outside,
    +-0.5 on the pixels next to the border, so ``d < 0`` is the mask. A mask all in or all out has no border:
    -inf or +inf everywhere."""
    m = np.asarray(mask) > 0
    if m.all() or not m.any():
        return np.full(m.shape, -np.inf if m.all() else np.inf, dtype=np.float32)
    inside = ndi.distance_transform_edt(m)
    outside = ndi.distance_transform_edt(~m)
    return np.where(m, 0.5 - inside, outside - 0.5).astype(np.float32)


def fit_shift(given: np.ndarray, prob: np.ndarray, max_shift: float = MAX_SHIFT) -> float:
    """The shift t (training pixels; > 0 grows the mask) of the ``given`` mask's border that agrees best with
    the probability map ``prob`` (same shape), to 1/8 pixel; 0 for a mask without a border (all in or all out)."""
    d = signed_distance(given)
    return _shift(d, prob, max_shift) if np.isfinite(d).all() else 0.0


def _shift(d: np.ndarray, prob: np.ndarray, max_shift: float = MAX_SHIFT) -> float:
    """The best shift for the signed distance ``d`` (all finite) and ``prob``, the smallest |t| among equal ones.
    The agreement depends only on each distinct distance's summed weight (a distance is +-(sqrt(k) - 0.5) for an
    integer k: a few hundred distinct values near a border), so every shift is tried on those alone."""
    near = np.abs(d) <= max_shift + 1  # farther pixels are in (or out) for every shift tried
    values, where = np.unique(d[near].astype(np.float64), return_inverse=True)
    weight = np.bincount(where.ravel(), weights=2 * np.asarray(prob, dtype=np.float64)[near] - 1,
                         minlength=len(values))
    ts = np.arange(-max_shift, max_shift + _STEP / 2, _STEP)
    gains = np.clip(ts[:, None] - values[None, :] + 0.5, 0, 1) @ weight
    best = ts[gains >= gains.max() - 1e-6 * max(1.0, abs(float(gains.max())))]
    return float(best[np.argmin(np.abs(best))])


def corrected_prob(given: np.ndarray, prob: np.ndarray, weight: float = WEIGHT) -> np.ndarray:
    """The corrected foreground probability (float32) of one image: sigmoid(``weight`` * (t - d) + logit(prob))
    with t = :func:`fit_shift`; ``prob`` unchanged for a given mask without a border (all in or all out: there
    is nothing to move, the nets' opinion is all there is)."""
    return _moved(signed_distance(given), prob, weight)


def _moved(d: np.ndarray, prob: np.ndarray, weight: float = WEIGHT) -> np.ndarray:
    """:func:`corrected_prob` from the given mask's signed distance ``d``."""
    p = np.asarray(prob, dtype=np.float32)
    if not np.isfinite(d).all():
        return p.copy()
    q = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    nets = np.clip(np.log(q / (1 - q)), -LOGIT_CLIP, LOGIT_CLIP)  # as sure as a stored map can say
    z = np.clip(weight * (_shift(d, prob) - d) + nets, -_CLIP, _CLIP)
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def fitted_labels(given: torch.Tensor, corrected: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stage 2's corrected labels moved as :func:`corrected_prob` moves a correction (TrainConfig.fit_labels):
    ``given`` (B, H, W) class indices, each of ``corrected`` a (B, 2, H, W) soft label (the sharpened mean of
    one net's peers); the same shapes back, on their device. Each given mask's distance map is made once for
    the three nets. Why: the second pass showed that nets trained on the fitted corrections are better
    (native_res.md); this gives stage 2 those labels within the one training."""
    masks = given.detach().cpu().numpy() > 0
    dists = [signed_distance(m) for m in masks]
    out = []
    for c in corrected:
        fg = c[:, 1].detach().float().cpu().numpy()
        moved = torch.from_numpy(np.stack([_moved(d, p) for d, p in zip(dists, fg, strict=True)])).to(c.device, c.dtype)
        out.append(torch.stack([1 - moved, moved], dim=1))
    return out
