"""A kill at any moment of the post-fit step never leaves a file that loads as valid but is half written.

The test runs the step (`project.deploy.post_fit.post_fit`, what the training callback's isolated child
runs) in a process of its own on a trained run, SIGKILLs it at a point of the step, and loads what is
left: `benchmark.json` is absent or a whole report, and `Predictor.load` either loads a complete bundle
that predicts or refuses with one clear `BundleError`."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from project.atomic import atomic_path, atomic_write_text
from project.deploy.bundle import BundleError
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings
from project.inference.predictor import Predictor

BACKENDS = ["eager", "onnxruntime", "openvino"]


@pytest.fixture
def quick_run(trained_default: Path) -> Path:
    """The suite's one real default run (shared): checkpoint, benchmark.json, deploy/. Copied, never changed."""
    return trained_default


STEP = """
import json, sys
from project.deploy.post_fit import post_fit
from project.deploy.settings import DeploySettings
post_fit(sys.argv[1], DeploySettings.from_config(json.loads(sys.argv[2])), sys.argv[3], strict=True)
"""


def start_step(folder: Path) -> subprocess.Popen:
    """The post-fit step in a process of its own, on `folder`'s best checkpoint."""
    report = BenchmarkReport.read(folder / "benchmark.json")
    settings = {"backends": BACKENDS, "plot": False, "timing": {"min_iters": 3}}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-c", STEP, report.checkpoint, json.dumps(settings), str(folder)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, happened: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL `proc` as soon as `happened()`; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if happened():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return False


def assert_left_loadable(folder: Path) -> str:
    """benchmark.json is absent or whole; the bundle loads and predicts, or is refused clearly."""
    if (folder / "benchmark.json").exists():
        assert BenchmarkReport.read(folder / "benchmark.json").engines
    try:
        predictor = Predictor.load(folder / "deploy")
    except BundleError as exc:
        assert "deploy" in str(exc)
        return "refused"
    out = predictor.predict_uint8(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert len(out) == 2
    return "loaded"


def test_kill_while_the_new_bundle_is_written_leaves_no_half_bundle(quick_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(quick_run, folder)
    shutil.rmtree(folder / "deploy")  # no earlier bundle: what is left must be refused, not half-loaded
    proc = start_step(folder)
    killed = kill_when(proc, lambda: any(folder.glob(".deploy.*.tmp/weights.safetensors")))
    assert killed, "the step ended before its bundle was being written"
    assert any(folder.glob(".deploy.*.tmp"))  # it really died mid-bundle (in atomic_dir's temporary folder)
    assert assert_left_loadable(folder) == "refused"


def test_kill_while_engines_build_keeps_the_earlier_bundle(quick_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(quick_run, folder)
    before = (folder / "deploy" / "manifest.json").read_text()
    proc = start_step(folder)
    assert kill_when(proc, lambda: (folder / ".deploy_work" / "onnxruntime").exists())
    assert assert_left_loadable(folder) == "loaded"
    assert (folder / "deploy" / "manifest.json").read_text() == before


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "benchmark.json"
    atomic_write_text(target, '{"whole": true}')
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"whole": True}
    assert [p.name for p in tmp_path.iterdir()] == ["benchmark.json"]  # no temporary left behind


def test_settings_survive_the_trip_to_the_post_fit_process() -> None:
    settings = DeploySettings.from_config(
        {"backends": ["eager", "onnxruntime"], "bare": True, "timing": {"min_iters": 7}, "parity": {"max_samples": 9}}
    )
    assert DeploySettings.from_config(json.loads(json.dumps(settings.to_config()))) == settings
    assert pickle.loads(pickle.dumps(settings)) == settings  # how the isolated child receives them
