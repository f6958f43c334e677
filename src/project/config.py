"""Where the Hydra configs live, and small helpers shared by every entry point."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> str:
    """The `conf/` folder: shipped inside the wheel as `project/conf`, or the repo's top-level
    `conf/` for an editable install. Absolute, so Hydra finds it from any working directory."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra config folder found next to {_PACKAGE_DIR}; reinstall the package")


class UserError(Exception):
    """A mistake the user can fix (bad path, missing data): printed as one line, exit code 2."""


def exit_on_user_error(err: UserError) -> None:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)


def plain(value: Any) -> Any:
    """DictConfig/ListConfig → dict/list (resolved), anything else unchanged: what checkpoints may hold."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
