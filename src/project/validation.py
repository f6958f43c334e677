"""Check a composed config before anything runs: every `_target_` node's keys and values against the
signature and type hints of what it builds (as LightningCLI does with jsonargparse), and the project's own
top-level settings against a small schema. A mistake is one line naming the key, exit 2.

`project.command_line` runs it on the command line's config before Hydra starts the job.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from project.config import UserError

# the project's own top-level settings of conf/train.yaml (the groups are `_target_` nodes, checked below)
TRAIN_SETTINGS: dict[str, Any] = {
    "task_name": str,
    "tags": list[str] | None,
    "seed": int | None,
    "ckpt_path": str | None,
    "train": bool,
    "test": bool,
    "optimized_metric": str | None,
    "fail_fast": bool,
    "extras": dict[str, bool] | None,
    "paths": dict[str, str] | None,
}


class ConfigError(UserError):
    """A config value or key that cannot work, found before the run starts."""


# --- types ------------------------------------------------------------------------------------------
def describe(annotation: Any) -> str:
    """A type hint as a user reads it: `int`, `float or str`, `one of ['max', 'min']`."""
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        parts = [describe(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(annotation, "__name__", str(annotation))


@cache
def _adapter(annotation: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    config = ConfigDict(arbitrary_types_allowed=True, coerce_numbers_to_str=True)
    try:
        return TypeAdapter(annotation, config=config)
    except Exception:  # a hint pydantic cannot express (or one that carries its own config): not checked
        try:
            return TypeAdapter(annotation)
        except Exception:
            return None


def type_error(annotation: Any, value: Any) -> str | None:
    """Why `value` does not fit `annotation` (None if it does, or if the hint cannot be checked)."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str) or annotation is Any:
        return None
    try:
        adapter = _adapter(annotation)
    except TypeError:  # unhashable hint
        return None
    if adapter is None:
        return None
    from pydantic import ValidationError

    try:
        adapter.validate_python(value)
    except ValidationError:
        return f"expected {describe(annotation)}, got {value!r}"
    except Exception:  # a validator that fails on its own: not the user's mistake
        pass
    return None


# --- signatures -------------------------------------------------------------------------------------
def _signature(func: Callable) -> inspect.Signature | None:
    for eval_str in (True, False):
        try:
            return inspect.signature(func, eval_str=eval_str)
        except Exception:
            continue
    return None


def parameters(target: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters `target` accepts, and whether it takes any other keyword (`**kwargs` that
    no base class `__init__` accounts for). A class's `**kwargs` are followed up its bases."""
    params: dict[str, inspect.Parameter] = {}
    chain = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] if inspect.isclass(target) else []
    for func in chain or [target]:
        sig = _signature(func)
        if sig is None:
            return params, True
        more = False
        for name, p in sig.parameters.items():
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind is not p.VAR_POSITIONAL and name != "self":
                params.setdefault(name, p)
        if not more:
            return params, False
        if not _forwards_kwargs_to_super(func):
            return params, True  # its **kwargs go elsewhere (e.g. to a wrapped object): anything goes
    return params, True


_SUPER_WITH_KWARGS = re.compile(r"super\(\)\.__init__\((?:[^()]|\([^()]*\))*\*\*\w+")


