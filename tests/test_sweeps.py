"""Grid sweeps with Hydra's basic sweeper: the leaderboard and Pareto plot at the end, failure tolerance and
fail-fast, the benchmark read defensively, and `python -m project.leaderboard` (alias `project.report`) on
any folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from project.deploy.results import BenchmarkReport
from project.tracking import leaderboard
from project.tracking.leaderboard import read_headline
from project.tracking.leaderboard_files import build_leaderboard
from project.tracking.pareto import pareto_mask
from tests.conftest import run_cli

QUICK = ("debug=limit", "extras.print_config=false", "callbacks.progress_bar=null")
FAST = (*QUICK, "deploy.enabled=false")
# the real post-fit benchmark, eager only: what the leaderboard's latency and throughput columns come from
SMALL_DEPLOY = ("deploy.backends=[eager]", "deploy.batch_sizes=[1,8]", "deploy.plot=false", "deploy.strict=true")
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_model_grid_sweep_writes_leaderboard_and_pareto(tmp_path: Path) -> None:
    proc = run_cli("train", "-m", "model=digits_cnn,digits_tiny", *QUICK, *SMALL_DEPLOY, log_dir=tmp_path)
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert f"leaderboard: {sweep / 'leaderboard.md'}" in proc.stdout
    rows = _rows(sweep / "leaderboard.csv")
    assert sorted(r["model"] for r in rows) == ["digits_cnn", "digits_tiny"]
    assert all(r["status"] == "completed" for r in rows)
    scores = [float(r["val/acc_best"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and rows[0]["rank"] == "1"
    params = {r["model"]: int(r["params"]) for r in rows}
    assert params["digits_tiny"] < params["digits_cnn"]
    assert all(r["test/acc"] for r in rows) and any(r["pareto"] == "True" for r in rows)
    assert all(r["backend"] == "eager" and float(r["latency_p50_ms"]) > 0 and float(r["throughput"]) > 0 for r in rows)
    assert (sweep / "pareto.png").read_bytes()[:8] == PNG
    markdown = (sweep / "leaderboard.md").read_text()
    assert "| rank | job | status | val/acc_best | model |" in markdown and "Pareto-optimal" in markdown


def test_fail_fast_stops_at_the_first_failed_job(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "-m",
        "model.optimizer.lr=-1,0.01",
        *FAST,
        "logger=none",
        "fail_fast=true",
        log_dir=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert "Invalid learning rate" in proc.stderr
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert not (sweep / "1").exists()  # the second job never ran
    (row,) = _rows(sweep / "leaderboard.csv")
    assert row["status"] == "failed" and "Invalid learning rate" in row["error"]


# --- the leaderboard on a hand-made sweep folder --------------------------------------------------------


def _bench(chosen: str, latency_b1: float, throughput_b256: float) -> dict:
    """A `benchmark.json` in the post-fit step's layout with the two figures a leaderboard reads."""
    return {
        "chosen": chosen,
        "backends": {
            chosen: {
                "batches": {
                    "1": {"latency_ms": {"p50": latency_b1}},
                    "256": {"latency_ms": {"p50": 99.0}, "throughput": {"median": throughput_b256}},
                }
            }
        },
    }


BENCH_NESTED = _bench("onnxruntime", 1.0, 900.0)
BENCH_LIST = _bench("eager", 2.0, 2100.0)

# the post-fit step's own layout (project.deploy.results.BenchmarkReport), trimmed
BENCH_DEPLOY = {
    "format": 1,
    "settings": {"backend": "auto", "batch_sizes": [1, 256]},
    "baseline": "eager",
    "backends": {
        "eager": {
            "parity": {"acc_delta": 0.0},
            "batches": {"1": {"latency_ms": {"min": 1.0, "p50": 2.0}, "throughput": {"median": 500.0}}},
        },
        "onnxruntime": {
            "memory": {"host_peak_mb": 500.0},
            "batches": {
                "1": {"latency_ms": {"min": 0.03, "p50": 0.04, "p90": 0.05}, "throughput": {"median": 25000.0}},
                "256": {"latency_ms": {"p50": 280.0}, "throughput": {"median": 900.0, "max": 950.0}},
            },
        },
    },
    "chosen": "onnxruntime",
    "ranking": ["onnxruntime", "eager"],
}


def _job(root: Path, name: str, overrides: list[str], metrics: dict | None, bench: dict | None = None) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"optimized_metric": "val/acc_best"}), folder / ".hydra" / "config.yaml")
    if metrics is not None:
        ckpt = folder / "best.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(int(metrics.pop("n", 10)))}}, ckpt)
        (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "best_checkpoint": str(ckpt)}))
    else:
        (folder / "failure.txt").write_text("Traceback ...\nValueError: Invalid learning rate: -1\n")
    if bench is not None:
        (folder / "benchmark.json").write_text(json.dumps(bench))
    return folder


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    _job(root, "0", ["model=big", "lr=0.1"], {"val/acc_best": 0.9, "test/acc": 0.91, "n": 1000}, BENCH_NESTED)
    _job(root, "1", ["model=small", "lr=0.1"], {"val/acc_best": 0.8, "test/acc": 0.82, "n": 100}, BENCH_LIST)
    _job(root, "2", ["model=big", "lr=-1"], None)
    _job(root, "10", ["model=mid", "lr=0.1"], {"val/acc_best": 0.7, "test/acc": 0.75, "n": 500}, {"garbage": [1]})
    (root / "0" / "wandb" / "offline-run-x").mkdir(parents=True)  # never taken for a job
    return root


