"""The pure tensor functions of the method: per-sample losses, peer uncertainty, sample selection,
sharpening and the joint loss. Kept apart from the training loop so each can be tested on hand-made tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pixel cross-entropy of each sample: (B,).

    ``target`` is either hard labels (B, H, W) of class indices or a soft label map (B, C, H, W) — the
    corrected labels of stage 2 are soft (sharpened probabilities).
    """
    if target.dim() == logits.dim():
        ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    else:
        ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return ce.flatten(1).mean(dim=1)


def uncertainty(ce_peer1: torch.Tensor, ce_peer2: torch.Tensor) -> torch.Tensor:
    """The paper's peer uncertainty u = |CE_peer1 - CE_peer2|: two peers that disagree on how wrong a
    label is signal an ambiguous sample."""
    return (ce_peer1 - ce_peer2).abs()


def select(
    ce_peer1: torch.Tensor, ce_peer2: torch.Tensor, keep_ratio: float = 0.5, drop_uncertain: float = 0.25,
    trusted: torch.Tensor | None = None, larger: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the samples a net learns from in stage 1, chosen by its two peers.

    Two steps, sized as fractions of the batch B:
    1. drop the ``round(drop_uncertain * B)`` samples of highest uncertainty |CE_1 - CE_2|;
    2. among the rest, keep the ``round(keep_ratio * B)`` of smallest mean peer loss (CE_1 + CE_2) / 2.
    With the defaults (0.5, 0.25) the half the paper keeps is split evenly: a quarter of the batch goes for
    being uncertain, a quarter for being large-loss. At least one sample is always kept.
    ``trusted`` (B,) bool: see :func:`with_trusted`. ``larger`` (B,) bool (ours, the ``balance_area`` setting):
    step 2 keeps the smallest losses within each side of it in proportion to the side's share of the
    candidates (:func:`balanced_smallest`); None is the paper's selection.
    """
    if _any(trusted):
        pick = (lambda a, b: _select(a, b, keep_ratio, drop_uncertain)) if larger is None else (
            lambda a, b, g: _select(a, b, keep_ratio, drop_uncertain, g > 0))
        extra = () if larger is None else (larger.to(ce_peer1.dtype),)
        return with_trusted(pick, trusted, ce_peer1, ce_peer2, *extra)
    return _select(ce_peer1, ce_peer2, keep_ratio, drop_uncertain, larger)


def _select(ce_peer1: torch.Tensor, ce_peer2: torch.Tensor, keep_ratio: float,
            drop_uncertain: float, larger: torch.Tensor | None = None) -> torch.Tensor:
    b = ce_peer1.numel()
    n_keep = max(1, min(b, round(keep_ratio * b)))
    n_drop = min(round(drop_uncertain * b), b - n_keep)
    u = uncertainty(ce_peer1, ce_peer2)
    candidates = torch.argsort(u, stable=True)[: b - n_drop]
    loss = (ce_peer1 + ce_peer2)[candidates] / 2
    if larger is not None:
        return candidates[balanced_smallest(loss, larger[candidates], n_keep)].sort().values
    return candidates[torch.argsort(loss, stable=True)[:n_keep]].sort().values


def balanced_smallest(loss: torch.Tensor, larger: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of ``n_keep`` small-loss samples, taken from each side of ``larger`` (B,) bool in proportion to
    its size (ours, not the paper's).

    Small loss alone is not blind to the kind of error: when eroded and dilated masks have different losses, the
    kept set holds mostly one kind and the nets learn a biased lung area. ``larger`` marks given masks larger than
    the peers' predicted area (:func:`larger_than_predicted`): it needs no ground truth.
    """
    n = loss.numel()
    n_larger = int(larger.sum())
    k_larger = min(n_larger, max(0, round(n_keep * n_larger / n))) if n else 0
    k_larger = max(k_larger, n_keep - (n - n_larger))  # the other side may be too small to fill its share
    picks = []
    for side, k in ((larger, k_larger), (~larger, n_keep - k_larger)):
        idx = torch.nonzero(side).flatten()
        picks.append(idx[torch.argsort(loss[idx], stable=True)[:k]])
    return torch.cat(picks)


def predicted_area(probs: torch.Tensor) -> torch.Tensor:
    """(B,) the expected foreground pixels of a net's softmax (B, C, H, W): the sum of its class-1 map."""
    return probs[:, 1].float().flatten(1).sum(1)


def larger_than_predicted(given: torch.Tensor, peer_areas: list[torch.Tensor]) -> torch.Tensor:
    """(B,) bool: the given mask (B, H, W) covers more pixels than the peers' mean :func:`predicted_area`, i.e.
    it errs like a dilated mask rather than an eroded one."""
    return given.flatten(1).float().sum(1) > torch.stack(peer_areas).float().mean(0)


def small_loss(ce: torch.Tensor, keep_ratio: float, trusted: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the ``keep_ratio`` smallest-loss samples (co-teaching's selection); ``trusted``: see
    :func:`with_trusted`."""
    if _any(trusted):
        return with_trusted(lambda c: _small_loss(c, keep_ratio), trusted, ce)
    return _small_loss(ce, keep_ratio)


def _small_loss(ce: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    b = ce.numel()
    n_keep = max(1, min(b, round(keep_ratio * b)))
    return torch.argsort(ce, stable=True)[:n_keep].sort().values


def _any(trusted: torch.Tensor | None) -> bool:
    return trusted is not None and bool(trusted.any())


def with_trusted(pick, trusted: torch.Tensor, *ce: torch.Tensor) -> torch.Tensor:
    """The one rule for masks a reviewer decided (review rounds): a trusted sample is always selected.

    ``pick`` (a selection over per-sample losses ``ce``) runs on the untrusted rest only, so its budget is a
    fraction of that rest and the trusted samples come on top of it; sorted indices into the batch.
    """
    rest = torch.nonzero(~trusted).flatten()
    kept = torch.nonzero(trusted).flatten()
    if len(rest):
        kept = torch.cat([kept, rest[pick(*(c[rest] for c in ce))]])
    return kept.sort().values


def given_label_only(trusted: torch.Tensor | None, selected: torch.Tensor | None, b: int,
                     device: torch.device) -> torch.Tensor:
    """(B,) bool: the samples that keep plain CE on their given label in stage 2, never the corrected one:
    the trusted ones (a reviewer decided their mask) and, with joint="unselected", the peers' picks."""
    keep = torch.zeros(b, dtype=torch.bool, device=device) if trusted is None else trusted.clone()
    if selected is not None:
        keep[selected] = True
    return keep


def sharpen(q: torch.Tensor, T: float = 0.5, dim: int = 1) -> torch.Tensor:
    """sharpen(q, T)_i = q_i^(1/T) / sum_j q_j^(1/T); T < 1 pushes the peers' mean towards a hard label."""
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    p = q.clamp_min(1e-12).pow(1.0 / T)
    return p / p.sum(dim=dim, keepdim=True)


def corrected_label(peer_probs: list[torch.Tensor], T: float = 0.5) -> torch.Tensor:
    """The stage-2 label for a net: sharpen the mean of its peers' softmax maps (each (B, C, H, W))."""
    return sharpen(torch.stack(peer_probs).mean(dim=0), T)


def joint_loss(
    logits: torch.Tensor, given: torch.Tensor, corrected: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """Per-sample alpha * CE(f(x), given) + (1 - alpha) * CE(f(x), corrected): (B,)."""
    return alpha * per_sample_ce(logits, given) + (1 - alpha) * per_sample_ce(logits, corrected)


def dice(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample Dice of two binary maps (B, H, W).

    Two empty maps score 1.0, a perfect match: nothing to find and nothing found is no error (an image
    without lung, or a mask cleared on purpose). inference.dice_score and every report use this rule.
    """
    p = pred.flatten(1).float()
    t = target.flatten(1).float()
    inter = (p * t).sum(1)
    total = p.sum(1) + t.sum(1)
    return torch.where(total > 0, 2 * inter / (total + eps), torch.ones_like(total))