def _forwards_kwargs_to_super(func: Callable) -> bool:
    """Whether an `__init__(..., **kwargs)` passes them on to its base class (followed then), by its source."""
    try:
        return bool(_SUPER_WITH_KWARGS.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


def suggestion(word: str, choices: list[str]) -> str:
    """`; did you mean `x`?` for the closest of `choices`, or nothing."""
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else ""


def _value(node: DictConfig, key: str) -> tuple[bool, Any]:
    """The resolved value of `node[key]` as plain data; (False, None) when it cannot be resolved here
    (e.g. `${hydra:runtime...}` outside a running job)."""
    try:
        value = node[key]
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        return True, value
    except Exception:
        return False, None


def _builds_objects(node: Any) -> bool:
    if isinstance(node, DictConfig):
        return "_target_" in node
    if isinstance(node, ListConfig):
        return any(_builds_objects(item) for item in node._iter_ex(resolve=False))
    return False


def check_target(node: DictConfig, path: str) -> Iterator[str]:
    from hydra._internal.utils import _locate

    name = node.get("_target_")
    try:
        target = _locate(str(name))
    except Exception:
        yield f"{path}._target_: cannot import {name!r}"
        return
    params, open_kwargs = parameters(target)
    keys = [str(k) for k in node if not str(k).startswith("_")]
    for key in keys:
        if key not in params:
            if not open_kwargs:
                yield f"{path}.{key}: {name} has no setting `{key}`{suggestion(key, list(params))}"
            continue
        if _builds_objects(node._get_node(key)):
            continue  # built by Hydra (each `_target_` inside is checked on its own)
        ok, value = _value(node, key)
        if ok and (problem := type_error(params[key].annotation, value)):
            yield f"{path}.{key}: {problem}"
    if not node.get("_partial_", False) and "_args_" not in node:
        required = [n for n, p in params.items() if p.default is p.empty and p.kind is not p.POSITIONAL_ONLY]
        missing = [n for n in required if n not in keys]
        if missing:
            yield f"{path}: {name} needs {', '.join(missing)} (add {path}.{missing[0]}=...)"


def settings_errors(cfg: DictConfig) -> Iterator[str]:
    """The project's own settings groups (not `_target_` nodes): built into their dataclass as the run will
    build them, then every field checked against its type hint."""
    from project.deploy.settings import DeploySettings

    for key, build in {"deploy": DeploySettings.from_config}.items():
        ok, value = _value(cfg, key) if key in cfg else (False, None)
        if not ok or value is None:
            continue
        try:
            built = build(value)
        except (TypeError, ValueError) as err:
            yield f"{key}: {err}"
            continue
        hints = typing.get_type_hints(type(built))
        for field in dataclasses.fields(built):
            field_value = getattr(built, field.name)
            plain_value = dataclasses.asdict(field_value) if dataclasses.is_dataclass(field_value) else field_value
            if problem := type_error(hints[field.name], plain_value):
                yield f"{key}.{field.name}: {problem}"


def config_errors(cfg: DictConfig, settings: dict[str, Any] | None = None) -> list[str]:
    """Every problem found in `cfg` (the `hydra` node is Hydra's own and left out)."""
    errors: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, DictConfig):
            if "_target_" in node:
                errors.extend(check_target(node, path))
            for key in node:
                if path == "" and key == "hydra":
                    continue
                child = node._get_node(key)
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, ListConfig):
            for i, item in enumerate(node._iter_ex(resolve=False)):
                walk(item, f"{path}[{i}]")

    walk(cfg, "")
    errors.extend(settings_errors(cfg))
    for key, annotation in (settings or {}).items():
        if key in cfg:
            ok, value = _value(cfg, key)
            if ok and (problem := type_error(annotation, value)):
                errors.append(f"{key}: {problem}")
    return errors


def _kind_error(default: Any, value: Any) -> str | None:
    """Why `value` is not the kind of value `default` is (a number, true/false, a string), or None."""
    if value is None or (isinstance(default, bool) and isinstance(value, bool)):
        return None
    if isinstance(default, bool):
        return f"expected true or false, got {value!r}"
    if isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number (default {default!r}), got {value!r}"
    if isinstance(default, str) and not isinstance(value, str | int | float):
        return f"expected a string, got {value!r}"
    return None


def override_errors(cfg: DictConfig, defaults: DictConfig, keys: list[str]) -> list[str]:
    """Plain settings set on the command line (`keys`) to another kind of value than the config's own
    default: `port=abc`, `fail_on_error=maybe`. Keys of `_target_` nodes are left to `check_target`."""
    errors = []
    for key in keys:
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else cfg
        if isinstance(parent, DictConfig) and "_target_" in parent:
            continue
        try:
            default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
            value = OmegaConf.select(cfg, key)
        except Exception:
            continue
        if default is not None and (problem := _kind_error(default, value)):
            errors.append(f"{key}: {problem}")
    return errors


def validate_config(cfg: DictConfig, settings: dict[str, Any] | None = TRAIN_SETTINGS) -> None:
    """Raise `ConfigError` (one line: the first problem, and how many more) if `cfg` cannot work."""
    if errors := config_errors(cfg, settings):
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
