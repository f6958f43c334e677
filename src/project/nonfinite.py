"""Stop training at the first non-finite loss, before it reaches the weights, with one line saying where."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from project.config import UserError


class NonFiniteLossError(UserError):
    """A NaN/Inf training loss: the run stops; nothing it computed becomes best, last or deployed."""


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint written before the failure (last, else best), if any."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and (callback.last_model_path or callback.best_model_path):
            return callback.last_model_path or callback.best_model_path
    return None


class StopOnNonFiniteLoss(Callback):
    """Checks each training loss before backward; a NaN or Inf raises `NonFiniteLossError` (exit 2).

    Under DDP the ranks decide together (one all-reduced flag per step): a rank stopping alone would leave
    the others waiting in the gradient all-reduce until the collective timeout."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite_here = bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(finite_here, all=True):
            return
        value = "on another rank" if finite_here else loss.detach().float().item()
        good = last_good_checkpoint(trainer) or "none (no epoch finished)"
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at step {trainer.global_step}, "
            f"epoch {trainer.current_epoch}: training stopped; last good checkpoint: {good} "
            "(lower model.optimizer.lr or check the data)"
        )
