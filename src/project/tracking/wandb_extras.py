"""What a W&B run shows beyond scalars: the best checkpoint as a `model` artifact, a confusion matrix and
a panel of misclassified test images. Added by `project.tracking.wandb_setup.WandbLogger`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from project.deploy.checkpoint import best_checkpoint

log = logging.getLogger(__name__)


def active_wandb_run(trainer: L.Trainer) -> Any | None:
    """The W&B run of the trainer's first WandbLogger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None


def to_display(image: torch.Tensor, mean: list[float] | None, std: list[float] | None) -> np.ndarray:
    """A normalised C×H×W tensor → H×W(×3) uint8, enlarged to at least 64 px so tiny images stay visible."""
    image = image.detach().float().cpu()
    if mean and std and len(mean) == image.shape[0]:
        image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:  # unknown normalisation: stretch to the full range
        image = (image - image.min()) / (image.max() - image.min() + 1e-8)
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    scale = max(1, -(-64 // max(pixels.shape[:2])))
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


class WandbExtras(Callback):
    """Logs the best checkpoint at the end of fit, and the test report at the end of test.

    Test predictions come from a forward hook on the LightningModule, so nothing is computed twice and
    the module needs no changes.
    """

    def __init__(self, log_best_model: bool = True, log_test_report: bool = True, max_misclassified: int = 32) -> None:
        self.log_best_model = log_best_model
        self.log_test_report = log_test_report
        self.max_misclassified = max_misclassified
        self._reset()

    def _reset(self) -> None:
        self._hook: Any = None
        self._logits: torch.Tensor | None = None
        self._true: list[torch.Tensor] = []
        self._pred: list[torch.Tensor] = []
        self._wrong: list[tuple[torch.Tensor, int, int, float]] = []

    # --- model artifact -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_best_model or trainer.global_rank != 0:
            return
        callback = trainer.checkpoint_callback
        path = best_checkpoint(trainer)
        run = active_wandb_run(trainer)
        if run is None or not path or not Path(path).is_file():
            return
        import wandb

        score = getattr(callback, "best_model_score", None)
        metadata = {
            "monitor": getattr(callback, "monitor", None),
            "score": float(score) if score is not None else None,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "file": Path(path).name,
        }
        artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata)
        artifact.add_file(path, name="model.ckpt")
        run.log_artifact(artifact, aliases=["best", "latest"])

    # --- test report --------------------------------------------------------------------------------
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        if self.log_test_report and active_wandb_run(trainer) is not None:
            self._hook = pl_module.register_forward_hook(self._capture)

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        self._logits = output if isinstance(output, torch.Tensor) else None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        logits, self._logits = self._logits, None
        if self._hook is None or logits is None or not isinstance(batch, list | tuple) or len(batch) < 2:
            return
        images, labels = batch[0], batch[1]
        confidence, pred = logits.detach().float().softmax(-1).max(-1)
        self._true.append(labels.detach().cpu())
        self._pred.append(pred.cpu())
        room = self.max_misclassified - len(self._wrong)
        for i in (pred != labels).nonzero().flatten()[: max(room, 0)].tolist():
            self._wrong.append((images[i].detach().cpu(), int(labels[i]), int(pred[i]), float(confidence[i])))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        run = active_wandb_run(trainer)
        if run is None or not self._true:
            return
        y_true, y_pred = torch.cat(self._true), torch.cat(self._pred)
        if trainer.world_size > 1:  # DDP: each rank saw its own shard; the matrix covers the whole split
            from torchmetrics.utilities.distributed import gather_all_tensors  # handles uneven shards

            y_true = torch.cat(gather_all_tensors(y_true.to(pl_module.device))).cpu()
            y_pred = torch.cat(gather_all_tensors(y_pred.to(pl_module.device))).cpu()
        if not trainer.is_global_zero:
            self._reset()
            return
        import wandb

        y_true, y_pred = y_true.tolist(), y_pred.tolist()
        names = self._class_names(trainer, max([*y_true, *y_pred]) + 1)
        mean, std = self._normalisation(trainer)
        payload: dict[str, Any] = {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=y_true, preds=y_pred, class_names=names, title="Test confusion matrix"
            ),
            "test/misclassified_count": sum(t != p for t, p in zip(y_true, y_pred, strict=True)),
        }
        if self._wrong:
            payload["test/misclassified"] = [
                wandb.Image(to_display(image, mean, std), caption=f"true {names[t]} → {names[p]} ({c:.0%})")
                for image, t, p, c in self._wrong
            ]
        run.log(payload)
        self._reset()

    @staticmethod
    def _class_names(trainer: L.Trainer, at_least: int) -> list[str]:
        names = list(getattr(trainer.datamodule, "class_names", None) or [])
        return names if len(names) >= at_least else [str(i) for i in range(at_least)]

    @staticmethod
    def _normalisation(trainer: L.Trainer) -> tuple[list[float] | None, list[float] | None]:
        hparams = getattr(trainer.datamodule, "hparams", None) or {}
        mean, std = hparams.get("mean"), hparams.get("std")
        return (list(mean), list(std)) if mean is not None and std is not None else (None, None)
