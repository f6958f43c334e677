"""Experiment tracking: W&B without setup, the sweep leaderboard and the accuracy-vs-speed Pareto plot."""
