"""The command line that starts DDP ranks > 0 of the current Hydra job.

Lightning's own relaunch (`_hydra_subprocess_cmd`) re-runs `sys.argv` with `hydra.run.dir=<run.dir>`. That
is right for a single run, but under `-m` every rank would re-run the whole sweep into a sweep folder of
its own. Here a rank re-runs *this job only*: the job's concrete overrides (`hydra.overrides.task`, with
the sweep's values filled in), as a single run (`hydra.mode=RUN`, no `-m`) writing into the job's own
folder (`hydra.run.dir=<runtime.output_dir>`), without a second `.hydra/` copy (`hydra.output_subdir=null`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

# Hydra flags that choose the config; forwarded so a rank composes the same one. `-m` is dropped on purpose.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# set here for the rank, so never forwarded from the parent's hydra overrides
REPLACED = ("hydra.run.dir", "hydra.output_subdir", "hydra.mode", "hydra.sweep.dir", "hydra.sweep.subdir")
# entry points whose Hydra job is not one training run: re-running them would not reproduce the rank's work
NOT_RELAUNCHABLE = {
    "project.tune": "Optuna trials run in-process inside one Hydra job; use trainer=default (or cpu/gpu) in "
    "project.tune, or a `project.train -m` sweep for DDP trials",
}


class RelaunchError(RuntimeError):
    """Ranks > 0 cannot be started as this Hydra job; the message says what to set instead."""


def override_key(override: str) -> str:
    """`+a.b=1` → `a.b`; `hydra/launcher=x` → `hydra/launcher`."""
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: str) -> str:
    """A string as a quoted Hydra override value, so paths with spaces, commas or `=` stay one value."""
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_flags(argv: Sequence[str]) -> list[str]:
    """The config-choosing flags of a Hydra command line (`-cn NAME`, `--config-dir=D`, ...), in order."""
    flags: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in CONFIG_FLAGS:
            if "=" in arg:
                flags.append(arg)
            elif i + 1 < len(args):
                flags += [arg, args[i + 1]]
                i += 1
        i += 1
    return flags


def entry_command(entry: str | None = None) -> list[str]:
    """How to start the entry point again: `python -m <entry>`, the started module, or the started script.

    Raises `RelaunchError` where that cannot reproduce the job: inside a submitit job (its `__main__` is
    submitit's, not ours) and in entry points listed in `NOT_RELAUNCHABLE`."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    module = entry or (spec.name if spec is not None else None)
    if module in NOT_RELAUNCHABLE:
        raise RelaunchError(f"DDP cannot relaunch {module}: {NOT_RELAUNCHABLE[module]}")
    if entry is None and module is not None and module.split(".")[0] == "submitit":
        raise RelaunchError(
            "inside a submitit job the DDP ranks come from submitit, as on SLURM: set "
            "hydra.launcher.tasks_per_node equal to trainer.devices (hydra/launcher=slurm or local do it), "
            "or name the module to relaunch with trainer.strategy.entry=project.train"
        )
    if module is not None:
        return [sys.executable, "-m", module]
    return [sys.executable, os.path.abspath(sys.argv[0])]


def rank_command(hydra_cfg: DictConfig, argv: Sequence[str], entry: str | None = None) -> tuple[list[str], str]:
    """(command, cwd) for a rank > 0 of the job described by `hydra_cfg` (`HydraConfig.get()`), whose
    process was started with `argv` (`sys.argv[1:]`; only its config flags are kept)."""
    task = [str(o) for o in hydra_cfg.overrides.task]
    hydra_overrides = [str(o) for o in hydra_cfg.overrides.hydra if override_key(str(o)) not in REPLACED]
    command = [
        *entry_command(entry),
        *config_flags(argv),
        *task,
        *hydra_overrides,
        f"hydra.run.dir={quote(str(hydra_cfg.runtime.output_dir))}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
    return command, str(hydra_cfg.runtime.cwd)
