"""Small networks for the embedded default data set."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv → BatchNorm → GELU, the building block every net here shares."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    )


class DigitsCNN(nn.Module):
    """A compact CNN for 8×8 greyscale digits (~100k parameters): two conv stages and a linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(in_channels, width),
            conv_bn(width, width * 2),
            nn.MaxPool2d(2),
            conv_bn(width * 2, width * 4),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
