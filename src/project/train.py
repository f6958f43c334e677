"""`python -m project.train [overrides]`: fit, test the best checkpoint, then the post-fit steps.

With `-m` each job is one Hydra job; a failing job is recorded (and its W&B run marked failed) while the
sweep goes on, unless `fail_fast=true` (see `project.tracking.sweep_callback`)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from project import run
from project.command_line import check_command_line
from project.config import config_dir, exits_on_user_error
from project.distributed.ranks import is_rank_zero
from project.distributed.strategy import finish_job
from project.tracking.wandb_setup import finish_on_exit
from project.validation import validate_config

# 128 + SIGTERM, what a shell reports for a process ended by the signal
PREEMPTED_EXIT_CODE = 143


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exits_on_user_error
def main(cfg: DictConfig) -> float | None:
    output_dir = HydraConfig.get().runtime.output_dir
    validate_config(cfg)  # a multirun job (not pre-checked on the command line) fails alone
    show_config = bool(cfg.extras.get("print_config", True))
    if show_config and is_rank_zero():  # DDP: one config tree, from rank 0
        # saved now; printed once the data is set up (run.PrintConfigTreeAfterSetup), so errors come last
        run.print_config_tree(cfg, save_to=output_dir, show=False)
    # the W&B run stays open through training, testing and post-fit steps, and is finished here
    # (failed on any exception), so the next job of a sweep starts a run of its own
    with finish_on_exit():
        try:
            result = run.train(cfg, show_config=show_config)
        except SIGTERMException:  # preempted: the checkpoint and the resume line are written
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        finally:
            finish_job()  # DDP: wait for this job's other ranks, end its process group (a no-op otherwise)
        if result["trainer"].is_global_zero:  # DDP: metrics.json and the summary from rank 0 only
            run.report(result, output_dir)
        return run.objective_value(cfg, result["metrics"])


if __name__ == "__main__":
    check_command_line("train")
    main()