def test_leaderboard_from_a_sweep_folder(fake_sweep: Path) -> None:
    board = build_leaderboard(fake_sweep, title="fake")
    by_job = {r["job"]: r for r in board.rows}
    assert [r["job"] for r in board.rows] == ["0", "1", "10", "2"]  # by objective; failed last
    assert board.varying == ["model", "lr"]
    assert (by_job["0"]["backend"], by_job["0"]["latency_p50_ms"], by_job["0"]["throughput"]) == (
        "onnxruntime",
        1.0,
        900.0,
    )
    assert (by_job["1"]["backend"], by_job["1"]["latency_p50_ms"], by_job["1"]["throughput"]) == ("eager", 2.0, 2100.0)
    assert by_job["10"]["latency_p50_ms"] is None and by_job["10"]["params"] == 500
    assert by_job["2"]["status"] == "failed" and "Invalid learning rate" in by_job["2"]["error"]
    # accuracy vs latency: 0 (0.91 @ 1 ms) dominates 1 (0.82 @ 2 ms); 10 has no latency
    assert by_job["0"]["pareto"] is True and by_job["1"]["pareto"] is False
    assert [r["job"] for r in _rows(fake_sweep / "leaderboard.csv")] == ["0", "1", "10", "2"]
    assert (fake_sweep / "pareto.png").read_bytes()[:8] == PNG
    assert "Pareto-optimal: `0`" in (fake_sweep / "leaderboard.md").read_text()


def test_leaderboard_sorts_a_loss_ascending(fake_sweep: Path) -> None:
    board = leaderboard.collect(fake_sweep, objective="test/acc", direction="minimize")
    assert [r["job"] for r in board.rows][:3] == ["10", "1", "0"]
    assert leaderboard.infer_direction("val/loss") == "minimize"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (BENCH_NESTED, ("onnxruntime", 1.0, 900.0)),
        (BENCH_LIST, ("eager", 2.0, 2100.0)),
        (BENCH_DEPLOY, ("onnxruntime", 0.04, 900.0)),
        ({"chosen": "tensorrt", "backends": {"tensorrt": {"status": "unavailable"}}}, ("tensorrt", None, None)),
        ({"unexpected": "layout"}, (None, None, None)),
    ],
)
def test_benchmark_headline_reads_the_post_fit_layout(doc, expected) -> None:
    got = BenchmarkReport.from_json(doc).headline()
    assert (got.backend, got.latency_p50_ms, got.throughput) == expected


def test_a_json_that_is_not_a_report_is_refused_and_gives_an_empty_headline(tmp_path: Path, caplog) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        BenchmarkReport.from_json([1, 2, 3])
    (tmp_path / "benchmark.json").write_text("[1, 2, 3]")
    assert read_headline(tmp_path / "benchmark.json").backend is None
    assert "no benchmark figures" in caplog.text


def test_unreadable_benchmark_is_not_an_error_but_is_logged(tmp_path: Path, caplog) -> None:
    (tmp_path / "benchmark.json").write_text("{not json")
    assert read_headline(tmp_path / "benchmark.json").backend is None
    assert "skipping unreadable" in caplog.text and "benchmark.json" in caplog.text
    assert read_headline(tmp_path / "missing.json") is None


def test_unreadable_job_files_are_logged_not_swallowed(tmp_path: Path, caplog) -> None:
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("[unclosed")
    (job / "metrics.json").write_text(json.dumps({"metrics": {}, "best_checkpoint": str(job / "x.ckpt")}))
    (job / "x.ckpt").write_text("not a checkpoint")
    (row,) = leaderboard.collect(tmp_path).rows
    assert row["overrides"] == "" and row["params"] is None
    assert "overrides.yaml" in caplog.text and "no parameter count from" in caplog.text


def test_pareto_mask() -> None:
    # (accuracy up, latency down)
    points = [(0.9, 10.0), (0.8, 1.0), (0.7, 5.0), (0.9, 12.0), (0.95, 20.0)]
    assert pareto_mask(points) == [True, True, False, False, True]


@pytest.mark.parametrize("module", ["project.leaderboard", "project.report"])
def test_leaderboard_cli(fake_sweep: Path, module: str) -> None:
    for name in ("leaderboard.csv", "leaderboard.md", "pareto.png"):
        (fake_sweep / name).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, str(fake_sweep), "--objective", "test/acc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| rank | job | status | test/acc |" in proc.stdout
    assert all((fake_sweep / n).is_file() for n in ("leaderboard.csv", "leaderboard.md", "pareto.png"))
    missing = subprocess.run([*cmd[:3], str(fake_sweep / "nope")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "not a folder" in missing.stderr and "Traceback" not in missing.stderr
