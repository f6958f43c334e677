"""Networks for 32×32 RGB images (CIFAR-10): a fast speed-run net and the CIFAR ResNet-18 baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from project.models.nets import conv_bn


class ConvGroup(nn.Sequential):
    """conv → max-pool(2) → conv, each conv with BatchNorm + GELU: one resolution stage of the speed-run nets.

    Pooling right after the first conv halves the cost of the second, the trick that makes them fast.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        first = conv_bn(c_in, c_out)
        super().__init__(first[0], nn.MaxPool2d(2), first[1], first[2], conv_bn(c_out, c_out))


class CifarFast(nn.Module):
    """A compact all-conv net after Keller Jordan's airbench (~2M parameters at widths 64/256/256).

    Stem conv, three conv–pool–conv groups (32→16→8→4 pixels), global max-pool, a bias-free linear head.
    Logits are scaled by 1/9 as in airbench, which keeps the initial softmax soft under high learning rates.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256)) -> None:
        super().__init__()
        w1, w2, w3 = (int(w) for w in widths)
        self.features = nn.Sequential(
            conv_bn(in_channels, w1 // 2),
            ConvGroup(w1 // 2, w1),
            ConvGroup(w1, w2),
            ConvGroup(w2, w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.scale = 1.0 / 9.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.scale


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18/34, with a 1×1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 adapted to 32×32 inputs (He et al. 2016, CIFAR variant): a 3×3 stride-1 stem and no max-pool,
    so the four stages run at 32/16/8/4 pixels. ~11M parameters; the usual strong baseline."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.layers(self.stem(x))))
