"""`python -m project.benchmark ckpt_path=PATH [deploy=full] [deploy.backends=[...]] [deploy.batch_sizes=[...]]`:
the post-fit step outside training. Builds every configured engine from the checkpoint's network, checks
parity on the test split, times them against eager fp32, writes benchmark.{json,md,png} and the deploy
bundle into the run folder.

`model=NAME random_weights=true input_shape=[C,H,W]` benchmarks a network without a checkpoint (speed
only; parity then runs on labelled synthetic data, see project.deploy.synthetic).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from project import run
from project.config import UserError, config_dir, exits_on_user_error, plain
from project.data.from_run import build_datamodule, datamodule_for_checkpoint
from project.deploy.checkpoint import build_net, load_net
from project.deploy.parity import ParityData
from project.deploy.post_fit import post_fit
from project.deploy.quantize.calibration import synthetic_quantization
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings
from project.deploy.synthetic import synthetic_parity_data

log = logging.getLogger(__name__)


def checkpoint_datamodule(cfg: DictConfig, input_spec: dict[str, Any]) -> Any | None:
    """The data set to check the checkpoint on (`data=NAME`, else the one the checkpoint recorded), set up
    and checked against the checkpoint's input size; None when there is no data config to be found.
    `post_fit` draws the parity inputs (test split) and int8 calibration images (train split) from it."""
    datamodule = datamodule_for_checkpoint(cfg)
    if datamodule is None:
        log.warning("no data config (pass data=NAME): parity runs on random inputs")
        return None
    datamodule.setup("test")
    spec = datamodule.input_spec()
    for key in ("channels", "height", "width"):
        if key in input_spec and spec.get(key) != input_spec[key]:
            raise UserError(
                f"data config gives {key}={spec.get(key)} but the checkpoint expects {input_spec[key]}: "
                "pass the data set the model was trained on (data=NAME)"
            )
    return datamodule


def random_weights_model(cfg: DictConfig) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], ParityData]:
    """`model.net` with seeded random weights, a neutral input spec, and labelled synthetic parity data."""
    if cfg.get("model") is None or "net" not in cfg.model:
        raise UserError("random_weights=true needs a network: pass model=NAME (a conf/model option)")
    net_config = plain(cfg.model.net)
    torch.manual_seed(int(cfg.get("seed") or 0))
    net = build_net(net_config).float().eval()
    shape = cfg.get("input_shape")
    if shape is None:
        if cfg.get("data") is None:
            raise UserError("random_weights=true needs input_shape=[C,H,W] (or data=NAME to take it from)")
        datamodule = build_datamodule(cfg.data)
        spec = datamodule.input_spec()
        shape = [spec["channels"], spec["height"], spec["width"]]
    shape = [int(s) for s in shape]
    classes = int(net_config.get("num_classes", 10))
    data = synthetic_parity_data(net, tuple(shape), classes, seed=int(cfg.get("seed") or 0))
    input_spec = {
        "channels": shape[0],
        "height": shape[1],
        "width": shape[2],
        "value_range": [0, 255],
        "mean": [0.0] * shape[0],
        "std": [1.0] * shape[0],
        "class_names": [str(i) for i in range(classes)],
    }
    return net, net_config, input_spec, data


def benchmark(cfg: DictConfig, output_dir: str) -> BenchmarkReport:
    """Load the network and its data as the command line says, then run `post_fit` on them."""
    with open_dict(cfg):  # set by experiment files, unused here, and may not resolve without the rest
        for unused in ("trainer", "callbacks"):
            cfg.pop(unused, None)
    settings = DeploySettings.from_config(cfg.get("deploy"))
    datamodule = quantization = None
    if cfg.get("random_weights"):  # speed only: labelled synthetic parity and calibration data
        net, net_config, input_spec, data = random_weights_model(cfg)
        checkpoint = None
        if settings.wants_quantization:
            shape = (int(input_spec["channels"]), int(input_spec["height"]), int(input_spec["width"]))
            quantization = synthetic_quantization(shape, len(input_spec["class_names"]), settings.int8)
    else:
        checkpoint = cfg.get("ckpt_path")
        net, net_config, input_spec = load_net(checkpoint)  # UserError with one clear line if it is wrong
        datamodule, data = checkpoint_datamodule(cfg, input_spec), None
    loggers = run.instantiate_group(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    # the command is the step: its failure is raised (a non-zero exit), not logged and passed over
    report = post_fit(
        checkpoint,
        settings,
        output_dir,
        datamodule=datamodule,
        parity=data,
        quantization=quantization,
        model=(net, net_config, input_spec),
        loggers=loggers,
        strict=True,
    )
    for logger in loggers:
        logger.finalize("success")
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="benchmark")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    output_dir = HydraConfig.get().runtime.output_dir
    if cfg.extras.get("print_config", True):
        run.print_config_tree(cfg, save_to=output_dir)
    report = benchmark(cfg, output_dir)
    print(f"report: {Path(output_dir) / 'benchmark.md'}")
    if (report.bundle or {}).get("path"):
        print(f"deploy bundle: {report.bundle['path']}")
    print(f"run folder: {output_dir}")


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("benchmark")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
