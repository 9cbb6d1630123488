"""The vanilla U-Net (Ronneberger et al. 2015) the paper uses for all three nets.

Width and depth are parameters so the same class serves the paper's profile (width 64, depth 4) and the
small CPU profile of the benchmarks and tests.
"""

from __future__ import annotations

import torch
from torch import nn


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning logits of shape (B, n_classes, H, W); H and W must be divisible by 2**depth."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"UNet needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = _DoubleConv(in_channels, chans[0])
        self.down = nn.ModuleList(_DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], n_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        step = 2**self.depth
        if h % step or w % step:
            raise ValueError(f"input size {h}x{w} is not divisible by 2**depth = {step}")
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)


def build_models(config, device: torch.device | str = "cpu") -> list[UNet]:
    """A strategy's nets (``config``: a TrainConfig), each with its own seeded initialisation: peers must start
    different, or they would select and correct for each other with the same eyes."""
    models = []
    for i in range(config.n_nets):
        torch.manual_seed(config.seed * 1000 + i)
        models.append(UNet(1, 2, config.width, config.depth).to(device))
    return models
