"""The run logic every entry point shares: build objects from the config, seed, log, train/test, finish."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import rich
import rich.syntax
import rich.table
import rich.tree
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from project.atomic import atomic_write_text
from project.checkpointing import resolve_ckpt_path
from project.data.fit import fit_model_to_data
from project.data.from_run import SaveDataConfig, build_datamodule
from project.deploy.checkpoint import best_checkpoint, load_checkpoint_file
from project.nonfinite import StopOnNonFiniteLoss

log = logging.getLogger(__name__)

TREE_ORDER = ("data", "model", "callbacks", "logger", "trainer", "deploy", "paths", "extras")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None, show: bool = True) -> None:
    """Print the composed config as a tree (main groups first) and save it beside the run's outputs."""
    tree = rich.tree.Tree("CONFIG", style="bold")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        tree.add(str(key), style="dim").add(rich.syntax.Syntax(text, "yaml"))
    if show:
        rich.print(tree)
    if save_to is not None:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        with open(Path(save_to) / "config_tree.log", "w") as f:
            rich.print(tree, file=f)


class PrintConfigTreeAfterSetup(Callback):
    """Prints the config tree once the data is set up, so a data or checkpoint error ends the output with
    its one line instead of following ~200 lines of config (the tree is saved to the run folder first)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.printed = cfg, False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.printed and trainer.is_global_zero:
            print_config_tree(self.cfg)
        self.printed = True


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """A config group of named `_target_` nodes (callbacks, loggers) → the objects; nulls skipped."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[Callback] = (), **kwargs: Any) -> L.Trainer:
    """The Trainer of `cfg.trainer` with the configured callbacks and loggers, the callbacks a logger brings
    (`extra_callbacks()`, e.g. W&B's artifact and test report) and `extra_callbacks` given in code."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    for logger in loggers:
        callbacks += list(getattr(logger, "extra_callbacks", list)())
    callbacks += list(extra_callbacks)
    if not loggers:  # LearningRateMonitor refuses to run without a logger: drop it rather than fail
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **kwargs)


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The whole resolved config as nested hyper-parameters in every logger."""
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def metrics_dict(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def train(cfg: DictConfig, extra_callbacks: Sequence[Callback] = (), show_config: bool = False) -> dict[str, Any]:
    """Fit, then test the best checkpoint. Returns the metrics and where things were written.
    `show_config` prints the config tree once the data is set up (a data error then comes first).

    Loggers stay open afterwards (post-fit steps and the caller may still log): finish the W&B run with
    `project.tracking.wandb_setup.finish_on_exit` around the whole job."""
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        load_checkpoint_file(ckpt_path)  # a missing or unreadable file is one line, before anything runs
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = build_datamodule(cfg.data)  # a config mistake: one line
    fit_model_to_data(cfg.get("model"), datamodule)  # a user's folder decides the class count
    model: L.LightningModule = instantiate(cfg.model)
    # SaveDataConfig: eval/benchmark rebuild this data from the checkpoint alone, from any folder
    guards: list[Callback] = [StopOnNonFiniteLoss(), SaveDataConfig()]
    if show_config:
        guards.append(PrintConfigTreeAfterSetup(cfg))
    trainer = build_trainer(cfg, extra_callbacks=[*guards, *extra_callbacks])
    log_config(trainer, cfg)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = metrics_dict(trainer.callback_metrics)

    # DDP: every rank tests the file rank 0 chose
    best = trainer.strategy.broadcast(best_checkpoint(trainer), src=0)
    if cfg.get("test", True):
        if best is None:
            log.warning("No best checkpoint (checkpointing off or fast_dev_run): testing the current weights.")
        trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True if best else None)
        metrics.update(metrics_dict(trainer.callback_metrics))
    test_report = getattr(model, "test_report", None)
    return {"metrics": metrics, "best_checkpoint": best, "trainer": trainer, "test_report": test_report}


def objective_value(cfg: DictConfig, metrics: Mapping[str, float]) -> float | None:
    """The value of `cfg.optimized_metric` that sweeps and searches optimise (None when no metric is set).
    A metric that was not logged is an error, never a silent None."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; have: {sorted(metrics)}")
    return float(metrics[name])


def report(result: dict[str, Any], output_dir: str | Path) -> None:
    """The last lines of a run: its metrics (also saved as metrics.json) and where everything is."""
    table = rich.table.Table(title="results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result["metrics"].items()):
        if key.startswith(("test/", "val/")):
            table.add_row(key, f"{value:.4f}")
    rich.print(table)
    summary = {"metrics": result["metrics"], "best_checkpoint": result.get("best_checkpoint")}
    if result.get("test_report"):  # per-class figures, macro-F1 and the confusion matrix of the test split
        summary["test_report"] = result["test_report"]
    atomic_write_text(Path(output_dir) / "metrics.json", json.dumps(summary, indent=2) + "\n")
    # plain print: paths must stay on one line whatever the terminal width
    if result.get("best_checkpoint"):
        print(f"best checkpoint: {result['best_checkpoint']}")
    print(f"run folder: {output_dir}")
