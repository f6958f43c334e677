"""`python -m project.leaderboard DIR [--objective METRIC] [--direction maximize|minimize] [--wandb]`

The leaderboard of every run under DIR (a multirun folder, a study folder, or a whole logs folder):
writes DIR/leaderboard.csv, DIR/leaderboard.md and DIR/pareto.png, and prints the Markdown table.
Sweeps and searches do this themselves when they end; this is for any folder, any time.
(`python -m project.report` is the same command under its older name.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from project.config import UserError, exits_on_user_error


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m project.leaderboard", description=__doc__.split("\n\n")[1])
    parser.add_argument("folder", type=Path, help="a multirun/sweep folder, an Optuna study folder, or any logs folder")
    parser.add_argument(
        "--objective", help="metric to sort by (default: the runs' optimized_metric, else val/acc_best)"
    )
    parser.add_argument("--direction", choices=("maximize", "minimize"), help="default: from the metric's name")
    parser.add_argument("--title", help="heading of leaderboard.md and the plot")
    parser.add_argument(
        "--wandb", action="store_true", help="also log the table and plot to W&B (offline without a key)"
    )
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.folder.is_dir():
        raise UserError(f"not a folder: {args.folder}")
    from project.tracking.leaderboard import find_jobs
    from project.tracking.leaderboard_files import build_leaderboard

    if not find_jobs(args.folder):
        raise UserError(f"no runs under {args.folder} (looked for .hydra/overrides.yaml, metrics.json, trial.json)")
    board = build_leaderboard(args.folder, args.objective, args.direction, title=args.title)
    print(board.md_path.read_text())
    if args.wandb:
        from project.tracking.sweep_callback import wandb_settings
        from project.tracking.wandb_leaderboard import log_leaderboard_to_wandb

        settings = wandb_settings(args.folder) or {}
        log_leaderboard_to_wandb(board, settings, settings.get("group") or args.folder.name)
    print(f"leaderboard: {board.md_path}")
    print(f"csv: {board.csv_path}")
    print(f"pareto plot: {board.png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
