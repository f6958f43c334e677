"""DDP: data sharded across ranks, ranks > 0 relaunched as the Hydra job (not the sweep), rank detection, and
the embedded default trained end to end with `trainer=ddp_cpu trainer.devices=2` (one folder, one checkpoint
set, one W&B run, the post-fit step once, the same test accuracy as `eval` of the checkpoint)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf

from project.config import config_dir
from project.data.digits import DigitsDataModule
from project.data.tensor_data import TensorBatchLoader
from project.distributed import ranks, relaunch, strategy
from tests.conftest import compose_with_hydra, read_metrics, run_cli, run_folder
from tests.isolated_cli import run_isolated
from tests.wandb_offline import offline_runs

FAST = ("extras.print_config=false", "callbacks.progress_bar=null")
# the real post-fit step, eager only: its outputs must appear once, written by rank 0
SMALL_DEPLOY = ("deploy.backends=[eager]", "deploy.batch_sizes=[1,8]", "deploy.plot=false", "deploy.strict=true")


def _indices(loader: TensorBatchLoader) -> list[int]:
    return [int(i) for images, _ in loader for i in images.flatten()]


def _loader(n: int, rank: int, world_size: int, **kwargs) -> TensorBatchLoader:
    """A loader whose 'images' are their own indices, so batches say which samples a rank saw."""
    return TensorBatchLoader(
        torch.arange(n).view(n, 1), torch.zeros(n, dtype=torch.long), rank=rank, world_size=world_size, **kwargs
    )


# --- sharding --------------------------------------------------------------------------------------------


def test_train_shards_are_disjoint_equal_and_reshuffled_each_epoch() -> None:
    loaders = [_loader(10, r, 3, batch_size=3, shuffle=True, drop_last=True, seed=5) for r in range(3)]
    # 10 over 3 ranks: 4 each (padded), one full batch of 3 each: every rank runs the same number of steps
    assert [len(loader) for loader in loaders] == [1, 1, 1]
    assert [len(_indices(loader)) for loader in loaders] == [3, 3, 3]
    full = [_loader(10, r, 3, batch_size=4, shuffle=True, seed=5) for r in range(3)]
    shards = [_indices(loader) for loader in full]
    assert all(len(s) == 4 for s in shards)  # 10 over 3 ranks: padded by wrapping to 12
    assert sorted(set().union(*shards)) == list(range(10))
    assert sum(len(s) for s in shards) - len(set().union(*shards)) == 2  # only the 2 wrapped samples repeat
    assert [_indices(loader) for loader in full] != shards  # epoch 1 is another permutation
    single = _loader(10, 0, 1, batch_size=4, shuffle=True, seed=5)
    assert sorted(_indices(single)) == list(range(10))


def test_eval_shards_partition_the_split_without_duplicates() -> None:
    shards = [_indices(_loader(11, r, 4, batch_size=2, pad=False)) for r in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 2]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(_loader(11, r, 4, batch_size=2, pad=False)) for r in range(4)] == [2, 2, 2, 1]


def test_a_shard_smaller_than_a_batch_still_trains() -> None:
    loader = _loader(6, 1, 2, batch_size=8, shuffle=True, drop_last=True)
    assert len(loader) == 1 and len(_indices(loader)) == 3


def _fake_trainer(fn: TrainerFn, rank: int = 1, world_size: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        global_rank=rank,
        world_size=world_size,
        state=SimpleNamespace(fn=fn),
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        training=False,
    )


def test_datamodule_shards_a_split_only_inside_its_own_loop() -> None:
    dm = DigitsDataModule(val_size=180)
    dm.setup()
    n_test, n_val = len(dm.splits["test"][0]), len(dm.splits["val"][0])
    dm.trainer = _fake_trainer(TrainerFn.TESTING)
    assert dm.test_dataloader().shard_size() == n_test // 2
    dm.trainer = _fake_trainer(TrainerFn.FITTING)
    assert dm.val_dataloader().shard_size() == n_val // 2
    assert dm.train_dataloader().world_size == 2
    # rank 0's post-fit parity check asks for the test split at the end of fit: it gets all of it
    assert dm.test_dataloader().shard_size() == n_test
    assert dm.test_dataloader(shard=True).shard_size() == n_test // 2
    dm.trainer = _fake_trainer(TrainerFn.TESTING, rank=0, world_size=1)
    assert dm.test_dataloader().shard_size() == n_test


# --- ranks > 0 re-run the job ----------------------------------------------------------------------------


def _job(output_dir: str) -> DictConfig:
    return OmegaConf.create(
        {
            "overrides": {
                "task": ["model=digits_tiny", "trainer=ddp_cpu", "tags=[a,b]"],
                "hydra": [
                    "hydra.mode=MULTIRUN",
                    "hydra/launcher=submitit_local",
                    "hydra.sweep.dir=/s",
                    "hydra.verbose=true",
                ],
            },
            "runtime": {"output_dir": output_dir, "cwd": "/where/it/started"},
        }
    )


def test_rank_command_reruns_the_job_not_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    import __main__

    monkeypatch.setattr(__main__, "__spec__", SimpleNamespace(name="project.train"), raising=False)
    folder = "/logs/train/multiruns/2026-01-01_00-00-00_000001/3 with, odd=chars"
    argv = ["-m", "--config-name", "train", "-cd=/extra", "model=digits_cnn,digits_tiny", "trainer=ddp_cpu"]
    command, cwd = relaunch.rank_command(_job(folder), argv)
    assert command[:3] == [sys.executable, "-m", "project.train"] and cwd == "/where/it/started"
    assert "-m" not in command[3:] and "model=digits_cnn,digits_tiny" not in command
    assert command[3:6] == ["--config-name", "train", "-cd=/extra"]
    parsed = {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(command[6:])}
    assert parsed["model"].value() == "digits_tiny" and parsed["tags"].value() == ["a", "b"]
    assert parsed["hydra.run.dir"].value() == folder  # quoted: spaces, commas and '=' survive
    assert parsed["hydra.mode"].value() == "RUN" and parsed["hydra.output_subdir"].value() is None
    assert "hydra.sweep.dir" not in parsed and parsed["hydra.verbose"].value() is True
    assert command.count("hydra.mode=RUN") == 1


def test_quote_survives_quotes_in_paths() -> None:
    path = '/a/it\'s "here"'
    (override,) = OverridesParser.create().parse_overrides([f"hydra.run.dir={relaunch.quote(path)}"])
    assert override.value() == path


def test_entry_command_refuses_what_it_cannot_reproduce(monkeypatch: pytest.MonkeyPatch) -> None:
    import __main__

    monkeypatch.setattr(__main__, "__spec__", SimpleNamespace(name="submitit.core._submit"), raising=False)
    with pytest.raises(relaunch.RelaunchError, match="tasks_per_node"):
        relaunch.entry_command()
    assert relaunch.entry_command("project.train")[1:] == ["-m", "project.train"]
    with pytest.raises(relaunch.RelaunchError, match="in-process"):
        relaunch.entry_command("project.tune")


# --- which rank is this ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "1"}, 1),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, 1),  # rank 0 of another node is not global rank zero
        ({"LOCAL_RANK": "1", "SLURM_PROCID": "0"}, 1),  # an salloc shell's SLURM_PROCID must not win
        ({"SLURM_PROCID": "3"}, 3),
        ({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}, 0),
        ({"SUBMITIT_LOCAL_GLOBALID": "1"}, 1),
    ],
)
def test_env_rank(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int) -> None:
    for key in ranks.RANK_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ranks.env_rank() == rank and ranks.is_rank_zero() == (rank == 0)


def test_submitit_local_tasks_become_lightning_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*strategy.LAUNCH_VARIABLES, "SUBMITIT_EXECUTOR"):
        monkeypatch.setenv(key, "")  # recorded, so whatever adopt_submitit_tasks sets is undone afterwards
        monkeypatch.delenv(key)
    assert not strategy.adopt_submitit_tasks()  # not in a submitit job
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert strategy.adopt_submitit_tasks()
    import os

    assert (os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"], os.environ["NODE_RANK"]) == ("1", "2", "0")
    assert os.environ["MASTER_PORT"] == str(20000 + 4242)


# --- configs ----------------------------------------------------------------------------------------------


def test_ddp_configs_compose() -> None:
    gpu = compose_with_hydra(["trainer=ddp"]).trainer
    assert gpu.strategy._target_ == "project.distributed.strategy.HydraDDPStrategy"
    assert gpu.sync_batchnorm is True and gpu.num_nodes == 1 and gpu.accelerator == "gpu"
    cpu = compose_with_hydra(["trainer=ddp_cpu", "trainer.devices=3"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.sync_batchnorm, cpu.strategy.process_group_backend) == (
        "cpu",
        3,
        False,
        "gloo",
    )


def test_slurm_launcher_follows_the_trainer() -> None:
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.nodes) == (4, 2)
    for key in ("partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism"):
        assert key in launcher


# --- end to end ------------------------------------------------------------------------------------------


def test_ddp_cpu_two_ranks_end_to_end(tmp_path: Path) -> None:
    """The embedded default on 2 gloo ranks: one run folder, one checkpoint set, one W&B run, the post-fit
    step once and on the whole test split, and the test accuracy `eval` gives for the best checkpoint."""
    proc = run_isolated(
        "train",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=3",
        "logger=many",
        *FAST,
        *SMALL_DEPLOY,
        log_dir=tmp_path / "logs",
    )
    folder = run_folder(proc)
    assert proc.stdout.count("run folder: ") == 1, "rank 1 printed its own summary (rank-zero guard in train.py)"
    runs = [p for p in (tmp_path / "logs" / "train").rglob("*") if p.is_dir() and (p / ".hydra").is_dir()]
    assert runs == [folder]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == sorted(
        ["last.ckpt", Path(read_metrics(folder)["best_checkpoint"]).name]
    )
    assert len(list(tmp_path.rglob("*.ckpt"))) == 2
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1
    outside_wandb = [p for p in tmp_path.rglob("*") if "wandb" not in p.relative_to(tmp_path).parts]
    assert [p for p in outside_wandb if p.name == "deploy" and p.is_dir()] == [folder / "deploy"]
    assert [p for p in outside_wandb if p.name == "benchmark.json" and p.parent == folder] == [
        folder / "benchmark.json"
    ]
    bench = json.loads((folder / "benchmark.json").read_text())
    n_test = OmegaConf.load(Path(config_dir()) / "data" / "digits.yaml").test_size
    assert bench.get("parity_data", {}).get("samples", n_test) == n_test  # not rank 0's shard
    with open(folder / "csv" / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("val/acc")}
    assert epochs == {"0", "1", "2"}  # one writer: each validation epoch logged once

    metrics = read_metrics(folder)["metrics"]
    best = read_metrics(folder)["best_checkpoint"]
    evaluated = run_cli("eval", f"ckpt_path={best}", "extras.print_config=false", log_dir=tmp_path / "eval_logs")
    assert read_metrics(run_folder(evaluated))["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["test/acc"] > 0.5
    # the W&B test report gathers both ranks' shards: its error count is the whole split's
    (wandb_run,) = offline_runs(folder / "wandb")
    wrong = wandb_run.summary["test/misclassified_count"]
    assert wrong == round((1 - metrics["test/acc"]) * n_test)


def test_ddp_cpu_jobs_inside_a_multirun(tmp_path: Path) -> None:
    """`-m` with DDP jobs: every rank of a job writes into that job's folder; the next job (DDP or not)
    starts clean in the same process; the leaderboard has every job."""
    run_isolated(
        "train",
        "-m",
        "trainer=ddp_cpu,default",
        "debug=limit",
        "deploy.enabled=false",
        *FAST,
        log_dir=tmp_path,
        timeout=180,
    )
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert "test/acc" in read_metrics(sweep / job)["metrics"]
        assert len(list((sweep / job / "checkpoints").glob("*.ckpt"))) == 2
    assert [p for p in tmp_path.rglob("multiruns") if p.is_dir()] == [tmp_path / "train" / "multiruns"]
    with open(sweep / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trainer"] for r in rows) == ["ddp_cpu", "default"]
    assert all(r["status"] == "completed" for r in rows)


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    """Rank 1's loss turns NaN (a poisoned batch), rank 0's stays finite: both stop at the same step with the
    one-line error, instead of rank 0 waiting in the gradient all-reduce (bounded here at 60 s)."""
    proc = run_isolated(
        "train",
        "model=digits_tiny",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.strategy.timeout_s=60",
        "+callbacks.poison._target_=tests.nan_injection.PoisonBatchOnRank",
        *FAST,
        log_dir=tmp_path / "logs",
        timeout=150,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: non-finite training loss")]
    assert len(errors) == 2, proc.stderr[-3000:]  # one per rank
    assert any("(nan)" in e for e in errors) and any("(on another rank)" in e for e in errors), errors
    assert len({e.split(" at step ")[1].split(":")[0] for e in errors}) == 1, errors  # the same step
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
