"""`python -m project.tune [hparams_search=NAME] [train overrides]`: an Optuna search, each trial a training run.

Why an entry point and not Hydra's Optuna sweeper plugin: that plugin pins an old Optuna, cannot prune
from inside training, and loses a failed trial's place in the search. Here each trial composes the `tune`
config (= `train` + the search file + your overrides + the sampled values) with Hydra's compose API and
runs `project.run.train` in-process with a pruning callback.

- The study lives in `<study folder>/study.db` (SQLite; any Optuna storage URL via hparams_search.storage).
  `hparams_search.n_trials` is the study's total: re-running the same command continues it, and a trial cut
  short by Ctrl-C or a kill is run again with the same values.
- A failed trial is recorded as failed (`trials/NNN/failure.txt`) and the search goes on.
- Trials live in `<study folder>/trials/NNN/` like sweep jobs; at the end the leaderboard and Pareto plot
  are written to the study folder (and logged to W&B when the trials used it).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from project import run
from project.config import UserError, config_dir, exits_on_user_error
from project.search.pruning import OptunaPruning
from project.search.space import SearchSpace
from project.tracking.wandb_setup import finish_active_run

log = logging.getLogger(__name__)

ComposeTrial = Callable[[list[str]], DictConfig]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get("interrupted"))


def open_study(spec: DictConfig, study_dir: Path) -> optuna.Study:
    """Create or load the study; trials a dead process left RUNNING become failed-interrupted and are queued
    again with the same values (one process per study: parallel workers would need Optuna's heartbeat)."""
    storage = spec.get("storage") or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    direction = str(spec.get("direction", "maximize"))
    study = optuna.create_study(
        study_name=str(spec.study_name), storage=storage, direction=direction, load_if_exists=True
    )
    if study.direction.name.lower() != direction.lower():
        raise UserError(
            f"study {spec.study_name!r} in {storage} optimises {study.direction.name.lower()}, "
            f"not {direction}: pick another hparams_search.study_name"
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if _interrupted(trial) and trial.number not in retried and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    for params in spec.get("enqueue") or []:
        study.enqueue_trial(OmegaConf.to_container(params, resolve=True), skip_if_exists=True)
    sampler_cfg = spec.get("sampler")
    if sampler_cfg:
        seed = sampler_cfg.get("seed")
        # a resumed study must not replay the first run's random draws
        kwargs = {"seed": int(seed) + len(trials)} if seed is not None else {}
        study.sampler = instantiate(sampler_cfg, **kwargs)
    study.pruner = instantiate(spec.pruner) if spec.get("pruner") else optuna.pruners.NopPruner()
    return study


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards n_trials: complete, pruned, or failed on their own (not interrupted)."""
    return sum(t.state in FINISHED and not _interrupted(t) for t in study.get_trials(deepcopy=False))


def _write_trial(folder: Path, trial: optuna.Trial, state: str, overrides: list[str], **extra: Any) -> None:
    record = {
        "number": trial.number,
        "state": state,
        "params": trial.params,
        "overrides": overrides,
        "study": trial.study.study_name,
        **extra,
    }
    (folder / "trial.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def _prepare_trial(cfg: DictConfig, folder: Path, study_name: str, number: int) -> None:
    """Point the trial's outputs at its folder and name its W&B run after the study."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
        if wandb_cfg is not None and "_target_" in wandb_cfg:
            wandb_cfg.group = wandb_cfg.get("group") or study_name
            wandb_cfg.name = wandb_cfg.get("name") or f"{study_name}-trial-{number}"


def make_objective(
    spec: DictConfig, study_dir: Path, compose_trial: ComposeTrial, base_overrides: list[str]
) -> Callable[[optuna.Trial], float]:
    space = SearchSpace.from_config(spec.params)
    searched = set(space.distributions)
    # your command-line values for searched keys would fight the sampler: the search wins
    base = [o for o in base_overrides if o.lstrip("+~").split("=", 1)[0] not in searched]

    def objective(trial: optuna.Trial) -> float:
        overrides = [*base, *space.suggest(trial)]
        folder = study_dir / "trials" / f"{trial.number:03d}"
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
        _write_trial(folder, trial, "running", overrides)
        pruning: OptunaPruning | None = None
        try:
            cfg = compose_trial(overrides)
            _prepare_trial(cfg, folder, str(spec.study_name), trial.number)
            OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
            monitor = spec.get("monitor") or cfg.get("optimized_metric")
            pruning = OptunaPruning(trial, monitor) if spec.get("pruner") and monitor else None
            result = run.train(cfg, extra_callbacks=[pruning] if pruning else [])
            run.report(result, folder)
            value = run.objective_value(cfg, result["metrics"])
            if value is None:
                raise UserError("optimized_metric is not set: the search has nothing to optimise")
        except optuna.TrialPruned:
            metrics = pruning.metrics if pruning else {}
            run.report({"metrics": metrics, "best_checkpoint": None}, folder)
            _write_trial(folder, trial, "pruned", overrides, pruned_at_epoch=pruning.pruned_at if pruning else None)
            _mark_wandb_summary({"trial/state": "pruned"})
            finish_active_run(exit_code=0)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            trial.set_user_attr("interrupted", True)
            _write_trial(folder, trial, "interrupted", overrides)
            finish_active_run(exit_code=1)
            raise KeyboardInterrupt from exc  # Optuna records the trial as failed, then stops
        except Exception as exc:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            (folder / "failure.txt").write_text(f"overrides: {' '.join(overrides)}\n\n{text}")
            _write_trial(folder, trial, "fail", overrides, error=f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed: %s: %s (the search goes on)\n%s", trial.number, type(exc).__name__, exc, text)
            finish_active_run(exit_code=1)
            raise
        _write_trial(folder, trial, "complete", overrides, value=value)
        finish_active_run(exit_code=0)
        return value

    return objective


def _mark_wandb_summary(values: dict[str, Any]) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update(values)


def search(cfg: DictConfig, study_dir: Path, compose_trial: ComposeTrial, base_overrides: list[str]) -> optuna.Study:
    """Run (or continue) the study up to `hparams_search.n_trials` finished trials, then write the leaderboard."""
    spec = cfg.get("hparams_search")
    if not spec or not spec.get("params"):
        raise UserError("no search space: pass hparams_search=NAME (a file in conf/hparams_search/)")
    if not cfg.get("optimized_metric"):
        raise UserError("optimized_metric is not set: the search needs a metric to optimise")
    study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, study_dir)
    done = finished_count(study)
    remaining = int(spec.n_trials) - done
    if remaining <= 0:
        log.warning(
            "study %r already has %d finished trial(s) (n_trials=%d): raise hparams_search.n_trials to run more",
            spec.study_name,
            done,
            spec.n_trials,
        )
    else:
        if done:
            log.info("continuing study %r: %d trial(s) done, %d to go", spec.study_name, done, remaining)
        objective = make_objective(spec, study_dir, compose_trial, base_overrides)
        study.optimize(objective, n_trials=remaining, catch=(Exception,), gc_after_trial=True)
    _write_leaderboard(cfg, study, study_dir)
    return study


def _write_leaderboard(cfg: DictConfig, study: optuna.Study, study_dir: Path) -> None:
    from project.tracking.leaderboard_files import build_leaderboard
    from project.tracking.sweep_callback import wandb_settings
    from project.tracking.wandb_leaderboard import log_leaderboard_to_wandb

    board = build_leaderboard(
        study_dir,
        objective=str(cfg.optimized_metric),
        direction=study.direction.name.lower(),
        title=f"Optuna study {study.study_name}",
    )
    settings = wandb_settings(study_dir)
    if settings is not None and cfg.hparams_search.get("log_to_wandb", True):
        try:
            log_leaderboard_to_wandb(board, settings, settings.get("group") or study.study_name)
        except Exception as exc:
            log.warning("could not log the leaderboard to W&B: %s", exc)
    print(f"leaderboard: {board.md_path}")
    print(f"pareto plot: {board.png_path}")


def summary_lines(study: optuna.Study, study_dir: Path) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
    }
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    try:
        best = study.best_trial
        lines.append(f"best trial #{best.number}: {best.value:.4f} with {best.params}")
        lines.append(f"best run folder: {study_dir / 'trials' / f'{best.number:03d}'}")
    except ValueError:
        lines.append("no trial completed")
    lines.append(f"study folder: {study_dir} (re-run the same command to continue the study)")
    return lines


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="tune")
@exits_on_user_error
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    study_dir = Path(hydra_cfg.runtime.output_dir)
    base_overrides = list(hydra_cfg.overrides.task)

    def compose_trial(overrides: list[str]) -> DictConfig:
        return hydra.compose(config_name=hydra_cfg.job.config_name or "tune", overrides=overrides)

    try:
        study = search(cfg, study_dir, compose_trial, base_overrides)
    except KeyboardInterrupt:
        print(f"interrupted: re-run the same command to resume the study in {study_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    for line in summary_lines(study, study_dir):
        print(line)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SystemExit(1)
    return study.best_value


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("tune")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
