"""The method's pure functions on hand-made tensors."""

import math

import pytest
import torch

from crl_napari import selection


def logits_for(probs_fg: list[float], hw: int = 2) -> torch.Tensor:
    """Logits (B, 2, hw, hw) whose softmax foreground probability is exactly p everywhere."""
    p = torch.tensor(probs_fg).view(-1, 1, 1, 1).expand(-1, 1, hw, hw)
    return torch.cat([torch.log(1 - p), torch.log(p)], dim=1)


def test_per_sample_ce_hard_labels_is_mean_pixel_ce():
    lg = logits_for([0.9, 0.2])
    y = torch.ones(2, 2, 2, dtype=torch.long)
    ce = selection.per_sample_ce(lg, y)
    assert torch.allclose(ce, torch.tensor([-math.log(0.9), -math.log(0.2)]), atol=1e-6)


def test_per_sample_ce_soft_labels_matches_hard_when_one_hot():
    lg = logits_for([0.7, 0.4])
    y = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [1, 0]]])
    soft = torch.stack([1 - y, y], dim=1).float()
    assert torch.allclose(selection.per_sample_ce(lg, soft), selection.per_sample_ce(lg, y), atol=1e-6)


def test_uncertainty_is_absolute_difference():
    u = selection.uncertainty(torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0.4, 0.2, 0.5]))
    assert torch.allclose(u, torch.tensor([0.3, 0.7, 0.0]))


def test_select_drops_uncertain_first_then_keeps_small_loss():
    # 8 samples. Sample 0 has the smallest mean loss but the peers disagree wildly: dropped for uncertainty.
    ce1 = torch.tensor([0.00, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70])
    ce2 = torch.tensor([0.90, 0.11, 0.21, 0.31, 0.41, 0.51, 0.61, 0.70])
    ce2[7] = 2.0  # sample 7 also very uncertain
    chosen = selection.select(ce1, ce2, keep_ratio=0.5, drop_uncertain=0.25)
    # uncertainty drops samples 7 and 0 (2 = 25 % of 8); of the rest the 4 smallest-loss are 1, 2, 3, 4
    assert chosen.tolist() == [1, 2, 3, 4]


def test_select_without_uncertainty_step_is_small_loss_on_mean():
    ce1 = torch.tensor([0.5, 0.1, 0.9, 0.3])
    ce2 = torch.tensor([0.5, 0.1, 0.9, 0.3])
    assert selection.select(ce1, ce2, keep_ratio=0.5, drop_uncertain=0.0).tolist() == [1, 3]


@pytest.mark.parametrize("b", [1, 2, 3, 7, 32])
def test_select_sizes(b):
    ce = torch.rand(b)
    chosen = selection.select(ce, torch.rand(b), 0.5, 0.25)
    assert len(chosen) == max(1, round(0.5 * b))
    assert len(set(chosen.tolist())) == len(chosen)


def test_small_loss_keeps_the_smallest():
    assert selection.small_loss(torch.tensor([3.0, 1.0, 2.0, 0.5]), 0.5).tolist() == [1, 3]


def test_sharpen_matches_formula_and_sums_to_one():
    q = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1]])
    s = selection.sharpen(q, T=0.5, dim=1)
    expected = torch.tensor([[0.36 / 0.52, 0.16 / 0.52], [0.5, 0.5], [0.81 / 0.82, 0.01 / 0.82]])
    assert torch.allclose(s, expected, atol=1e-6)
    assert torch.allclose(s.sum(1), torch.ones(3))
    # T = 1 is the identity; T < 1 moves towards the argmax
    assert torch.allclose(selection.sharpen(q, 1.0, dim=1), q)
    assert (s[:, 0] >= q[:, 0]).all()
    with pytest.raises(ValueError):
        selection.sharpen(q, 0.0)


def test_corrected_label_is_sharpened_mean_of_peers():
    a = torch.tensor([[0.8, 0.2]]).view(1, 2, 1, 1)
    b = torch.tensor([[0.4, 0.6]]).view(1, 2, 1, 1)
    out = selection.corrected_label([a, b], T=0.5)
    mean = torch.tensor([0.6, 0.4])
    assert torch.allclose(out.flatten(), mean**2 / (mean**2).sum(), atol=1e-6)


def test_joint_loss_is_convex_combination():
    lg = logits_for([0.7, 0.3])
    given = torch.ones(2, 2, 2, dtype=torch.long)
    corrected = torch.zeros(2, 2, 2, 2)
    corrected[:, 0] = 1.0  # corrected says background everywhere
    j = selection.joint_loss(lg, given, corrected, alpha=0.5)
    ce_given = -torch.log(torch.tensor([0.7, 0.3]))
    ce_corr = -torch.log(torch.tensor([0.3, 0.7]))
    assert torch.allclose(j, 0.5 * ce_given + 0.5 * ce_corr, atol=1e-6)
    assert torch.allclose(selection.joint_loss(lg, given, corrected, alpha=1.0), ce_given, atol=1e-6)


def test_dice():
    a = torch.tensor([[[1, 1], [0, 0]]])
    b = torch.tensor([[[1, 0], [0, 0]]])
    assert torch.allclose(selection.dice(a, b), torch.tensor([2 * 1 / 3]), atol=1e-5)
    z = torch.zeros(1, 2, 2)
    assert selection.dice(z, z).item() == 1.0
