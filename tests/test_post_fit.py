"""The post-fit step is one function (`project.deploy.post_fit.post_fit`) for the training callback and
`project.benchmark`: a missing test split means random parity inputs on both paths, a failure is logged
once, and the isolated child (a spawned process) dies with its parent instead of writing on."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import psutil
import pytest
import torch

from project.benchmark import benchmark
from project.data.digits import DigitsDataModule
from project.deploy.post_fit import post_fit
from project.deploy.settings import DeploySettings
from project.models.nets import DigitsCNN
from tests.inference_helpers import NET_CONFIG

CHEAP = {"backends": ["eager"], "batch_sizes": [1], "plot": False, "timing": {"min_iters": 3, "min_duration_s": 0.01}}
RANDOM_SOURCE = "random inputs, eager fp32 predictions as labels (no test data)"
# a parent that runs the isolated step, as the training callback does
PARENT = """
import json, sys
from project.deploy.post_fit import post_fit
from project.deploy.settings import DeploySettings
post_fit(sys.argv[1], DeploySettings.from_config(json.loads(sys.argv[2])), sys.argv[3], isolate=True)
"""


class DigitsWithoutTestSplit(DigitsDataModule):
    """The digits data set as a data module that implements no test split (Lightning's default hook)."""

    test_dataloader = L.LightningDataModule.test_dataloader


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning-format checkpoint of an untrained DigitsCNN (what `load_net` reads), written directly."""
    torch.manual_seed(0)
    net = DigitsCNN(in_channels=1, num_classes=10, width=16)
    path = tmp_path_factory.mktemp("ckpt") / "best.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"hyper_parameters": {"net": NET_CONFIG}, "state_dict": state, "input_spec": _input_spec()}, path)
    return path


def _input_spec() -> dict:
    data = DigitsDataModule(val_size=180)
    return data.input_spec()


def test_callback_and_benchmark_agree_on_a_data_module_without_a_test_split(
    checkpoint: Path, compose_cfg, tmp_path: Path, caplog
) -> None:
    data = DigitsWithoutTestSplit(val_size=180)
    data.setup("fit")
    with caplog.at_level(logging.WARNING, logger="project.deploy.post_fit"):
        # what the training callback calls with trainer.datamodule
        from_callback = post_fit(checkpoint, DeploySettings.from_config(CHEAP), tmp_path / "train", datamodule=data)
        overrides = [f"ckpt_path={checkpoint}", "data=digits", f"data._target_={__name__}.DigitsWithoutTestSplit"]
        cheap = [f"deploy.{k}={json.dumps(v).replace(' ', '')}" for k, v in CHEAP.items() if k != "timing"]
        cfg = compose_cfg("benchmark", [*overrides, *cheap, "deploy.timing.min_iters=3", "~logger"])
        from_command = benchmark(cfg, str(tmp_path / "bench"))
    assert from_callback is not None
    assert from_callback.parity_data["source"] == from_command.parity_data["source"] == RANDOM_SOURCE
    assert caplog.text.count("no test split for parity") == 2  # one warning on each path


def test_a_failure_of_the_isolated_step_is_logged_once(tmp_path: Path, caplog, capfd) -> None:
    bad = tmp_path / "best.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.INFO):
        report = post_fit(bad, DeploySettings.from_config(CHEAP), tmp_path / "run", isolate=True)
    assert report is None  # not strict: training goes on
    logged = caplog.text + "".join(capfd.readouterr())  # this process's log and the child's console
    assert logged.count("post-fit step failed") == 1, logged
    assert "is not a readable checkpoint" in logged
    with pytest.raises(Exception, match="is not a readable checkpoint"):  # strict: the child's error, raised here
        post_fit(bad, DeploySettings.from_config({**CHEAP, "strict": True}), tmp_path / "run", isolate=True)


def _post_fit_child(parent: psutil.Process) -> psutil.Process | None:
    """The spawned post-fit process among `parent`'s children (not multiprocessing's resource tracker)."""
    for child in parent.children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                return child
        except psutil.Error:  # a child that just ended
            continue
    return None


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting to be reaped: it writes nothing
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_the_parent_ends_the_isolated_step(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    slow = {**CHEAP, "timing": {"min_iters": 3, "min_duration_s": 60}}  # the step would run on for minutes
    cmd = [sys.executable, "-c", PARENT, str(checkpoint), json.dumps(slow), str(folder)]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        deadline = time.monotonic() + 180
        while child is None and time.monotonic() < deadline and parent.poll() is None:
            if (folder / ".deploy_work").exists():  # the child is inside the pipeline
                child = _post_fit_child(psutil.Process(parent.pid))
            time.sleep(0.05)
        assert child is not None, "the isolated step never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the post-fit child outlived its killed parent"
        assert not (folder / "benchmark.json").exists() and not (folder / "deploy").exists()
    finally:
        parent.kill()
        if child is not None and not _gone(child):
            child.kill()


def test_the_isolated_step_does_not_rerun_the_callers_script(checkpoint: Path, tmp_path: Path) -> None:
    """A training script without an `if __name__ == "__main__":` guard: spawn would import it again in the
    child (training and all); the step starts its child without the caller's main module."""
    script = tmp_path / "train_script.py"
    script.write_text(PARENT.replace("post_fit(", 'print("script body ran", flush=True)\npost_fit('))
    cmd = [sys.executable, str(script), str(checkpoint), json.dumps(CHEAP), str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("script body ran") == 1, proc.stdout[-3000:]
    assert (tmp_path / "run" / "benchmark.json").is_file()
