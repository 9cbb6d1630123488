"""Per-image scores after training: which given masks look wrong, and what the nets would put instead.

The suspicion score is ``1 - Dice(given, corrected)``: the fraction of the mask the nets' corrected label would
change (with the border fit on, the correction shown and exported is the given border moved, crl_napari.border_fit,
but the suspicion stays the nets' own corrected label's, so the queue does not depend on the setting).
It is comparable across images, and on the paper's noise protocol (masks eroded or dilated 5-15 times) it
separates corrupted from clean masks well (the benchmark reports its AUROC). Peer uncertainty (the paper's
|CE_B - CE_C|, averaged over the pairs of nets) and the ensemble's cross-entropy against the given mask are
reported beside it. The review queue (:func:`rank`) is not the suspicion itself: it puts first the images whose
look the recommended policy (:func:`recommended_threshold`) gains most from.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from . import selection, size_calibration
from .border_fit import corrected_prob as border_fit_prob


@dataclass
class ImageScores:
    """Scores of N images (arrays of length N) and the maps behind them ((N, H, W) float32 / bool)."""

    suspicion: np.ndarray
    uncertainty: np.ndarray
    disagreement: np.ndarray
    dice_given_corrected: np.ndarray
    corrected: np.ndarray  # bool: the corrected mask
    prob: np.ndarray  # sharpened foreground probability of the ensemble (with the border fit: of the correction)
    pixel_uncertainty: np.ndarray  # mean |p_a - p_b| over pairs of nets
    #: with the border fit: the nets' own sharpened probability, which the fit moved the given border with; what
    #: the correction at the original size is made from (border_fit.native_logit). None without the fit
    nets_prob: np.ndarray | None = None
    size_offset: float = 0.0  # the logit offset the nets' probability was calibrated by (crl_napari.size_calibration)

    def rank(self) -> np.ndarray:
        """The review order (:func:`rank`): 1 = the image a look is worth most for."""
        return rank(self.suspicion, self.uncertainty)


#: What the export gives an image nobody reviewed (crl_napari.export): its correction where the suspicion reaches a
#: threshold (the run's recommended one unless told), or its given mask. The review queue is made for one of them
#: (:func:`rank`), the one the review chose (crl_napari.review.ReviewSession.unreviewed, this default until then).
UNREVIEWED = ("accept_above", "keep")
DEFAULT_UNREVIEWED = "accept_above"


def rank(suspicion: np.ndarray, uncertainty: np.ndarray, threshold: float | None = None,
         unreviewed: str = DEFAULT_UNREVIEWED) -> np.ndarray:
    """The review queue (1 = look first), made for the recommended policy: the corrections of images nobody
    reviewed are accepted where the suspicion reaches ``threshold`` (:func:`recommended_threshold` of these
    scores when None), the given masks are kept below it.

    Two orders, by the share of images the policy corrects (:func:`many_look_wrong`):

    Where many look wrong (more than :data:`MANY_SHARE`): the images closest to the threshold first, either side
    (distance on the log scale the threshold is found on), ties in input order. Why: there the two groups
    overlap at the threshold, and a look decides what the policy would get wrong on either side: clean masks just
    above it whose corrections are worse, damaged ones just under it. On Shenzhen (the default's nets, seeds 0-2;
    benchmarks/results/cleaning_curve-native-default-cal.md) at 50 % noise it exported 0.9836 / 0.9831 / 0.9847
    after 160 reviewed, where the order below left the set at 0.9823 / 0.9820 / 0.9823; at 75 % 0.9649 / 0.9697 /
    0.9755 after 80 (the order below: 0.9648 / 0.9684 / 0.9746), behind it on seed 0 up to 60 reviewed (0.9641
    against 0.9648), and with a review round after every 20 at best 0.9671 / 0.97002 / 0.9752 within 80 (the
    order below: 0.9668 / 0.9686 / 0.9746).

    Everywhere else: a look pays where that policy is likely wrong. Above the threshold the policy already
    takes the correction, which a reviewer would accept too, so a look there gains little. Below it the policy
    keeps the given mask, and what keeping it costs grows with the suspicion (the share of the mask the nets
    would change). So: images under the threshold first, most suspicious first; then those above it, the ones
    whose nets disagree most (peer uncertainty) first, as their corrections are the likeliest to need a redraw.
    Ties in input order. Computed from the scores alone, never from a true mask (benchmarks/cleaning_curve.py).

    With ``unreviewed="keep"`` (an export that keeps the given mask of every image nobody reviewed) a look pays
    where the given mask is most likely wrong: most suspicious first, ties by uncertainty, then input order. Each
    queue is the worst order for the other policy: on Shenzhen at 75 % noise the policy-aware queue kept as given
    reached 0.855 after 160 reviewed against 0.922 for the suspicion-first one (and cleanlab's 0.909; at 50 % 0.876
    against 0.973 and 0.965), and under the recommended policy the suspicion-first queue trailed it at every budget
    (benchmarks/results/cleaning_curve-native-default.md). NaN scores come last either way.
    """
    if unreviewed not in UNREVIEWED:
        raise ValueError(f"unreviewed must be one of {', '.join(UNREVIEWED)}, got {unreviewed!r}")
    s = np.asarray(suspicion, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    index = np.arange(len(s))
    if unreviewed == "keep":
        return _places(np.lexsort((index, -np.nan_to_num(u, nan=-np.inf), -np.nan_to_num(s, nan=-np.inf))))
    t = recommended_threshold(s) if threshold is None else float(threshold)
    finite = np.isfinite(s)
    if t > 0 and finite.any() and many_look_wrong(float((s[finite] >= t).mean())):
        return closest_first(s, t)
    return under_threshold_first(s, u, t)


def closest_first(suspicion: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`rank`'s queue where many masks look wrong (places, 1 first): the suspicion nearest ``threshold`` (> 0)
    on the log scale first, either side; ties in input order, NaN last."""
    s = np.asarray(suspicion, dtype=np.float64)
    near = np.abs(np.log(np.maximum(s, 1e-9) / threshold))
    return _places(np.lexsort((np.arange(len(s)), np.nan_to_num(near, nan=np.inf))))


