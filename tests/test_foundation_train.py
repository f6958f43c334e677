"""Training, evaluation and multirun through the real Trainer and the real command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from project import run
from project.models.classifier import ClassifierModule
from tests.conftest import read_metrics, run_cli, run_folder


def test_fast_dev_run_in_process(compose_cfg) -> None:
    cfg = compose_cfg("train", ["debug=fdr"])
    result = run.train(cfg)
    assert result["best_checkpoint"] is None  # fast_dev_run keeps no checkpoint ...
    assert "test/acc" in result["metrics"]  # ... and still tests the current weights


def test_default_train_reaches_accuracy_and_saves_its_config(trained_default: Path) -> None:
    summary = read_metrics(trained_default)
    assert summary["metrics"]["test/acc"] >= 0.95
    assert (trained_default / ".hydra" / "config.yaml").is_file()
    assert (trained_default / "config_tree.log").read_text().count("data") >= 1
    assert Path(summary["best_checkpoint"]).is_file()


def test_checkpoint_loads_weights_only_and_holds_plain_hparams(trained_default: Path) -> None:
    ckpt = read_metrics(trained_default)["best_checkpoint"]
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # raises if anything non-plain was pickled
    assert raw["hyper_parameters"]["net"]["_target_"] == "project.models.nets.DigitsCNN"
    assert raw["input_spec"]["channels"] == 1
    model = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert sum(p.numel() for p in model.net.parameters()) > 0


def test_eval_reproduces_training_test_metrics(trained_default: Path, tmp_path: Path) -> None:
    summary = read_metrics(trained_default)
    proc = run_cli("eval", f"ckpt_path={summary['best_checkpoint']}", log_dir=tmp_path)
    evaluated = read_metrics(run_folder(proc))["metrics"]
    for key in ("test/acc", "test/loss"):
        assert evaluated[key] == summary["metrics"][key], key


def test_multirun_jobs_get_separate_folders(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "-m",
        "model.optimizer.lr=0.01,0.05",
        "debug=limit",
        "callbacks=none",
        "logger=none",
        log_dir=tmp_path,
    )
    paths = sorted(
        Path(line.removeprefix("run folder: ")) for line in proc.stdout.splitlines() if line.startswith("run folder: ")
    )
    assert len(set(paths)) == 2, proc.stdout[-2000:]
    assert all("test/acc" in read_metrics(p)["metrics"] for p in paths)
    overrides = sorted((p / ".hydra" / "overrides.yaml").read_text() for p in paths)
    assert "lr=0.01" in overrides[0] and "lr=0.05" in overrides[1]


def test_two_runs_started_together_do_not_collide(tmp_path: Path) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "project.train", f"paths.log_dir={tmp_path}", "debug=fdr", "logger=none"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "ckpt_path is required"),
        (("ckpt_path=/does/not/exist.ckpt",), "checkpoint not found"),
    ],
)
def test_eval_bad_checkpoint_is_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_cli("eval", *args, log_dir=tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    proc = run_cli("eval", f"ckpt_path={bogus}", log_dir=tmp_path, check=False)
    assert proc.returncode == 2
    assert "not a readable checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_override_names_the_key_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("train", "trainer.max_epochz=3", log_dir=tmp_path, check=False)
    assert proc.returncode != 0
    assert "max_epochz" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_group_option_lists_the_choices(tmp_path: Path) -> None:
    proc = run_cli("train", "model=nonexistent", log_dir=tmp_path, check=False)
    assert proc.returncode != 0
    assert "digits_cnn" in proc.stderr and "Traceback" not in proc.stderr
