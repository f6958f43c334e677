"""Build the data module a run trained on, from what that run saved: `project.eval`, `project.benchmark`
and `make benchmark` need only `ckpt_path`, whatever experiment, data set, model or working folder the
run used.

Training writes a record into every checkpoint (`SaveDataConfig`): the data module's class and every
constructor argument, with each path resolved at training time: absolute, or relative to the run folder
for a path inside it (so a moved run folder still works). Rebuilding reads only that record, checked
node by node (`project.safe_build`), never re-resolving the saved Hydra config against today's folder.
Checkpoints written before the record existed fall back to the run's `.hydra/config.yaml`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from project.config import UserError, plain
from project.deploy.checkpoint import load_checkpoint_file
from project.safe_build import build_plain

log = logging.getLogger(__name__)

# checkpoint keys: the data module's `_target_` mapping, and which of its keys hold run-relative paths
RECORD_KEY = "data_config"
RUN_RELATIVE_KEY = "data_config_paths_in_run"
# only data modules of this project are rebuilt from a file's record
RECORDED_PACKAGE = "project.data."


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


# --- the record written at training time, and the data module rebuilt from it ---------------------------
def data_record(datamodule: L.LightningDataModule, run_folder: str | Path) -> dict[str, Any] | None:
    """The checkpoint entries that rebuild `datamodule` from any working folder: `_target_` plus its
    hyper-parameters (its constructor arguments), each of its `path_hparams` made absolute or, inside
    `run_folder`, relative to it. None for a data module outside this project (not rebuilt from files)."""
    cls = type(datamodule)
    target = f"{cls.__module__}.{cls.__qualname__}"
    if not target.startswith(RECORDED_PACKAGE):
        return None
    config: dict[str, Any] = {"_target_": target, **plain(dict(datamodule.hparams))}
    run_folder = Path(run_folder).expanduser().absolute()
    in_run = []
    for key in getattr(datamodule, "path_hparams", ()):
        if not config.get(key):
            continue
        path = Path(config[key]).expanduser().absolute()
        if path.is_relative_to(run_folder):
            config[key] = path.relative_to(run_folder).as_posix()
            in_run.append(key)
        else:
            config[key] = str(path)
    return {RECORD_KEY: config, RUN_RELATIVE_KEY: in_run}


class SaveDataConfig(L.Callback):
    """Writes `data_record` of the trainer's data module into every checkpoint (the run folder is the
    trainer's `default_root_dir`, the Hydra run folder)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "hparams"):
            checkpoint.update(data_record(datamodule, trainer.default_root_dir) or {})


def run_folder_of(checkpoint_path: str | Path) -> Path:
    """The run folder a checkpoint lies in now: the one holding `.hydra/`, else `<run>/checkpoints/x.ckpt`'s."""
    checkpoint_path = Path(checkpoint_path).absolute()
    found = saved_run_config(checkpoint_path)
    if found is not None:
        return found[0].parent.parent
    parent = checkpoint_path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def recorded_datamodule(checkpoint_path: str | Path, checkpoint: Mapping[str, Any]) -> Any | None:
    """The data module the checkpoint's record describes (run-relative paths resolved against the run
    folder the checkpoint lies in now), or None for a checkpoint written before the record existed."""
    config = checkpoint.get(RECORD_KEY)
    if config is None:
        return None
    where = f"{checkpoint_path} ({RECORD_KEY})"
    if not isinstance(config, Mapping):
        raise UserError(f"refusing to load {where}: not a mapping; pass data=NAME")
    config = dict(config)
    in_run = checkpoint.get(RUN_RELATIVE_KEY) or []
    if not isinstance(in_run, list):
        raise UserError(f"refusing to load {where}: {RUN_RELATIVE_KEY} is not a list of keys; pass data=NAME")
    if in_run:
        folder = run_folder_of(checkpoint_path)
        for key in in_run:
            if not isinstance(key, str) or not isinstance(config.get(key), str):
                raise UserError(f"refusing to load {where}: {key!r} is not a recorded path; pass data=NAME")
            config[key] = str(folder / config[key])
    datamodule = build_saved_datamodule(config, where)
    log.info("data: %s, as recorded in the checkpoint", config.get("_target_"))
    return datamodule


def build_saved_datamodule(config: Mapping[str, Any], where: str) -> Any:
    """A data module from a config read from a file: every node checked, nothing instantiated recursively."""
    try:
        return build_plain(config, (RECORDED_PACKAGE,), L.LightningDataModule, where)
    except TypeError as exc:  # an argument this version no longer takes
        raise UserError(f"{where} cannot be rebuilt ({exc}); pass data=NAME") from None


def datamodule_for_checkpoint(cfg: DictConfig, checkpoint: Mapping[str, Any] | None = None) -> Any | None:
    """The data module for testing `cfg.ckpt_path`: the user's `data=NAME` if given, else the one the
    checkpoint recorded, else (an older checkpoint) its run's saved config; None when there is none. It
    keeps its splits (`keep_splits`): a prepared set is never re-split under a trained model."""
    datamodule = _datamodule_for_checkpoint(cfg, checkpoint)
    if datamodule is not None:
        datamodule.keep_splits = True
    return datamodule


def _datamodule_for_checkpoint(cfg: DictConfig, checkpoint: Mapping[str, Any] | None) -> Any | None:
    if cfg.get("data") is not None:
        return build_datamodule(cfg.data)
    if not cfg.get("ckpt_path"):
        return None
    if checkpoint is None:
        checkpoint = load_checkpoint_file(cfg.ckpt_path)
    datamodule = recorded_datamodule(cfg.ckpt_path, checkpoint)
    if datamodule is not None:
        return datamodule
    log.info("%s records no data config (written by an older version): using its run's saved config", cfg.ckpt_path)
    data = saved_data_config(cfg.ckpt_path)
    if data is None:
        return None
    return build_saved_datamodule(plain(data), f"the run config of {cfg.ckpt_path} (data)")
