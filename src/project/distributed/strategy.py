"""`HydraDDPStrategy`: Lightning's DDP with ranks that belong to the current Hydra job.

Who starts the ranks:
- one machine, plain command or a `-m` sweep with Hydra's basic launcher: this process is rank 0 and starts
  ranks 1..devices-1 itself, each re-running *this job* (see `project.distributed.relaunch`), so a run or
  a sweep job has exactly one folder whatever the number of ranks;
- SLURM (`hydra/launcher=submitit_slurm` or `slurm`, or your own `srun`): one SLURM task per rank, wired by
  Lightning's SLURMEnvironment; nothing is relaunched;
- `hydra/launcher=submitit_local` with `tasks_per_node` > 1: the submitit tasks are the ranks, exactly as on
  SLURM (their environment is translated for Lightning here);
- torchrun or your own per-node launches: the usual LOCAL_RANK/NODE_RANK/WORLD_SIZE/MASTER_* variables.

Several jobs of a sweep run one after another in one process: `finish_job` waits for the job's ranks,
destroys its process group and restores the environment variables the launch set, so the next job (DDP
or not) starts clean. Call it at the end of every job; the next `HydraDDPStrategy` also calls it, and it
runs at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from project.distributed.ranks import env_rank
from project.distributed.relaunch import rank_command

log = logging.getLogger(__name__)

# what a launch sets in this process's environment (Lightning's launcher and `_init_dist_connection`)
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
RANK_EXIT_TIMEOUT_S = 60.0


@dataclass
class _Launch:
    """The ranks this process started for the current job, and the environment before it started them."""

    pid: int
    env_before: dict[str, str | None]
    procs: list[subprocess.Popen] = field(default_factory=list)
    observer: _ChildProcessObserver | None = None


_launch: _Launch | None = None


def finish_job(timeout_s: float = RANK_EXIT_TIMEOUT_S) -> None:
    """End this job's distributed state: wait for the ranks this process started (killed after `timeout_s`),
    destroy the process group, restore the environment. A no-op outside DDP; safe to call twice."""
    global _launch
    launch, _launch = _launch, None
    if launch is not None and launch.pid == os.getpid():
        if launch.observer is not None:
            launch.observer._finished = True  # it would kill this process when we kill a stuck rank
        for proc in launch.procs:
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "DDP rank process %d still running %.0f s after rank 0 finished: killing it", proc.pid, timeout_s
                )
                proc.kill()
                code = proc.wait()
            if code:
                log.warning("DDP rank process %d exited with code %d", proc.pid, code)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if launch is not None and launch.pid == os.getpid():
        for key, value in launch.env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


atexit.register(finish_job)


def adopt_submitit_tasks() -> bool:
    """Inside a submitit *local* job with several tasks, make the tasks Lightning's ranks (SLURM jobs need
    nothing: Lightning reads SLURM's variables). Returns whether it did."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or "LOCAL_RANK" in os.environ:
        return False
    tasks = int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    if tasks <= 1:
        return False
    job_id = os.environ.get("SUBMITIT_LOCAL_JOB_ID", "0")  # the controller's pid: the same for every task
    os.environ.update(
        LOCAL_RANK=os.environ.get("SUBMITIT_LOCAL_LOCALID", "0"),
        NODE_RANK="0",
        WORLD_SIZE=str(tasks),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(20000 + int(job_id) % 20000 if job_id.isdigit() else 29500),
    )
    return True


def _sync_rank_zero_only() -> None:
    """Lightning decides "rank zero only" (logging hyper-parameters, creating the W&B run) from variables
    it read at import; launchers it does not know about (submitit tasks, other nodes) are set here, before
    the Trainer logs anything. `DDPStrategy.set_world_ranks` puts the exact rank in later."""
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pytorch_rank_zero

    rank = env_rank()
    if rank:
        fabric_rank_zero.rank_zero_only.rank = pytorch_rank_zero.rank_zero_only.rank = rank


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's per-node process launcher, starting ranks > 0 as this Hydra job (not `sys.argv`)."""

    def __init__(self, *args: Any, entry: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry = entry

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        # Lightning's, keeping the observer thread so `finish_job` can stop it before ending a stuck rank
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            observer = _ChildProcessObserver(child_processes=self.procs, main_pid=os.getpid())
            observer.start()
            if _launch is not None:
                _launch.observer = observer
        from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # e.g. a Trainer built in a notebook or a script without Hydra
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        command, cwd = rank_command(HydraConfig.get(), sys.argv[1:], self.entry)

        global _launch
        finish_job()  # a previous job's ranks and variables, if its end was not reported
        _launch = _Launch(pid=os.getpid(), env_before={k: os.environ.get(k) for k in LAUNCH_VARIABLES})
        env = self.cluster_environment
        os.environ.update(
            MASTER_ADDR=env.main_address,
            MASTER_PORT=str(env.main_port),
            NODE_RANK=str(env.node_rank()),
            LOCAL_RANK=str(env.local_rank()),
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        log.info("DDP: starting %d more rank(s) of this job: %s", self.num_processes - 1, " ".join(command))
        for local_rank in range(1, self.num_processes):
            env_copy = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if os.environ.get("PL_GLOBAL_SEED") is None:
                env_copy.pop("PL_GLOBAL_SEED", None)
            proc = subprocess.Popen(command, env=env_copy, cwd=cwd)
            self.procs.append(proc)
            _launch.procs.append(proc)


class HydraDDPStrategy(DDPStrategy):
    """DDP for Hydra apps: one folder per job whatever the number of ranks, in single runs, `-m` sweeps and
    submitit jobs alike. `entry` names the module ranks > 0 re-run (default: the one that was started);
    `timeout_s` bounds every collective, e.g. how long ranks wait while rank 0 runs the post-fit step."""

    def __init__(self, entry: str | None = None, timeout_s: float | None = None, **kwargs: Any) -> None:
        finish_job()  # the previous job of a sweep in this process, if its end was not reported
        adopt_submitit_tasks()
        _sync_rank_zero_only()
        if timeout_s is not None:
            kwargs["timeout"] = timedelta(seconds=float(timeout_s))
        super().__init__(**kwargs)
        self.entry = entry

    def configure_ddp(self) -> None:
        """Lightning's, looking for unused parameters when the model freezes some while training (a backbone
        frozen for `model.freeze_epochs`): DDP's reducer fails on their missing gradients otherwise."""
        if not self._ddp_kwargs.get("find_unused_parameters") and getattr(
            self.lightning_module, "freezes_parameters", False
        ):
            log.info("DDP: find_unused_parameters=True, as the model freezes layers for some epochs")
            self._ddp_kwargs["find_unused_parameters"] = True
        super().configure_ddp()

    def _configure_launcher(self) -> None:
        if self._start_method != "popen":
            super()._configure_launcher()
            return
        assert self.cluster_environment is not None
        self._launcher = HydraJobLauncher(
            self.cluster_environment, self.num_processes, self.num_nodes, entry=self.entry
        )
