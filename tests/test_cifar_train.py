"""`python -m project.train +experiment=cifar` end to end on a small archive in the official binary layout,
plus the nets and the recipe the experiment composes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from project.config import config_dir, native_bf16_precision
from project.models.cifar_nets import CifarFast, ResNet18
from tests.cifar_archive import write_cifar_archive


def train_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The real command line in a subprocess, everything it writes under `tmp_path`."""
    cmd = [
        sys.executable,
        "-m",
        "project.train",
        "+experiment=cifar",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "extras.print_config=false",
        *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(("net", "params"), [(CifarFast, 2.0e6), (ResNet18, 11.2e6)])
def test_nets_take_normalised_cifar_batches(net: type[torch.nn.Module], params: float) -> None:
    model = net().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert model(x).shape == (4, 10)
    assert abs(sum(p.numel() for p in model.parameters()) - params) < 0.1 * params


def test_experiment_composes_the_recipe() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=cifar"])
        resnet = compose("train", overrides=["+experiment=cifar", "model=resnet18"])
    GlobalHydra.instance().clear()
    assert cfg.data._target_ == "project.data.cifar10.CIFAR10DataModule"
    assert cfg.data.data_dir.endswith("/cifar10") and cfg.data.augment == {"crop_padding": 4, "flip": True}
    assert cfg.model.net._target_ == "project.models.cifar_nets.CifarFast"
    opt = cfg.model.optimizer
    assert opt._target_ == "torch.optim.SGD" and opt.nesterov and opt.weight_decay > 0
    assert cfg.model.label_smoothing > 0 and cfg.model.scheduler.warmup_fraction > 0
    assert cfg.model.channels_last and cfg.data.channels_last
    assert cfg.trainer.precision == native_bf16_precision("cpu")
    assert resnet.model.net._target_ == "project.models.cifar_nets.ResNet18"
    assert resnet.model.optimizer == cfg.model.optimizer  # the recipe carries over
    assert isinstance(instantiate(cfg.model).net, CifarFast)


def test_cifar_experiment_trains_and_beats_chance(tmp_path: Path) -> None:
    _, md5 = write_cifar_archive(tmp_path / "cifar10")
    proc = train_cli(
        tmp_path,
        f"data.data_dir={tmp_path / 'cifar10'}",
        f"data.md5={md5}",
        "data.val_size=50",
        "data.batch_size=32",
        "data.eval_batch_size=256",
        "trainer.max_epochs=2",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["metrics"]["test/acc"] >= 0.35, summary  # chance is 0.10
    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["input_spec"]["channels"] == 3
    assert checkpoint["input_spec"]["class_names"][-1] == "truck"

    # the checkpoint alone is enough to benchmark it: the run's data config (with its ${model.*} and
    # ${trainer.*} interpolations) is rebuilt from the run folder
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    quick = ["deploy.backends=[eager]", "deploy.batch_sizes=[1]", "extras.print_config=false"]
    base = [sys.executable, "-m", "project.benchmark", f"paths.log_dir={tmp_path / 'logs'}", *quick]
    alone = subprocess.run(
        [*base, f"ckpt_path={summary['best_checkpoint']}"], capture_output=True, text=True, timeout=300, env=env
    )
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    assert "test split of CIFAR10DataModule" in (Path(run_line(alone.stdout)) / "benchmark.md").read_text()
    # a bad value from the command line is one line, not a traceback
    wrong = subprocess.run(
        [*base, f"ckpt_path={summary['best_checkpoint']}", "+experiment=cifar", f"data.data_dir={tmp_path / 'cifar10'}",
         f"data.md5={md5}"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: data.val_size=5000 must be between")


def run_line(stdout: str) -> str:
    return [line for line in stdout.splitlines() if line.startswith("run folder: ")][-1].removeprefix("run folder: ")


def test_offline_without_data_is_one_line_exit_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    proc = train_cli(tmp_path, f"data.data_dir={data_dir}", f"data.url={(tmp_path / 'x.tar.gz').as_uri()}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Put cifar-10-binary.tar.gz" in last and str(data_dir) in last


@pytest.mark.slow
def test_train_speed_benchmark_runs() -> None:
    """A smoke run of `make benchmark-train` (figures are not checked: speed is measured, not tested)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    args = ["--steps", "1", "--repeats", "1", "--warmup", "1", "--batch-size", "32"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Lightning overhead" in proc.stdout and "data path / project path" in proc.stdout
