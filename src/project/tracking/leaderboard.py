"""Every job of a sweep (or trial of a search) collected into one sorted table, the `Leaderboard`
(`project.tracking.leaderboard_files` writes it out, `project.tracking.wandb_leaderboard` logs it).

A job is a folder holding `.hydra/overrides.yaml`, `metrics.json` or `trial.json` (what `project.train`
and `project.tune` write). From each: its overrides, status, test metrics, the objective, the post-fit
benchmark's headline (`benchmark.json`, read defensively) and the parameter count of its best checkpoint.
Rows are sorted by the objective (finished jobs first). What cannot be read is logged and left empty.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from project.deploy.results import BenchmarkReport, Headline

log = logging.getLogger(__name__)

STATUS_ORDER = {"completed": 0, "pruned": 1, "failed": 2, "incomplete": 3}
SKIP_DIRS = {"wandb", "checkpoints", "deploy", "csv", "engines", "__pycache__"}
BENCH_COLUMNS = ("backend", "latency_p50_ms", "throughput")
MINIMIZE_HINTS = ("loss", "err", "latency", "time", "mse", "mae", "wer", "cer")


def infer_direction(objective: str) -> str:
    """maximize, unless the metric's name says lower is better (loss, error, latency...)."""
    name = objective.lower()
    return "minimize" if any(hint in name for hint in MINIMIZE_HINTS) else "maximize"


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def _is_job(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (".hydra/overrides.yaml", "metrics.json", "trial.json"))


def find_jobs(root: str | Path) -> list[Path]:
    """The job folders under `root` (a job's own subfolders are not searched); `root` itself when it is
    the only job."""
    root = Path(root)
    jobs: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        folder = Path(dirpath)
        if folder != root and _is_job(folder):
            jobs.append(folder)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
    if not jobs and _is_job(root):
        jobs = [root]
    return sorted(jobs, key=_natural)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("leaderboard: skipping unreadable %s (%s)", path, exc)
        return None


def read_headline(path: Path) -> Headline | None:
    """The headline of a `benchmark.json`: None when there is no file, all-None figures when it cannot be
    read as a report."""
    doc = _read_json(path)
    if doc is None:
        return Headline() if path.is_file() else None
    try:
        return BenchmarkReport.from_json(doc).headline()
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("leaderboard: no benchmark figures from %s (%s)", path, exc)
        return Headline()


def _read_overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception as exc:  # any YAML or OmegaConf error: the row has no overrides
        log.warning("leaderboard: skipping unreadable %s (%s)", path, exc)
        return []


def parse_override(override: str) -> tuple[str, str]:
    """`+model.lr=0.1` → ("model.lr", "0.1"); `~key` → ("key", "<deleted>")."""
    if override.startswith("~"):
        return override.lstrip("~").split("=", 1)[0], "<deleted>"
    key, _, value = override.lstrip("+").partition("=")
    return key, value


def parameter_count(checkpoint: str | Path | None) -> int | None:
    """Number of parameters in a Lightning checkpoint's state dict (weights-only load), or None."""
    if not checkpoint or not Path(checkpoint).is_file():
        return None
    try:
        import torch

        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    except Exception as exc:  # any unpickling error: the row has no parameter count
        log.warning("leaderboard: no parameter count from %s (%s)", checkpoint, exc)
        return None
    names = [k for k, v in state.items() if hasattr(v, "numel") and v.is_floating_point()]
    # BatchNorm running statistics are buffers, not parameters
    return sum(state[k].numel() for k in names if not k.endswith(("running_mean", "running_var")))


