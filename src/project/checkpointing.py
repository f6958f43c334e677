"""Checkpoints a run can resume from exactly: a true `last.ckpt` every epoch, the random state with it,
a checkpoint on preemption, and `ckpt_path=last` → the newest earlier run of the same config.

Lightning's `ModelCheckpoint(save_last=True)` beside a monitored metric writes `last` only when a new
best is saved, and reloads the best-so-far only when the checkpoint folder is unchanged (a resumed run
writes to a new run folder). `RunCheckpoint` fixes both, so resuming loses no epoch and tests the same best.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from project.atomic import atomic_path

log = logging.getLogger(__name__)

# what must match for an earlier run to count as "the same config" for ckpt_path=last
SAME_CONFIG_KEYS = ("data", "model", "seed")


def rng_states() -> dict[str, Any]:
    """Every global random state a training step may draw from, as plain tensors and tuples (loadable
    with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_py = states["python"]
    random.setstate((version, tuple(state), gauss_py))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary name beside the target, then renamed: a kill at any moment leaves
    the previous file or the new one whole (Lightning's own save stages in the system temp folder, which is
    a copy, not a rename, when that is another filesystem). Set in `conf/trainer/default.yaml` (plugins)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that resumes exactly.

    - `last.ckpt` is written at the end of every epoch (after its validation), not only on a new best.
    - The best-so-far (score, path, top-k) carries over into a resumed run's new folder, so a worse
      epoch after resuming never becomes "best".
    - The global random states travel in the checkpoint and are restored on resume.
    - SIGTERM, SIGINT or a SLURM/submitit requeue signal mid-epoch saves `last.ckpt` before exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_written_step = -1
        self.interrupt_checkpoint: str | None = None

    # --- last.ckpt every epoch ------------------------------------------------------------------------
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: L.Trainer) -> None:
        if self.save_last and self._last_written_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    # --- state across run folders ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        rng = state.pop("rng_states", None)
        state["dirpath"] = self.dirpath  # a resumed run writes to its own folder; keep the best-so-far anyway
        super().load_state_dict(state)
        self.last_model_path = ""  # the earlier run's last.ckpt is never overwritten nor removed
        if rng is not None:
            set_rng_states(rng)

    # --- preemption -------------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SystemExit | KeyboardInterrupt) or not self.save_last:
            return  # an error (e.g. a non-finite loss) must not leave its weights as the newest checkpoint
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self.interrupt_checkpoint = self.last_model_path
        if trainer.is_global_zero:
            print(interrupted_message(trainer, self.last_model_path), file=sys.stderr, flush=True)


def interrupted_message(trainer: L.Trainer, path: str) -> str:
    """The one line a preempted run ends with: where it stopped and, under `project.train`, the command
    that resumes it (other entry points, e.g. `project.tune`, say how they resume themselves)."""
    where = f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {path}"
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main_spec, "name", None) != "project.train":
        return where
    task: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            task = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    except Exception:  # outside a Hydra job: the generic command
        pass
    return f"{where}; resume with: " + " ".join(["python -m project.train", *task, "ckpt_path=last"])


def _same_config(run_dir: Path, cfg: DictConfig) -> bool:
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return False
    try:
        other = OmegaConf.load(saved)
    except Exception:
        return False
    return all(
        OmegaConf.to_container(OmegaConf.create({"v": other.get(k)}), resolve=False)
        == OmegaConf.to_container(OmegaConf.create({"v": cfg.get(k)}), resolve=False)
        for k in SAME_CONFIG_KEYS
    )


def find_last_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path=last`: the `last.ckpt` of the newest run of the same config, i.e. a run under
    `<paths.log_dir>/<task_name>/` (single runs and sweep jobs) whose data, model and seed settings are
    those of `cfg`. None when there is none (e.g. a requeued job's first start)."""
    root = Path(cfg.paths.log_dir) / str(cfg.task_name)
    candidates = [*root.glob("runs/*/checkpoints/last.ckpt"), *root.glob("multiruns/*/*/checkpoints/last.ckpt")]
    matching = [p for p in candidates if _same_config(p.parents[1], cfg)]
    if not matching:
        return None
    return str(max(matching, key=lambda p: p.stat().st_mtime))


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`cfg.ckpt_path` with `last` resolved to a file (see `find_last_checkpoint`); other values as given.
    A job SLURM requeued (`SLURM_RESTART_COUNT` > 0, e.g. by `hydra/launcher=slurm` at its time limit or on
    preemption) resumes as if `ckpt_path=last` had been given."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        log.info("requeued by SLURM: resuming with ckpt_path=last")
        ckpt = "last"
    if ckpt != "last":
        return ckpt
    found = find_last_checkpoint(cfg)
    where = Path(cfg.paths.log_dir) / str(cfg.task_name)
    if found is None:
        log.warning(f"ckpt_path=last: no earlier run of this config under {where}; starting fresh")
    else:
        log.info(f"ckpt_path=last: resuming from {found}")
    return found
