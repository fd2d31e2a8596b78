"""ConvMixer (Trockman and Kolter, "Patches Are All You Need?", 2022) in PyTorch."""

import torch
from torch import nn


class Residual(nn.Sequential):
    """``x + layers(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the layers' output to their input."""
        return x + super().forward(x)


def convmixer(width: int, depth: int, patch: int = 4, kernel: int = 5) -> nn.Sequential:
    """A patch embedding, then ``depth`` blocks of depthwise and pointwise convolutions."""

    def block() -> nn.Sequential:
        return nn.Sequential(
            Residual(
                nn.Conv2d(width, width, kernel, groups=width, padding="same"),
                nn.GELU(),
                nn.BatchNorm2d(width),
            ),
            nn.Conv2d(width, width, 1),
            nn.GELU(),
            nn.BatchNorm2d(width),
        )

    patches = nn.Conv2d(3, width, patch, stride=patch)
    return nn.Sequential(
        nn.Sequential(patches, nn.GELU(), nn.BatchNorm2d(width)), *(block() for _ in range(depth))
    )
