"""Stop a bad Optuna trial from inside training: report the monitored metric after each validation
epoch, and end the fit with `optuna.TrialPruned` when the study's pruner says so.

A small callback rather than optuna-integration's, so no extra dependency can pin Optuna back.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import optuna
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.metrics: dict[str, float] = {}
        self.pruned_at: int | None = None
        self._warned = False
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning("pruning: %r was not logged, so this trial cannot be pruned", self.monitor)
                self._warned = True
            return
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        step = trainer.current_epoch
        if step in self._reported:
            return  # validation ran twice in one epoch: report once
        self._reported.add(step)
        self.trial.report(value if math.isfinite(value) else float("nan"), step=step)
        if self.trial.should_prune():
            self.metrics = {
                k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in trainer.callback_metrics.items()
            }
            self.pruned_at = step
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned at epoch {step}: {self.monitor}={value:.4g}")
