"""`python -m project.report DIR [--objective METRIC] [--direction maximize|minimize] [--wandb]`

The leaderboard of every run under DIR (a multirun folder, a study folder, or a whole logs folder):
writes DIR/leaderboard.csv, DIR/leaderboard.md and DIR/pareto.png, and prints the Markdown table.
Sweeps and searches do this themselves when they end; this is for any folder, any time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from project.config import UserError, exit_on_user_error


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m project.report", description=__doc__.split("\n\n")[1])
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.folder.is_dir():
            raise UserError(f"not a folder: {args.folder}")
        from project.tracking import leaderboard

        if not leaderboard.find_jobs(args.folder):
            raise UserError(f"no runs under {args.folder} (looked for .hydra/overrides.yaml, metrics.json, trial.json)")
        board = leaderboard.build(args.folder, args.objective, args.direction, title=args.title)
    except UserError as err:
        exit_on_user_error(err)
    print(board.md_path.read_text())
    if args.wandb:
        from project.tracking.sweep_callback import wandb_settings

        settings = wandb_settings(args.folder) or {}
        leaderboard.log_to_wandb(board, settings, settings.get("group") or args.folder.name)
    print(f"leaderboard: {board.md_path}")
    print(f"csv: {board.csv_path}")
    print(f"pareto plot: {board.png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
