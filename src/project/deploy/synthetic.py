"""Labelled synthetic data for benchmarking a network with random weights (no data set, no training).

A random network is a poor subject for parity: its logits nearly tie, so any rounding flips a few top-1
answers and bf16 would "fail" for a reason that says nothing about the engine. Here each class is a random
prototype image plus noise, and only the last linear layer is fitted (ridge regression on the random
features, closed form, milliseconds), so decisions have realistic margins while the weights that cost
time stay random. Speed is unaffected: the architecture and tensor sizes are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from project.deploy.parity import ParityData


def prototype_images(
    shape: tuple[int, int, int], classes: int, count: int, noise: float = 0.8, seed: int = 0, sample_seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images: class prototypes (fixed by `seed`) plus Gaussian noise (drawn from `sample_seed`)."""
    prototypes = torch.randn((classes, *shape), generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(sample_seed)
    labels = torch.randint(0, classes, (count,), generator=gen)
    return prototypes[labels] + noise * torch.randn((count, *shape), generator=gen), labels


def last_linear(net: nn.Module) -> nn.Linear:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear head to fit")
    return linears[-1]


@torch.no_grad()
def fit_head(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    """Ridge fit of the last linear layer to one-hot targets. A constant factor the network applies after
    the head (CifarFast scales logits by 1/9) is measured and divided out, so logits come out near one-hot."""
    head = last_linear(net)
    seen: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["features"], seen["head_out"] = args[0].detach(), out.detach()

    hook = head.register_forward_hook(keep)
    try:
        net.eval()(images)
        features = seen["features"].double().flatten(1)
        if head.bias is not None:
            features = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], 1)
        targets = nn.functional.one_hot(labels, classes).double()
        gram = features.T @ features
        ridge = 1e-3 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        solution = torch.linalg.solve(gram + ridge, features.T @ targets).T  # classes × features(+1)
        head.weight.copy_(solution[:, : head.in_features].float())
        if head.bias is not None:
            head.bias.copy_(solution[:, -1].float())
        out = net(images[:256]).double()
        head_out = seen["head_out"].double()
        scale = (out * head_out).sum() / (out * out).sum().clamp_min(1e-30)
        head.weight.mul_(float(scale))
        if head.bias is not None:
            head.bias.mul_(float(scale))
    finally:
        hook.remove()


def synthetic_parity_data(
    net: nn.Module, shape: tuple[int, int, int], classes: int, count: int = 2048, seed: int = 0
) -> ParityData:
    """Fit `net`'s head on one synthetic set and return a held-out set of the same classes as parity data."""
    fit_x, fit_y = prototype_images(shape, classes, max(count, 1024), seed=seed, sample_seed=seed + 1)
    fit_head(net, fit_x, fit_y, classes)
    test_x, test_y = prototype_images(shape, classes, count, seed=seed, sample_seed=seed + 2)
    return ParityData(
        [test_x], test_y, f"synthetic: {classes} prototype classes + noise (random backbone, fitted head)"
    )
