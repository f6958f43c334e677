"""Fine-tuning a pretrained backbone: train the new head alone for `freeze_epochs`, then the whole net
with the backbone at `backbone_lr_scale` × the learning rate.

Equivalent to Lightning's `BackboneFinetuning`, but the backbone's parameter group exists from the first
step (only frozen), so the learning-rate schedule drives both groups alike. Any net with a `backbone`
submodule qualifies (`project.models.hf_backbone.HFBackbone`). Under DDP, frozen parameters get no
gradient: `HydraDDPStrategy` then turns on `find_unused_parameters` by itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def backbone_of(net: nn.Module) -> nn.Module | None:
    backbone = getattr(net, "backbone", None)
    if backbone is None and hasattr(net, "_orig_mod"):  # torch.compile wrapper
        backbone = getattr(net._orig_mod, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else None


def param_groups(net: nn.Module, backbone_lr_scale: float) -> list[dict[str, Any]]:
    """[head parameters, backbone parameters with `lr_scale`]; one group when the net has no backbone."""
    backbone = backbone_of(net)
    if backbone is None:
        return [{"params": list(net.parameters())}]
    body = {id(p) for p in backbone.parameters()}
    head = [p for p in net.parameters() if id(p) not in body]
    return [{"params": head}, {"params": list(backbone.parameters()), "lr_scale": float(backbone_lr_scale)}]


def apply_lr_scales(optimizer: Any) -> None:
    """Scale each group's learning rate by its `lr_scale` (before a scheduler records the initial rates)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * group.get("lr_scale", 1.0)


def set_backbone_frozen(net: nn.Module, frozen: bool) -> None:
    """Frozen: no gradients and eval mode (BatchNorm statistics and dropout stay as pretrained); unfrozen:
    gradients and train mode again (Lightning keeps each submodule's mode across validation)."""
    backbone = backbone_of(net)
    if backbone is None:
        return
    for p in backbone.parameters():
        p.requires_grad_(not frozen)
    backbone.train(not frozen)
