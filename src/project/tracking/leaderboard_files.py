"""A collected `Leaderboard` written beside its jobs: `leaderboard.csv`, `leaderboard.md` (with the
failures and every job's overrides) and `pareto.png` (accuracy against latency, or parameters)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from project.atomic import atomic_path, atomic_write_text
from project.tracking.leaderboard import STATUS_ORDER, Leaderboard, collect, short_value


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "★" if value else ""
    if isinstance(value, str):
        return short_value(value).replace("|", "\\|")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def write_csv(board: Leaderboard, path: Path) -> Path:
    columns, data = board.table()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in data])
    return path


def write_leaderboard_markdown(board: Leaderboard, path: Path, title: str | None = None) -> Path:
    shown = [c for c in board.columns if c not in ("overrides", "folder", "error")]
    shown = [c for c in shown if c in ("rank", "job", "status") or any(r.get(c) is not None for r in board.rows)]
    counts = {s: sum(r["status"] == s for r in board.rows) for s in STATUS_ORDER}
    lines = [
        f"# {title or 'Leaderboard'}",
        "",
        f"{len(board.rows)} run(s) in `{board.folder}`: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f". Sorted by `{board.objective}` ({board.direction}).",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(r.get(c)) for c in shown) + " |" for r in board.rows]
    failed = [r for r in board.rows if r["error"]]
    if failed:
        lines += ["", "## Failures", ""] + [f"- `{r['job']}`: {r['error']}" for r in failed]
    if board.png_path is not None:
        lines += ["", "## Accuracy vs speed", "", f"![Pareto front]({board.png_path.name})"]
        front = [r["job"] for r in board.rows if r.get("pareto")]
        if front:
            lines += ["", "Pareto-optimal: " + ", ".join(f"`{j}`" for j in front)]
    lines += [
        "",
        "Overrides per run:",
        "",
        *[f"- `{r['job']}`: `{r['overrides'] or '(defaults)'}`" for r in board.rows],
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def mark_pareto(board: Leaderboard) -> None:
    """`pareto: True` on rows no other run beats on accuracy and latency (parameters without a benchmark)."""
    from project.tracking.pareto import pareto_mask

    acc = board.accuracy_key
    cost = "latency_p50_ms" if any(r.get("latency_p50_ms") is not None for r in board.rows) else "params"
    usable = [r for r in board.rows if r.get(acc) is not None and r.get(cost) is not None]
    for row, on_front in zip(usable, pareto_mask([(r[acc], r[cost]) for r in usable]), strict=True):
        row["pareto"] = on_front


def write_leaderboard(board: Leaderboard, title: str | None = None, plot: bool = True) -> Leaderboard:
    """Write leaderboard.csv, pareto.png and leaderboard.md into the board's folder."""
    board.folder.mkdir(parents=True, exist_ok=True)
    mark_pareto(board)
    if "pareto" not in board.columns:
        board.columns.insert(board.columns.index("params") + 1, "pareto")
    board.csv_path = write_csv(board, board.folder / "leaderboard.csv")
    if plot and board.rows:
        from project.tracking.pareto import plot_pareto

        board.png_path = plot_pareto(
            board.rows, board.folder / "pareto.png", board.accuracy_key, title=title or board.folder.name
        )
    board.md_path = write_leaderboard_markdown(board, board.folder / "leaderboard.md", title)
    return board


def build_leaderboard(
    root: str | Path, objective: str | None = None, direction: str | None = None, title: str | None = None
) -> Leaderboard:
    """collect + write: what the multirun callback, `project.tune` and `project.leaderboard` call."""
    return write_leaderboard(collect(root, objective, direction), title=title)
