"""The post-fit step end to end: after `trainer.fit`, the best checkpoint becomes a verified, benchmarked
engine in the run folder; without a checkpoint it steps aside; `project.benchmark` and `make benchmark`
run the same pipeline outside training."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from project import run
from project.data.augment import normalize
from project.data.digits import DigitsDataModule
from project.deploy.bundle import Bundle
from project.deploy.checkpoint import load_net
from tests.conftest import read_metrics, run_cli, run_folder

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["deploy.strict=true", "deploy.timing.min_duration_s=0.05", "deploy.timing.min_iters=3"]


def test_callback_runs_after_a_fast_train(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "train",
        ["debug=limit", "extras.print_config=false", "deploy.backends=[eager,onnxruntime,openvino_bf16]", *QUICK],
    )
    result = run.train(cfg)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["checkpoint"] == result["best_checkpoint"]
    assert report["parity_data"] == {"source": "test split of DigitsDataModule", "samples": 360}
    assert set(report["backends"]) == {"eager", "onnxruntime", "openvino_bf16"}
    assert report["backends"][report["chosen"]]["status"] == "ok"
    assert (tmp_path / "benchmark.md").is_file() and (tmp_path / "benchmark.png").is_file()
    assert Bundle.open(tmp_path / "deploy").info["chosen"] == report["chosen"]
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "deploy/onnxruntime/throughput_b256" in header and "test/acc" in header  # test ran after deploy


def test_callback_steps_aside_without_a_checkpoint(compose_cfg, tmp_path: Path, caplog) -> None:
    cfg = compose_cfg("train", ["debug=fdr", "extras.print_config=false", "deploy.strict=true"])
    with caplog.at_level(logging.WARNING, logger="project.deploy.callback"):
        result = run.train(cfg)
    assert result["best_checkpoint"] is None and "test/acc" in result["metrics"]
    assert not (tmp_path / "benchmark.json").exists() and not (tmp_path / "deploy").exists()
    assert "no best checkpoint" in caplog.text


def test_default_train_ships_a_verified_engine(trained_default: Path) -> None:
    """`python -m project.train`, nothing else: the run folder holds the report and a loadable bundle."""
    report = json.loads((trained_default / "benchmark.json").read_text())
    chosen = report["chosen"]
    assert report["backends"][chosen]["status"] == "ok" and report["backends"][chosen]["parity"]["passed"]
    assert report["backends"]["eager"]["batches"]["256"]["throughput"]["median"] > 0
    name, engine = Bundle.open(trained_default / "deploy").engine()
    assert name == chosen
    net, _, spec = load_net(read_metrics(trained_default)["best_checkpoint"])
    # real digits (an int8 engine is calibrated for them; on random noise its answers mean nothing)
    data = DigitsDataModule(val_size=180)
    data.setup()
    x = normalize(data.splits["test"][0][:70], spec["mean"], spec["std"])  # as the run's data config did
    assert list(x.shape[1:]) == [spec["channels"], spec["height"], spec["width"]]
    with torch.inference_mode():
        assert (engine(x).argmax(1) == net(x).argmax(1)).float().mean() >= 0.95


def test_benchmark_command_on_a_checkpoint(trained_default: Path, tmp_path: Path) -> None:
    ckpt = read_metrics(trained_default)["best_checkpoint"]
    proc = run_cli("benchmark", f"ckpt_path={ckpt}", "deploy.backends=[eager,openvino]", *QUICK, log_dir=tmp_path)
    folder = run_folder(proc)
    report = json.loads((folder / "benchmark.json").read_text())
    # the data config came from the checkpoint's own run folder
    assert report["parity_data"]["source"] == "test split of DigitsDataModule"
    assert set(report["backends"]) == {"eager", "openvino"} and report["chosen"] in report["backends"]
    assert (folder / "deploy" / "manifest.json").is_file()
    missing = run_cli("benchmark", "ckpt_path=/nonexistent.ckpt", log_dir=tmp_path, check=False)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr


def _inference_speed_module():
    spec = importlib.util.spec_from_file_location("inference_speed", ROOT / "benchmarks" / "inference_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_benchmark_finds_the_newest_best_checkpoint(trained_default: Path, tmp_path: Path) -> None:
    module = _inference_speed_module()
    log_dir = trained_default.parents[2]  # <log_dir>/train/runs/<run>
    assert module.newest_best_checkpoint(log_dir) == Path(read_metrics(trained_default)["best_checkpoint"])
    assert module.newest_best_checkpoint(tmp_path) is None


@pytest.mark.slow
def test_make_benchmark_random_weights(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "inference_speed.py"),
            "--model",
            "cifar_fast",
            "--random-weights",
            "--quick",
            f"--log-dir={tmp_path}",
            "deploy.batch_sizes=[1,16]",
            *QUICK,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Chosen engine" in proc.stdout and "CifarFast" in proc.stdout
