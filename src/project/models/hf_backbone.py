"""A pretrained Hugging Face `transformers` vision model (ResNet, ConvNeXt, ViT, ...) as a classifier net.

Training builds it from `name` (a hub id or a local `save_pretrained` folder) with the pretrained weights
and a fresh head sized to the data set's classes. `rebuild_config()` then records the architecture as a
plain dict, which the LightningModule saves in place of `name`: checkpoints and deploy bundles rebuild the
network from that dict alone (`config=`), offline, with the weights coming from their own state dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from project.config import UserError, plain

log = logging.getLogger(__name__)

# config fields that describe the checkpoint file or the old head, not the architecture
_DROP = ("transformers_version", "architectures", "dtype", "torch_dtype", "id2label", "label2id", "_name_or_path")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def architecture_dict(config: Any) -> dict[str, Any]:
    """A transformers config → the plain, JSON-safe dict that rebuilds the same architecture."""
    values = config.to_diff_dict()
    values["model_type"] = config.model_type
    return {k: v for k, v in values.items() if k not in _DROP}


class HFBackbone(nn.Module):
    """`AutoModelForImageClassification` with `num_classes` outputs; `backbone` is its pretrained body
    (what `model.freeze_epochs` freezes), the rest is the new head. Takes the normalised N×C×H×W batch
    and returns logits. A 1-channel batch is repeated to the backbone's channels (grey images on an RGB
    backbone)."""

    def __init__(
        self,
        name: str | None = None,
        num_classes: int = 10,
        config: Mapping[str, Any] | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        _quiet_transformers()
        from transformers import AutoConfig, AutoModelForImageClassification

        config = plain(config)
        self.name, self.num_classes = name, int(num_classes)
        if config is not None:  # rebuilding a trained net: architecture only, no download, no weights
            values = dict(config)
            arch = AutoConfig.for_model(values.pop("model_type"), **values, num_labels=self.num_classes)
            self.model = AutoModelForImageClassification.from_config(arch)
        elif name:
            try:
                if pretrained:
                    self.model = AutoModelForImageClassification.from_pretrained(
                        name, num_labels=self.num_classes, ignore_mismatched_sizes=True, dtype=torch.float32
                    )
                else:
                    arch = AutoConfig.from_pretrained(name, num_labels=self.num_classes)
                    self.model = AutoModelForImageClassification.from_config(arch)
            except OSError as exc:
                raise UserError(
                    f"cannot load backbone {name!r}: {str(exc).splitlines()[0]} (offline, pass a local folder "
                    "written by save_pretrained as model.net.name=PATH)"
                ) from None
        else:
            raise UserError("model.net.name is not set: give a hub id (microsoft/resnet-50) or a local folder")
        self.model.config.return_dict = True
        self.model.train()  # from_pretrained returns eval mode; the Trainer and callers set modes themselves
        self.channels = int(getattr(self.model.config, "num_channels", 3))

    @property
    def backbone(self) -> nn.Module:
        """The pretrained body (everything but the classification head)."""
        return self.model.base_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        return self.model(pixel_values=x).logits

    def rebuild_config(self) -> dict[str, Any]:
        """The `_target_` mapping that rebuilds this network with no network access and no weights."""
        return {
            "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
            "name": self.name,
            "num_classes": self.num_classes,
            "config": architecture_dict(self.model.config),
            "pretrained": False,
        }
