"""A test-only callback that makes one DDP rank's training loss non-finite (a NaN image in its batch)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class PoisonBatchOnRank(Callback):
    """Fills the images of batch `batch_idx` on rank `rank` with NaN, as a corrupt sample would."""

    def __init__(self, rank: int = 1, batch_idx: int = 1) -> None:
        self.rank, self.batch_idx = rank, batch_idx

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch_idx and trainer.current_epoch == 0:
            batch[0].fill_(float("nan"))
