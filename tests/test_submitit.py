"""Sweeps through hydra-submitit-launcher: a two-job multirun on `submitit_local` (each job its own submitit
process and folder, the leaderboard collects both), DDP ranks as submitit tasks, and the sbatch script the
`slurm` preset produces (no SLURM needed: the submission is intercepted)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import submitit
from hydra.utils import instantiate

from tests.conftest import compose_with_hydra, read_metrics
from tests.isolated_cli import run_isolated

QUICK = ("debug=limit", "deploy.enabled=false", "extras.print_config=false", "callbacks.progress_bar=null")
LOCAL = ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")


def _sweep(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


def _leaderboard(sweep: Path) -> list[dict[str, str]]:
    if importlib.util.find_spec("project.tracking.leaderboard") is None:
        pytest.skip("the sweep leaderboard (project.tracking.leaderboard, <sweep>/leaderboard.csv) is not there yet")
    path = sweep / "leaderboard.csv"
    assert path.is_file(), f"no leaderboard.csv in {sweep}: the multirun-end hook did not collect the jobs"
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_job_multirun_through_submitit_local(tmp_path: Path) -> None:
    proc = run_isolated("train", "-m", "model=digits_cnn,digits_tiny", *LOCAL, *QUICK, log_dir=tmp_path, timeout=240)
    sweep = _sweep(tmp_path)
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    jobs = _jobs(sweep)
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:  # finished, in a folder of its own
        assert "test/acc" in read_metrics(job)["metrics"]
        assert Path(read_metrics(job)["best_checkpoint"]).parent == job / "checkpoints"
    # each job ran in a submitit process of its own, which logged there
    outs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(outs) == 2 and {job.as_posix() for job in jobs} <= {
        line.removeprefix("run folder: ").strip() for out in outs for line in out.read_text().splitlines()
    }
    rows = _leaderboard(sweep)
    assert sorted(r["model"] for r in rows) == ["digits_cnn", "digits_tiny"]
    assert all(r["status"] == "completed" and r["test/acc"] for r in rows)


@pytest.mark.slow
def test_submitit_tasks_are_the_ddp_ranks(tmp_path: Path) -> None:
    """`tasks_per_node=2` with `trainer=ddp_cpu`: submitit starts both ranks (as SLURM would); one folder,
    one W&B run, the summary from rank 0 only."""
    run_isolated(
        "train",
        "-m",
        "trainer=ddp_cpu",
        "logger=many",
        *LOCAL,
        "hydra.launcher.tasks_per_node=2",
        *QUICK,
        log_dir=tmp_path,
        timeout=240,
    )
    sweep = _sweep(tmp_path)
    (job,) = _jobs(sweep)
    assert "test/acc" in read_metrics(job)["metrics"]
    assert len(list(job.rglob("*.ckpt"))) == 2
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # one per task
    assert sum("run folder: " in log.read_text() for log in logs) == 1  # the summary from rank 0 only
    (row,) = _leaderboard(sweep)
    assert row["status"] == "completed"


# --- SLURM without SLURM -------------------------------------------------------------------------------


class _Submitted(Exception):
    """Raised instead of calling sbatch, carrying the script."""


def test_slurm_preset_writes_the_expected_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def intercept(self: submitit.SlurmExecutor, command: str) -> None:
        raise _Submitted(self._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    monkeypatch.setattr(submitit.SlurmExecutor, "_submit_command", intercept)
    cfg = compose_with_hydra(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.array_parallelism=1",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            f"paths.log_dir={tmp_path}",
            "hydra.job.name=train",
        ]
    )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["model.optimizer.lr=0.001"], ["model.optimizer.lr=0.003"]], initial_job_idx=0)
    script = str(submitted.value)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=240",
        "#SBATCH --array=0-1%1",  # both jobs in one array, one at a time
        "#SBATCH --job-name=train",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, f"{line!r} not in the sbatch script:\n{script}"
