"""W&B that works with no account and never prompts: the mode is decided before `wandb.init` runs.

`wandb.init` asks for an API key in a terminal (and fails without one) when it is online with no
credentials. We look for credentials the way wandb does (env, netrc, settings file) without calling
into wandb's login code, and fall back to offline mode, saying so once. Each run is finished
explicitly, so jobs of a sweep never share a run and a failed job is marked failed.
"""

from __future__ import annotations

import configparser
import contextlib
import logging
import netrc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_ENV_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}
_announced: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _announced:
        _announced.add(message)
        log.warning(message)


def api_key_configured() -> bool:
    """True when wandb would find credentials without asking: WANDB_API_KEY, an identity token file, a netrc
    entry for the W&B host, or an api_key in wandb's settings file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    netrc_path = Path(os.environ.get("NETRC") or Path.home() / (".netrc" if os.name != "nt" else "_netrc"))
    with contextlib.suppress(OSError, netrc.NetrcParseError):
        entry = netrc.netrc(str(netrc_path)).authenticators(host) if netrc_path.is_file() else None
        if entry and entry[2]:
            return True
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    settings = configparser.ConfigParser()
    with contextlib.suppress(OSError, configparser.Error):
        settings.read(config_dir / "settings")
        if settings.get("default", "api_key", fallback=""):
            return True
    return False


def resolve_mode(requested: str | None = "online") -> str:
    """The mode to run in: `WANDB_MODE` / `WANDB_DISABLED` win over the config; online without credentials
    becomes offline (said once per process), so nothing ever waits for a login."""
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if "WANDB_MODE" in os.environ and not env_mode:
        os.environ.pop("WANDB_MODE")  # wandb itself rejects an empty WANDB_MODE
    mode = _ENV_ALIASES.get(env_mode, env_mode) if env_mode else str(requested or "online").strip().lower()
    mode = _ENV_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "online" and not api_key_configured():
        _say_once(
            "W&B: no API key found (set WANDB_API_KEY or run `wandb login`), so runs are written offline; "
            "upload them later with `wandb sync`."
        )
        mode = "offline"
    return mode


def sweep_group(job_name: str, sweep_dir: str | Path) -> str:
    """The W&B group of every job of one multirun: the entry point and the sweep folder's timestamp."""
    return f"{job_name}-{Path(sweep_dir).name}"


def default_names() -> tuple[str | None, str | None]:
    """(run name, group) when the config leaves them null: the experiment (or data-model) and, in a
    multirun, the job number and the sweep. Outside a Hydra app: (None, None), wandb picks a name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    base = choices.get("experiment") or "-".join(str(choices.get(k)) for k in ("data", "model") if choices.get(k))
    base = base or hydra_cfg.job.name
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"{base}-{hydra_cfg.job.num}", sweep_group(hydra_cfg.job.name, hydra_cfg.sweep.dir)
    return base, None


def finish_active_run(exit_code: int = 0) -> Path | None:
    """Finish the open W&B run (if any) with `exit_code` (non-zero marks it failed) and, when it was
    offline, print where it was written and how to upload it. Returns its folder."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return None
    offline = bool(getattr(run, "offline", False))
    folder = Path(run.settings.sync_dir) if offline else None
    run.finish(exit_code=exit_code)
    if folder is not None:
        # one plain line: the path must stay whole whatever the terminal width
        print(f"W&B offline run: {folder} (upload later: wandb sync {folder})")
    return folder


@contextlib.contextmanager
def finish_on_exit() -> Iterator[None]:
    """Finish the W&B run when the block ends: exit code 1 (failed) on any exception, 0 otherwise."""
    try:
        yield
    except BaseException:
        finish_active_run(exit_code=1)
        raise
    finish_active_run(exit_code=0)


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger with the mode resolved up front (no prompt), names from the experiment and
    sweep, and the project's extras (best checkpoint as a `model` artifact, confusion matrix and
    misclassified test images) as callbacks that `project.run.build_trainer` adds."""

    def __init__(
        self,
        save_dir: str = ".",
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        mode: str | None = "online",
        job_type: str | None = "train",
        notes: str | None = None,
        log_best_model: bool = True,
        log_test_report: bool = True,
        max_misclassified: int = 32,
        **kwargs: Any,
    ) -> None:
        import wandb

        self.mode = resolve_mode(mode)
        if wandb.run is not None:
            # Lightning would silently reuse it and merge two jobs into one run
            log.warning("W&B: a run from an earlier job was still open; finishing it as failed.")
            finish_active_run(exit_code=1)
        default_name, default_group = default_names()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=name or default_name,
            save_dir=str(save_dir),
            project=project,
            log_model=False,
            entity=entity,
            group=group or default_group,
            tags=[str(t) for t in tags] if tags else None,
            mode=self.mode,
            job_type=job_type,
            notes=notes,
            **kwargs,
        )
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # wandb ≥ 0.2x warns about the setting even when unset
        self.log_best_model = log_best_model
        self.log_test_report = log_test_report
        self.max_misclassified = max_misclassified

    def extra_callbacks(self) -> list[Callback]:
        if self.mode == "disabled" or not (self.log_best_model or self.log_test_report):
            return []
        from project.tracking.wandb_extras import WandbExtras

        return [
            WandbExtras(
                log_best_model=self.log_best_model,
                log_test_report=self.log_test_report,
                max_misclassified=self.max_misclassified,
            )
        ]
