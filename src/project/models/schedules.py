"""Learning-rate schedules that take the run's total step count (filled in by the LightningModule)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup_decay(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.2, final_fraction: float = 0.0
) -> LambdaLR:
    """Linear ramp from 0 to the base LR over `warmup_fraction` of training, then linear decay to
    `final_fraction` of it: the triangular schedule of the fast CIFAR-10 speed runs."""
    warmup = max(1, int(total_steps * warmup_fraction))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay)
        return 1.0 + (final_fraction - 1.0) * progress

    return LambdaLR(optimizer, factor)
