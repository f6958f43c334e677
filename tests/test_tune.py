"""`python -m project.tune`: a 6-trial Optuna search on the embedded default with pruning, a failed trial
that does not stop the search, and an interrupted study that resumes where it stopped."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from project import tune
from project.search.pruning import OptunaPruning
from project.search.space import SearchSpace
from tests.conftest import compose_config, run_cli

FAST = ("debug=limit", "trainer.max_epochs=4", "extras.print_config=false", "callbacks.progress_bar=null")
NO_DEPLOY = "deploy.enabled=false"


def _load(study_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")


def test_search_space_from_hydra_sweep_syntax() -> None:
    space = SearchSpace.from_config(
        {
            "model.optimizer.lr": "tag(log, interval(0.0001, 0.1))",
            "model.net.width": "choice(8, 16, 32)",
            "trainer.max_epochs": "range(2, 8, 2)",
            "data.batch_size": "tag(int, interval(16, 128))",
            "model": "choice(digits_cnn, digits_tiny)",
            "trainer.gradient_clip_val": 1.0,
        }
    )
    d = space.distributions
    assert d["model.optimizer.lr"] == FloatDistribution(0.0001, 0.1, log=True)
    assert d["model.net.width"] == CategoricalDistribution([8, 16, 32])
    assert d["trainer.max_epochs"] == IntDistribution(2, 6, step=2)
    assert d["data.batch_size"] == IntDistribution(16, 128)
    assert space.fixed == ["trainer.gradient_clip_val=1.0"]
    trial = optuna.trial.FixedTrial(
        {
            "model.optimizer.lr": 0.003,
            "model.net.width": 16,
            "trainer.max_epochs": 4,
            "data.batch_size": 32,
            "model": "digits_tiny",
        }
    )
    assert space.suggest(trial) == [
        "trainer.gradient_clip_val=1.0",
        "model.optimizer.lr=0.003",
        "model.net.width=16",
        "trainer.max_epochs=4",
        "data.batch_size=32",
        "model=digits_tiny",
    ]


def test_pruning_callback_stops_a_bad_trial() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    callback = OptunaPruning(trial, monitor="val/acc")
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"val/acc": torch.tensor(0.9)})
    callback.on_validation_end(trainer, None)  # good: goes on
    trainer.current_epoch, trainer.callback_metrics = 1, {"val/acc": torch.tensor(0.1)}
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        callback.on_validation_end(trainer, None)
    assert callback.pruned_at == 1 and callback.metrics["val/acc"] == pytest.approx(0.1)
    assert study.trials[0].intermediate_values == {0: pytest.approx(0.9), 1: pytest.approx(0.1)}


def test_six_trial_search_prunes_and_writes_the_leaderboard(tmp_path: Path) -> None:
    proc = run_cli("tune", *FAST, NO_DEPLOY, log_dir=tmp_path)
    study_dir = tmp_path / "tune" / "digits_optuna"
    study = _load(study_dir, "digits_optuna")
    states = [t.state for t in study.trials]
    assert len(states) == 6 and TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    assert f"best trial #{study.best_trial.number}" in proc.stdout
    with open(study_dir / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {r["status"] for r in rows} == {"completed", "pruned"}
    assert rows[0]["rank"] == "1" and float(rows[0]["val/acc_best"]) == pytest.approx(study.best_value)
    assert {"model.optimizer.lr", "model.net.width", "data.batch_size"} <= set(rows[0])
    assert (study_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    assert OmegaConf.load(study_dir / "trials" / f"{pruned.number:03d}" / "trial.json").state == "pruned"


def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    base = [*FAST, "trainer.max_epochs=2", "logger=none", NO_DEPLOY]
    cfg = compose_config("tune", tmp_path, base)
    with open_dict(cfg):
        cfg.hparams_search.study_name = "fails"
        cfg.hparams_search.n_trials = 2
        cfg.hparams_search.params = {"model.optimizer.lr": "choice(-1.0, 0.003)"}
        cfg.hparams_search.enqueue = [{"model.optimizer.lr": -1.0}, {"model.optimizer.lr": 0.003}]
    study_dir = tmp_path / "study"
    study = tune.search(cfg, study_dir, lambda extra: compose_config("tune", tmp_path, [*base, *extra]), base)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "Invalid learning rate" in (study_dir / "trials" / "000" / "failure.txt").read_text()
    board = (study_dir / "leaderboard.md").read_text()
    assert "1 completed, 1 failed" in board


def _tune_cmd(log_dir: Path) -> list[str]:
    # 40 short epochs: a trial lasts seconds, so the interrupt below lands inside trial 1 even on a quiet machine
    return [
        sys.executable,
        "-m",
        "project.tune",
        f"paths.log_dir={log_dir}",
        *FAST,
        NO_DEPLOY,
        "logger=none",
        "hparams_search.study_name=resume",
        "hparams_search.n_trials=2",
        "hparams_search.pruner=null",
        "trainer.max_epochs=40",
    ]


def test_interrupted_search_resumes(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    study_dir = tmp_path / "tune" / "resume"
    proc = subprocess.Popen(_tune_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # written at the end of trial 1's first epoch: it is training, with 39 epochs to go
    training = study_dir / "trials" / "001" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600  # trial 0 first: minutes on a loaded machine
    while not training.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert training.exists(), "trial 1 never started training"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert "re-run the same command to resume" in err

    study = _load(study_dir, "resume")
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == [1] and interrupted[0].state == TrialState.FAIL

    again = subprocess.run(_tune_cmd(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    study = _load(study_dir, "resume")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2  # n_trials is the study's total: the interrupted one does not count
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == interrupted[0].params and retry.state == TrialState.COMPLETE
    assert [t.number for t in study.trials] == [0, 1, 2]  # numbering continues