def under_threshold_first(suspicion: np.ndarray, uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`rank`'s queue elsewhere (places, 1 first): under ``threshold`` first, most suspicious first; then the
    rest, most uncertain first; ties in input order, NaN last."""
    s = np.asarray(suspicion, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    below = s < threshold
    return _places(np.lexsort((np.arange(len(s)), -np.where(below, s, 0), -np.where(below, 0, u), ~below)))


def _places(order: np.ndarray) -> np.ndarray:
    """Each item's place (1 = first) from the items in queue order."""
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def score_probs(probs: np.ndarray, given: np.ndarray, T: float = 0.5, border_fit: bool = False,
                calibrate: bool = False, size_offset: float | None = None) -> ImageScores:
    """Scores from every net's foreground probability ``probs`` (M, N, H, W) and the given masks (N, H, W).
    The corrections are the paper's corrected labels (the sharpened mean of the nets), or with ``border_fit``
    the given masks' borders moved as the nets agree (crl_napari.border_fit); with ``calibrate`` they are made
    from the nets' probability brought to the size the given masks that look right have
    (crl_napari.size_calibration; the offset found on these images, or ``size_offset`` where a scoring in chunks
    found it on all of them first: :func:`calibration_view`). The suspicion is the nets' own opinion either way,
    so the review order does not depend on them."""
    p = torch.as_tensor(probs, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(given) > 0)
    two = torch.stack([1 - p, p], dim=2).clamp(1e-6, 1)  # (M, N, 2, H, W)
    ce = torch.stack([-(torch.where(y, two[m, :, 1], two[m, :, 0])).log().flatten(1).mean(1) for m in range(len(p))])
    pairs = list(combinations(range(len(p)), 2))
    if pairs:
        unc = torch.stack([selection.uncertainty(ce[a], ce[b]) for a, b in pairs]).mean(0)
        pix = torch.stack([(p[a] - p[b]).abs() for a, b in pairs]).mean(0)
    else:
        unc = torch.zeros(p.shape[1])
        pix = torch.zeros(p.shape[1:])
    sharp, suspicion = _sharp_and_suspicion(two, y, T)
    b = 0.0
    if calibrate:
        b = size_calibration.offset(sharp.numpy(), np.asarray(given), suspicion.numpy()) if size_offset is None \
            else float(size_offset)
    if b:
        sharp = torch.as_tensor(size_calibration.shifted(sharp.numpy(), b))
    nets = None
    if border_fit:
        nets = sharp.numpy()
        sharp = torch.as_tensor(np.stack([border_fit_prob(g, q) for g, q in zip(np.asarray(given), sharp.numpy(),
                                                                                strict=True)]))
    corrected = sharp > 0.5
    dice = selection.dice(corrected, y)
    ens_ce = -(torch.where(y, two.mean(0)[:, 1], two.mean(0)[:, 0])).log().flatten(1).mean(1)
    return ImageScores(
        suspicion=suspicion.numpy(),
        uncertainty=unc.numpy(),
        disagreement=ens_ce.numpy(),
        dice_given_corrected=dice.numpy(),
        corrected=corrected.numpy(),
        prob=sharp.numpy(),
        pixel_uncertainty=pix.numpy(),
        nets_prob=nets,
        size_offset=b,
    )


def _sharp_and_suspicion(two: torch.Tensor, y: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's sharpened foreground probability (N, H, W) from every net's two-class map ``two``
    (M, N, 2, H, W), and the suspicion of the given masks ``y`` (N, H, W) bool against it."""
    sharp = selection.sharpen(two.mean(0), T, dim=1)[:, 1]
    return sharp, 1 - selection.dice(sharp > 0.5, y)


def calibration_view(probs: np.ndarray, given: np.ndarray, T: float = 0.5) -> tuple[np.ndarray, list]:
    """What size calibration needs of a chunk of images, as :func:`score_probs` sees them: their suspicion and
    each one's :func:`crl_napari.size_calibration.band` of the sharpened probability (a scoring in chunks finds
    the offset over every chunk's before it makes a correction: crl_napari.pipeline)."""
    p = torch.as_tensor(probs, dtype=torch.float32)
    two = torch.stack([1 - p, p], dim=2).clamp(1e-6, 1)
    sharp, suspicion = _sharp_and_suspicion(two, torch.as_tensor(np.asarray(given) > 0), T)
    return suspicion.numpy(), [size_calibration.band(q) for q in sharp.numpy()]


def keep_corrections(scores: ImageScores, given: np.ndarray, kept: dict[int, np.ndarray]) -> None:
    """Put the corrections a reviewer accepted (``kept``: {index in ``scores``: that corrected mask}) in place of
    the nets' new ones, with their Dice against the ``given`` masks: a kept map is what the run holds and exports,
    so its correction columns describe it. The suspicion stays the nets' opinion."""
    for j, mask in kept.items():
        scores.corrected[j] = np.asarray(mask) > 0
        scores.dice_given_corrected[j] = selection.dice(torch.as_tensor(scores.corrected[j][None]),
                                                        torch.as_tensor(np.asarray(given[j])[None] > 0)).item()


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if a class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def flagging_metrics(scores: ImageScores, clean: np.ndarray, corrupted: np.ndarray) -> dict:
    """With simulated noise: how well the suspicion flags corrupted masks and how good the corrections are."""
    return flagging_from(scores.suspicion, scores.uncertainty, correction_dice(scores, clean), corrupted)


def correction_dice(scores: ImageScores, clean: np.ndarray) -> np.ndarray:
    """Dice of each corrected mask against the clean one."""
    return selection.dice(torch.as_tensor(scores.corrected), torch.as_tensor(np.asarray(clean) > 0)).numpy()


def flagging_from(suspicion: np.ndarray, uncertainty: np.ndarray, d_corr: np.ndarray, corrupted: np.ndarray) -> dict:
    """:func:`flagging_metrics` from per-image numbers (``d_corr``: Dice of each correction against the clean
    mask), for images scored batch by batch."""
    corrupted = np.asarray(corrupted, dtype=bool)
    out = {
        "flag_auroc": auroc(suspicion, corrupted),
        "flag_auroc_uncertainty": auroc(uncertainty, corrupted),
        "corrected_dice_all": float(d_corr.mean()),
        "n_corrupted": int(corrupted.sum()),
    }
    if corrupted.any():
        out["corrected_dice_corrupted"] = float(d_corr[corrupted].mean())
    return out


LOG_FLOOR = 1e-3  # suspicions below 0.1 % of a mask count as 0.1 % on the log scale of recommended_threshold


def recommended_threshold(suspicion: np.ndarray, floor: float = 0.05, bins: int = 256) -> float:
    """The suspicion above which the tool recommends accepting corrections of images nobody reviewed.

    Why Otsu, on the log of the scores: with noisy labels the scores are bimodal. A mask the nets agree with
    scores a correction's own error, a few per cent; a damaged one scores tens of per cent. Those two groups
    differ by a factor, not by a distance, so they are split where they separate on a log scale: Otsu's cut
    maximises the variance between the groups from the scores alone, never seeing a true mask, so a user can
    apply it to their own data. On Shenzhen (quick profile, seeds 0 and 1) the log-scale cut gave an exported
    set of mean Dice 0.970 / 0.973 at 50 % noise and 0.934 / 0.936 at 75 % with nobody reviewing, against
    0.958 / 0.968 and 0.910 / 0.896 for the cut on the plain scale, under which the correction still beat the
    given mask for 54-61 % of the images at 75 % (28-32 % under the log-scale cut;
    benchmarks/results/threshold_rules.md). The ``floor`` keeps a
    near-clean set from having its masks replaced by changes within the nets' own boundary disagreement (under
    5 % of a mask). NaN scores are ignored; with fewer than two distinct scores the floor is returned.
    """
    s = np.asarray(suspicion, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 2 or s.min() == s.max():
        return float(floor)
    x = np.log(np.maximum(s, LOG_FLOOR))
    if x.min() == x.max():
        return float(floor)
    counts, edges = np.histogram(x, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)  # below each candidate cut (between bin i and i + 1)
    w1 = x.size - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    cut = float(np.exp(edges[1:-1][int(np.argmax(between))]))
    return max(cut, float(floor))


def noise_share(suspicion: np.ndarray) -> float:
    """The share of images at or above the recommended threshold: the scores' own estimate of how many given masks
    are wrong. On Shenzhen (quick profile, seeds 0-2) it read 0.62-0.73 at 75 % simulated noise, 0.49-0.51 at 50 %
    and 0.28-0.30 at 25 %. NaN for no finite score."""
    s = np.asarray(suspicion, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    return float((s >= recommended_threshold(s)).mean()) if s.size else float("nan")


def suggested_keep_ratio(suspicion: np.ndarray, keep_ratio: float = 0.5, floor: float = 0.1) -> float | None:
    """The keep_ratio (TrainConfig) to train again with when most given masks look wrong, else None.

    Why: stage 1 learns from the ``keep_ratio`` smallest-loss samples of each batch; with more wrong masks than
    that, some of those are wrong too. Keeping the clean share (1 - :func:`noise_share`), as co-teaching sets its
    forget rate to the noise rate, gave better corrections at 75 % noise (benchmarks/results/native_res.md,
    crl+keep). Suggested only below the run's own ratio by more than 0.05: the paper's 0.5 stays where about half
    or fewer of the masks look wrong (raising it has not been measured)."""
    return keep_from_share(noise_share(suspicion), keep_ratio, floor)


#: A keep_ratio is suggested only below the run's own by more than this (:func:`keep_from_share`).
KEEP_MARGIN = 0.05
#: More than this share of the given masks look wrong (:func:`noise_share`): MANY or MOST (:func:`wrong_share`);
#: the review queue starts closest to the threshold (:func:`rank`)
MANY_SHARE = 0.40
MOST, MANY = "most", "many"


def many_look_wrong(share: float | None) -> bool:
    """Whether more than :data:`MANY_SHARE` of the given masks look wrong by the estimate ``share`` (False for
    none): the review queue then starts closest to the threshold (:func:`rank`)."""
    return share is not None and bool(np.isfinite(share)) and share > MANY_SHARE


def wrong_share(share: float | None, keep_ratio: float) -> str | None:
    """How many given masks look wrong by the scores' estimate ``share`` (:func:`noise_share`) against the run's
    ``keep_ratio`` setting: MOST where :func:`keep_from_share` suggests a lower keep ratio (more than 55 % at the
    paper's 0.5), MANY where more than MANY_SHARE do, else None (also for no share). Which second pass the default
    trains (crl_napari.second_pass.share_mode); the review queue's order (:func:`rank`) asks only whether it is
    None."""
    if not many_look_wrong(share):
        return None
    return MOST if keep_from_share(share, keep_ratio) is not None else MANY


def keep_from_share(share: float | None, keep_ratio: float = 0.5, floor: float = 0.1) -> float | None:
    """:func:`suggested_keep_ratio` from a :func:`noise_share` already computed (None or NaN: none)."""
    if share is None or not np.isfinite(share):
        return None
    keep = round(max(floor, 1.0 - share), 2)
    return keep if keep < keep_ratio - KEEP_MARGIN else None


def keep_advice(suspicion: np.ndarray, keep_ratio: float, second_pass: int | None = None) -> str:
    """The advice when many given masks look wrong (:func:`suggested_keep_ratio`) as a sentence ("" for none): the
    Review widget says it on opening a run, `crl-napari train` and `score` after scoring. ``keep_ratio``: the one
    the nets trained with (RunFolder.keep_ratio); ``second_pass``: the second pass the run can still take and its
    scores ask for (crl_napari.second_pass.advised; see :func:`advice_sentence`)."""
    share = noise_share(suspicion)
    return advice_sentence(share, keep_ratio, keep_from_share(share, keep_ratio), second_pass)


def advice_sentence(share: float | None, keep_ratio: float, keep: float | None,
                    second_pass: int | None = None) -> str:
    """:func:`keep_advice` from the numbers a scoring's metrics hold (noise_share, suggested_keep_ratio).

    ``second_pass``: the second pass to offer, the one the default would train after these scores
    (crl_napari.second_pass.advised): 2 (every correction) where most masks look wrong against the run's keep_ratio
    setting, 1 (the corrections the recommended threshold takes) where more than 40 % do; None or 0: none to offer.
    It comes first: at 75 % simulated noise the second pass on every correction reached test Dice 0.944 against
    0.934 and corrected Dice 0.952 against 0.946 on the corrupted cases (benchmarks/results/native_res.md), at 50 %
    the one on the recommended corrections exported 0.982 against 0.980 (native_noise.md); it costs a second
    training. A lower keep ratio is suggested where one below the nets' own ``keep_ratio`` is (``keep``); mode 2
    offered with no ``keep``: the run's training had already lowered its keep ratio (TrainConfig.keep_auto)."""
    if share is None or not np.isfinite(share):
        return ""
    if keep is not None:
        remedy = (f"a second pass on the corrections, or training again with keep ratio {keep:g}," if second_pass
                  else f"training again with keep ratio {keep:g}")
        return (f"{share:.0%} of the given masks look wrong, more than the {keep_ratio:g} of each batch training "
                f"learns from: {remedy} may correct them better")
    if second_pass == 2:
        return (f"{share:.0%} of the given masks look wrong (training learnt from {keep_ratio:g} of each batch): a "
                f"second pass on the corrections may correct them better")
    if second_pass == 1:
        return (f"{share:.0%} of the given masks look wrong: a second pass on the corrections the recommended "
                f"threshold takes (the given masks elsewhere) may correct them better")
    return ""
