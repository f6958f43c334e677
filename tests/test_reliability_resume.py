"""Training reliability with the real CLI in subprocesses: a true last.ckpt every epoch, kill -9 and resume
with results equal to an uninterrupted run, SIGTERM preemption, a non-finite loss stopping the run."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from project.checkpointing import find_last_checkpoint
from tests.conftest import read_metrics, run_cli, run_folder

# small and quiet: the tiny digits net, no post-fit step, no progress bar
FAST = [
    "model=digits_tiny",
    "callbacks.deploy=null",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.lr_monitor=null",
    "logger=csv",
    "extras.print_config=false",
]


def start_cli(args: list[str], log_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "project.train", f"paths.log_dir={log_dir}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def wait_for_last(log_dir: Path, newer_than: float, proc: subprocess.Popen, min_epoch: int = 0) -> Path:
    """The last.ckpt a running job writes (mtime after `newer_than`) once it holds epoch >= min_epoch."""
    deadline = time.time() + 600
    while time.time() < deadline:
        for path in log_dir.glob("train/runs/*/checkpoints/last.ckpt"):
            if path.stat().st_mtime > newer_than and checkpoint(path)["epoch"] >= min_epoch:
                return path
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before its checkpoint:\n{proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no last.ckpt with epoch >= {min_epoch} under {log_dir}")


def trained_epochs(folder: Path) -> list[int]:
    rows = csv.DictReader((folder / "csv" / "metrics.csv").open())
    return sorted({int(r["epoch"]) for r in rows if r.get("val/acc")})


def test_kill9_at_random_points_then_resume_equals_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    """5 kills at random moments, each resumed with ckpt_path=last: no completed epoch is lost and the final
    test metrics equal those of one uninterrupted run (same seed, CPU), augmentation's random draws included."""
    epochs = 12
    args = [*FAST, f"trainer.max_epochs={epochs}", "data.augment.crop_padding=1", "data.augment.flip=true", "seed=5"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the thread count of the killed runs (run_cli copies os.environ)
    reference = read_metrics(run_folder(run_cli("train", *args, log_dir=tmp_path / "reference", timeout=900)))

    logs, rng, completed = tmp_path / "killed", random.Random(), -1
    for attempt in range(5):
        started = time.time()
        proc = start_cli([*args, "ckpt_path=last"], logs)
        last = wait_for_last(logs, started, proc, min_epoch=completed + 1)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment: mid-step, mid-validation or mid-save
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        epoch = checkpoint(last)["epoch"]
        assert epoch > completed, f"attempt {attempt} resumed from epoch {completed} but only reached {epoch}"
        completed = epoch
    assert completed < epochs - 1, "the kills must land before the run ends"

    final = run_cli("train", *args, "ckpt_path=last", log_dir=logs, timeout=900)
    folder = run_folder(final)
    assert trained_epochs(folder)[0] == completed + 1  # nothing redone, nothing lost
    assert trained_epochs(folder)[-1] == epochs - 1
    resumed = read_metrics(folder)["metrics"]
    for key in ("test/acc", "test/loss", "val/acc_best"):
        assert resumed[key] == reference["metrics"][key], key


def test_last_checkpoint_every_epoch_and_sigterm_saves_and_says_how_to_resume(tmp_path: Path, compose_cfg) -> None:
    """A learning rate too small to improve keeps the best at epoch 0: last.ckpt must still follow every
    epoch. SIGTERM mid-training saves last.ckpt and ends with one line naming the resume command."""
    proc = start_cli([*FAST, "trainer.max_epochs=200", "model.optimizer.lr=1e-12"], tmp_path)
    last = wait_for_last(tmp_path, 0, proc, min_epoch=2)
    assert checkpoint(last)["epoch"] >= 2
    best = [p for p in last.parent.glob("epoch_*.ckpt")]
    assert [p.name for p in best] == ["epoch_000.ckpt"]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted at epoch "), lines[-3:]
    assert f"saved {last}" in lines[-1] and lines[-1].endswith("ckpt_path=last")
    state = checkpoint(last)
    assert state["global_step"] > 0 and state["epoch"] >= 2
    # ckpt_path=last finds it: the newest run of the same config (task, data, model, seed)
    cfg = compose_cfg("train", [*FAST, "model.optimizer.lr=1e-12"])
    cfg.paths.log_dir = str(tmp_path)
    assert find_last_checkpoint(cfg) == str(last)
    other = compose_cfg("train", [*FAST, "seed=1"])
    other.paths.log_dir = str(tmp_path)
    assert find_last_checkpoint(other) is None


def test_non_finite_loss_stops_with_one_line_and_deploys_nothing(tmp_path: Path) -> None:
    args = ["model=digits_tiny", "callbacks.progress_bar=null", "extras.print_config=false"]
    proc = run_cli("train", *args, "model.optimizer.lr=1e12", "trainer.max_epochs=3", log_dir=tmp_path, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: non-finite training loss"), proc.stderr[-2000:]
    assert "at step " in lines[-1] and "epoch " in lines[-1] and "last good checkpoint: " in lines[-1]
    assert "Traceback" not in proc.stderr
    (folder,) = (tmp_path / "train" / "runs").iterdir()
    assert not (folder / "deploy").exists()  # the post-fit step never ran
    assert not (folder / "metrics.json").exists()
    for path in folder.glob("checkpoints/*.ckpt"):  # whatever was saved before the failure is finite
        weights = checkpoint(path)["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), path


def test_augment_generator_state_round_trips() -> None:
    from project.data.augment import BatchAugment

    images = torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8)
    first = BatchAugment(crop_padding=2, flip=True, seed=3)
    first(images)
    state = first.state_dict()
    expected = first(images)
    second = BatchAugment(crop_padding=2, flip=True, seed=3)
    second.load_state_dict(state)
    assert torch.equal(second(images), expected)


def test_slurm_launcher_requeues_and_a_requeued_job_resumes(tmp_path: Path, compose_cfg, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from project.checkpointing import resolve_ckpt_path
    from tests.conftest import compose_with_hydra

    launcher = compose_with_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0
    cfg = compose_cfg("train", FAST)
    cfg.paths.log_dir = str(tmp_path)
    run = tmp_path / "train" / "runs" / "earlier"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert resolve_ckpt_path(cfg) is None  # a first start begins fresh
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolve_ckpt_path(cfg) == str(run / "checkpoints" / "last.ckpt")
