"""The package works from any working directory after a non-editable install: configs ship in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_and_trains_from_elsewhere(tmp_path: Path) -> None:
    wheel_dir, target, cwd = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", str(REPO), "-w", str(wheel_dir)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("project-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    assert (target / "project" / "conf" / "train.yaml").is_file()

    # PYTHONPATH puts the installed copy ahead of the editable one; the run starts in an unrelated folder.
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    code = "import project.config as c; print(c.config_dir())"
    where = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(target / "project" / "conf")
    proc = subprocess.run(
        [sys.executable, "-m", "project.train", "debug=fdr", "logger=none"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (cwd / "logs" / "train" / "runs").is_dir()  # relative paths resolve against the launch folder
