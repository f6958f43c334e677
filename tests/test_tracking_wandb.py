"""W&B without an account: offline fallback with no prompt, and what an offline run holds, read back from
its transaction log (config, metrics, model artifact, test report, post-fit table), single and multirun."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from project.tracking import wandb_setup
from project.tracking.wandb_setup import api_key_configured, resolve_mode
from tests.conftest import read_metrics, run_cli, run_folder
from tests.wandb_offline import offline_runs, read_offline_run

QUIET = ("extras.print_config=false", "callbacks.progress_bar=null")
# the real post-fit step, eager only and two batch sizes: seconds, not the full benchmark
SMALL_DEPLOY = ("deploy.backends=[eager]", "deploy.batch_sizes=[1,8]", "deploy.plot=false", "deploy.strict=true")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_CONFIG_DIR", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    return home


def test_mode_falls_back_to_offline_without_a_key_and_env_wins(no_credentials: Path, monkeypatch) -> None:
    assert not api_key_configured()
    assert resolve_mode("online") == "offline"
    assert resolve_mode("disabled") == "disabled"
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    netrc.chmod(0o600)
    assert api_key_configured()
    assert resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("sometimes")


SCRIPT = """
from project.tracking.wandb_setup import WandbLogger, finish_active_run
logger = WandbLogger(save_dir={save_dir!r}, mode="online", project="p")
logger.log_metrics({{"val/acc": 0.5}})
finish_active_run(0)
print("DONE", logger.mode)
"""


def _run_in_terminal(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal (where a login prompt would wait forever)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output, deadline, blocked = b"", time.monotonic() + timeout, False
    while not blocked:
        blocked = time.monotonic() > deadline
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is ending
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    try:  # the terminal closes a moment before the process is gone
        code = proc.wait(timeout=5 if blocked else 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        blocked = True
    os.close(master)
    if blocked:
        raise AssertionError(f"blocked (a login prompt?) after {timeout}s:\n{output.decode(errors='replace')[-2000:]}")
    return code, output.decode(errors="replace")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "no-terminal"])
def test_no_key_never_prompts(no_credentials: Path, tmp_path: Path, terminal: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(no_credentials)
    cmd = [sys.executable, "-c", SCRIPT.format(save_dir=str(tmp_path / "out"))]
    if terminal:
        code, output = _run_in_terminal(cmd, env, timeout=120)
    else:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        code, output = proc.returncode, proc.stdout + proc.stderr
    assert code == 0, output[-2000:]
    assert "DONE offline" in output
    assert output.count("no API key found") == 1
    assert "wandb sync" in output
    (run,) = offline_runs(tmp_path / "out")
    assert "val/acc" in run.history_keys


def test_training_run_logs_config_metrics_artifact_and_report(tmp_path: Path) -> None:
    proc = run_cli("train", "logger=many", "debug=limit", *QUIET, *SMALL_DEPLOY, log_dir=tmp_path)
    folder = run_folder(proc)
    assert read_metrics(folder)["metrics"]["test/acc"] >= 0  # the CSV/metrics.json path is unchanged
    (run,) = offline_runs(folder)
    assert proc.stdout.count("W&B offline run:") == 1 and f"wandb sync {run.folder}" in proc.stdout
    assert run.exit_code == 0
    assert run.name == "digits-digits_cnn" and run.tags == ["dev"]
    # the resolved config, nested
    assert run.config["model"]["optimizer"]["lr"] == 0.003
    assert run.config["trainer"]["max_epochs"] == 2
    assert run.config["data"]["_target_"].endswith("DigitsDataModule")
    # metrics under train/ val/ test/
    assert {"train/acc", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= run.history_keys
    # the best checkpoint as a model artifact
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert len(models) == 1 and models[0]["files"] == ["model.ckpt"] and "best" in models[0]["aliases"]
    # confusion matrix and misclassified images
    assert run.summary["test/confusion_matrix_table/_type"] == "table-file"
    assert run.summary["test/misclassified/_type"] == "images/separated"
    assert run.summary["test/misclassified/count"] >= 1
    # the post-fit benchmark lands in the same, still open run: the table and deploy/* values
    assert (folder / "benchmark.json").is_file()
    assert run.summary["deploy/benchmark/_type"] == "table-file"
    assert run.summary["deploy/chosen"] == "eager"
    assert run.summary["deploy/eager/latency_p50_ms_b1"] > 0


def test_multirun_one_run_per_job_grouped_and_failed_marked(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "-m",
        "logger=wandb",
        "debug=limit",
        *QUIET,
        "deploy.enabled=false",
        "model.optimizer.lr=-1,0.01",  # the first job fails: the second must still run
        log_dir=tmp_path,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 job(s) failed" in proc.stderr
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    (failed,) = offline_runs(sweep / "0")
    (ok,) = offline_runs(sweep / "1")
    assert failed.exit_code == 1 and ok.exit_code == 0
    assert failed.group == ok.group == f"train-{sweep.name}"
    assert failed.name.endswith("-0") and ok.name.endswith("-1")
    assert failed.config["model"]["optimizer"]["lr"] == -1 and ok.config["model"]["optimizer"]["lr"] == 0.01
    assert [a["type"] for a in ok.artifacts].count("model") == 1
    assert "Invalid learning rate" in (sweep / "0" / "failure.txt").read_text()
    # the leaderboard, also as a W&B table in a run of its own in the same group
    board = read_offline_run(next((sweep / "wandb").glob("offline-run-*")))
    assert board.group == ok.group and board.name.endswith("-leaderboard")
    assert board.summary["leaderboard/_type"] == "table-file" and board.summary["leaderboard/nrows"] == 2
    rows = (sweep / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 3 and ",completed," in rows[1] and ",failed," in rows[2]


@pytest.mark.slow
def test_real_post_fit_benchmark_lands_in_the_run(compose_cfg, tmp_path: Path) -> None:
    if not (compose_cfg("train").callbacks or {}).get("deploy"):
        pytest.skip("the post-fit deploy step is not in the default callbacks")
    proc = run_cli("train", "logger=wandb", "debug=limit", *QUIET, log_dir=tmp_path)
    folder = run_folder(proc)
    (run,) = offline_runs(folder)
    deploy = {k: v for k, v in run.summary.items() if k.startswith("deploy/")}
    assert deploy, sorted(run.summary)
    assert any(k.endswith("/_type") and v == "table-file" for k, v in deploy.items())
    assert (folder / "benchmark.json").is_file()


def test_finish_on_exit_marks_failure(tmp_path: Path, no_credentials: Path) -> None:
    logger = wandb_setup.WandbLogger(save_dir=str(tmp_path), mode="offline", project="p")
    logger.log_metrics({"val/acc": 0.1})
    with pytest.raises(RuntimeError), wandb_setup.finish_on_exit():
        raise RuntimeError("boom")
    import wandb

    assert wandb.run is None
    deadline = time.monotonic() + 30
    while (run := offline_runs(tmp_path)[0]).exit_code is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb-core writes the log in the background, a moment after finish() returns
    assert run.exit_code == 1