def job_row(folder: Path, root: Path, objective: str) -> dict[str, Any]:
    """One leaderboard row: what the job folder says about itself."""
    summary = _read_json(folder / "metrics.json") or {}
    trial = _read_json(folder / "trial.json") or {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    failure = folder / "failure.txt"
    if trial.get("state"):
        state = str(trial["state"]).lower()
        status = {"complete": "completed", "fail": "failed", "running": "incomplete"}.get(state, state)
    elif failure.is_file():
        status = "failed"
    elif summary:
        status = "completed"
    else:
        status = "incomplete"
    overrides = _read_overrides(folder)
    if not overrides and isinstance(trial.get("overrides"), list):
        overrides = [str(o) for o in trial["overrides"]]
    bench = read_headline(folder / "benchmark.json") or read_headline(folder / "deploy" / "benchmark.json")
    value = metrics.get(objective)
    if value is None and status in ("completed", "pruned") and isinstance(trial.get("value"), int | float):
        value = trial["value"]
    error = ""
    if failure.is_file():
        lines = [line for line in failure.read_text(errors="replace").splitlines() if line.strip()]
        error = lines[-1][:300] if lines else "failed"
    elif trial.get("error"):
        error = str(trial["error"])[:300]
    return {
        "job": folder.relative_to(root).as_posix() if folder != root else folder.name,
        "status": status,
        "objective": float(value) if isinstance(value, int | float) and math.isfinite(value) else None,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        "overrides": overrides,
        **(bench.as_row() if bench else dict.fromkeys(BENCH_COLUMNS)),
        "params": parameter_count(summary.get("best_checkpoint")),
        "folder": str(folder),
        "error": error,
    }


@dataclass
class Leaderboard:
    folder: Path
    objective: str
    direction: str
    columns: list[str]
    rows: list[dict[str, Any]]
    varying: list[str] = field(default_factory=list)
    csv_path: Path | None = None
    md_path: Path | None = None
    png_path: Path | None = None

    @property
    def accuracy_key(self) -> str:
        return "test/acc" if any(r.get("test/acc") is not None for r in self.rows) else self.objective

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows as plain values (a W&B Table, a DataFrame)."""
        return self.columns, [[_cell(r.get(c)) for c in self.columns] for r in self.rows]


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return value


def _sort_key(row: dict[str, Any], direction: str) -> tuple[Any, ...]:
    value = row["objective"]
    has_value = value is not None
    signed = (-value if direction == "maximize" else value) if has_value else 0.0
    return (STATUS_ORDER.get(row["status"], 9), not has_value, signed)


def collect(root: str | Path, objective: str | None = None, direction: str | None = None) -> Leaderboard:
    """Read every job under `root` into a sorted leaderboard (no files written)."""
    root = Path(root)
    jobs = find_jobs(root)
    if objective is None:
        objective = _configured_objective(jobs) or "val/acc_best"
    direction = (direction or infer_direction(objective)).lower()
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    raw = [job_row(folder, root, objective) for folder in jobs]

    # override keys whose value differs between jobs: the sweep's parameters, one column each
    values: dict[str, set[str]] = {}
    for row in raw:
        for key, value in map(parse_override, row["overrides"]):
            values.setdefault(key, set()).add(value)
    varying = [k for k, v in values.items() if len(v) > 1 or any(k not in _keys(r) for r in raw)]
    metric_names = sorted({k for r in raw for k in r["metrics"] if k.startswith("test/")})
    extra = [] if objective in metric_names else [objective]
    if "val/acc_best" not in [*metric_names, *extra] and any("val/acc_best" in r["metrics"] for r in raw):
        extra.append("val/acc_best")

    rows = []
    for row in raw:
        params = dict(map(parse_override, row["overrides"]))
        flat = {
            "job": row["job"],
            "status": row["status"],
            **{k: params.get(k) for k in varying},
            **{k: row["metrics"].get(k) for k in [*extra, *metric_names]},
            **{k: row[k] for k in (*BENCH_COLUMNS, "params")},
            "overrides": " ".join(row["overrides"]),
            "folder": row["folder"],
            "error": row["error"],
            "objective": row["objective"],
        }
        flat[objective] = row["objective"]
        flat["label"] = " ".join(
            [row["job"], *(f"{k.rsplit('.', 1)[-1]}={short_value(params.get(k))}" for k in varying)]
        )
        rows.append(flat)
    rows.sort(key=lambda r: _sort_key(r, direction))
    rank = 0
    for row in rows:
        if row["objective"] is not None and row["status"] == "completed":
            rank += 1
            row["rank"] = rank
        else:
            row["rank"] = None
    columns = [
        "rank",
        "job",
        "status",
        *dict.fromkeys([objective, *varying, *metric_names, *extra]),
        *BENCH_COLUMNS,
        "params",
        "overrides",
        "folder",
        "error",
    ]
    return Leaderboard(root, objective, direction, columns, rows, varying)


def _keys(row: dict[str, Any]) -> set[str]:
    return {parse_override(o)[0] for o in row["overrides"]}


def _configured_objective(jobs: Sequence[Path]) -> str | None:
    """`optimized_metric` from the first job config that has one."""
    from omegaconf import OmegaConf

    for folder in jobs:
        path = folder / ".hydra" / "config.yaml"
        if path.is_file():
            try:
                value = OmegaConf.select(OmegaConf.load(path), "optimized_metric", default=None)
            except Exception as exc:  # any YAML or OmegaConf error: look at the next job
                log.warning("leaderboard: skipping unreadable %s (%s)", path, exc)
                continue
            if value:
                return str(value)
    return None


def short_value(value: Any) -> str:
    """An override value for a label or table cell: numbers to 4 significant digits."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() else f"{number:.4g}"
