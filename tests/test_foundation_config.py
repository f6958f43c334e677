"""Config composition: every experiment and debug preset composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from project.config import config_dir
from project.run import build_trainer

CONF = Path(config_dir())
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEBUG_MODES = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))


def test_config_groups_present() -> None:
    for group in ("data", "model", "trainer", "callbacks", "logger", "paths", "hydra", "experiment", "debug"):
        assert (CONF / group).is_dir(), group


def test_default_config_has_top_level_keys(compose_cfg) -> None:
    cfg = compose_cfg("train")
    for key in ("seed", "tags", "ckpt_path", "test", "train", "data", "model", "trainer", "callbacks", "logger"):
        assert key in cfg, key
    assert cfg.model.optimizer._partial_ is True


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg("train", [f"+experiment={experiment}"])
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    assert isinstance(datamodule, L.LightningDataModule)
    assert isinstance(model, L.LightningModule)
    assert isinstance(model.net, torch.nn.Module)


@pytest.mark.parametrize("mode", DEBUG_MODES)
def test_every_debug_mode_takes_effect_in_the_trainer(compose_cfg, mode: str) -> None:
    """Every trainer setting the mode's file makes reaches the built Trainer (and differs from the
    default), and every callback it switches off is gone from the composed config."""
    preset = OmegaConf.load(CONF / "debug" / f"{mode}.yaml")
    default = compose_cfg("train")
    cfg = compose_cfg("train", [f"debug={mode}"])
    trainer = build_trainer(cfg)
    assert isinstance(trainer, L.Trainer)
    assert preset.get("trainer"), f"debug={mode} changes no trainer setting"
    for key, value in preset.trainer.items():
        assert getattr(trainer, key) == value != default.trainer.get(key), (mode, key)
    for name, node in (preset.get("callbacks") or {}).items():
        if node is None:  # switched off in the composed config (Lightning may still add its own default)
            assert default.callbacks.get(name) is not None and cfg.callbacks.get(name) is None, (mode, name)


def test_eval_config_composes(compose_cfg) -> None:
    cfg = compose_cfg("eval", ["ckpt_path=/some/where.ckpt"])
    assert cfg.ckpt_path == "/some/where.ckpt"
    # no data group by default: eval takes the data config the checkpoint's run saved
    assert cfg.get("data") is None and "trainer" in cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_eval_composes_with_every_experiment(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg("eval", ["ckpt_path=/some/where.ckpt", f"+experiment={experiment}"])
    # an experiment that names no data set leaves data null: eval then takes the checkpoint run's own
    if cfg.get("data") is not None:
        assert isinstance(instantiate(cfg.data), L.LightningDataModule)
