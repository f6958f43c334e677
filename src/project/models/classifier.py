"""The LightningModule that trains any image-classification `nn.Module`.

Configs pass `net`, `optimizer` and `scheduler` as plain `_target_` mappings (`_recursive_: false`), so the
checkpoint's hyper-parameters are plain containers: `load_from_checkpoint(path, weights_only=True)`
rebuilds the network with no pickled objects and no Hydra config at hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from project.config import plain


def build(spec: Mapping | Callable | None) -> Any:
    """A `_target_` mapping → the object (or partial) it describes; a callable passes through."""
    if spec is None or callable(spec):
        return spec
    return instantiate(spec)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of `net` with torchmetrics accuracy for train/val/test and `val/acc_best`."""

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | Callable | None = None,
        scheduler: Mapping[str, Any] | Callable | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        net, optimizer, scheduler = plain(net), plain(optimizer), plain(scheduler)
        hparams = {
            "net": net,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "num_classes": num_classes,
            "label_smoothing": label_smoothing,
            "channels_last": channels_last,
            "compile": compile,
        }
        # modules and partials passed in code are not data: leave them out of the checkpoint
        self.save_hyperparameters({k: v for k, v in hparams.items() if not callable(v)})
        self.net: nn.Module = net if isinstance(net, nn.Module) else build(net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._optimizer_spec, self._scheduler_spec = optimizer, scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def configure_model(self) -> None:
        if self.hparams.get("compile") and not hasattr(self.net, "_orig_mod"):
            self.net = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0:  # a fresh start (a resumed run keeps its restored best)
            self.val_acc_best.reset()  # the sanity check must not count as a best epoch

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        acc, mean_loss = getattr(self, f"{split}_acc"), getattr(self, f"{split}_loss")
        acc(logits.detach(), labels)
        mean_loss(loss.detach())
        on_step = split == "train"
        self.log(f"{split}/loss", mean_loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        make_optimizer = build(self._optimizer_spec)
        if make_optimizer is None:
            raise ValueError("model.optimizer is not set: give a `_partial_: true` optimizer config")
        optimizer = make_optimizer(params=self.parameters())
        make_scheduler = build(self._scheduler_spec)
        if make_scheduler is None:
            return optimizer
        kwargs = {}
        func = getattr(make_scheduler, "func", make_scheduler)
        if "total_steps" in inspect.signature(func).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = make_scheduler(optimizer=optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # metric states are not in the state_dict: the best-so-far travels beside it for an exact resume
        if (best := checkpoint.get("val_acc_best")) is not None:
            self.val_acc_best.update(best)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.val_acc_best.update_count:
            checkpoint["val_acc_best"] = self.val_acc_best.compute().detach().cpu()
        # The preprocessing contract travels with the weights, so deployment needs nothing else.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "input_spec"):
            checkpoint["input_spec"] = datamodule.input_spec()
