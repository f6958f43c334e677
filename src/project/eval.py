"""`python -m project.eval ckpt_path=PATH`: test a checkpoint on the test split, with the same numbers
as the training run printed."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from project import run
from project.config import UserError, config_dir, exits_on_user_error
from project.data.from_run import datamodule_for_checkpoint
from project.deploy.checkpoint import checkpoint_net_config, load_checkpoint_file
from project.distributed.ranks import is_rank_zero
from project.distributed.strategy import finish_job
from project.models.classifier import ClassifierModule
from project.tracking.wandb_setup import finish_on_exit


def evaluate(cfg: DictConfig) -> dict:
    checkpoint = load_checkpoint_file(cfg.get("ckpt_path"))  # fails with one clear line before anything heavy
    checkpoint_net_config(checkpoint, cfg.ckpt_path)  # a tampered network config too, before anything is built
    if cfg.get("seed") is not None:
        import lightning as L

        L.seed_everything(cfg.seed, workers=True)
    # data: null (the default) → the data module the checkpoint recorded, paths as resolved in training
    datamodule = datamodule_for_checkpoint(cfg, checkpoint)
    if datamodule is None:
        raise UserError(f"no data config saved beside {cfg.ckpt_path} (no <run>/.hydra/config.yaml): pass data=NAME")
    model = ClassifierModule.load_from_checkpoint(cfg.ckpt_path, map_location="cpu", weights_only=True)
    trainer = run.build_trainer(cfg)
    run.log_config(trainer, cfg)
    trainer.test(model, datamodule=datamodule)
    metrics = run.metrics_dict(trainer.callback_metrics)
    return {"metrics": metrics, "best_checkpoint": None, "test_report": model.test_report}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    with finish_on_exit():  # a W&B run, if any, is finished (failed on an exception)
        try:
            result = evaluate(cfg)
        finally:
            finish_job()  # DDP: wait for the other ranks, end the process group (a no-op otherwise)
        if is_rank_zero():  # DDP: metrics.json and the summary from rank 0 only
            run.report(result, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("eval")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
