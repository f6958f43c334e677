"""The leaderboard in W&B: a run of its own (job type `leaderboard`, grouped with the sweep) holding the
table and the Pareto plot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from project.tracking.leaderboard import Leaderboard


def log_leaderboard_to_wandb(
    board: Leaderboard, settings: Mapping[str, Any], group: str | None, name: str | None = None
) -> None:
    """The leaderboard as a W&B Table (plus the Pareto plot) in a run of its own, grouped with the sweep."""
    import wandb

    from project.tracking.wandb_setup import finish_active_run, resolve_mode

    mode = resolve_mode(settings.get("mode"))
    if mode == "disabled":
        return
    finish_active_run(exit_code=1)  # never log into a job's run left open
    tags = settings.get("tags")
    wandb.init(
        project=settings.get("project") or os.environ.get("WANDB_PROJECT") or "image-classification",
        entity=settings.get("entity"),
        group=group,
        name=name or f"{group or board.folder.name}-leaderboard",
        job_type="leaderboard",
        tags=[str(t) for t in tags] if tags else None,
        dir=str(board.folder),
        mode=mode,
        config={"objective": board.objective, "direction": board.direction, "runs": len(board.rows)},
    )
    columns, data = board.table()
    payload: dict[str, Any] = {
        "leaderboard": wandb.Table(columns=columns, data=[[_wandb_cell(v) for v in r] for r in data])
    }
    if board.png_path is not None and board.png_path.is_file():
        payload["pareto"] = wandb.Image(str(board.png_path))
    wandb.log(payload)
    best = next((r for r in board.rows if r.get("rank") == 1), None)
    if best is not None:
        wandb.run.summary.update({"best/job": best["job"], f"best/{board.objective}": best["objective"]})
    finish_active_run(exit_code=0)


def _wandb_cell(value: Any) -> Any:
    """W&B tables want one type per column: numbers stay numbers, everything else becomes text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)
