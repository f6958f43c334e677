"""Build an object from a config mapping that came from a file a user loads (a bundle's `model.json`, a
checkpoint's hyper-parameters, a run's saved `.hydra/config.yaml`) without letting that file choose what
runs.

Hydra's `instantiate` builds every nested `_target_`/`_args_` node, so a tampered file could call
`builtins.open(path, "w")` while a network is being built. Here nothing is instantiated recursively:
the top-level `_target_` must name a class of the wanted kind inside an allow-listed package, every
other value must be plain data (no Hydra key anywhere below it), and the class is called with those
values as keyword arguments. Every node is checked before anything is imported or called.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from project.config import UserError

T = TypeVar("T")

# Keys with which Hydra's `instantiate` would build or call something.
HYDRA_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
# Top-level keys that change nothing when the class is called directly, and are dropped.
IGNORED_TOP_KEYS = frozenset({"_recursive_", "_convert_"})


def check_plain(value: Any, where: str) -> None:
    """Raise `UserError` unless `value` is plain data: scalars, lists and mappings with no Hydra key."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UserError(f"refusing to load {where}: key {key!r} is not a string")
            if key in HYDRA_KEYS:
                raise UserError(
                    f"refusing to load {where}.{key}: nested {key} nodes are not allowed in a saved config "
                    "(the file was edited or was not written by this project)"
                )
            check_plain(item, f"{where}.{key}")
        return
    raise UserError(f"refusing to load {where}: a {type(value).__name__} is not plain data")


def resolve_class(target: Any, allowed_prefixes: tuple[str, ...], base: type[T], where: str) -> type[T]:
    """The class `target` names, if it lies in an allowed package and is a subclass of `base`."""
    if not isinstance(target, str) or not target.startswith(allowed_prefixes) or "." not in target:
        raise UserError(
            f"refusing to build {where}._target_={target!r}: only classes under {', '.join(allowed_prefixes)} "
            "are allowed"
        )
    module_name, _, attribute = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        raise UserError(f"refusing to build {where}._target_={target!r}: no such class in this project") from None
    if not isinstance(found, type) or not issubclass(found, base):
        raise UserError(f"refusing to build {where}._target_={target!r}: not a {base.__name__} class")
    return found


def checked_kwargs(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keyword arguments of a `_target_` mapping, after checking every node is plain data."""
    if not isinstance(config, Mapping):
        raise UserError(f"refusing to load {where}: expected a mapping with _target_, got {type(config).__name__}")
    kwargs = {}
    for key, value in config.items():
        if key == "_target_" or key in IGNORED_TOP_KEYS:
            continue
        if not isinstance(key, str) or key in HYDRA_KEYS:
            raise UserError(f"refusing to load {where}: {key!r} is not allowed in a saved config")
        check_plain(value, f"{where}.{key}")
        kwargs[key] = value
    return kwargs


def build_plain(config: Mapping[str, Any], allowed_prefixes: tuple[str, ...], base: type[T], where: str) -> T:
    """`cls(**kwargs)` for a `_target_` mapping read from a file: every node is checked first (see the
    module docstring); `where` names the file or key in the error message."""
    kwargs = checked_kwargs(config, where)
    cls = resolve_class(config.get("_target_"), allowed_prefixes, base, where)
    return cls(**kwargs)
