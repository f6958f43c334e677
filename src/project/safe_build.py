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

import functools
import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from project.config import UserError, plain

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


def resolve_target(target: Any, allowed_prefixes: tuple[str, ...], where: str) -> Any:
    """The object `target` names, if both the name and the module that defines the object lie in an
    allowed package (so `project.models.x.copy` cannot reach a `shutil.copy` imported there)."""
    allowed = ", ".join(allowed_prefixes)
    refused = f"refusing to build {where}._target_={target!r}: only names under {allowed} are allowed"
    if not isinstance(target, str) or not target.startswith(allowed_prefixes) or "." not in target:
        raise UserError(refused)
    module_name, _, attribute = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        raise UserError(f"refusing to build {where}._target_={target!r}: no such name in this project") from None
    if not str(getattr(found, "__module__", "")).startswith(allowed_prefixes):
        raise UserError(refused)
    return found


def resolve_class(target: Any, allowed_prefixes: tuple[str, ...], base: type[T], where: str) -> type[T]:
    """The class `target` names, if it lies in an allowed package and is a subclass of `base`."""
    found = resolve_target(target, allowed_prefixes, where)
    if not isinstance(found, type) or not issubclass(found, base):
        raise UserError(f"refusing to build {where}._target_={target!r}: not a {base.__name__} class")
    return found


def checked_kwargs(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keyword arguments of a `_target_` mapping, after checking every node is plain data. An OmegaConf
    node (a composed config) is turned into plain containers first."""
    config = plain(config)
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


def check_target(
    config: Mapping[str, Any], allowed_prefixes: tuple[str, ...], base: type[T], where: str
) -> tuple[type[T], dict[str, Any]]:
    """The class and keyword arguments `build_plain` would call, every node checked, nothing called: a
    loader refuses a bad file up front with this, before it builds anything."""
    kwargs = checked_kwargs(config, where)
    return resolve_class(config.get("_target_"), allowed_prefixes, base, where), kwargs


def build_plain(config: Mapping[str, Any], allowed_prefixes: tuple[str, ...], base: type[T], where: str) -> T:
    """`cls(**kwargs)` for a `_target_` mapping read from a file: every node is checked first (see the
    module docstring); `where` names the file or key in the error message."""
    cls, kwargs = check_target(config, allowed_prefixes, base, where)
    return cls(**kwargs)


def build_partial(config: Mapping[str, Any], allowed_prefixes: tuple[str, ...], where: str) -> functools.partial:
    """`functools.partial(fn, **kwargs)` for a `_partial_: true` mapping (an optimizer, a schedule): the
    same checks as `build_plain`, and `fn` must be a callable defined in an allowed package."""
    if not isinstance(config, Mapping) or config.get("_partial_") is not True:
        raise UserError(f"{where} must be a `_target_` mapping with `_partial_: true`")
    kwargs = checked_kwargs({k: v for k, v in config.items() if k != "_partial_"}, where)
    found = resolve_target(config.get("_target_"), allowed_prefixes, where)
    if not callable(found):
        raise UserError(f"refusing to build {where}._target_={config.get('_target_')!r}: not callable")
    return functools.partial(found, **kwargs)
