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

At the original size (:func:`native_logit`) the correction moves the ORIGINAL given mask's border: the same
shift ``t`` (fitted at training size, as above) and the same weight, on the signed distance of the mask the
annotator drew at the radiograph's own size (in training pixels), plus the nets' logit resampled smoothly. A
training-size mask has lost what the annotator drew finer than a training pixel (a 64 px mask of a 256 px
radiograph: 4 px; 256 of 3000: 12 px), and resampling the training-size correction cannot give it back; this
keeps it. With the noise drawn at the original size (the paper's protocol: benchmarks/native_noise.py) it
raised the corrected Dice at 256 px over the resampled correction on the corrupted and on the clean cases.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .native import LOGIT_CLIP, resample_logit

__all__ = ["MAX_SHIFT", "WEIGHT", "NATIVE_GRID", "signed_distance", "fit_shift", "corrected_prob", "native_logit",
           "fitted_labels"]

#: The largest shift tried, in training pixels (either way): the paper's noise moves a border by 1-4 pixels
#: at 64 px, 5-15 at 256 px.
MAX_SHIFT = 16.0
_STEP = 0.125  # the finest shift tried, in training pixels
#: Logit units per training pixel of the moved border's term. Chosen on seed 0 of the 64 px quick profile at
#: 25/50/75 % noise among 4, 7, 10 and 16 (the corrupted cases' Dice at 75 % first, then the clean cases');
#: seeds 1 and 2 confirmed it. Not measured at other training sizes.
WEIGHT = 7.0
_CLIP = 30.0  # |logit| cap before the sigmoid (float32 saturates far before)
#: :func:`native_logit` measures the original mask's distance on a grid of at most this many times the training
#: size along each axis (then resamples it smoothly): finer than a quarter of a training pixel changes the mask
#: by less than its own anti-aliasing, and a 3000 px mask's exact distance costs 1-2 s of CPU where this costs
#: a tenth of that (a 64 px training size keeps 256 px originals exact).
NATIVE_GRID = 4


def signed_distance(mask: np.ndarray, sampling: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Distance to the border of the binary ``mask`` (float32): negative inside, positive outside, half a pixel on
    the pixels next to the border, so ``d < 0`` is the mask. In pixels, or in the units of ``sampling`` (the size
    of a pixel along each axis: an original mask measured in training pixels). A mask all in or all out has no
    border: -inf or +inf everywhere."""
    m = np.asarray(mask) > 0
    if m.all() or not m.any():
        return np.full(m.shape, -np.inf if m.all() else np.inf, dtype=np.float32)
    half = 0.5 * float(np.mean(sampling))
    inside = ndi.distance_transform_edt(m, sampling=sampling)
    outside = ndi.distance_transform_edt(~m, sampling=sampling)
    return np.where(m, half - inside, outside - half).astype(np.float32)


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


def native_logit(nets_prob: np.ndarray, given_small: np.ndarray, given_native: np.ndarray,
                 weight: float = WEIGHT) -> torch.Tensor:
    """The correction's logit at the original size (the shape of ``given_native``, the mask the annotator drew
    there), float32 (H, W) tensor, > 0 inside: ``weight * (t - d) + logit(nets_prob)`` resampled, where ``t`` is
    :func:`fit_shift` of the training-size ``given_small`` against the nets' sharpened probability ``nets_prob``
    (training size) and ``d`` the signed distance of ``given_native`` in training pixels. At the training size
    it is :func:`corrected_prob`'s logit; a given mask without a border leaves the nets' logit alone."""
    shape = tuple(np.shape(given_native))
    nets = resample_logit(nets_prob, shape)
    d_small = signed_distance(given_small)
    if not np.isfinite(d_small).all():
        return nets
    t = _shift(d_small, nets_prob)
    small = np.shape(given_small)
    grid = tuple(min(n, NATIVE_GRID * s) for n, s in zip(shape, small, strict=True))
    mask = np.asarray(given_native) > 0
    if grid != shape:  # the mask on the coarser grid (anti-aliased), its distance resampled below
        mask = resample_mask(mask, grid)
    d = signed_distance(mask, sampling=(small[0] / grid[0], small[1] / grid[1]))
    if not np.isfinite(d).all():  # the original has no border where the training-size mask has one
        return nets
    d = torch.from_numpy(d)
    if grid != shape:
        d = F.interpolate(d[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return nets.add_(weight * (t - d))


def resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A binary mask on another grid: area-weighted (anti-aliased bilinear) then >= 0.5, as the data loader
    shrinks masks (image_files.resize_mask), to any (H, W)."""
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    return (F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)[0, 0] >= 0.5).numpy()


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
