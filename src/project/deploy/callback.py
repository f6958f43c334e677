"""The post-fit step as a Lightning callback: when `trainer.fit` ends, the best checkpoint becomes a
verified, benchmarked inference engine in `<run>/deploy`, with `benchmark.{json,md,png}` beside it.

On global rank zero only. The inner `nn.Module` is loaded fresh from the best checkpoint
(`weights_only=True`), never the LightningModule in memory: that may hold last-epoch weights or a
`torch.compile` wrapper. Nothing here may fail the training run: a missing checkpoint is a skip, a
failing backend is a row in the report, and any other error is logged once (unless `deploy.strict`).
The step itself is `project.deploy.post_fit.post_fit`, the same function `project.benchmark` calls.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from project.deploy.checkpoint import best_checkpoint
from project.deploy.post_fit import post_fit
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings

log = logging.getLogger(__name__)


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
        log.info("deploy: post-fit step on %s", checkpoint)
        # isolate: a fresh process, so the figures are untouched by what training left running
        self.report = post_fit(
            checkpoint,
            settings,
            Path(self.output_dir or trainer.default_root_dir),
            datamodule=getattr(trainer, "datamodule", None),
            loggers=trainer.loggers,
            isolate=settings.isolate,
        )
