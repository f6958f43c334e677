"""Every built-in network takes any input size (from 8×8 up) and any channel and class count."""

from __future__ import annotations

import pytest
import torch

from project.models.cifar_nets import CifarFast, ResNet18
from project.models.nets import DigitsCNN

NETS = {
    "digits_cnn": lambda c, k: DigitsCNN(in_channels=c, num_classes=k, width=4),
    "cifar_fast": lambda c, k: CifarFast(in_channels=c, num_classes=k, widths=(8, 16, 16)),
    "resnet18": lambda c, k: ResNet18(in_channels=c, num_classes=k),
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize(("channels", "classes"), [(1, 2), (3, 7)])
def test_any_input_size_channels_and_classes(name: str, channels: int, classes: int) -> None:
    net = NETS[name](channels, classes).eval()
    with torch.no_grad():
        for size in (8, 32, 64, 96):
            logits = net(torch.randn(1, channels, size, size))
            assert logits.shape == (1, classes) and torch.isfinite(logits).all(), (name, size)
        assert net(torch.randn(1, channels, 40, 24)).shape == (1, classes)  # not square
