"""Which process of a distributed job this is, read from the environment the launcher set.

Once a Trainer exists, `trainer.is_global_zero` is the answer. Before that (printing the config, naming a
run) only the environment can tell: Lightning's own relaunch sets LOCAL_RANK (and NODE_RANK on other
nodes), torchrun RANK/GROUP_RANK, SLURM SLURM_PROCID, submitit's local executor SUBMITIT_LOCAL_GLOBALID.
"""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID")


def env_rank() -> int:
    """0 on global rank zero (or when not distributed); otherwise a non-zero rank from the environment.

    Conservative on purpose: a process is rank zero only if every rank variable that is set says 0, because
    one launcher's variable can leak into another's processes (an `salloc` shell exports SLURM_PROCID=0 to
    the ranks Lightning starts itself). The value is exact for torchrun (RANK) and submitit; otherwise it is
    only guaranteed non-zero."""
    for key in RANK_VARIABLES:
        value = os.environ.get(key, "").strip()
        if value.lstrip("-").isdigit() and int(value) != 0:
            return int(value)
    return 0


def is_rank_zero() -> bool:
    """True in the one process that prints, writes the run's summary and owns the W&B run."""
    return env_rank() == 0
