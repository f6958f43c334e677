"""Where the Hydra configs live, and small helpers shared by every entry point."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent
T = TypeVar("T")
R = TypeVar("R")


def config_dir() -> str:
    """The `conf/` folder: shipped inside the wheel as `project/conf`, or the repo's top-level
    `conf/` for an editable install. Absolute, so Hydra finds it from any working directory."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra config folder found next to {_PACKAGE_DIR}; reinstall the package")


class UserError(Exception):
    """A mistake the user can fix (bad path, missing data): printed as one line, exit code 2."""


def exit_on_user_error(err: UserError) -> None:
    """A single run ends with one line and exit code 2. In a multirun the error is raised instead, so
    Hydra records that job as failed and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise err
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)


def exits_on_user_error(main: Callable[..., R]) -> Callable[..., R]:
    """Decorate a command's entry point: a `UserError` from it ends the command as `exit_on_user_error`
    says (one line, exit code 2; raised on in a Hydra multirun). Put it below `@hydra.main`."""

    @functools.wraps(main)
    def run_command(*args: object, **kwargs: object) -> R:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            exit_on_user_error(err)
            raise  # not reached: exit_on_user_error always raises

    return run_command


def native_bf16_precision(accelerator: str = "cpu") -> str:
    """`bf16-mixed` where the accelerator computes bf16 in hardware, else `32-true` (emulated bf16 is slower
    than fp32). CPUs: AVX512-BF16 or AMX; CUDA: Ampere or newer. Configs use it as
    `precision: ${bf16_if_native:${trainer.accelerator}}`."""
    import torch

    from project.deploy.hardware import cpu_has_native_bf16, cuda_has_native_bf16

    accelerator = str(accelerator).lower()
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cuda:
        native = cuda_has_native_bf16()
    elif accelerator in ("cpu", "auto"):
        native = cpu_has_native_bf16()
    else:
        native = False
    return "bf16-mixed" if native else "32-true"


# registered on import: every entry point imports this module before Hydra composes a config
OmegaConf.register_new_resolver("bf16_if_native", native_bf16_precision, replace=True)


def plain(value: Any) -> Any:
    """DictConfig/ListConfig → dict/list (resolved), anything else unchanged: what checkpoints may hold."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def dataclass_from_mapping(cls: type[T], values: Mapping[str, Any] | None, what: str) -> T:
    """A settings dataclass from a config mapping; a misspelt key is an error naming the known ones,
    never silently ignored."""
    values = dict(values or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {known}")
    return cls(**values)


def _hf_preprocessing(name: str, key: str) -> Any:
    from project.models.hf_preprocessing import preprocessing_value  # lazy: only configs that use it pay

    return preprocessing_value(name, key)


# `${hf_preprocessing:${model.net.name},image_mean}`: a pretrained backbone's input size and statistics
OmegaConf.register_new_resolver("hf_preprocessing", _hf_preprocessing, replace=True)
