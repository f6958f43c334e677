"""`python -m project.<module>` in a process group of its own, for commands that start more processes
(DDP ranks, submitit jobs): whatever happens, nothing they started outlives the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LAUNCH_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def live_processes(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are still running (zombies excluded), read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_isolated(
    module: str, *args: str, log_dir: Path, timeout: float = 300, check: bool = True, linger_s: float = 15
) -> subprocess.CompletedProcess:
    """Like `tests.conftest.run_cli`, in a new session. On timeout or failure the whole group is killed; after
    a clean exit, processes of the group still running after `linger_s` fail the check (and are killed)."""
    # a launcher's variables (tests run inside a SLURM job, or leaked by another test) would make the command
    # wait for ranks that never come
    launcher_env = ("SLURM_", "SUBMITIT_", "TORCHELASTIC_", "PL_")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith(launcher_env)}
    env.update(WANDB_MODE="offline", PYTHONWARNINGS="ignore", COLUMNS="200")
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", f"project.{module}", *flags, f"paths.log_dir={log_dir}", *overrides]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    pgid = proc.pid
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(pgid)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"{' '.join(cmd)} timed out after {timeout:.0f} s\n{stdout[-3000:]}\n{stderr[-5000:]}"
        ) from None
    except BaseException:
        kill_group(pgid)
        proc.communicate()
        raise
    deadline = time.monotonic() + linger_s
    while (left := live_processes(pgid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_group(pgid)
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and (proc.returncode != 0 or left):
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}"
            + (f"; processes {left} of its group were still running {linger_s:.0f} s later" if left else "")
            + f"\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    return done
