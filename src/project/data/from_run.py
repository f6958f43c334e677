"""Build the data module a run trained on, from what that run saved: `project.eval`, `project.benchmark`
and `make benchmark` need only `ckpt_path`, whatever experiment, data set or model the run used."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from project.config import UserError

log = logging.getLogger(__name__)


def saved_run_config(checkpoint: str | Path) -> tuple[Path, DictConfig] | None:
    """The composed config of the run that wrote `checkpoint` (<run>/checkpoints/x.ckpt → <run>/.hydra)."""
    checkpoint = Path(checkpoint).absolute()
    for folder in (checkpoint.parent, *checkpoint.parents[:3]):
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            return path, OmegaConf.load(path)
    return None


def saved_data_config(checkpoint: str | Path) -> DictConfig | None:
    """The run's `data` config with every interpolation resolved against the run's own config (its
    `${model.*}`, `${trainer.*}` and `${paths.*}` values), or None when the run saved no config."""
    found = saved_run_config(checkpoint)
    if found is None:
        return None
    path, saved = found
    data = saved.get("data")
    if not isinstance(data, DictConfig):
        return None
    try:
        return OmegaConf.create(OmegaConf.to_container(data, resolve=True))
    except OmegaConfBaseException as exc:
        message = str(exc).splitlines()[0]
        raise UserError(f"the data config saved in {path} cannot be resolved ({message}); pass data=NAME") from None


def use_run_data_config(cfg: DictConfig) -> None:
    """`cfg.data` is null and a checkpoint is given: take the checkpoint run's data config."""
    if cfg.get("data") is not None or not cfg.get("ckpt_path"):
        return
    data = saved_data_config(cfg.ckpt_path)
    if data is None:
        return
    OmegaConf.set_struct(cfg, False)
    cfg.data = data
    log.info("using the data config of the checkpoint's run (%s)", data.get("_target_"))


def build_datamodule(data_cfg: DictConfig) -> Any:
    """`instantiate(cfg.data)`, with a mistake in the config (a missing value, a rejected setting)
    reported as one line instead of Hydra's wrapped traceback."""
    try:
        return instantiate(data_cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "a data key"
        raise UserError(f"{key} is required (it is ??? in the config): pass {key}=VALUE") from None
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, MissingMandatoryValue):
            key = getattr(cause, "full_key", None) or "a data key"
            raise UserError(f"{key} is required (it is ??? in the config): pass {key}=VALUE") from None
        reason = str(cause or exc).splitlines()[0]
        raise UserError(f"data config {data_cfg.get('_target_')} cannot be built: {reason}") from None
