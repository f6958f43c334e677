"""Fit a model config to the data it will train on: class count and input channels come from the data
set (a user's folder decides how many classes there are), so no config file is edited by hand."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def fit_model_to_data(model_cfg: DictConfig | None, datamodule: Any) -> None:
    """Set `model.num_classes` and `model.net.in_channels` (where the config has them) from a data module
    that declares `fits_model` (the image folder/CSV sources); other data sets are left alone."""
    if model_cfg is None or not getattr(datamodule, "fits_model", False):
        return
    classes = len(datamodule.class_names)
    channels = int(datamodule.hparams.channels)
    with open_dict(model_cfg):
        if "num_classes" in model_cfg and model_cfg.num_classes != classes:
            model_cfg.num_classes = classes
        net = model_cfg.get("net")
        if isinstance(net, DictConfig) and "in_channels" in net and net.in_channels != channels:
            net.in_channels = channels
        if isinstance(net, DictConfig) and "num_classes" in net and "num_classes" not in model_cfg:
            net.num_classes = classes
    log.info("model fitted to the data: %d classes, %d input channels", classes, channels)
