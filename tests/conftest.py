"""Shared fixtures: configs composed in-process, and the real command line run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from project.config import config_dir

pytest_plugins = ["tests.inference_fixtures"]

# Hermetic: whatever the user's shell exports, the suite sees the same environment. The project's own
# variables (PROJECT_ROOT moves data and logs), W&B's (an API key, an online mode, another folder) and
# Hydra's (full tracebacks change error output) are cleared, then pinned.
HERMETIC_PREFIXES = ("WANDB_", "HYDRA_")
HERMETIC_NAMES = ("PROJECT_ROOT",)
for _name in list(os.environ):
    if _name in HERMETIC_NAMES or _name.startswith(HERMETIC_PREFIXES):
        del os.environ[_name]
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"


def compose_config(name: str, tmp_path: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/<name>.yaml` as the CLI would, with every output under `tmp_path`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides or [], return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def compose_with_hydra(overrides: list[str], name: str = "train") -> DictConfig:
    """Compose with the `hydra` node included (launcher, sweeper, callbacks), as the CLI sees it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    yield lambda name="train", overrides=None: compose_config(name, tmp_path, overrides)
    GlobalHydra.instance().clear()


def run_cli(
    module: str, *args: str, log_dir: Path, timeout: float = 240, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`python -m project.<module> args...` in a subprocess (started in `cwd`, default this one), logs
    under `log_dir`, W&B offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    flags = [a for a in args if a.startswith("-")]  # argparse wants Hydra's flags before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", f"project.{module}", *flags, f"paths.log_dir={log_dir}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_folder(proc: subprocess.CompletedProcess) -> Path:
    """The run folder a command printed on its last lines."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("run folder: ")]
    assert lines, f"no 'run folder:' line in output:\n{proc.stdout[-2000:]}"
    return Path(lines[-1].removeprefix("run folder: ").strip())


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="session")
def trained_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the embedded default (`python -m project.train`), shared by the tests that need
    a trained checkpoint. Returns its run folder."""
    log_dir = tmp_path_factory.mktemp("default_run")
    proc = run_cli("train", log_dir=log_dir)
    return run_folder(proc)
