"""The model config's `_target_` mappings (the network, the optimizer, the schedule) → objects, with
nothing run that a mapping could choose.

The network's mapping reaches us from a training config, a checkpoint's `hyper_parameters.net`, a bundle's
`model.json` and a run's saved config, and the last three are files anyone may edit (a bundle's manifest
can be rewritten to match). So every node is checked first (`project.safe_build`): the class must be an
`nn.Module` defined under `project.models.` or `torch.nn.`, and every argument plain data — no nested
`_target_`, `_args_` or `_partial_`, nothing Hydra would instantiate. Optimizers and schedules are
`_partial_` mappings built the same way, from `torch.optim.` or `project.models.` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from project.safe_build import build_partial, build_plain, check_target

NET_TARGET_PREFIXES = ("project.models.", "torch.nn.")
# optimizers and learning-rate schedules (`_partial_: true` mappings of the model config)
OPTIM_TARGET_PREFIXES = ("torch.optim.", "project.models.")


def check_net_config(net_config: Mapping[str, Any], where: str = "model.net") -> type[nn.Module]:
    """Refuse a network config that `build_net` would refuse, building nothing; the class it names."""
    cls, _ = check_target(net_config, NET_TARGET_PREFIXES, nn.Module, where)
    return cls


def build_net(net_config: Mapping[str, Any], where: str = "model.net") -> nn.Module:
    """The network a `_target_` mapping describes, every node checked before anything is built."""
    return build_plain(net_config, NET_TARGET_PREFIXES, nn.Module, where)


def build_optim(spec: Mapping[str, Any], where: str) -> Any:
    """An optimizer or schedule factory (a partial) from its `_partial_: true` mapping, checked the same way."""
    return build_partial(spec, OPTIM_TARGET_PREFIXES, where)
