"""What trained nets say about images: every net's probability, the framework's prediction, and Dice.

Scoring, the benchmarks and validation during training all predict through here, so "the prediction" means
one thing: the mean of the nets' softmax. With ``tta=1`` (TrainConfig.tta, ours, not the paper's) each net's
softmax is first averaged over the image and its horizontal flip: training already flips at random, so both views
are ones the nets know, and their mean smooths the errors either makes alone.
"""

from __future__ import annotations

import numpy as np
import torch

from . import selection


@torch.no_grad()
def peer_probs(models, images: np.ndarray | torch.Tensor, batch_size: int = 16, tta: int = 0) -> np.ndarray:
    """Every net's foreground probability, (M, N, H, W) float32; ``tta=1``: averaged with the flipped view's."""
    device = next(models[0].parameters()).device
    x_all = torch.as_tensor(images, dtype=torch.float32)
    out = np.empty((len(models), x_all.shape[0], *x_all.shape[-2:]), dtype=np.float32)
    for m in models:
        m.eval()
    for s in range(0, x_all.shape[0], batch_size):
        x = x_all[s : s + batch_size].to(device)
        for i, m in enumerate(models):
            fg = torch.softmax(m(x).float(), dim=1)[:, 1]
            if tta:
                fg = (fg + torch.softmax(m(x.flip(-1)).float(), dim=1)[:, 1].flip(-1)) / 2
            out[i, s : s + len(x)] = fg.cpu().numpy()
    return out


def predict(models, images: np.ndarray | torch.Tensor, batch_size: int = 16, tta: int = 0) -> np.ndarray:
    """The framework's prediction: the mean of the nets' softmax, foreground probability (N, H, W)."""
    return peer_probs(models, images, batch_size, tta).mean(axis=0)


def dice_score(prob: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image Dice of the prediction thresholded at 0.5 against binary masks.

    Two empty masks are a perfect match (1.0): a net that rightly finds no lung has made no error. This is
    ``selection.dice``'s rule, which this calls, so training's validation and the benchmarks agree.
    """
    pred = torch.as_tensor(np.asarray(prob) > 0.5)
    return selection.dice(pred, torch.as_tensor(np.asarray(masks) > 0)).numpy()
