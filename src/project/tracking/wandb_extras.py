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

    The confusion matrix is the LightningModule's own (`test_report`); misclassified images come from a
    forward hook on it, so nothing is computed twice.
    """

    def __init__(self, log_best_model: bool = True, log_test_report: bool = True, max_misclassified: int = 32) -> None:
        self.log_best_model = log_best_model
        self.log_test_report = log_test_report
        self.max_misclassified = max_misclassified
        self._reset()

    def _reset(self) -> None:
        self._hook: Any = None
        self._logits: torch.Tensor | None = None
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
        room = self.max_misclassified - len(self._wrong)
        for i in (pred != labels).nonzero().flatten()[: max(room, 0)].tolist():
            self._wrong.append((images[i].detach().cpu(), int(labels[i]), int(pred[i]), float(confidence[i])))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        run = active_wandb_run(trainer)
        # the module's test report holds the confusion matrix of the whole split (summed across ranks)
        report = getattr(pl_module, "test_report", None)
        if run is None or not report or not trainer.is_global_zero:
            self._reset()
            return
        import wandb

        cm = report["confusion_matrix"]
        names = list(report["class_names"])
        # the plot takes label lists: expand the counts (no second pass over the predictions)
        y_true = [t for t, row in enumerate(cm) for p, count in enumerate(row) for _ in range(count)]
        y_pred = [p for row in cm for p, count in enumerate(row) for _ in range(count)]
        mean, std = self._normalisation(trainer)
        payload: dict[str, Any] = {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=y_true, preds=y_pred, class_names=names, title="Test confusion matrix"
            ),
            "test/misclassified_count": len(y_true) - sum(cm[i][i] for i in range(len(cm))),
        }
        if self._wrong:
            payload["test/misclassified"] = [
                wandb.Image(to_display(image, mean, std), caption=f"true {names[t]} → {names[p]} ({c:.0%})")
                for image, t, p, c in self._wrong
            ]
        run.log(payload)
        self._reset()

    @staticmethod
    def _normalisation(trainer: L.Trainer) -> tuple[list[float] | None, list[float] | None]:
        hparams = getattr(trainer.datamodule, "hparams", None) or {}
        mean, std = hparams.get("mean"), hparams.get("std")
        return (list(mean), list(std)) if mean is not None and std is not None else (None, None)
