"""The post-fit step as a Lightning callback: when `trainer.fit` ends, the best checkpoint becomes a
verified, benchmarked inference engine in `<run>/deploy`, with `benchmark.{json,md,png}` beside it.

On global rank zero only. The inner `nn.Module` is loaded fresh from the best checkpoint
(`weights_only=True`), never the LightningModule in memory: that may hold last-epoch weights or a
`torch.compile` wrapper. Nothing here may fail the training run: a missing checkpoint is a skip, a
failing backend is a row in the report, and any other error is logged (unless `deploy.strict`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from project.deploy.checkpoint import best_checkpoint, load_net
from project.deploy.isolated import run_isolated
from project.deploy.parity import ParityData, parity_from_loader
from project.deploy.pipeline import run_pipeline
from project.deploy.quantize.calibration import quantization_from_datamodule
from project.deploy.report import log_to_loggers
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings

log = logging.getLogger(__name__)


def parity_data_from_test_split(trainer: L.Trainer, max_samples: int | None) -> ParityData | None:
    """The datamodule's test batches, preprocessed as the network saw them in training; None if none."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return None
    try:
        loader = datamodule.test_dataloader()
    except Exception as exc:  # a datamodule without a test split
        log.warning("deploy: no test split for parity (%s): using random inputs", exc)
        return None
    preprocess = getattr(datamodule, "preprocess", None)
    return parity_from_loader(loader, preprocess, max_samples, f"test split of {type(datamodule).__name__}")


class DeployCallback(Callback):
    """Runs the deploy pipeline on the best checkpoint at the end of fit. `settings`: the `deploy` group,
    validated when the callback is built (conf/callbacks/deploy.yaml builds it with
    `DeploySettings.from_config`), so a typo in `deploy.*` stops the run before training, not after it."""

    def __init__(self, settings: DeploySettings | None = None, output_dir: str | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else DeploySettings()
        self.output_dir = output_dir
        self.report: BenchmarkReport | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier("deploy")  # DDP: every rank has finished fitting before rank 0 deploys
        if not trainer.is_global_zero:
            return
        settings = self.settings
        if not settings.enabled:
            return
        checkpoint = best_checkpoint(trainer)
        if not checkpoint or not Path(checkpoint).is_file():
            log.warning("deploy: no best checkpoint (checkpointing off or fast_dev_run): skipping the post-fit step")
            return
        output_dir = Path(self.output_dir or trainer.default_root_dir)
        log.info("deploy: post-fit step on %s", checkpoint)
        start = time.perf_counter()
        try:
            data = parity_data_from_test_split(trainer, settings.parity_max_samples)
            quantization = None
            if settings.wants_quantization and getattr(trainer, "datamodule", None) is not None:
                quantization = quantization_from_datamodule(trainer.datamodule, settings.int8)
            if settings.isolate:  # a fresh process: figures untouched by what training left running
                self.report = run_isolated(checkpoint, settings, output_dir, data, quantization)
                log_to_loggers(self.report, trainer.loggers)
                log.info("deploy: post-fit step done in %.1f s", time.perf_counter() - start)
                return
            net, net_config, input_spec = load_net(checkpoint)
            self.report = run_pipeline(
                net,
                net_config,
                input_spec,
                settings,
                output_dir,
                data=data,
                loggers=trainer.loggers,
                checkpoint=checkpoint,
                quantization=quantization,
            )
            log.info("deploy: post-fit step done in %.1f s", time.perf_counter() - start)
        except Exception as exc:
            if settings.strict:
                raise
            log.error(
                "deploy: the post-fit step failed (training results are unaffected): %s: %s", type(exc).__name__, exc
            )
