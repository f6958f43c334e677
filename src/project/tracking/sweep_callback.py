"""The Hydra callback every entry point carries (`hydra.callbacks.sweep` in conf/hydra/default.yaml).

In a multirun it (1) records a failed job (`<job>/failure.txt`, the traceback in the job's log, its W&B
run finished as failed) and lets the sweep go on, or stops it there with `fail_fast=true`; (2) writes the
leaderboard and Pareto plot when the sweep ends (also after a fail-fast stop), and logs them to W&B when
the jobs used W&B; (3) exits with status 1 at the end when any job failed. Single runs are left alone.

Hydra's basic sweeper re-raises a job's exception after its batch, which would skip the multirun-end
hook: a tolerated failure is therefore handed back to Hydra as a finished job with no return value,
once it has been recorded here.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepCallback(Callback):
    def __init__(
        self,
        fail_fast: bool = False,
        leaderboard: bool = True,
        objective: str | None = None,
        direction: str | None = None,
        log_to_wandb: bool = True,
    ) -> None:
        self.fail_fast = bool(fail_fast)
        self.leaderboard = bool(leaderboard)
        self.objective = objective
        self.direction = direction
        self.log_to_wandb = bool(log_to_wandb)
        self.jobs = 0
        self.failed: list[str] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        self.jobs += 1
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value
        folder = Path(config.hydra.runtime.output_dir)
        num = config.hydra.job.num
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        (folder / "failure.txt").write_text(f"overrides: {' '.join(job_return.overrides or [])}\n\n{text}")
        log.error("job #%s failed: %s: %s\n%s", num, type(error).__name__, error, text)

        from project.tracking.wandb_setup import finish_active_run

        finish_active_run(exit_code=1)  # safety net: the task function normally does this itself
        self.failed.append(f"#{num} ({' '.join(job_return.overrides or [])}): {type(error).__name__}: {error}")
        if self.fail_fast:
            self._write_leaderboard(config)
            print(f"fail_fast=true: stopped the sweep after job {self.failed[-1]}", file=sys.stderr)
            sys.exit(1)  # Hydra turns an exception raised here into a warning; an exit goes through
        # tolerated: recorded above; hand Hydra a finished job so the remaining jobs and the end hook run
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        board = self._write_leaderboard(config)
        failed = list(self.failed)
        if board is not None and not failed:
            # jobs run by another launcher (e.g. submitit) were recorded in their own processes
            failed = [f"{r['job']} ({r['overrides']}): {r['error']}" for r in board.rows if r["status"] == "failed"]
        if failed:
            total = self.jobs or (len(board.rows) if board is not None else len(failed))
            print(f"{len(failed)} of {total} job(s) failed:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)

    def _write_leaderboard(self, config: DictConfig) -> Any:
        if not self.leaderboard:
            return None
        from project.tracking import leaderboard, leaderboard_files

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir() or not leaderboard.find_jobs(sweep_dir):
            return None
        try:
            board = leaderboard_files.build_leaderboard(
                sweep_dir, self.objective, self.direction, title=f"Sweep {sweep_dir.name}"
            )
        except Exception as exc:  # a report must never hide the sweep's own outcome
            log.exception("could not write the leaderboard: %s", exc)
            return None
        print(f"leaderboard: {board.md_path}")
        print(f"pareto plot: {board.png_path}")
        if self.log_to_wandb:
            self._log_wandb(config, board, sweep_dir)
        return board

    def _log_wandb(self, config: DictConfig, board: Any, sweep_dir: Path) -> None:
        settings = wandb_settings(sweep_dir)
        if settings is None:
            return
        from project.tracking.wandb_leaderboard import log_leaderboard_to_wandb
        from project.tracking.wandb_setup import sweep_group

        group = settings.get("group") or sweep_group(str(config.hydra.job.name), sweep_dir)
        try:
            log_leaderboard_to_wandb(board, settings, group)
        except Exception as exc:
            log.warning("could not log the leaderboard to W&B: %s", exc)


def wandb_settings(root: Path) -> dict[str, Any] | None:
    """`logger.wandb` (project, entity, group, mode, tags) of the first job under `root` that used W&B."""
    from project.tracking.leaderboard import find_jobs

    for folder in find_jobs(root):
        path = folder / ".hydra" / "config.yaml"
        if not path.is_file():
            continue
        cfg = OmegaConf.load(path)
        if OmegaConf.select(cfg, "logger.wandb._target_", default=None) is None:
            continue
        keys = ("project", "entity", "group", "mode", "tags")
        return {k: _plain(OmegaConf.select(cfg, f"logger.wandb.{k}", throw_on_resolution_failure=False)) for k in keys}
    return None


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
