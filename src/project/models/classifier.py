"""The LightningModule that trains any image-classification `nn.Module`.

Configs pass `net`, `optimizer` and `scheduler` as plain `_target_` mappings (`_recursive_: false`), so the
checkpoint's hyper-parameters are plain containers: `load_from_checkpoint(path, weights_only=True)`
rebuilds the network with no pickled objects and no Hydra config at hand. Those mappings are built by
`project.models.from_config`, every node checked, never by Hydra's recursive `instantiate`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from project.config import UserError, plain
from project.models.class_report import balanced_class_weights, class_report
from project.models.finetune import apply_lr_scales, backbone_of, param_groups, set_backbone_frozen
from project.models.from_config import build_net, build_optim

log = logging.getLogger(__name__)
# per-class scalars go to the loggers up to this many classes (metrics.json always has them all)
MAX_LOGGED_CLASSES = 100


def build_factory(spec: Mapping | Callable | None, where: str) -> Any:
    """An optimizer/schedule `_partial_` mapping → its checked partial (a checkpoint's hyper-parameters
    must not pick what runs, see `from_config`); a callable passed in code, or None, passes through."""
    if spec is None or callable(spec):
        return spec
    return build_optim(spec, where)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of `net` with torchmetrics accuracy for train/val/test and `val/acc_best`.

    `class_weights`: null, `balanced` (inverse class frequency of the training labels) or one weight per
    class; it weights the training loss only, so val/test losses stay comparable across runs.
    `freeze_epochs` / `backbone_lr_scale`: for nets with a pretrained `backbone` (see `finetune`).
    The test report (per-class accuracy/precision/F1, macro-F1, balanced accuracy, confusion matrix) is
    left in `test_report` after `trainer.test`, and its scalars are logged.
    """

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | Callable | None = None,
        scheduler: Mapping[str, Any] | Callable | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        class_weights: str | list[float] | None = None,
        freeze_epochs: int = 0,
        backbone_lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        net, optimizer, scheduler = plain(net), plain(optimizer), plain(scheduler)
        class_weights = plain(class_weights)
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise UserError(f"model.class_weights={class_weights!r}: use null, balanced or a list of weights")
        self.net: nn.Module = net if isinstance(net, nn.Module) else build_net(net)
        if isinstance(net, Mapping) and hasattr(self.net, "rebuild_config"):
            net = self.net.rebuild_config()  # e.g. a pretrained download → an architecture that rebuilds offline
        if freeze_epochs and backbone_of(self.net) is None:
            raise UserError(f"model.freeze_epochs={freeze_epochs} needs a net with a pretrained backbone (hf_backbone)")
        hparams = {
            "net": net,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "num_classes": num_classes,
            "label_smoothing": label_smoothing,
            "channels_last": channels_last,
            "compile": compile,
            "class_weights": class_weights,
            "freeze_epochs": int(freeze_epochs),
            "backbone_lr_scale": float(backbone_lr_scale),
        }
        # modules and partials passed in code are not data: leave them out of the checkpoint
        self.save_hyperparameters({k: v for k, v in hparams.items() if not callable(v)})
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._optimizer_spec, self._scheduler_spec = optimizer, scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.register_buffer("class_weight", None, persistent=False)
        self.test_report: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        weights = self.hparams.get("class_weights")
        if stage != "fit" or weights is None:
            return
        if weights == "balanced":
            counts = self._datamodule_attr("class_counts")
            if counts is None:
                raise UserError("model.class_weights=balanced needs a data module with class_counts()")
            weights = balanced_class_weights(counts())
            log.info("class weights (balanced): %s", [round(w, 3) for w in weights.tolist()])
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (self.hparams.num_classes,):
            raise UserError(f"model.class_weights has {weights.numel()} values for {self.hparams.num_classes} classes")
        self.class_weight = weights.to(self.device)

    def _datamodule_attr(self, name: str) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, name, None)

    def configure_model(self) -> None:
        if self.hparams.get("compile") and not hasattr(self.net, "_orig_mod"):
            self.net = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def freezes_parameters(self) -> bool:
        """Whether some parameters get no gradient in part of the training (the backbone's first epochs):
        DDP must then look for unused parameters (`project.distributed.strategy.HydraDDPStrategy`)."""
        return bool(self.hparams.get("freeze_epochs", 0))

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0:  # a fresh start (a resumed run keeps its restored best)
            self.val_acc_best.reset()  # the sanity check must not count as a best epoch

    def on_train_epoch_start(self) -> None:
        freeze_epochs = self.hparams.get("freeze_epochs", 0)
        if freeze_epochs:
            set_backbone_frozen(self.net, self.current_epoch < freeze_epochs)
            if self.current_epoch == freeze_epochs:
                log.info("epoch %d: backbone unfrozen (lr × %s)", self.current_epoch, self.hparams.backbone_lr_scale)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        if split == "train" and self.class_weight is not None:
            loss = F.cross_entropy(
                logits, labels, weight=self.class_weight, label_smoothing=self.hparams.label_smoothing
            )
        else:
            loss = self.criterion(logits, labels)
        if split == "test":
            self.test_confusion.update(logits.detach(), labels)
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

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self.test_report = None

    def on_test_epoch_end(self) -> None:
        names = self._datamodule_attr("class_names") or []
        report = class_report(self.test_confusion.compute(), names)  # synced across ranks by torchmetrics
        self.test_report = report
        self.log("test/f1_macro", report["macro_f1"])
        self.log("test/acc_balanced", report["balanced_accuracy"])
        if len(report["class_names"]) <= MAX_LOGGED_CLASSES:
            for name, row in report["per_class"].items():
                self.log(f"test/acc_class/{name}", row["accuracy"])

    def configure_optimizers(self) -> Any:
        make_optimizer = build_factory(self._optimizer_spec, "model.optimizer")
        if make_optimizer is None:
            raise ValueError("model.optimizer is not set: give a `_partial_: true` optimizer config")
        if backbone_of(self.net) is not None:  # a pretrained backbone learns at backbone_lr_scale × lr
            optimizer = make_optimizer(params=param_groups(self.net, self.hparams.get("backbone_lr_scale", 1.0)))
            apply_lr_scales(optimizer)
        else:
            optimizer = make_optimizer(params=self.parameters())
        make_scheduler = build_factory(self._scheduler_spec, "model.scheduler")
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
