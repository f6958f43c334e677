"""From a Lightning checkpoint to the bare eager network, with nothing unpickled but tensors and data:
finding the best checkpoint of a fit, opening it safely, and rebuilding its network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from project.config import UserError
from project.models.from_config import build_net, check_net_config

if TYPE_CHECKING:
    import lightning as L

__all__ = ["best_checkpoint", "build_net", "checkpoint_net_config", "load_checkpoint_file", "load_net"]


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The path of the best checkpoint the trainer's checkpoint callback kept, or None."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    return path or None


def load_checkpoint_file(path: str | None) -> dict[str, Any]:
    """Open a Lightning checkpoint safely (`weights_only=True`), or say plainly why not."""
    if not path:
        raise UserError("ckpt_path is required: pass ckpt_path=PATH/TO/checkpoint.ckpt")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint not found: {file} (give the path of an existing .ckpt file)")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"{file} is not a readable checkpoint ({type(exc).__name__}); pass a .ckpt written by training"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{file} is not a Lightning checkpoint (no state_dict); pass a .ckpt written by training")
    return checkpoint


def checkpoint_net_config(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's network config (`hyper_parameters.net`), every node checked and nothing built: a
    tampered file is refused in one line before any code it names could run."""
    hparams = checkpoint.get("hyper_parameters")
    net_config = hparams.get("net") if isinstance(hparams, Mapping) else None
    if not isinstance(net_config, Mapping):
        raise UserError(f"{path} does not record its network config (hyper_parameters.net)")
    check_net_config(net_config, f"{path} hyper_parameters.net")
    return dict(net_config)


def net_state_dict(module_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LightningModule state dict → the inner net's, without `net.` and torch.compile's `_orig_mod.`."""
    out = {}
    for key, value in module_state.items():
        if not key.startswith("net."):
            continue  # metrics, criterion buffers
        out[key.removeprefix("net.").replace("_orig_mod.", "")] = value
    return out


def load_net(checkpoint_path: str | Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The eval-mode fp32 network of a checkpoint, its config mapping and its input spec."""
    checkpoint = load_checkpoint_file(str(checkpoint_path))
    net_config = checkpoint_net_config(checkpoint, checkpoint_path)
    net = build_net(net_config, f"{checkpoint_path} hyper_parameters.net")
    net.load_state_dict(net_state_dict(checkpoint["state_dict"]))
    net = net.float().eval().to(memory_format=torch.contiguous_format)
    input_spec = checkpoint.get("input_spec")
    if not isinstance(input_spec, Mapping):
        raise UserError(f"{checkpoint_path} has no input_spec (was it written by project.train?)")
    return net, net_config, dict(input_spec)
